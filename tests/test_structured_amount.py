"""torch's relative ``amount`` with structures: a fraction (or count) of the channels, kernels or
blocks still unpruned, as ``torch.nn.utils.prune.ln_structured`` / ``random_structured``."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

import prunekit

CRITERION = {1: "magnitude", 2: "l2"}


def conv(seed: int = 0) -> nn.Conv2d:
    torch.manual_seed(seed)
    return nn.Conv2d(6, 10, 3)


def dead_slices(mask: torch.Tensor, dim: int) -> int:
    others = [d for d in range(mask.dim()) if d != dim]
    return int((mask.sum(dim=others) == 0).sum())


@pytest.mark.parametrize("dim", [0, 1])
@pytest.mark.parametrize("n", [1, 2])
def test_local_amount_gives_ln_structured_masks(dim, n):
    ours, theirs = conv(), conv()
    for amount in (0.3, 0.5, 2, 0.25):  # fractions of the slices left, and an int count
        torch_prune.ln_structured(theirs, "weight", amount=amount, n=n, dim=dim)
        prunekit.prune(ours, amount=amount, criterion=CRITERION[n], structure=f"channel:{dim}", min_keep=0,
                       targets=[(ours, "weight")])
        assert torch.equal(ours.weight_mask, theirs.weight_mask)
    assert dead_slices(theirs.weight_mask, dim) > 0


@pytest.mark.parametrize("dim", [0, 1])
def test_local_amount_prunes_as_many_slices_as_random_structured(dim):
    ours, theirs = conv(), conv()
    for amount in (0.3, 0.5, 1):
        torch_prune.random_structured(theirs, "weight", amount=amount, dim=dim)
        before = dead_slices(ours.weight_mask, dim) if hasattr(ours, "weight_mask") else 0
        prunekit.prune(ours, amount=amount, criterion="random", structure=f"channel:{dim}", min_keep=0,
                       targets=[(ours, "weight")])
        assert dead_slices(ours.weight_mask, dim) == dead_slices(theirs.weight_mask, dim)
        # whole slices only, and what was pruned stays pruned
        mask = ours.weight_mask.movedim(dim, 0).reshape(ours.weight.shape[dim], -1)
        assert torch.all((mask.sum(1) == 0) | (mask.sum(1) == mask.shape[1]))
        assert dead_slices(ours.weight_mask, dim) >= before


def test_mixed_history_torch_then_prunekit_then_torch():
    ours, theirs = conv(1), conv(1)
    torch_prune.ln_structured(ours, "weight", amount=0.2, n=1, dim=0)
    torch_prune.ln_structured(theirs, "weight", amount=0.2, n=1, dim=0)
    prunekit.prune(ours, amount=0.5, structure="channel", min_keep=0, targets=[(ours, "weight")])
    torch_prune.ln_structured(theirs, "weight", amount=0.5, n=1, dim=0)
    for model in (ours, theirs):
        torch_prune.ln_structured(model, "weight", amount=0.5, n=1, dim=0)
    assert torch.equal(ours.weight_mask, theirs.weight_mask)
    assert dead_slices(ours.weight_mask, 0) == 2 + 4 + 2


def test_amount_counts_kernels_and_blocks_still_unpruned():
    layer = conv(2)
    pruner = prunekit.Pruner(layer, structure="kernel", targets=[(layer, "weight")], min_keep=0)
    pruner.step(amount=0.5)
    pruner.step(amount=0.5)
    kernels = layer.weight_mask.reshape(60, 9)
    assert int((kernels.sum(1) == 0).sum()) == 30 + 15
    assert torch.all((kernels.sum(1) == 0) | (kernels.sum(1) == 9))
    torch.manual_seed(0)
    lin = nn.Linear(8, 8)
    pruner = prunekit.Pruner(lin, structure="block:2x2", targets=[(lin, "weight")])
    pruner.step(amount=0.25)
    pruner.step(amount=3)
    blocks = lin.weight_mask.reshape(4, 2, 4, 2).permute(0, 2, 1, 3).reshape(16, 4)
    assert int((blocks.sum(1) == 0).sum()) == 4 + 3


def _pair(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 4))


def test_global_float_amount_is_a_fraction_of_the_entries_left():
    model = _pair()
    pruner = prunekit.Pruner(model, structure="channel", scope="global", min_keep=0)
    total = 6 * 12 + 12 * 4
    pruner.step(amount=0.5)
    first = sum(int((m.weight_mask == 0).sum()) for m in (model[0], model[2])) / total
    pruner.step(amount=0.5)
    second = sum(int((m.weight_mask == 0).sum()) for m in (model[0], model[2])) / total
    # s_new = s_old + amount * (1 - s_old), realised to within one unit (a row of 6 or 12 entries)
    assert abs(first - 0.5) <= 12 / total
    assert abs(second - (first + 0.5 * (1 - first))) <= 12 / total
    for m in (model[0], model[2]):
        rows = m.weight_mask.sum(1)
        assert torch.all((rows == 0) | (rows == m.in_features))


def test_global_int_amount_counts_units_over_all_targets():
    model = _pair(1)
    pruner = prunekit.Pruner(model, structure="channel", scope="global", min_keep=0)
    pruner.step(amount=5)
    pruner.step(amount=4)
    dead = sum(dead_slices(m.weight_mask, 0) for m in (model[0], model[2]))
    assert dead == 9


def test_global_single_entry_units_follow_global_unstructured():
    ours, theirs = _pair(2), _pair(2)
    prunekit.prune(ours, amount=0.4, scope="global", criterion="magnitude")
    pairs = [(theirs[0], "weight"), (theirs[2], "weight")]
    torch_prune.global_unstructured(pairs, pruning_method=torch_prune.L1Unstructured, amount=0.4)
    for a, b in zip((ours[0], ours[2]), (theirs[0], theirs[2])):
        assert torch.equal(a.weight_mask, b.weight_mask)


@pytest.mark.parametrize("kwargs, param", [
    ({"structure": "2:4"}, "amount"),
    ({"structure": "channel", "overrides": {"0": 0.5}}, "overrides"),
    ({"structure": "channel", "scope": "global", "amount": 100}, "amount"),
])
def test_amount_refusals_name_the_parameter_and_change_nothing(kwargs, param):
    model = _pair(3)
    before = copy.deepcopy(model.state_dict())
    kwargs = {"amount": 0.5, **kwargs}
    with pytest.raises(prunekit.InvalidParameterError) as info:
        prunekit.prune(model, min_keep=0, **kwargs)
    assert info.value.param == param
    assert list(model.state_dict()) == list(before)
