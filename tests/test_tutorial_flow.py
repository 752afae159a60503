"""The PyTorch pruning tutorial (torch.nn.utils.prune), step by step, with prunekit.

https://pytorch.org/tutorials/intermediate/pruning_tutorial.html, on its LeNet.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import prune as tp

import prunekit
from conftest import keep_mask

WEIGHTS = ("conv1", "conv2", "fc1", "fc2", "fc3")


def test_lenet_architecture(lenet):
    shapes = {name: tuple(getattr(lenet, name).weight.shape) for name in WEIGHTS}
    assert shapes == {
        "conv1": (6, 1, 3, 3),
        "conv2": (16, 6, 3, 3),
        "fc1": (120, 400),
        "fc2": (84, 120),
        "fc3": (10, 84),
    }
    assert lenet(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_tutorial_steps_on_conv1(lenet, lenet_input):
    conv1 = lenet.conv1
    original_weight = conv1.weight
    original_bias = conv1.bias

    # 1. random unstructured, 30% of conv1.weight
    prunekit.prune(lenet, 0.3, criterion="random", targets=[(conv1, "weight")])
    assert [n for n, _ in conv1.named_parameters()] == ["bias", "weight_orig"]
    assert conv1.weight_orig is original_weight
    assert "weight_mask" in dict(conv1.named_buffers())
    mask1 = keep_mask(conv1).clone()
    assert int((~mask1).sum()) == round(0.3 * 54) == 16
    assert torch.equal(conv1.weight, conv1.weight_orig * conv1.weight_mask)
    assert len(conv1._forward_pre_hooks) == 1

    # 2. L1 unstructured on conv1.bias, by count (3 entries)
    bias_values = original_bias.detach().clone()
    prunekit.prune(lenet, 3, criterion="l1", targets=[(conv1, "bias")])
    bias_mask = keep_mask(conv1, "bias")
    assert int((~bias_mask).sum()) == 3
    smallest = set(bias_values.abs().argsort()[:3].tolist())
    assert set(torch.nonzero(~bias_mask).reshape(-1).tolist()) == smallest
    assert conv1.bias_orig is original_bias
    assert len(conv1._forward_pre_hooks) == 2

    # 3. L2 structured 50% along dim 0, on top of the random mask
    effective_before = conv1.weight.detach().clone()
    prunekit.prune(lenet, 0.5, criterion="l2", structure="channel:0", targets=[(conv1, "weight")])
    mask2 = keep_mask(conv1)
    assert not bool((mask2 & ~mask1).any()), "the new mask must be a subset of the old one"
    dead = [c for c in range(6) if not bool(mask2[c].any())]
    assert len(dead) == 3
    # channels pruned are those of lowest L2 norm of the current (masked) weights
    norms = effective_before.flatten(1).norm(p=2, dim=1)
    assert set(dead) == set(norms.argsort()[:3].tolist())
    # kept channels keep exactly the random mask
    alive = [c for c in range(6) if c not in dead]
    assert torch.equal(mask2[alive], mask1[alive])

    # the state dict has the torch layout
    keys = set(lenet.state_dict())
    assert {"conv1.weight_orig", "conv1.bias_orig", "conv1.weight_mask", "conv1.bias_mask"} <= keys
    assert "conv1.weight" not in keys and "conv1.bias" not in keys
    assert {"fc1.weight", "fc1.bias", "conv2.weight"} <= keys
    assert tp.is_pruned(lenet)

    # the hook for weight is a torch PruningContainer holding both methods
    hooks = [h for h in conv1._forward_pre_hooks.values() if h._tensor_name == "weight"]
    assert len(hooks) == 1
    container = hooks[0]
    assert isinstance(container, tp.PruningContainer)
    assert len(container._pruning_methods) == 2
    assert all(isinstance(m, tp.BasePruningMethod) for m in container._pruning_methods)
    bias_hooks = [h for h in conv1._forward_pre_hooks.values() if h._tensor_name == "bias"]
    assert len(bias_hooks) == 1 and not isinstance(bias_hooks[0], tp.PruningContainer)

    # 4. torch's remove makes it permanent, outputs unchanged
    lenet.eval()
    with torch.no_grad():
        before = lenet(lenet_input)
    tp.remove(conv1, "weight")
    assert "weight_orig" not in dict(conv1.named_parameters())
    assert "weight_mask" not in dict(conv1.named_buffers())
    assert isinstance(conv1.weight, nn.Parameter)
    assert torch.equal(conv1.weight != 0, mask2 & (effective_before != 0))
    with torch.no_grad():
        after = lenet(lenet_input)
    assert torch.equal(before, after)
    report = prunekit.sparsity_report(lenet, params=("weight", "bias"))
    assert report["conv1.weight"].state == "dense"
    assert report["conv1.bias"].state == "reparam"
    assert report["conv1.weight"].nonzero == int(mask2.sum())


def test_iterative_pruning_of_many_parameters_with_overrides(lenet):
    prunekit.prune(lenet, 0.4, overrides={"conv*": 0.2})
    report = prunekit.sparsity_report(lenet)
    for name in ("conv1", "conv2"):
        module = getattr(lenet, name)
        assert int((~keep_mask(module)).sum()) == round(0.2 * module.weight.numel())
        assert report[f"{name}.weight"].zeros == round(0.2 * module.weight.numel())
    for name in ("fc1", "fc2", "fc3"):
        module = getattr(lenet, name)
        assert int((~keep_mask(module)).sum()) == round(0.4 * module.weight.numel())
    keys = set(lenet.state_dict())
    assert all(f"{n}.weight_mask" in keys for n in WEIGHTS)
    assert not any(k.endswith("bias_mask") for k in keys)


def test_iterative_pruning_two_calls_same_as_overrides(lenet):
    import copy

    other = copy.deepcopy(lenet)
    prunekit.prune(lenet, 0.2, criterion="l1", types=[nn.Conv2d])
    prunekit.prune(lenet, 0.4, criterion="l1", types=[nn.Linear])
    prunekit.prune(other, 0.4, criterion="l1", overrides={"conv*": 0.2})
    for name in WEIGHTS:
        assert torch.equal(keep_mask(getattr(lenet, name)), keep_mask(getattr(other, name))), name
    report = prunekit.sparsity_report(lenet)
    assert [r.name for r in report.rows] == [f"{n}.weight" for n in WEIGHTS]
    assert report["conv1.weight"].sparsity == pytest.approx(round(0.2 * 54) / 54)
    assert report["fc1.weight"].sparsity == pytest.approx(0.4)


def test_global_pruning_reports_exact_twenty_percent(lenet):
    targets = [(getattr(lenet, n), "weight") for n in WEIGHTS]
    prunekit.prune(lenet, 0.2, criterion="l1", scope="global", targets=targets)
    report = prunekit.sparsity_report(lenet)
    total = sum(getattr(lenet, n).weight.numel() for n in WEIGHTS)
    assert report.params == total == 59838
    assert report.params - report.nonzero == round(0.2 * total)
    assert f"{100 * report.sparsity:.2f}%" == "20.00%"
    assert "20.00%" in report.table()
    # per-layer figures are reported and add up
    per_layer = {r.name: r.sparsity for r in report.rows}
    assert set(per_layer) == {f"{n}.weight" for n in WEIGHTS}
    assert sum(r.zeros for r in report.rows) == round(0.2 * total)
    assert len(set(round(v, 4) for v in per_layer.values())) > 1, "global pruning differs per layer"
    # the global threshold: every pruned |w| <= every kept |w|
    pruned, kept = [], []
    for n in WEIGHTS:
        m = getattr(lenet, n)
        mask = keep_mask(m)
        pruned.append(m.weight_orig.detach()[~mask].abs())
        kept.append(m.weight_orig.detach()[mask].abs())
    assert float(torch.cat(pruned).max()) <= float(torch.cat(kept).min())
    data = report.to_dict()
    assert data["total"]["params"] == total
    assert data["total"]["sparsity"] == pytest.approx(round(0.2 * total) / total)


def test_global_matches_torch_global_unstructured(lenet):
    import copy

    theirs = copy.deepcopy(lenet)
    prunekit.prune(lenet, 0.2, criterion="l1", scope="global", targets=[(getattr(lenet, n), "weight") for n in WEIGHTS])
    tp.global_unstructured(
        [(getattr(theirs, n), "weight") for n in WEIGHTS], pruning_method=tp.L1Unstructured, amount=0.2
    )
    for n in WEIGHTS:
        ours = getattr(lenet, n).weight_mask
        ref = getattr(theirs, n).weight_mask
        assert ours.dtype == ref.dtype
        assert torch.equal(ours, ref), n
        assert torch.equal(getattr(lenet, n).weight, getattr(theirs, n).weight), n


@pytest.mark.parametrize("amount", [0.1, 0.3, 0.5, 0.77])
def test_l1_unstructured_matches_torch(lenet, amount):
    import copy

    theirs = copy.deepcopy(lenet)
    prunekit.prune(lenet, amount, criterion="l1", targets=[(lenet.fc2, "weight"), (lenet.conv2, "weight")])
    tp.l1_unstructured(theirs.fc2, "weight", amount=amount)
    tp.l1_unstructured(theirs.conv2, "weight", amount=amount)
    assert torch.equal(lenet.fc2.weight_mask, theirs.fc2.weight_mask)
    assert torch.equal(lenet.conv2.weight_mask, theirs.conv2.weight_mask)
    assert torch.equal(lenet.fc2.weight, theirs.fc2.weight)
    assert set(lenet.state_dict()) == set(theirs.state_dict())


@pytest.mark.parametrize("dim", [0, 1])
@pytest.mark.parametrize("n", [1, 2, 3])
def test_ln_structured_matches_torch(lenet, dim, n):
    import copy

    theirs = copy.deepcopy(lenet)
    criterion = {1: "l1", 2: "l2", 3: "lnorm:3"}[n]
    prunekit.prune(lenet, 0.5, criterion=criterion, structure=f"channel:{dim}", targets=[(lenet.conv2, "weight")])
    tp.ln_structured(theirs.conv2, "weight", amount=0.5, n=n, dim=dim)
    assert torch.equal(lenet.conv2.weight_mask, theirs.conv2.weight_mask)


def test_torch_pruned_model_can_be_pruned_further(lenet):
    tp.l1_unstructured(lenet.fc1, "weight", amount=0.3)
    torch_mask = lenet.fc1.weight_mask.clone()
    report = prunekit.sparsity_report(lenet)
    assert report["fc1.weight"].state == "reparam"
    assert report["fc1.weight"].zeros == round(0.3 * 48000)

    prunekit.prune(lenet, 0.5, criterion="l1", targets=[(lenet.fc1, "weight")])
    hook = next(h for h in lenet.fc1._forward_pre_hooks.values() if h._tensor_name == "weight")
    assert isinstance(hook, tp.PruningContainer)
    assert len(hook._pruning_methods) == 2
    assert isinstance(hook._pruning_methods[0], tp.L1Unstructured)
    new_mask = lenet.fc1.weight_mask
    assert bool(((torch_mask == 0) <= (new_mask == 0)).all()), "zeros only grow"
    report = prunekit.sparsity_report(lenet)
    assert report["fc1.weight"].zeros == 24000
    assert report["fc1.weight"].sparsity == 0.5
    assert int((lenet.fc1.weight == 0).sum()) == 24000
    prunekit.make_permanent(lenet)
    assert not tp.is_pruned(lenet)
    assert int((lenet.fc1.weight == 0).sum()) == 24000


def test_torch_method_after_prunekit_composes(lenet, lenet_input):
    prunekit.prune(lenet, 0.5, criterion="l1", targets=[(lenet.fc1, "weight")])
    first = lenet.fc1.weight_mask.clone()
    tp.l1_unstructured(lenet.fc1, "weight", amount=0.1)  # 10% of what remains
    hook = next(h for h in lenet.fc1._forward_pre_hooks.values() if h._tensor_name == "weight")
    assert isinstance(hook, tp.PruningContainer)
    assert isinstance(hook._pruning_methods[-1], tp.L1Unstructured)
    mask = lenet.fc1.weight_mask
    assert bool(((first == 0) <= (mask == 0)).all())
    assert int((mask == 0).sum()) == 24000 + 2400
    assert prunekit.sparsity_report(lenet)["fc1.weight"].sparsity == pytest.approx(0.55)
    lenet.eval()
    with torch.no_grad():
        before = lenet(lenet_input)
    tp.remove(lenet.fc1, "weight")
    with torch.no_grad():
        assert torch.equal(before, lenet(lenet_input))


class FooBarPruningMethod(tp.BasePruningMethod):
    """The tutorial's custom method: prune every other entry."""

    PRUNING_TYPE = "unstructured"

    def compute_mask(self, t, default_mask):
        mask = default_mask.clone()
        mask.view(-1)[::2] = 0
        return mask


