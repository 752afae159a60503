"""Checkpoints: sparse safetensors, state dicts of pruned models, restore_masks."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from safetensors import safe_open

import prunekit
from conftest import keep_mask, make_tiny


@pytest.mark.parametrize("mode", ["reparam", "inplace"])
def test_save_load_sparse_restores_masks_in_same_mode(tmp_path, tiny, tiny_input, mode):
    prunekit.prune(tiny, 0.8, mode=mode)
    prunekit.prune(tiny, 0.5, params="bias", include="fc1", mode=mode)
    path = tmp_path / "tiny.safetensors"
    prunekit.save_sparse(tiny, path, metadata={"recipe": "test"})
    fresh = make_tiny(7)
    assert prunekit.load_sparse(path, fresh) is fresh
    report = prunekit.sparsity_report(fresh, params=("weight", "bias"))
    assert report["fc1.weight"].state == mode and report["fc1.bias"].state == mode
    assert report["fc2.bias"].state == "dense"
    for name in ("conv", "fc1", "fc2"):
        assert torch.equal(keep_mask(getattr(fresh, name)), keep_mask(getattr(tiny, name)))
        assert torch.equal(getattr(fresh, name).weight, getattr(tiny, name).weight)
    assert torch.equal(fresh.fc2.bias, tiny.fc2.bias)
    tiny.eval(), fresh.eval()
    with torch.no_grad():
        assert torch.equal(fresh(tiny_input), tiny(tiny_input))
    if mode == "reparam":
        assert fresh.fc1.weight_mask.dtype == tiny.fc1.weight_mask.dtype == torch.float32
        assert torch.nn.utils.prune.is_pruned(fresh)
    else:
        assert fresh.fc1.weight_mask.dtype == torch.bool
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata()
    assert meta["format"] == "prunekit-sparse"
    assert json.loads(meta["user"]) == {"recipe": "test"}


def test_load_sparse_without_model_gives_saved_layout(tmp_path, tiny):
    prunekit.prune(tiny, 0.5)
    path = tmp_path / "m.safetensors"
    prunekit.save_sparse(tiny, path)
    sd = prunekit.load_sparse(path)
    assert set(sd) == set(tiny.state_dict())
    assert "fc1.weight_orig" in sd and "fc1.weight_mask" in sd
    mask = tiny.fc1.weight_mask != 0
    assert torch.equal(sd["fc1.weight_orig"][mask], tiny.fc1.weight_orig.detach()[mask])
    assert bool((sd["fc1.weight_orig"][~mask] == 0).all())  # pruned originals are not stored
    assert torch.equal(sd["fc1.bias"], tiny.fc1.bias.detach())


@pytest.mark.parametrize("s,factor", [(0.9, 0.2), (0.99, 0.06)])
def test_sparse_file_is_small(tmp_path, s, factor):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(256, 256, bias=False))
    prunekit.prune(model, s)
    dense = 256 * 256 * 4
    size = prunekit.save_sparse(model, tmp_path / "m.safetensors")
    assert size < factor * dense
    prunekit.make_permanent(model)  # plain zeros are compressed too
    size_plain = prunekit.save_sparse(model, tmp_path / "p.safetensors")
    assert size_plain < factor * dense
    sd = prunekit.load_sparse(tmp_path / "p.safetensors")
    assert torch.equal(sd["0.weight"], model[0].weight.detach())


def test_save_sparse_from_state_dict_and_dtypes(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.BatchNorm1d(16)).to(torch.float64)
    prunekit.prune(model, 0.5)
    sd = model.state_dict()
    prunekit.save_sparse(sd, tmp_path / "m.safetensors")
    back = prunekit.load_sparse(tmp_path / "m.safetensors")
    assert set(back) == set(sd)
    for key, value in sd.items():
        assert back[key].dtype == value.dtype, key
        if not key.endswith("_orig"):
            assert torch.equal(back[key], value), key
    assert back["1.num_batches_tracked"].dtype == torch.int64


def test_save_is_atomic_and_overwrites(tmp_path, tiny):
    path = tmp_path / "sub" / "m.safetensors"
    prunekit.save_sparse(tiny, path)
    prunekit.prune(tiny, 0.5)
    prunekit.save_sparse(tiny, path)
    assert [p.name for p in path.parent.iterdir()] == ["m.safetensors"]
    assert "fc1.weight_mask" in prunekit.load_sparse(path)


def test_load_pruned_state_dict_from_torch_pruned_model(tiny, tiny_input):
    torch.nn.utils.prune.l1_unstructured(tiny.fc1, "weight", amount=0.4)
    torch.nn.utils.prune.random_structured(tiny.conv, "weight", amount=0.5, dim=0)
    fresh = make_tiny(3)
    prunekit.load_pruned_state_dict(fresh, tiny.state_dict())
    assert set(fresh.state_dict()) == set(tiny.state_dict())
    for key, value in tiny.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    with torch.no_grad():
        assert torch.equal(fresh(tiny_input), tiny(tiny_input))
    # the restored model prunes further like any other
    prunekit.prune(fresh, 0.6, include="fc1")
    assert int((fresh.fc1.weight_mask == 0).sum()) == round(0.6 * 2048)


def test_restore_masks_then_load_state_dict(tiny):
    prunekit.prune(tiny, 0.5)
    sd = tiny.state_dict()
    fresh = make_tiny(1)
    prunekit.restore_masks(fresh, sd)
    assert set(fresh.state_dict()) == set(sd)
    fresh.load_state_dict(sd)
    assert torch.equal(fresh.fc1.weight_mask, tiny.fc1.weight_mask)
    prunekit.restore_masks(fresh, sd)  # idempotent
    assert set(fresh.state_dict()) == set(sd)
    assert len(fresh.fc1._forward_pre_hooks) == 1


def test_load_into_model_pruned_in_other_mode_errors(tiny):
    prunekit.prune(tiny, 0.5, mode="inplace")
    other = make_tiny(1)
    prunekit.prune(other, 0.5, mode="reparam")
    with pytest.raises(prunekit.InvalidParameterError, match="model"):
        prunekit.load_pruned_state_dict(other, tiny.state_dict())


def test_load_state_dict_file_variants(tmp_path, tiny):
    from safetensors.torch import save_file

    prunekit.prune(tiny, 0.5)
    sd = {k: v.clone() for k, v in tiny.state_dict().items()}
    torch.save(sd, tmp_path / "a.pt")
    torch.save({"state_dict": sd, "epoch": 3}, tmp_path / "b.ckpt")
    save_file(sd, str(tmp_path / "c.safetensors"))
    prunekit.save_sparse(sd, tmp_path / "d.safetensors")
    for name in ("a.pt", "b.ckpt", "c.safetensors"):
        loaded = prunekit.load_state_dict_file(tmp_path / name)
        assert set(loaded) == set(sd), name
        assert all(torch.equal(loaded[k], sd[k]) for k in sd), name
    loaded = prunekit.load_state_dict_file(tmp_path / "d.safetensors")
    assert set(loaded) == set(sd)
    torch.save(torch.nn.Linear(2, 2), tmp_path / "whole.pt")  # a pickled module is refused
    with pytest.raises(prunekit.CheckpointError):
        prunekit.load_state_dict_file(tmp_path / "whole.pt")


def test_sparsity_report_from_state_dict(tiny):
    prunekit.prune(tiny, 0.5)
    report = prunekit.sparsity_report_from_state_dict(tiny.state_dict())
    names = [r.name for r in report.rows]
    assert names == ["conv.weight", "fc1.weight", "fc2.weight"]
    assert report["fc1.weight"].zeros == 1024 and report["fc1.weight"].state == "reparam"
    live = prunekit.sparsity_report(tiny)
    assert report.sparsity == live.sparsity
    assert report.model_params == live.model_params
    full = prunekit.sparsity_report_from_state_dict(tiny.state_dict(), all_tensors=True)
    assert "fc1.bias" in [r.name for r in full.rows]


def test_atomic_writes_have_the_usual_permissions(tmp_path):
    import os
    import stat

    path = tmp_path / "m.safetensors"
    prunekit.save_sparse(prunekit.create_model("tutorial_lenet"), path)
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


class _TiedLM(nn.Module):
    """An embedding and an output head sharing one weight (as GPT-2's lm_head and wte)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(50, 16)
        self.mid = nn.Linear(16, 16)
        self.head = nn.Linear(16, 50, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.mid(self.emb(ids))))


