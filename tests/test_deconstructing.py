"""The criteria of Zhou et al. 2019, "Deconstructing Lottery Tickets", on hand-made w_i and w_f."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import prunekit
from conftest import assert_unchanged, keep_mask, snapshot

W_INIT = torch.tensor([[0.9, -0.1, 0.5, -0.8, 0.2, 0.05]])
W_FINAL = torch.tensor([[0.1, -0.9, 0.6, -0.7, -0.4, 0.3]])
# per entry: |w_f| = .1 .9 .6 .7 .4 .3 ; |w_i| = .9 .1 .5 .8 .2 .05
# |w_f|-|w_i| = -.8 .8 .1 -.1 .2 .25 ; |w_f-w_i| = .8 .8 .1 .1 .6 .25

KEPT_TWO = {
    "large_final": {1, 3},
    "small_final": {0, 5},
    "large_init": {0, 3},
    "small_init": {5, 1},
    "magnitude_increase": {1, 5},
    "movement": {0, 1},
}


def _layer() -> nn.Linear:
    layer = nn.Linear(6, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(W_FINAL)
    return layer


def _kept(layer: nn.Linear) -> set[int]:
    return {int(i) for i in keep_mask(layer).reshape(-1).nonzero().reshape(-1)}


@pytest.mark.parametrize("name", sorted(KEPT_TWO))
def test_each_criterion_keeps_the_expected_entries(name):
    layer = _layer()
    criterion = prunekit.scores.as_criterion(name, initial={"weight": W_INIT})
    prunekit.prune(layer, 4, criterion=criterion)  # keep 2 of 6
    assert _kept(layer) == KEPT_TWO[name]


def test_large_init_large_final_is_the_quantile_intersection():
    # ranks of |w_i|: .9→5 .1→1 .5→3 .8→4 .2→2 .05→0 ; of |w_f|: .1→0 .9→5 .6→3 .7→4 .4→2 .3→1
    # min rank: 0 1 3 4 2 0 -> keep 2: entries 3 (4) and 2 (3): large in both
    layer = _layer()
    prunekit.prune(layer, 4, criterion="large_init_large_final", context={"initial": {"weight": W_INIT}})
    assert _kept(layer) == {2, 3}
    layer = _layer()
    crit = prunekit.scores.as_criterion("large_init_large_final", initial={"weight": W_INIT}, how="magnitude")
    prunekit.prune(layer, 4, criterion=crit)
    # min(|w_i|,|w_f|) = .1 .1 .5 .7 .2 .05
    assert _kept(layer) == {2, 3}
    prunekit.prune(layer, 3, criterion=crit)
    assert _kept(layer) == {2, 3}  # already pruned further: kept as they are


def test_initial_from_model_and_reparam_state_dict():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
    theta0 = copy.deepcopy(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    pruned_init = copy.deepcopy(theta0)
    prunekit.prune(pruned_init, 0.25)  # weight_orig / weight_mask layout: the unmasked values are read
    for initial in (theta0, theta0.state_dict(), pruned_init.state_dict()):
        crit = prunekit.scores.as_criterion("movement", initial=initial)
        pruner = prunekit.Pruner(copy.deepcopy(model), criterion=crit)
        crit.prepare(pruner.model, pruner.targets)
        for target in pruner.targets:
            ref = dict(theta0.named_parameters())[target.name]
            assert torch.equal(crit.score(target), (target.effective() - ref.detach()).abs())


def test_initial_given_at_step_time_and_errors():
    layer = _layer()
    before = snapshot(layer)
    pruner = prunekit.Pruner(layer, criterion="large_init")
    with pytest.raises(prunekit.InvalidParameterError, match="initial"):
        pruner.step(0.5)
    with pytest.raises(prunekit.InvalidParameterError, match="entry for weight"):
        pruner.step(0.5, initial={"other.weight": W_INIT})
    with pytest.raises(prunekit.InvalidParameterError, match="shape"):
        pruner.step(0.5, initial={"weight": W_INIT.t()})
    with pytest.raises(prunekit.InvalidParameterError, match="state dict"):
        pruner.step(0.5, initial=[W_INIT])
    assert_unchanged(layer, before)
    pruner.step(4, initial={"weight": W_INIT})
    assert _kept(layer) == KEPT_TWO["large_init"]


def test_structured_sum_and_random_control():
    torch.manual_seed(1)
    layer = nn.Linear(4, 6, bias=False)
    init = {"weight": torch.zeros(6, 4)}
    init["weight"][0] = 5.0  # row 0 moved most
    with torch.no_grad():
        layer.weight.fill_(0.01)
    prunekit.prune(layer, 5, criterion="movement", structure="channel", context={"initial": init})
    assert keep_mask(layer).all(1).tolist() == [True] + [False] * 5
    a, b = nn.Linear(16, 16), nn.Linear(16, 16)
    prunekit.prune(a, 0.5, criterion="random")
    prunekit.prune(b, 0.5, criterion="random")
    assert int((~keep_mask(a)).sum()) == 128 and not torch.equal(keep_mask(a), keep_mask(b))
