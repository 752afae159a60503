"""``save_dense``: a masked model as plain safetensors that a fresh, unpruned model loads with stock torch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.utils.prune as torch_prune
from safetensors.torch import load_file

import prunekit
from prunekit.errors import InvalidParameterError
from prunekit.export import dense_state_dict

from conftest import make_tiny


def _pruned(mode: str) -> torch.nn.Module:
    model = make_tiny(0)
    if mode == "torch":
        for module in (model.conv, model.fc1, model.fc2):
            torch_prune.l1_unstructured(module, "weight", amount=0.6)
    else:
        prunekit.prune(model, 0.6, mode=mode)
    return model


@pytest.mark.parametrize("mode", ["reparam", "inplace", "torch"])
def test_a_fresh_model_loads_the_dense_file_with_plain_torch_and_gives_the_pruned_outputs(tmp_path, tiny_input, mode):
    model = _pruned(mode).eval()
    path = tmp_path / "dense.safetensors"
    size = prunekit.save_dense(model, path)
    assert size == path.stat().st_size
    state = load_file(str(path))
    fresh = make_tiny(7).eval()
    assert sorted(state) == sorted(fresh.state_dict())  # weight, not weight_orig / weight_mask
    fresh.load_state_dict(state)  # strict, stock torch
    with torch.no_grad():
        assert torch.equal(fresh(tiny_input), model(tiny_input))
    zeros = (state["fc1.weight"] == 0).float().mean().item()
    assert zeros == pytest.approx(0.6, abs=0.01)


def test_dense_state_dict_holds_orig_times_mask_and_leaves_the_model_masked(tiny_input):
    model = _pruned("reparam")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    dense = dense_state_dict(model)
    assert torch.equal(dense["fc1.weight"], before["fc1.weight_orig"] * before["fc1.weight_mask"])
    assert torch.equal(dense["fc1.bias"], before["fc1.bias"])
    assert sorted(model.state_dict()) == sorted(before)  # still masked
    assert "fc1.weight_orig" in model.state_dict()


def test_the_same_model_gives_the_same_bytes(tmp_path):
    model = _pruned("reparam")
    prunekit.save_dense(model, tmp_path / "a.safetensors")
    prunekit.save_dense(model, tmp_path / "b.safetensors")
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()


def test_bad_arguments_name_the_parameter(tmp_path):
    with pytest.raises(InvalidParameterError, match="model_or_state_dict"):
        prunekit.save_dense(42, tmp_path / "x.safetensors")
    with pytest.raises(InvalidParameterError, match="path"):
        prunekit.save_dense(_pruned("reparam"), None)
    assert list(tmp_path.iterdir()) == []
