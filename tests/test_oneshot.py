"""One-shot pruning of whole models block by block: LLaMA (rotary, GQA), GPT-2 (Conv1D), OPT
and the zoo's GPT, from tiny configs with random weights."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import prunekit
from prunekit.errors import InvalidParameterError, PrunekitError
from prunekit.oneshot import (
    find_blocks,
    lm_perplexity,
    oneshot_prune,
    to_semi_structured,
    window_batches,
)
from prunekit.oneshot.blocks import block_targets, weight_matrix
from prunekit.oneshot.capture import calibration_batches, capture_block_inputs
from prunekit.oneshot.engine import sequential_groups
from prunekit.oneshot.methods import ONESHOT_METHODS
from prunekit.oneshot.stats import collect_input_stats

transformers = pytest.importorskip("transformers")

VOCAB = 64


def llama(seed: int = 0):
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return transformers.LlamaForCausalLM(cfg).eval()


def gpt2(seed: int = 0):
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                  bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(cfg).eval()


def opt(seed: int = 0):
    torch.manual_seed(seed)
    cfg = transformers.OPTConfig(vocab_size=VOCAB, hidden_size=32, ffn_dim=64, num_hidden_layers=2,
                                 num_attention_heads=4, max_position_embeddings=64, word_embed_proj_dim=32,
                                 pad_token_id=1, bos_token_id=0, eos_token_id=0)
    return transformers.OPTForCausalLM(cfg).eval()


def zoo(seed: int = 0):
    torch.manual_seed(seed)
    return prunekit.create_model("gpt_tiny", vocab_size=VOCAB, n_layer=2, n_embd=32, n_head=4, block_size=64).eval()


MODELS = {"llama": llama, "gpt2": gpt2, "opt": opt, "zoo": zoo}


def calib(n: int = 8, t: int = 16, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (n, t), generator=torch.Generator().manual_seed(seed))


def logits(model, x):
    with torch.no_grad():
        out = model(x)
    return out if isinstance(out, torch.Tensor) else out.logits


def matrices(model) -> dict[str, torch.Tensor]:
    path, blocks = find_blocks(model)
    return {f"{path}.{i}.{t.name}": weight_matrix(t).detach().clone()
            for i, b in enumerate(blocks) for t in block_targets(b)}


@pytest.mark.slow
@pytest.mark.parametrize("family", list(MODELS))
def test_wanda_prunes_every_row_of_every_block_linear_and_leaves_the_rest_dense(family):
    model = MODELS[family]()
    dense = {k: v.clone() for k, v in model.state_dict().items()}
    result = oneshot_prune(model, calib(), method="wanda", sparsity=0.5)
    mats = matrices(model)
    assert set(result.layer_sparsity) == set(mats) and len(mats) >= 8
    for name, w in mats.items():
        assert ((w == 0).sum(1) == w.shape[1] // 2).all(), name  # per output row
    assert all(row.sparsity == 0.5 for row in result.report.rows)
    assert {r.name for r in result.report.rows} == set(mats)
    # everything else (embeddings, norms, biases, the head) is unchanged
    others = [k for k in model.state_dict() if k not in mats]
    assert any("embed" in k or "wte" in k for k in others) and any("norm" in k or "ln" in k for k in others)
    assert all(torch.equal(model.state_dict()[k], dense[k]) for k in others)
    assert result.calibration_tokens == 8 * 16


@pytest.mark.parametrize("family,method,structure", [
    ("llama", "magnitude", "2:4"), ("llama", "wanda", "2:4"), ("llama", "sparsegpt", "2:4"),
    ("gpt2", "sparsegpt", "4:8"), ("opt", "wanda", "4:8"), ("zoo", "magnitude", "4:8")])
def test_nm_is_valid_in_every_group_and_the_report_says_so(family, method, structure):
    model = MODELS[family]()
    result = oneshot_prune(model, calib(), method=method, structure=structure)
    n, m = map(int, structure.split(":"))
    for name, w in matrices(model).items():
        assert ((w != 0).reshape(-1, m).sum(1) <= n).all(), name
    assert set(result.report.extras["nm_invalid_groups"].values()) == {0}
    assert result.structure == structure and result.sparsity == 0.5


@pytest.mark.parametrize("family,method", [
    ("llama", "sparsegpt"), ("gpt2", "sparsegpt"), ("opt", "wanda"), ("zoo", "magnitude")])
def test_zero_sparsity_changes_nothing(family, method):
    model = MODELS[family]()
    before = copy.deepcopy(model.state_dict())
    x = calib(2)
    out = logits(model, x)
    oneshot_prune(model, calib(), method=method, sparsity=0.0)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert torch.equal(logits(model, x), out)


def _reference_all_in_memory(model, batches, method: str, sparsity: float):
    """The same algorithm without capture or offload: for each block, run the whole model
    (earlier blocks already pruned) with hooks on that block's layers, then prune them."""
    chosen = ONESHOT_METHODS.get(method)()
    _, blocks = find_blocks(model)
    for block in blocks:
        targets = block_targets(block)
        with collect_input_stats(targets, norms=chosen.norms, hessian=chosen.hessian) as stats:
            for x in batches:
                logits(model, x)
        for t in targets:
            new, keep = chosen.prune_layer(weight_matrix(t).detach().float(), stats[t.name], sparsity, None,
                                           {"blocksize": 128, "percdamp": 0.01}, t.name)
            with torch.no_grad():
                if new is not None:
                    weight_matrix(t).copy_(new)
                weight_matrix(t).mul_(keep)


