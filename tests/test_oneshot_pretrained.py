"""``prune_pretrained``: a Hugging Face folder pruned block by block from its safetensors into a new
folder, never loaded whole; the same result as ``from_pretrained`` + ``oneshot_prune``."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from prunekit.errors import InvalidParameterError
from prunekit.oneshot import find_blocks, oneshot_prune, prune_pretrained
from prunekit.scores.calibration import Wanda
from conftest import materialised_blocks, watch_streamed_blocks

transformers = pytest.importorskip("transformers")

VOCAB = 64


def llama(tied: bool = False):
    cfg = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                   tie_word_embeddings=tied)
    return transformers.LlamaForCausalLM(cfg)


def gpt2():
    cfg = transformers.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                  bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(cfg)


def opt():
    cfg = transformers.OPTConfig(vocab_size=VOCAB, hidden_size=32, ffn_dim=64, num_hidden_layers=2,
                                 num_attention_heads=4, max_position_embeddings=64, word_embed_proj_dim=32,
                                 pad_token_id=1, bos_token_id=0, eos_token_id=0)
    return transformers.OPTForCausalLM(cfg)


MODELS = {"llama": llama, "llama_tied": lambda: llama(tied=True), "gpt2": gpt2, "opt": opt}


def calib(n: int = 8, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (n, 16), generator=torch.Generator().manual_seed(seed))


def saved(family: str, folder, shard: str | None = None, seed: int = 0):
    torch.manual_seed(seed)
    model = MODELS[family]()
    model.save_pretrained(folder, **({"max_shard_size": shard} if shard else {}))
    return folder


def load(folder):
    return transformers.AutoModelForCausalLM.from_pretrained(folder).eval()


def logits(model, x):
    with torch.no_grad():
        return model(x).logits


@pytest.mark.parametrize("family,method,shard,kwargs", [
    ("llama", "sparsegpt", "20KB", {}),
    ("llama_tied", "wanda", None, {"head": True, "embeddings": True}),
    ("gpt2", "wanda", "20KB", {"head": True, "embeddings": True}),  # GPT-2's head is tied to wte
    ("opt", "sparsegpt", None, {"structure": "2:4"}),
    ("llama", "wanda", "20KB", {"owl": True, "sparsity": 0.6, "sequential": True}),
])
def test_streamed_folder_equals_loading_it_and_calling_oneshot_prune(family, method, shard, kwargs, tmp_path):
    source = saved(family, tmp_path / "in", shard)
    assert (source / "model.safetensors.index.json").is_file() == (shard is not None)
    files_before = {p.name: p.read_bytes() for p in source.iterdir()}
    kwargs = {"sparsity": 0.5, **kwargs} if "structure" not in kwargs else kwargs
    reference = load(source)
    expected = oneshot_prune(reference, calib(), method, **kwargs)
    result = prune_pretrained(source, tmp_path / "out", calib(), method, **kwargs)

    pruned = load(tmp_path / "out")
    state, ref_state = pruned.state_dict(), reference.state_dict()
    assert state.keys() == ref_state.keys()
    assert all(torch.equal(state[k], ref_state[k]) for k in state)  # same masks, same kept values
    x = calib(2, seed=5)
    assert torch.equal(logits(pruned, x), logits(reference, x))
    assert result.layer_sparsity == expected.layer_sparsity
    assert {p.name: p.read_bytes() for p in source.iterdir()} == files_before  # the input is only read
    assert result.block_sparsities == expected.block_sparsities
    assert [(r.name, r.params, r.nonzero) for r in result.report.rows] == \
        [(r.name, r.params, r.nonzero) for r in expected.report.rows]
    assert (result.report.model_params, result.report.model_nonzero) == \
        (expected.report.model_params, expected.report.model_nonzero)
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    blocks = len(find_blocks(reference)[1])
    shards = [f"model-{i:05d}-of-{blocks + 1:05d}.safetensors" for i in range(1, blocks + 2)]
    assert files == sorted(["config.json", "generation_config.json", "model.safetensors.index.json", *shards])
    if family in ("gpt2", "llama_tied"):
        assert pruned.get_output_embeddings().weight is pruned.get_input_embeddings().weight
        assert (pruned.get_output_embeddings().weight == 0).float().mean() == 0.5


def test_never_more_than_one_block_is_materialised(tmp_path, monkeypatch):
    source = saved("llama", tmp_path / "in", "20KB")
    seen, stores = watch_streamed_blocks(monkeypatch)
    prune_pretrained(source, tmp_path / "out", calib(), "sparsegpt", 0.5, owl=True)
    store = stores[0]
    assert len(seen) > 3 * 3 * 2  # OWL and pruning: every block loaded twice, run several times
    assert max(len(m) for m in seen) == 1
    assert all(m in ([], [0], [1], [2]) for m in seen)
    assert materialised_blocks(store) == []  # all blocks back on meta at the end
    assert all(p.device.type == "cpu" for n, p in store.slots.model.named_parameters() if ".layers." not in n)


def test_a_failure_leaves_no_output_and_the_input_untouched(tmp_path, monkeypatch):
    source = saved("llama", tmp_path / "in", "20KB")
    before = {p.name: p.read_bytes() for p in source.iterdir()}
    calls = {"n": 0}
    real = Wanda.score_layer

    def score_layer(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 9:  # in the second block
            raise RuntimeError("injected failure")
        return real(*args, **kwargs)

    monkeypatch.setattr(Wanda, "score_layer", score_layer)
    with pytest.raises(RuntimeError, match="injected"):
        prune_pretrained(source, tmp_path / "out", calib(), "wanda", 0.5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]  # no out, no partial folder
    assert {p.name: p.read_bytes() for p in source.iterdir()} == before


def test_a_checkpoint_saved_from_the_bare_model_is_read_through_the_base_prefix(tmp_path):
    torch.manual_seed(0)
    full = gpt2()
    full.transformer.save_pretrained(tmp_path / "in")  # keys "h.0.attn…", "wte.weight": no "transformer."
    config = json.loads((tmp_path / "in" / "config.json").read_text())
    config["architectures"] = ["GPT2LMHeadModel"]
    (tmp_path / "in" / "config.json").write_text(json.dumps(config))
    prune_pretrained(tmp_path / "in", tmp_path / "out", calib(), "wanda", 0.5)
    reference = load(tmp_path / "in")
    oneshot_prune(reference, calib(), "wanda", 0.5)
    x = calib(2, seed=5)
    assert torch.equal(logits(load(tmp_path / "out"), x), logits(reference, x))


def _bad_folders(tmp_path):
    good = saved("llama", tmp_path / "good")
    no_config = tmp_path / "no_config"
    no_config.mkdir()
    (no_config / "model.safetensors").write_bytes((good / "model.safetensors").read_bytes())
    bin_only = tmp_path / "bin_only"
    bin_only.mkdir()
    (bin_only / "config.json").write_text((good / "config.json").read_text())
    (bin_only / "pytorch_model.bin").write_bytes(b"")
    missing = tmp_path / "missing"
    missing.mkdir()
    (missing / "config.json").write_text((good / "config.json").read_text())
    state = {k: v for k, v in llama().state_dict().items() if k != "model.layers.1.mlp.up_proj.weight"}
    save_file({k: v.contiguous() for k, v in state.items()}, str(missing / "model.safetensors"))
    full_out = tmp_path / "full"
    full_out.mkdir()
    (full_out / "x").write_text("x")
    return [
        (no_config, tmp_path / "o1", {}, "model_dir"),
        (bin_only, tmp_path / "o2", {}, "model_dir"),
        (missing, tmp_path / "o3", {}, "model_dir"),
        (good, good, {}, "out_dir"),
        (good, full_out, {}, "out_dir"),
        (good, tmp_path / "o4", {"sparsity": 1.5}, "sparsity"),
        (good, tmp_path / "o5", {"structure": "3:5"}, "structure"),
    ]


def test_bad_folders_and_arguments_raise_before_anything_is_written(tmp_path):
    for source, out, kwargs, param in _bad_folders(tmp_path):
        before = sorted(p.name for p in tmp_path.iterdir())
        with pytest.raises(InvalidParameterError) as info:
            prune_pretrained(source, out, calib(), "wanda", **kwargs)
        assert info.value.param == param, (source.name, out.name)
        assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_top_level_name():
    import prunekit

    assert prunekit.prune_pretrained is prune_pretrained and "prune_pretrained" in prunekit.__all__