def test_custom_method_every_other_entry_torch_style(lenet):
    FooBarPruningMethod.apply(lenet.fc3, "bias")
    assert torch.equal(
        lenet.fc3.bias_mask, torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0])
    )
    report = prunekit.sparsity_report(lenet, params=("weight", "bias"))
    assert report["fc3.bias"].zeros == 5 and report["fc3.bias"].state == "reparam"


def test_custom_criterion_every_other_entry():
    name = "every_other_test"

    @prunekit.register_score(name, unit_spaces=prunekit.scores.MASK_SPACES)
    def every_other(target):
        scores = torch.ones(target.numel)
        scores[::2] = 0
        return scores.view(target.shape)

    try:
        assert name in prunekit.list_scores(unit_space="element")
        torch.manual_seed(0)
        model = prunekit.create_model("tutorial_lenet")
        with torch.no_grad():
            model.fc3.bias.copy_(torch.arange(1.0, 11.0))
        prunekit.prune(model, 0.5, criterion=name, targets=[(model.fc3, "bias")])
        assert torch.nonzero(model.fc3.bias == 0).reshape(-1).tolist() == [0, 2, 4, 6, 8]
        assert torch.equal(model.fc3.bias_mask, torch.tensor([0.0, 1.0] * 5))
        assert set(model.state_dict()) >= {"fc3.bias_orig", "fc3.bias_mask"}
        assert tp.is_pruned(model)
    finally:
        prunekit.scores.SCORES.unregister(name)
    assert name not in prunekit.list_scores(unit_space="element")


def test_pruner_step_is_iterative(lenet):
    pruner = prunekit.Pruner(lenet, criterion="l1", include="fc*")
    masks = []
    for s in (0.2, 0.5, 0.8):
        pruner.step(s)
        masks.append(keep_mask(lenet.fc2).clone())
        assert int((~masks[-1]).sum()) == round(s * 10080)
        report = pruner.report()
        assert [r.name for r in report.rows] == ["fc1.weight", "fc2.weight", "fc3.weight"]
        assert report["fc2.weight"].sparsity == pytest.approx(round(s * 10080) / 10080)
    assert bool((masks[2] <= masks[1]).all()) and bool((masks[1] <= masks[0]).all())
    hook = next(h for h in lenet.fc2._forward_pre_hooks.values() if h._tensor_name == "weight")
    assert isinstance(hook, tp.PruningContainer) and len(hook._pruning_methods) == 3
    assert pruner.steps == 3