@pytest.mark.slow
@pytest.mark.parametrize("family,method,offloads", [
    ("llama", "sparsegpt", ("none", "disk")), ("gpt2", "wanda", ("cpu",)), ("opt", "sparsegpt", ("disk",))])
def test_block_by_block_gives_the_masks_of_the_all_in_memory_path(family, method, offloads, tmp_path):
    data = calib()
    reference = MODELS[family]()
    _reference_all_in_memory(reference, calibration_batches(data, 4), method, 0.5)
    ref = matrices(reference)
    for offload in offloads:
        model = MODELS[family]()
        oneshot_prune(model, data, method=method, sparsity=0.5, batch_size=4, offload=offload,
                      offload_dir=str(tmp_path / offload) if offload == "disk" else None)
        got = matrices(model)
        for name in ref:
            assert torch.equal(got[name] == 0, ref[name] == 0), (offload, name)
            assert torch.allclose(got[name], ref[name], atol=1e-5), (offload, name)


def test_disk_offload_releases_block_weights_while_others_are_pruned(tmp_path):
    model = llama()
    seen = []

    def progress(event):
        if event.status == "start":
            _, blocks = find_blocks(model)
            seen.append((event.stage, sum(p.numel() for b in blocks for p in b.parameters())))

    oneshot_prune(model, calib(), method="wanda", offload="disk", offload_dir=str(tmp_path), progress=progress)
    # every block is on disk when the capture starts and when the next block is about to be loaded
    assert seen == [("capture", 0), ("prune", 0), ("prune", 0)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["block_0.safetensors", "block_1.safetensors"]
    assert all(p.numel() > 0 for p in model.parameters())


def test_sparsegpt_lowers_the_block_output_error_against_magnitude():
    data = calib(16, 32)
    x = calib(4, 32, seed=7)
    dense = logits(llama(), x)
    errors = {}
    for method in ("magnitude", "sparsegpt"):
        model = llama()
        oneshot_prune(model, data, method=method, sparsity=0.5)
        errors[method] = float((logits(model, x) - dense).square().mean())
    assert errors["sparsegpt"] < errors["magnitude"]


def test_wanda_mask_unchanged_by_an_output_preserving_channel_rescaling():
    data = calib()
    base = zoo()
    scaled = zoo()
    c = 4.0  # a power of two keeps the arithmetic exact
    with torch.no_grad():
        for block in scaled.blocks:
            block.ln_1.weight[3] *= c
            block.ln_1.bias[3] *= c
            for proj in (block.attn.q_proj, block.attn.k_proj, block.attn.v_proj):
                proj.weight[:, 3] /= c
    assert torch.allclose(logits(base, data[:2]), logits(scaled, data[:2]), atol=1e-5)
    mag_base, mag_scaled = copy.deepcopy(base), copy.deepcopy(scaled)
    oneshot_prune(base, data, method="wanda")
    oneshot_prune(scaled, data, method="wanda")
    a, b = matrices(base), matrices(scaled)
    assert all(torch.equal(a[k] == 0, b[k] == 0) for k in a)
    # magnitude is fooled: it now prunes the rescaled channel's weights far more
    oneshot_prune(mag_base, data, method="magnitude")
    oneshot_prune(mag_scaled, data, method="magnitude")
    col_base = sum(int((matrices(mag_base)[f"blocks.{i}.attn.q_proj.weight"][:, 3] == 0).sum()) for i in range(2))
    col_scaled = sum(int((matrices(mag_scaled)[f"blocks.{i}.attn.q_proj.weight"][:, 3] == 0).sum()) for i in range(2))
    assert col_scaled > col_base


def test_owl_prunes_each_block_at_its_own_sparsity_with_the_target_mean():
    model = llama()
    result = oneshot_prune(model, calib(), method="wanda", sparsity=0.7, owl=True, owl_lambda=0.08)
    assert result.outlier_ratios is not None and len(result.block_sparsities) == 2
    assert sum(result.block_sparsities) / 2 == pytest.approx(0.7)
    assert max(abs(s - 0.7) for s in result.block_sparsities) == pytest.approx(0.08)
    hi = max(range(2), key=lambda i: result.outlier_ratios[i])
    assert result.block_sparsities[hi] == min(result.block_sparsities)
    for name, s in result.layer_sparsity.items():
        block = int(name.split(".")[2])
        assert s == pytest.approx(result.block_sparsities[block], abs=1 / 32)


def test_sequential_groups_follow_the_call_order_and_shared_inputs():
    model = llama()
    _, blocks = find_blocks(model)
    batches = calibration_batches(calib(), 8)
    inputs = capture_block_inputs(model, blocks[0], batches, torch.device("cpu"), torch.device("cpu"))
    groups = sequential_groups(blocks[0], block_targets(blocks[0]), inputs, torch.device("cpu"))
    names = [[t.name.rsplit(".", 2)[-2] for t in g] for g in groups]
    assert names == [["q_proj", "k_proj", "v_proj"], ["o_proj"], ["gate_proj", "up_proj"], ["down_proj"]]
    seq, par = llama(), llama()
    r = oneshot_prune(seq, calib(), method="sparsegpt", sequential=True)
    oneshot_prune(par, calib(), method="sparsegpt")
    assert all(v == 0.5 for v in r.layer_sparsity.values())
    a, b = matrices(seq), matrices(par)
    assert torch.equal(a["model.layers.0.self_attn.q_proj.weight"], b["model.layers.0.self_attn.q_proj.weight"])
    assert not torch.equal(a["model.layers.0.mlp.down_proj.weight"], b["model.layers.0.mlp.down_proj.weight"])


@pytest.mark.parametrize("family", ["llama", "gpt2", "opt"])
def test_pruned_model_round_trips_through_save_pretrained_and_save_sparse(family, tmp_path):
    model = MODELS[family]()
    oneshot_prune(model, calib(), method="sparsegpt", structure="2:4")
    x = calib(2)
    out = logits(model, x)
    model.save_pretrained(tmp_path / "hf")
    loaded = type(model).from_pretrained(tmp_path / "hf").eval()
    assert torch.equal(logits(loaded, x), out)
    prunekit.save_sparse(model, tmp_path / "sparse.safetensors")  # GPT-2's and OPT's tied head stored once
    fresh = MODELS[family](seed=5)
    prunekit.load_sparse(tmp_path / "sparse.safetensors", fresh)
    assert torch.equal(logits(fresh.eval(), x), out)


@pytest.mark.parametrize("mode", ["inplace", "reparam"])
def test_masks_modes_keep_prunekit_masks(mode):
    model = zoo()
    result = oneshot_prune(model, calib(), method="sparsegpt", mode=mode)
    assert all(row.state == mode and row.sparsity == 0.5 for row in result.report.rows)
    assert torch.nn.utils.prune.is_pruned(model) == (mode == "reparam")
    q = model.blocks[0].attn.q_proj
    assert torch.equal(q.weight != 0, q.weight_mask.bool())  # the mask is the zero pattern of the new weights


def _bad_calls():
    return [
        ({"method": "obs"}, "method"),
        ({"sparsity": 1.0}, "sparsity"),
        ({"sparsity": -0.1}, "sparsity"),
        ({"structure": "block:4x4"}, "structure"),
        ({"structure": "n:m"}, "structure"),
        ({"structure": "2:4", "sparsity": 0.7}, "sparsity"),
        ({"structure": "3:5"}, "structure"),
        ({"owl": True, "structure": "2:4"}, "owl"),
        ({"owl": True, "sparsity": 0.95}, "owl_lambda"),
        ({"offload": "ram"}, "offload"),
        ({"mode": "soft"}, "mode"),
        ({"blocks": "model.nothing"}, "blocks"),
        ({"method": "sparsegpt", "structure": "4:8", "blocksize": 12}, "blocksize"),
        ({"data": torch.randn(4, 8)}, "data"),
        ({"data": "some text"}, "data"),
        ({"batch_size": 0}, "batch_size"),
    ]


@pytest.mark.parametrize("kwargs,param", _bad_calls())
def test_bad_arguments_raise_before_anything_changes(kwargs, param):
    model = llama()
    before = copy.deepcopy(model.state_dict())
    kwargs = dict(kwargs)
    data = kwargs.pop("data", calib())
    with pytest.raises(InvalidParameterError) as info:
        oneshot_prune(model, data, **kwargs)
    assert info.value.param == param
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert not torch.nn.utils.prune.is_pruned(model)


def test_a_model_without_known_blocks_is_told_how_to_name_them():
    net = torch.nn.Sequential(torch.nn.Embedding(8, 4), torch.nn.Linear(4, 8))
    with pytest.raises(InvalidParameterError, match="blocks="):
        oneshot_prune(net, calib())


def test_perplexity_in_non_overlapping_windows_matches_a_direct_computation():
    model = zoo()
    ids = torch.randint(0, VOCAB, (200,), generator=torch.Generator().manual_seed(3))
    result = lm_perplexity(model, ids, window=32, batch_size=2)
    assert result.tokens == (199 // 32) * 32  # 6 windows of 32, the partial tail dropped
    total = 0.0
    for k in range(6):
        x, y = ids[32 * k:32 * k + 32], ids[32 * k + 1:32 * k + 33]
        total += float(torch.nn.functional.cross_entropy(logits(model, x[None])[0], y, reduction="sum"))
    assert result.perplexity == pytest.approx(torch.exp(torch.tensor(total / 192)).item(), rel=1e-5)
    hf = window_batches(ids, 32, 4, hf=True)
    assert hf[0][0]["use_cache"] is False and hf[0][0]["input_ids"].shape == (4, 32)
    assert lm_perplexity(llama(), ids, window=32).tokens == 192


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU message; CUDA machines convert instead")
def test_semi_structured_conversion_says_plainly_that_cpu_has_no_speedup():
    model = llama()
    oneshot_prune(model, calib(), method="wanda", structure="2:4")
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(PrunekitError, match="no speedup"):
        to_semi_structured(model)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


# -- the output head and the token embedding (head=, embeddings=) -------------


def _outside(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if "embed" in k or "lm_head" in k or "wte" in k}


def test_head_and_embeddings_stay_dense_by_default():
    model = llama()
    before = _outside(model)
    result = oneshot_prune(model, calib(), "wanda", 0.5)
    assert all(torch.equal(v, before[k]) for k, v in _outside(model).items())
    assert not any("lm_head" in n or "embed" in n for n in result.layer_sparsity)
    assert not any("lm_head" in r.name or "embed" in r.name for r in result.report.rows)


@pytest.mark.parametrize("method", ["wanda", "sparsegpt", "magnitude"])
def test_head_true_prunes_the_untied_llama_head_to_the_target_and_reports_it(method):
    model = llama()
    embedding = model.model.embed_tokens.weight.detach().clone()
    result = oneshot_prune(model, calib(), method, 0.5, head=True)
    w = model.lm_head.weight
    assert (w == 0).float().mean().item() == pytest.approx(0.5)
    assert result.layer_sparsity["lm_head.weight"] == pytest.approx(0.5)
    row = next(r for r in result.report.rows if r.name == "lm_head.weight")
    assert row.sparsity == pytest.approx(0.5)
    assert torch.equal(model.model.embed_tokens.weight, embedding)  # embeddings=False: untouched


def test_wanda_head_mask_equals_the_mask_from_the_final_norm_outputs_by_hand():
    x = calib()
    reference = llama()
    oneshot_prune(reference, x, "wanda", 0.5)  # the same blocks pruned, the head still dense
    seen = []
    handle = reference.lm_head.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach()))
    logits(reference, x)
    handle.remove()
    inputs = torch.cat(seen).reshape(-1, reference.config.hidden_size)  # model.norm's outputs
    scores = reference.lm_head.weight.detach().abs() * inputs.square().sum(0).sqrt()
    k = scores.shape[1] // 2
    expected = torch.ones_like(scores, dtype=torch.bool)
    expected.scatter_(1, scores.argsort(dim=1)[:, :k], False)

    model = llama()
    oneshot_prune(model, x, "wanda", 0.5, head=True)
    assert torch.equal(model.lm_head.weight != 0, expected)