def _tied(seed: int = 0) -> _TiedLM:
    torch.manual_seed(seed)
    return _TiedLM()


@pytest.mark.parametrize("mode", [None, "reparam", "inplace"])
def test_tied_weights_save_sparse_round_trip(tmp_path, mode):
    model = _tied()
    if mode is not None:
        prunekit.prune(model, 0.5, mode=mode)
    ids = torch.randint(0, 50, (3, 7))
    expected = model(ids)
    path = tmp_path / "tied.safetensors"
    prunekit.save_sparse(model, path)
    state = prunekit.load_sparse(path)
    assert set(state) == set(model.state_dict())
    key = "emb.weight_orig" if mode == "reparam" else "emb.weight"
    if mode == "inplace":  # the head's mask makes it a different entry from the embedding's zeros
        assert torch.equal(state[key], state["head.weight"])
    else:
        assert state[key] is state[key.replace("emb", "head")]  # one tensor under both names
    fresh = prunekit.load_sparse(path, _tied(1))
    assert fresh.head.weight is fresh.emb.weight or mode == "reparam"
    torch.testing.assert_close(fresh(ids), expected, rtol=0, atol=0)


def test_tied_weight_pruned_in_reparam_mode_is_masked_in_every_holder():
    model = _tied()
    prunekit.prune(model, 0.5, mode="reparam")  # targets Linear weights: head (tied to emb), mid
    assert torch.equal(model.emb.weight, model.head.weight)  # the embedding reads the masked tensor too
    assert model.emb.weight_orig is model.head.weight_orig
    ids = torch.randint(0, 50, (3, 7))
    before = model(ids)
    prunekit.prune(model, 0.7, mode="reparam")  # a second step updates both holders
    assert model.emb.weight_mask is model.head.weight_mask
    assert torch.equal(model.emb.weight, model.head.weight)
    before = model(ids)
    prunekit.make_permanent(model)
    assert model.head.weight is model.emb.weight
    torch.testing.assert_close(model(ids), before, rtol=0, atol=0)
