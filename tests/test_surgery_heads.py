"""Generic head surgery: nn.MultiheadAttention (via PrunedMultiheadAttention), gates,
magnitude and Michel et al. gradient importance, selection, replay without pickle."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

import prunekit
from prunekit.errors import InvalidParameterError
from prunekit.coupling import attention_layers, head_gates
from prunekit.surgery.head_selection import select_heads, select_neurons
from prunekit.surgery.heads import replay_heads
from prunekit.surgery.pruned_mha import PrunedMultiheadAttention
from prunekit.surgery.slicing import SurgeryRecord

E, H = 16, 4


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class Encoder(nn.Module):
    """Two self-attention blocks on nn.MultiheadAttention and a classifier."""

    def __init__(self, batch_first: bool = True, **mha_kwargs) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(nn.MultiheadAttention(E, H, batch_first=batch_first, **mha_kwargs) for _ in range(2))
        self.head = nn.Linear(E, 3)
        self.batch_first = batch_first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = x + block(x, x, x, need_weights=False)[0]
        return self.head(x.mean(dim=1 if self.batch_first else 0))


def make_encoder(seed: int = 0, **kwargs) -> Encoder:
    torch.manual_seed(seed)
    model = Encoder(**kwargs).eval()
    with torch.no_grad():  # non-zero biases so that every slice matters
        for p in model.parameters():
            if p.dim() == 1:
                p.normal_(0, 0.1)
    return model


MHA_CASES = [
    {},
    {"batch_first": True},
    {"bias": False},
    {"kdim": 12, "vdim": 10},
    {"add_bias_kv": True, "add_zero_attn": True},
]


@pytest.mark.parametrize("kwargs", MHA_CASES)
def test_pruned_mha_matches_mha(kwargs):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(E, H, **kwargs).eval()
    if kwargs.get("add_bias_kv"):
        nn.init.normal_(mha.bias_k)
        nn.init.normal_(mha.bias_v)
    new = PrunedMultiheadAttention.from_mha(mha)
    bf = kwargs.get("batch_first", False)
    q = torch.randn(2, 5, E, generator=gen(1))
    k = torch.randn(2, 6, kwargs.get("kdim", E), generator=gen(2))
    v = torch.randn(2, 6, kwargs.get("vdim", E), generator=gen(3))
    if not bf:
        q, k, v = q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)
    pad = torch.tensor([[False] * 5 + [True], [False] * 6])
    causal = torch.ones(5, 6, dtype=torch.bool).triu(2)
    per_head = torch.randn(2 * H, 5, 6, generator=gen(4))
    with torch.no_grad():
        for extra in ({}, {"key_padding_mask": pad}, {"attn_mask": causal}, {"attn_mask": per_head},
                      {"need_weights": False, "key_padding_mask": pad}, {"average_attn_weights": False}):
            ref, ref_w = mha(q, k, v, **extra)
            out, out_w = new(q, k, v, **extra)
            assert torch.allclose(out, ref, atol=1e-5), extra
            if ref_w is not None:
                assert torch.allclose(out_w, ref_w, atol=1e-5), extra
        ref = mha(q[:, 0], k[:, 0], v[:, 0])[0]  # unbatched (L, E)
        out = new(q[:, 0], k[:, 0], v[:, 0])[0]
        assert torch.allclose(out, ref, atol=1e-5)


@pytest.mark.parametrize("kwargs", [{}, {"batch_first": False, "kdim": E, "vdim": E, "add_bias_kv": True}])
def test_mha_heads_removed_exactly_as_gated(kwargs):
    model = make_encoder(**kwargs)
    if kwargs.get("add_bias_kv"):
        for block in model.blocks:
            nn.init.normal_(block.bias_k)
            nn.init.normal_(block.bias_v)
    x = torch.randn(3, 5, E, generator=gen(1))
    if not model.batch_first:
        x = x.transpose(0, 1)
    plan = {"blocks.0": [1], "blocks.1": [0, 2, 3]}
    with torch.no_grad():
        before = model(x)
        with head_gates(model, attention_layers(model)) as gates:
            for name, heads in plan.items():
                gates[name][heads] = 0.0
            masked = model(x)
        assert not torch.allclose(masked, before, atol=1e-4)
        record = prunekit.prune_heads(model, plan)
        after = model(x)
    assert torch.allclose(after, masked, atol=1e-5)
    assert isinstance(model.blocks[0], PrunedMultiheadAttention) and model.blocks[0].num_heads == 3
    assert model.blocks[1].in_proj_weight.shape == (12, E) and model.blocks[1].out_proj.in_features == 4
    assert model.blocks[1].head_index.tolist() == [1]
    assert record.kept == {"blocks.0": [0, 2, 3], "blocks.1": [1]}
    # a second removal on the already pruned module
    prunekit.prune_heads(model, {"blocks.0": [0]})
    assert model.blocks[0].num_heads == 2 and model.blocks[0].head_index.tolist() == [2, 3]


def test_pruned_mha_reads_its_heads_of_a_per_head_mask():
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(E, H, batch_first=True).eval()
    x = torch.randn(2, 5, E, generator=gen(1))
    mask = torch.randn(2 * H, 5, 5, generator=gen(2))
    wrapper = nn.ModuleDict({"attn": mha})
    with torch.no_grad(), head_gates(wrapper, attention_layers(wrapper)) as gates:
        gates["attn"][[0, 2]] = 0.0
        masked = mha(x, x, x, attn_mask=mask)[0]
    prunekit.prune_heads(wrapper, {"attn": [0, 2]})
    with torch.no_grad():
        assert torch.allclose(wrapper["attn"](x, x, x, attn_mask=mask)[0], masked, atol=1e-5)


def test_optimizer_carries_over_an_mha_replacement():
    from prunekit.surgery import carry_optimizer

    model = make_encoder()
    model.train()
    x, y = torch.randn(4, 5, E, generator=gen(1)), torch.tensor([0, 1, 2, 0])
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    old_in = model.blocks[0].in_proj_weight
    momentum = opt.state[old_in]["momentum_buffer"].clone()
    record = prunekit.prune_heads(model, {"blocks.0": [1]})
    assert carry_optimizer(opt, record) >= 3  # in_proj_weight, in_proj_bias, out_proj.weight
    new_in = model.blocks[0].in_proj_weight
    keep = [i for i in range(3 * E) if i % E // 4 != 1]
    assert torch.equal(opt.state[new_in]["momentum_buffer"], momentum[keep])
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    assert all(p.grad is not None for p in model.parameters())
    assert {id(p) for g in opt.param_groups for p in g["params"]} == {id(p) for p in model.parameters()}


def test_zero_removal_changes_nothing():
    model = make_encoder()
    x = torch.randn(2, 5, E, generator=gen(1))
    before = model(x)
    record = prunekit.prune_heads(model, sparsity=0.0)
    assert record.removals == [] and isinstance(model.blocks[0], nn.MultiheadAttention)
    assert torch.equal(model(x), before)


def test_replay_on_fresh_model_without_pickle(tmp_path):
    model = make_encoder()
    x = torch.randn(2, 5, E, generator=gen(1))
    record = prunekit.prune_heads(model, {"blocks.0": [0, 3], "blocks.1": [2]})
    expected = model(x)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "w.safetensors")
    (tmp_path / "record.json").write_text(json.dumps(record.to_json()))
    fresh = make_encoder(seed=5)
    replay_heads(fresh, SurgeryRecord.from_json(json.loads((tmp_path / "record.json").read_text())))
    fresh.load_state_dict(load_file(tmp_path / "w.safetensors"))
    assert fresh.blocks[0].num_heads == 2 and fresh.blocks[1].num_heads == 3
    assert torch.allclose(fresh(x), expected, atol=1e-6)


def test_gradient_importance_ranks_silenced_head_last():
    model = make_encoder()
    with torch.no_grad():
        model.blocks[0].out_proj.weight[:, 4 * 1:4 * 2] = 0.0  # head 1 of block 0 no longer reaches the output
    batches = [(torch.randn(4, 5, E, generator=gen(i)), torch.randint(0, 3, (4,), generator=gen(10 + i)))
               for i in range(3)]
    scores = prunekit.score_heads(model, "gradient", data=batches)
    assert int(scores["blocks.0"].argmin()) == 1 and float(scores["blocks.0"][1]) == 0.0
    assert float(scores["blocks.1"].min()) > 0
    assert torch.allclose(scores["blocks.0"].norm(), torch.tensor(1.0))
    raw = prunekit.score_heads(model, "gradient", data=batches, normalize=False)
    assert torch.allclose(raw["blocks.1"] / raw["blocks.1"].norm(), scores["blocks.1"])
    assert model.training is False and not any(p.grad is not None for p in model.parameters())
    record = prunekit.prune_heads(model, sparsity=0.25, importance="gradient", data=batches)
    assert 1 not in record.kept["blocks.0"]


def test_magnitude_importance_and_own_scores():
    model = make_encoder()
    with torch.no_grad():
        block = model.blocks[1]
        for i in range(3):  # q, k and v rows of head 3
            block.in_proj_weight[i * E + 12:i * E + 16] = 0.0
            block.in_proj_bias[i * E + 12:i * E + 16] = 0.0
        block.out_proj.weight[:, 12:16] = 0.0
    scores = prunekit.score_heads(model)
    assert int(scores["blocks.1"].argmin()) == 3 and float(scores["blocks.1"][3]) == 0.0
    record = prunekit.prune_heads(model, sparsity=0.25)
    assert record.kept["blocks.1"] == [0, 1, 2]
    record = prunekit.prune_heads(model, sparsity=0.34, importance={"blocks.0": torch.tensor([4.0, 3.0, 2.0]),
                                                                   "blocks.1": torch.tensor([1.0, 0.0, 2.0])})
    assert record.kept == {"blocks.0": [0, 1], "blocks.1": [0, 2]}


def test_selection_rules():
    sizes = {"a": 4, "b": 4}
    scores = {"a": torch.tensor([0.1, 0.2, 0.3, 0.4]), "b": torch.tensor([0.9, 0.8, 0.7, 0.6])}
    assert select_neurons(sizes, scores, 0.5) == {"a": [0, 1], "b": [2, 3]}
    assert select_neurons(sizes, scores, 0.5, scope="global") == {"a": [0, 1, 2], "b": [3]}  # keeps one per layer
    assert select_neurons(sizes, scores, 0.9, scope="global")["a"] == [0, 1, 2]
    with pytest.raises(InvalidParameterError, match="ratio"):
        select_neurons(sizes, scores, -0.1)
    with pytest.raises(InvalidParameterError, match="shape"):
        select_neurons(sizes, {"a": torch.ones(3), "b": torch.ones(4)}, 0.5)


def test_global_scope_for_mha_may_differ_per_layer():
    model = make_encoder()
    record = prunekit.prune_heads(model, sparsity=0.5, importance={"blocks.0": torch.tensor([1.0, 2.0, 3.0, 4.0]),
                                                                 "blocks.1": torch.tensor([9.0, 8.0, 7.0, 0.5])},
                                  scope="global")
    assert record.kept == {"blocks.0": [3], "blocks.1": [0, 1, 2]}


def test_errors_for_bad_requests():
    model = make_encoder()
    x = torch.randn(2, 5, E, generator=gen(1))
    before = model(x)
    with pytest.raises(InvalidParameterError, match="layers among 'blocks.0', 'blocks.1', got 'blocks.O'"):
        prunekit.prune_heads(model, {"blocks.O": [1]})
    with pytest.raises(InvalidParameterError, match="fewer than all 4 heads"):
        prunekit.prune_heads(model, {"blocks.0": [0], "blocks.1": [0, 1, 2, 3]})
    with pytest.raises(InvalidParameterError, match=r"head indices in \[0, 4\)"):
        prunekit.prune_heads(model, {"blocks.0": [0], "blocks.1": [7]})
    with pytest.raises(InvalidParameterError, match="attention layers"):
        prunekit.prune_heads(nn.Linear(2, 2), {0: [0]})
    with pytest.raises(InvalidParameterError, match="gqa"):
        prunekit.prune_heads(model, sparsity=0.5, gqa="kv")
    assert isinstance(model.blocks[0], nn.MultiheadAttention) and torch.equal(model(x), before)
    with pytest.raises(InvalidParameterError, match="scope"):
        select_heads(attention_layers(model), prunekit.score_heads(model), 0.5, scope="layer")


def test_masked_weights_are_refused_by_gates():
    model = make_encoder()
    torch.nn.utils.prune.l1_unstructured(model.blocks[0].out_proj, "weight", amount=0.5)
    with pytest.raises(InvalidParameterError, match="make_permanent"):
        prunekit.score_heads(model, "gradient", data=[(torch.randn(2, 5, E), torch.tensor([0, 1]))])
    assert not torch.nn.utils.parametrize.is_parametrized(model.blocks[1].out_proj)


def test_save_shrunk_load_shrunk_round_trip(tmp_path):
    from prunekit.surgery import load_shrunk, save_shrunk

    model = make_encoder()
    x = torch.randn(2, 5, E, generator=gen(1))
    prunekit.prune_heads(model, {"blocks.0": [0, 3], "blocks.1": [2]})
    prunekit.prune_heads(model, {"blocks.0": [1]})  # a second surgery: current head 1 = original head 2
    expected = model(x)
    save_shrunk(model, tmp_path / "small.safetensors")
    fresh = load_shrunk(make_encoder(seed=5), tmp_path / "small.safetensors")
    assert isinstance(fresh.blocks[0], PrunedMultiheadAttention)
    assert fresh.blocks[0].num_heads == 1 and fresh.blocks[0].head_index.tolist() == [1]
    assert torch.allclose(fresh(x), expected, atol=1e-6)


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors")
def test_transformer_encoder_keeps_away_from_torch_fast_paths():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(E, H, dim_feedforward=32, batch_first=True, dropout=0.0)
    encoder = nn.TransformerEncoder(layer, 2).eval()  # eval + no_grad: torch's fused paths are candidates
    x = torch.randn(2, 5, E, generator=gen(1))
    pad = torch.tensor([[False] * 4 + [True], [False] * 5])
    with torch.no_grad(), head_gates(encoder, attention_layers(encoder)) as gates:
        gates["layers.0.self_attn"][[1]] = 0.0
        gates["layers.1.self_attn"][[0, 3]] = 0.0
        masked = encoder(x, src_key_padding_mask=pad)
    prunekit.prune_heads(encoder, {"layers.0.self_attn": [1], "layers.1.self_attn": [0, 3]})
    with torch.no_grad():
        out = encoder(x, src_key_padding_mask=pad)
    assert torch.allclose(out[~pad], masked[~pad], atol=1e-5)
    assert encoder.use_nested_tensor is False


def test_head_magnitude_is_l1_and_l2_is_the_euclidean_norm():
    model = make_encoder()
    block = model.blocks[0]
    d = E // H
    w, b, out = block.in_proj_weight.detach(), block.in_proj_bias.detach(), block.out_proj.weight.detach()

    def entries(h: int) -> torch.Tensor:
        rows = [w[i * E + h * d:i * E + (h + 1) * d].reshape(-1) for i in range(3)]
        bias = [b[i * E + h * d:i * E + (h + 1) * d] for i in range(3)]
        return torch.cat(rows + bias + [out[:, h * d:(h + 1) * d].reshape(-1)])

    l1 = torch.stack([entries(h).abs().sum() for h in range(H)])
    l2 = torch.stack([entries(h).norm() for h in range(H)])
    torch.testing.assert_close(prunekit.score_heads(model)["blocks.0"], l1)
    torch.testing.assert_close(prunekit.score_heads(model, "magnitude")["blocks.0"], l1)
    torch.testing.assert_close(prunekit.score_heads(model, "l2")["blocks.0"], l2)
    specs = attention_layers(model)
    scored = prunekit.scores.create_score("magnitude", "head")(model, specs)
    torch.testing.assert_close(scored["blocks.0"], l1)


def test_sparsity_is_the_name_and_ratio_a_deprecated_alias():
    prunekit.deprecation.reset_warnings()
    new = prunekit.prune_heads(make_encoder(), sparsity=0.25)
    with pytest.warns(FutureWarning, match=r"prune_heads\(ratio=...\)"):
        old = prunekit.prune_heads(make_encoder(), ratio=0.25)
    assert new.kept == old.kept and len(new.kept) == 2
    with pytest.raises(InvalidParameterError, match="ratio"):
        prunekit.prune_heads(make_encoder(), sparsity=0.25, ratio=0.25)
    batches = [(torch.randn(2, 5, E), torch.tensor([0, 1]))]
    with pytest.warns(FutureWarning, match=r"prune_heads\(batches=...\)"):
        old = prunekit.prune_heads(make_encoder(), sparsity=0.25, importance="gradient", batches=batches)
    new = prunekit.prune_heads(make_encoder(), sparsity=0.25, importance="gradient", data=batches)
    assert new.kept == old.kept
    with pytest.raises(InvalidParameterError, match="batches"):
        prunekit.prune_heads(make_encoder(), sparsity=0.25, importance="gradient", data=batches, batches=batches)


def test_structural_prune_sparsity_and_deprecated_ratio():
    def model() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))

    x = torch.randn(2, 4)
    prunekit.deprecation.reset_warnings()
    new = prunekit.structural_prune(model(), x, sparsity=0.5)
    with pytest.warns(FutureWarning, match=r"structural_prune\(ratio=...\)"):
        old = prunekit.structural_prune(model(), x, ratio=0.5)
    assert new.channels_after == old.channels_after == {"0": 4}
    with pytest.raises(InvalidParameterError, match="ratio"):
        prunekit.structural_prune(model(), x, sparsity=0.5, ratio=0.5)
    with pytest.warns(FutureWarning, match=r"structural_prune\(batches=...\)"):
        prunekit.structural_prune(model(), x, sparsity=0.5, criterion="taylor", batches=[(x, torch.tensor([0, 1]))])
