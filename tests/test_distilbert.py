"""Hugging Face models built from small configs (no download)."""

from __future__ import annotations

import pytest
import torch

import prunekit

transformers = pytest.importorskip("transformers")


@pytest.fixture
def distilbert():
    from transformers import DistilBertConfig, DistilBertModel

    torch.manual_seed(0)
    config = DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=64, vocab_size=100, max_position_embeddings=64)
    model = DistilBertModel(config).eval()
    # HF initialises biases to zero; give them values so they compete with the weights
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.02)
    return model


@pytest.fixture
def gpt2():
    from transformers import GPT2Config, GPT2Model

    torch.manual_seed(0)
    config = GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=100, n_positions=32)
    return GPT2Model(config).eval()


QKV = ["*.q_lin", "*.k_lin", "*.v_lin"]


def _qkv_modules(model):
    return [
        (name, module)
        for name, module in model.named_modules()
        if name.rsplit(".", 1)[-1] in ("q_lin", "k_lin", "v_lin")
    ]


def test_distilbert_global_qkv_weights_and_biases(distilbert):
    ids = torch.randint(0, 100, (2, 10), generator=torch.Generator().manual_seed(0))
    modules = _qkv_modules(distilbert)
    assert len(modules) == 6
    total = sum(m.weight.numel() + m.bias.numel() for _, m in modules)
    assert total == 6 * (32 * 32 + 32)

    prunekit.prune(distilbert, 0.2, criterion="l1", scope="global", include=QKV, params=("weight", "bias"))

    report = prunekit.sparsity_report(distilbert, include=QKV, params=("weight", "bias"))
    names = {r.name for r in report.rows}
    assert names == {f"{n}.{p}" for n, _ in modules for p in ("weight", "bias")}
    assert report.params == total
    assert report.params - report.nonzero == round(0.2 * total)
    assert f"{100 * report.sparsity:.2f}" == f"{100 * round(0.2 * total) / total:.2f}"
    assert abs(report.sparsity - 0.2) <= 1 / total
    pruned_masks = sum(int((m._buffers[p + "_mask"] == 0).sum()) for _, m in modules for p in ("weight", "bias"))
    assert pruned_masks == round(0.2 * total)
    # only the selected tensors were touched
    for name, module in distilbert.named_modules():
        if name.endswith(("out_lin", "lin1", "lin2")):
            assert "weight_mask" not in module._buffers
    # global threshold over weights and biases together
    values = torch.cat([getattr(m, p + "_orig").detach().abs().reshape(-1) for _, m in modules for p in ("weight", "bias")])
    masks = torch.cat([m._buffers[p + "_mask"].reshape(-1) for _, m in modules for p in ("weight", "bias")])
    assert float(values[masks == 0].max()) <= float(values[masks != 0].min())
    assert any(int((m.bias_mask == 0).sum()) > 0 for _, m in modules), "biases compete in the ranking"

    with torch.no_grad():
        before = distilbert(input_ids=ids).last_hidden_state
    prunekit.make_permanent(distilbert)
    keys = list(distilbert.state_dict())
    assert not any(k.endswith(("_orig", "_mask")) for k in keys)
    assert not torch.nn.utils.prune.is_pruned(distilbert)
    with torch.no_grad():
        after = distilbert(input_ids=ids).last_hidden_state
    torch.testing.assert_close(after, before, rtol=0, atol=0)
    zeros = sum(int((getattr(m, p) == 0).sum()) for _, m in modules for p in ("weight", "bias"))
    assert zeros == round(0.2 * total)


def test_distilbert_inplace_mode_round_trip(distilbert, tmp_path):
    from transformers import DistilBertModel

    prunekit.prune(distilbert, 0.5, include=QKV, mode="inplace")
    path = tmp_path / "distil.safetensors"
    prunekit.save_sparse(distilbert, path)
    torch.manual_seed(1)
    fresh = DistilBertModel(distilbert.config).eval()
    prunekit.load_sparse(path, fresh)
    for (name, a), (_, b) in zip(distilbert.state_dict().items(), fresh.state_dict().items()):
        assert torch.equal(a, b), name
    ids = torch.randint(0, 100, (1, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(
            fresh(input_ids=ids).last_hidden_state, distilbert(input_ids=ids).last_hidden_state, rtol=0, atol=0
        )


def test_gpt2_conv1d_layout(gpt2):
    targets = prunekit.select_targets(gpt2)
    conv1d = [t for t in targets if type(t.module).__name__ == "Conv1D"]
    assert len(conv1d) == 8  # c_attn, c_proj, mlp.c_fc, mlp.c_proj per layer
    attn = next(t for t in conv1d if t.name == "h.0.attn.c_attn.weight")
    assert tuple(attn.shape) == (32, 96)  # (in, out)
    assert attn.out_dim == 1 and attn.in_dim == 0


def test_gpt2_conv1d_two_four_along_input(gpt2):
    ids = torch.randint(0, 100, (2, 8), generator=torch.Generator().manual_seed(0))
    originals = {n: m.weight.detach().clone() for n, m in gpt2.named_modules() if type(m).__name__ == "Conv1D"}
    prunekit.prune(gpt2, structure="2:4", criterion="l1")
    checked = 0
    for name, module in gpt2.named_modules():
        if type(module).__name__ != "Conv1D":
            continue
        w = module.weight.detach()  # (in, out): groups of 4 consecutive inputs per output
        n_in, n_out = w.shape
        mask = module.weight_mask != 0
        groups = mask.reshape(n_in // 4, 4, n_out)
        assert bool((groups.sum(dim=1) == 2).all()), name
        # the two kept entries of each group are its two largest |w|
        orig = originals[name].abs().reshape(n_in // 4, 4, n_out)
        top = orig.topk(2, dim=1).indices
        expected = torch.zeros_like(groups).scatter_(1, top, True)
        assert torch.equal(groups, expected), name
        # and not along the output dim (which a layout mix-up would give)
        along_out = mask.reshape(n_in, n_out // 4, 4).sum(dim=2)
        assert not bool((along_out == 2).all()), name
        assert int((w == 0).sum()) == w.numel() // 2
        checked += 1
    assert checked == 8
    with torch.no_grad():
        out = gpt2(input_ids=ids).last_hidden_state
    assert torch.isfinite(out).all()
    prunekit.make_permanent(gpt2)
    with torch.no_grad():
        torch.testing.assert_close(gpt2(input_ids=ids).last_hidden_state, out, rtol=0, atol=0)


def test_gpt2_channel_and_block_follow_conv1d_layout(gpt2):
    # "channel" means the output dim, which is dim 1 for Conv1D
    prunekit.prune(gpt2, 0.25, structure="channel", include="h.0.attn.c_attn")
    mask = gpt2.h[0].attn.c_attn.weight_mask != 0  # (32 in, 96 out)
    col_alive = mask.any(dim=0)
    assert int((~col_alive).sum()) == round(0.25 * 96)
    assert bool((mask.all(dim=0) == col_alive).all()), "whole output columns"
    # blocks of rows x cols over (out, in): 4 outputs x 8 inputs -> a (8 in, 4 out) tile of Conv1D's weight
    prunekit.prune(gpt2, 0.5, structure="block:4x8", include="h.1.mlp.c_fc")
    m = gpt2.h[1].mlp.c_fc.weight_mask != 0  # (32 in, 128 out)
    tiles = m.reshape(32 // 8, 8, 128 // 4, 4)
    per_tile = tiles.sum(dim=(1, 3))
    assert bool(((per_tile == 0) | (per_tile == 32)).all())
    assert int((per_tile == 0).sum()) == round(0.5 * per_tile.numel())
