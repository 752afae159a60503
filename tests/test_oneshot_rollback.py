"""``oneshot_prune`` is all or nothing: a failure in the middle of the pass leaves the model bit for bit
as it was (no masks, hooks or buffers added, offload files removed) and the exception propagates."""

from __future__ import annotations

import pytest
import torch

import prunekit
from prunekit.errors import PrunekitError
from prunekit.masks import pruned_tensors
from prunekit.oneshot import sparsegpt as sparsegpt_module
from prunekit.scores.calibration import Wanda
from prunekit.oneshot import oneshot_prune

pytest.importorskip("transformers")

from test_oneshot import (  # the same tiny LLaMA (2 blocks) and calibration ids
    calib,
    llama,
)


def snapshot(model) -> dict:
    """Every tensor (parameters and all buffers, persistent or not) by name, and the hooks of every module."""
    return {
        "tensors": {n: t.detach().clone() for n, t in (*model.named_parameters(), *model.named_buffers())},
        "hooks": {n: (len(m._forward_pre_hooks), len(m._forward_hooks)) for n, m in model.named_modules()},
        "training": model.training,
    }


def assert_untouched(model, before: dict) -> None:
    after = snapshot(model)
    assert after["tensors"].keys() == before["tensors"].keys()
    for name, tensor in before["tensors"].items():
        got = after["tensors"][name]
        assert got.dtype == tensor.dtype and got.device == tensor.device, name
        assert torch.equal(got, tensor), name  # bit for bit (no NaN in these weights)
    assert after["hooks"] == before["hooks"]
    assert after["training"] == before["training"]
    assert not torch.nn.utils.prune.is_pruned(model) and pruned_tensors(model) == []


class FailIn:
    """Let calls through until the pass reaches block ``block`` (None: the head, after the last
    block), then fail from the ``nth`` call there on."""

    def __init__(self, block: int | None, nth: int = 2) -> None:
        self.block, self.nth = block, nth
        self.reached = False
        self.calls = 0

    def progress(self, event) -> None:
        if event.stage != "prune":
            return
        if self.block is None:
            self.reached = event.status == "done" and event.block == event.blocks - 1
        elif event.status == "start":
            self.reached = event.block == self.block

    def armed(self) -> bool:
        if self.reached:
            self.calls += 1
        return self.calls >= self.nth


def _failing_cholesky(monkeypatch, fail: FailIn) -> None:
    """Every Cholesky factorisation of a layer reports failure (info = 1) once ``fail`` is armed."""
    real_cholesky, real_prune = torch.linalg.cholesky_ex, sparsegpt_module.sparsegpt_prune
    state = {"fail": False}

    def sparsegpt_prune(*args, **kwargs):
        state["fail"] = fail.armed()
        return real_prune(*args, **kwargs)

    def cholesky_ex(matrix, *args, upper=False, **kwargs):
        lower, info = real_cholesky(matrix, *args, upper=upper, **kwargs)
        return (lower, torch.ones_like(info)) if state["fail"] and not upper else (lower, info)

    monkeypatch.setattr(sparsegpt_module, "sparsegpt_prune", sparsegpt_prune)
    monkeypatch.setattr(torch.linalg, "cholesky_ex", cholesky_ex)


def _failing_wanda(monkeypatch, fail: FailIn) -> None:
    real = Wanda.score_layer

    def score_layer(*args, **kwargs):
        if fail.armed():
            raise RuntimeError("injected failure in a criterion")
        return real(*args, **kwargs)

    monkeypatch.setattr(Wanda, "score_layer", score_layer)


@pytest.mark.parametrize("offload", ["none", "disk"])
@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_a_failure_in_the_second_block_leaves_the_model_bit_exact(method, offload, monkeypatch, tmp_path, caplog):
    model = llama()
    before = snapshot(model)
    fail = FailIn(block=1)
    (_failing_wanda if method == "wanda" else _failing_cholesky)(monkeypatch, fail)
    directory = tmp_path / "offload"
    expected = (RuntimeError, "injected") if method == "wanda" else (PrunekitError, "not positive definite")
    with pytest.raises(expected[0], match=expected[1]):
        oneshot_prune(model, calib(), method=method, sparsity=0.5, offload=offload, progress=fail.progress,
                      offload_dir=str(directory) if offload == "disk" else None)
    assert fail.calls >= 2  # block 0 was pruned and block 1 partly, before the failure
    assert_untouched(model, before)
    assert "restoring the model" in caplog.text
    if offload == "disk":
        assert list(directory.iterdir()) == []  # no block files, no copies of the originals
    monkeypatch.undo()
    # and the model still prunes normally afterwards
    result = oneshot_prune(model, calib(), method=method, sparsity=0.5)
    assert all(s == 0.5 for s in result.layer_sparsity.values())


@pytest.mark.parametrize("mode", ["reparam", "inplace"])
def test_masked_modes_leave_no_mask_hook_or_buffer_after_a_failure(mode, monkeypatch):
    model = llama()
    before = snapshot(model)
    fail = FailIn(block=1, nth=5)
    _failing_wanda(monkeypatch, fail)
    with pytest.raises(RuntimeError, match="injected"):
        oneshot_prune(model, calib(), method="wanda", mode=mode, offload="cpu", progress=fail.progress)
    assert_untouched(model, before)


def test_a_failure_while_pruning_the_head_restores_the_blocks_too(monkeypatch):
    model = llama()
    before = snapshot(model)
    fail = FailIn(block=None, nth=1)
    _failing_wanda(monkeypatch, fail)
    with pytest.raises(RuntimeError, match="injected"):
        oneshot_prune(model, calib(), method="wanda", head=True, progress=fail.progress)
    assert fail.calls == 1  # the head's call, after both blocks were pruned
    assert_untouched(model, before)


def test_a_previously_masked_model_keeps_its_masks_after_a_failure(monkeypatch):
    model = llama()
    oneshot_prune(model, calib(), method="magnitude", sparsity=0.3, mode="reparam")
    masks = {n: b.clone() for n, b in model.named_buffers() if n.endswith("_mask")}
    before = snapshot(model)
    fail = FailIn(block=1)
    _failing_wanda(monkeypatch, fail)
    with pytest.raises(RuntimeError, match="injected"):
        oneshot_prune(model, calib(), method="wanda", sparsity=0.5, mode="reparam", progress=fail.progress)
    after = snapshot(model)
    assert all(torch.equal(after["tensors"][n], t) for n, t in before["tensors"].items())
    assert after["hooks"] == before["hooks"]
    assert all(torch.equal(dict(model.named_buffers())[n], m) for n, m in masks.items())


def test_reparam_wanda_keeps_the_original_values_under_the_mask():
    model = llama()
    dense = model.model.layers[1].mlp.down_proj.weight.detach().clone()
    oneshot_prune(model, calib(), method="wanda", mode="reparam")
    layer = model.model.layers[1].mlp.down_proj
    assert torch.equal(layer.weight_orig, dense)  # the mask alone prunes
    assert (layer.weight_mask == 0).float().mean() == 0.5
    assert torch.equal(layer.weight, dense * layer.weight_mask)


def test_disk_offload_removes_the_copies_of_the_originals_on_success(tmp_path):
    model = llama()
    oneshot_prune(model, calib(), method="sparsegpt", offload="disk", offload_dir=str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["block_0.safetensors", "block_1.safetensors"]
    assert prunekit.sparsity_report(model, include="model.layers.*").sparsity == pytest.approx(0.5)