def test_head_n_m_and_embeddings_by_magnitude_on_the_zoo_gpt():
    model = zoo()
    emb = model.wte.weight.detach().clone()
    oneshot_prune(model, calib(), "wanda", structure="2:4", head=True, embeddings=True)
    for w in (model.lm_head.weight, model.wte.weight):
        assert ((w.detach().reshape(-1, 4) != 0).sum(1) == 2).all()
    keep = emb.abs().reshape(-1, 4).topk(2, dim=1).indices  # magnitude: the 2 largest of every 4
    assert torch.equal(model.wte.weight.detach().reshape(-1, 4).gather(1, keep), emb.reshape(-1, 4).gather(1, keep))


@pytest.mark.parametrize("flags", [{"head": True}, {"embeddings": True}])
def test_tied_gpt2_head_or_embedding_alone_is_refused_and_nothing_changes(flags):
    model = gpt2()
    assert model.lm_head.weight is model.transformer.wte.weight
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(InvalidParameterError, match="embeddings=True") as info:
        oneshot_prune(model, calib(), "wanda", 0.5, **flags)
    assert info.value.param == next(iter(flags))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_tied_gpt2_head_with_embeddings_prunes_the_shared_matrix_once():
    model = gpt2()
    result = oneshot_prune(model, calib(), "wanda", 0.5, head=True, embeddings=True)
    assert model.lm_head.weight is model.transformer.wte.weight
    assert (model.lm_head.weight == 0).float().mean().item() == pytest.approx(0.5)
    assert result.layer_sparsity["lm_head.weight"] == result.layer_sparsity["transformer.wte.weight"]
    with pytest.raises(InvalidParameterError, match="permanent"):
        oneshot_prune(gpt2(), calib(), "wanda", 0.5, head=True, embeddings=True, mode="reparam")


