"""The realisation registry and its built-in entries: reparam, inplace, permanent."""

from __future__ import annotations

import json

import pytest
import torch
from torch.nn.utils import prune as tp

import prunekit
from conftest import assert_unchanged, make_tiny, snapshot
from prunekit.cli import main
from prunekit.masks import InPlace, Permanent, Reparam, realisation_of, unregister_realisation
from prunekit.params import PRUNE_PARAMS
from prunekit.validation import validate


def test_builtin_realisations_are_registered_and_modes_follow_the_registry():
    assert prunekit.list_realisations() == ["inplace", "permanent", "reparam"]
    assert prunekit.list_realisations("re*") == ["reparam"]
    assert [type(prunekit.create_realisation(n)) for n in ("reparam", "inplace", "permanent")] == [
        Reparam, InPlace, Permanent]
    assert (Reparam.layout, InPlace.layout, Permanent.layout) == ("reparam", "inplace", "dense")

    @prunekit.register_realisation("live_check")
    class Live(InPlace):
        def masked(self, module):
            return []

    try:
        assert "live_check" in prunekit.masks.MODES  # read at each access
        assert validate(PRUNE_PARAMS, {"mode": "live_check"})["mode"] == "live_check"
    finally:
        unregister_realisation("live_check")
    assert "live_check" not in prunekit.masks.MODES
    with pytest.raises(prunekit.InvalidParameterError, match="^mode:"):
        validate(PRUNE_PARAMS, {"mode": "live_check"})


@pytest.mark.parametrize("mode", ["reparam", "inplace", "permanent"])
def test_permanent_equals_masking_then_make_permanent(tiny, tiny_input, mode):
    reference = make_tiny(0)
    prunekit.prune(reference, 0.6, scope="global", mode="reparam")
    prunekit.make_permanent(reference)
    prunekit.prune(tiny, 0.6, scope="global", mode=mode)
    if mode == "permanent":
        assert not prunekit.masks.pruned_tensors(tiny)
        assert all(not m._forward_pre_hooks and not m._buffers for m in tiny.modules())
        assert {r.state for r in prunekit.sparsity_report(tiny).rows} == {"dense"}
    prunekit.make_permanent(tiny)
    expected = dict(reference.named_parameters())  # (torch's remove re-registers weight after bias)
    assert sorted(expected) == sorted(n for n, _ in tiny.named_parameters())
    for name, p in tiny.named_parameters():
        assert torch.equal(p, expected[name]), name
    assert torch.equal(tiny(tiny_input), reference(tiny_input))


def test_permanent_steps_reach_each_level_with_magnitude(tiny):
    pruner = prunekit.Pruner(tiny, mode="permanent")
    pruner.step(0.5)
    weight = tiny.fc1.weight
    pruner.step(0.75)
    assert tiny.fc1.weight is weight  # the same Parameter, zeros written into it
    report = prunekit.sparsity_report(tiny)
    assert all(r.sparsity == pytest.approx(0.75, abs=1 / r.params) for r in report.rows)


def test_permanent_refuses_masked_tensors_and_checks_before_writing(tiny):
    prunekit.prune(tiny, 0.3, include="fc1", mode="reparam")
    before = snapshot(tiny)
    with pytest.raises(prunekit.InvalidParameterError, match=r"^mode:.*'reparam'.*make_permanent"):
        prunekit.prune(tiny, 0.5, mode="permanent")
    assert_unchanged(tiny, before)
    targets = prunekit.select_targets(tiny, include="fc2")
    with pytest.raises(prunekit.InvalidParameterError, match="^mask:"):
        prunekit.apply_masks(targets * 2, [torch.zeros(targets[0].shape, dtype=torch.bool), torch.zeros(3)],
                             mode="permanent")
    assert_unchanged(tiny, before)


def test_realisation_of_names_the_owner(tiny):
    prunekit.prune(tiny, 0.5, include="fc1", mode="inplace")
    prunekit.prune(tiny, 0.5, include="fc2", mode="reparam")
    tp.l1_unstructured(tiny.conv, "weight", amount=0.5)  # torch's own pruning reads as reparam
    assert isinstance(realisation_of(tiny.fc1, "weight"), InPlace)
    assert isinstance(realisation_of(tiny.fc2, "weight"), Reparam)
    assert isinstance(realisation_of(tiny.conv, "weight"), Reparam)
    assert realisation_of(tiny.fc1, "bias") is None
    assert [q for q, *_ in prunekit.masks.pruned_tensors(tiny)] == ["conv.weight", "fc1.weight", "fc2.weight"]
    prunekit.make_permanent(tiny)
    assert not prunekit.masks.pruned_tensors(tiny)


def test_cli_lists_realisations_and_prunes_permanently(tmp_path, capsys):
    assert main(["list", "realisations"]) == 0
    assert capsys.readouterr().out.split() == ["inplace", "permanent", "reparam"]
    out = tmp_path / "p"
    assert main(["prune", "lenet_300_100", "--sparsity", "0.5", "--mode", "permanent", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["report", str(out / "model.safetensors"), "--json", str(tmp_path / "r.json")]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["total"]["sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert {row["state"] for row in report["tensors"]} <= {"dense", "zeros"}
    assert main(["prune", "lenet_300_100", "--sparsity", "0.5", "--mode", "permanant"]) == 2
    assert "Did you mean 'permanent'?" in " ".join(capsys.readouterr().err.split())


def test_masks_modes_is_a_deprecated_view_of_the_registry() -> None:
    from prunekit.deprecation import reset_warnings

    reset_warnings()
    with pytest.warns(FutureWarning, match="prunekit.masks.MODES is deprecated.*list_realisations"):
        modes = prunekit.masks.MODES
    assert modes == tuple(prunekit.list_realisations())