def _opt_projected(width: int):
    torch.manual_seed(0)
    cfg = transformers.OPTConfig(vocab_size=VOCAB, hidden_size=32, ffn_dim=64, num_hidden_layers=2,
                                 num_attention_heads=4, max_position_embeddings=64, word_embed_proj_dim=width,
                                 pad_token_id=1, bos_token_id=0, eos_token_id=0)
    return transformers.OPTForCausalLM(cfg).eval()


def test_opt_head_inputs_go_through_project_out():
    model = _opt_projected(16)  # final_layer_norm (32) then project_out (32 -> 16) then lm_head (16 -> vocab)
    result = oneshot_prune(model, calib(), "sparsegpt", 0.5, head=True, embeddings=True)
    assert model.lm_head.weight.shape[1] == 16
    assert (model.lm_head.weight == 0).float().mean().item() == pytest.approx(0.5)
    assert result.layer_sparsity["model.decoder.embed_tokens.weight"] == pytest.approx(0.5)


class _NoNorm(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed_tokens = torch.nn.Embedding(VOCAB, 8)
        self.layers = torch.nn.ModuleList([torch.nn.Linear(8, 8)])
        self.lm_head = torch.nn.Linear(8, VOCAB)

    def forward(self, x):
        return self.lm_head(self.layers[0](self.embed_tokens(x)))


@pytest.mark.parametrize(("make", "kwargs", "param"), [
    (_NoNorm, {"head": True}, "head"),
    (llama, {"head": 1}, "head"),
    (llama, {"embeddings": "yes"}, "embeddings"),
    (lambda: _opt_projected(36), {"head": True, "embeddings": True, "structure": "4:8", "sparsity": None},
     "structure"),  # blocks are 32 wide, the head and the embedding 36
])
def test_bad_head_or_embedding_arguments_raise_before_anything_changes(make, kwargs, param):
    model = make()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(InvalidParameterError) as info:
        oneshot_prune(model, calib(), "wanda", **{"sparsity": 0.5, **kwargs})
    assert info.value.param == param
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def _fake_gpu(monkeypatch, convert):
    """CPU stand-ins for a CUDA device with 2:4 kernels: the plumbing of to_semi_structured
    (eligibility, logging, all-or-nothing replacement) runs; the real kernels need a GPU."""
    import torch.sparse

    from prunekit.oneshot import semi_structured as ss

    monkeypatch.setattr(ss, "semi_structured_available", lambda device=None: (True, ""))
    monkeypatch.setattr(ss, "_on_cuda", lambda t: True)
    monkeypatch.setattr(torch.sparse, "to_sparse_semi_structured", convert)


def _two_four(rows: int, cols: int, dtype=torch.float16) -> nn.Linear:
    layer = nn.Linear(cols, rows, bias=False).to(dtype)
    with torch.no_grad():
        layer.weight.view(rows, cols // 4, 4)[..., 2:] = 0
    return layer


def test_semi_structured_converts_only_eligible_layers(monkeypatch, caplog):
    _fake_gpu(monkeypatch, lambda t: t.to_sparse())
    torch.manual_seed(0)
    model = nn.Sequential(_two_four(32, 64), nn.Linear(64, 32).half(), _two_four(30, 64), _two_four(32, 64, torch.float32))
    with caplog.at_level("INFO", logger="prunekit.oneshot.semi_structured"):
        converted = to_semi_structured(model)
    assert converted == ["0"] and model[0].weight.is_sparse
    assert not any(model[i].weight.is_sparse for i in (1, 2, 3))
    for name, reason in (("1", "not 2:4"), ("2", "not a multiple of (16, 16)"), ("3", "dtype torch.float32")):
        assert f"{name} left dense: " in caplog.text and reason in caplog.text


def test_semi_structured_is_all_or_nothing_and_refuses_reparam(monkeypatch):
    calls = []

    def convert(t):
        calls.append(t)
        if len(calls) == 2:
            raise RuntimeError("backend failure")
        return t.to_sparse()

    _fake_gpu(monkeypatch, convert)
    model = nn.Sequential(_two_four(32, 64), _two_four(32, 64))
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(RuntimeError, match="backend failure"):
        to_semi_structured(model)
    assert all(not m.weight.is_sparse for m in model) and all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    torch.nn.utils.prune.identity(model[0], "weight")
    with pytest.raises(PrunekitError, match="make_permanent"):
        to_semi_structured(model)
