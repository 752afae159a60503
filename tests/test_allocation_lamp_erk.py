"""LAMP (Lee et al. 2021) and ERK (Evci et al. 2020) allocations."""

from __future__ import annotations

import pytest
import torch

import prunekit
from prunekit.allocation import erk_densities, lamp_scores
from conftest import assert_unchanged, keep_mask, make_tiny, snapshot


def _layers(model):
    return [model.conv, model.fc1, model.fc2]


def _pruned(module) -> int:
    return int((~keep_mask(module)).sum())


def _total_pruned(model) -> int:
    return sum(_pruned(m) for m in _layers(model))


def _total(model) -> int:
    return sum(m.weight_orig.numel() for m in _layers(model))


# -- LAMP ----------------------------------------------------------------------


def test_lamp_scores_formula_by_hand():
    w = torch.tensor([3.0, -1.0, 2.0, 0.5])
    # sorted squares 0.25, 1, 4, 9: score = w_u² / Σ_{v≥u} w_v²
    expected = torch.tensor([9 / 9, 1 / 14, 4 / 13, 0.25 / 14.25], dtype=torch.float64)
    assert torch.allclose(lamp_scores(w.abs()), expected)


def test_lamp_scores_in_unit_interval_max_is_one_and_scale_invariant():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(500, generator=g).abs()
    s = lamp_scores(w)
    assert bool((s > 0).all()) and bool((s <= 1).all())
    assert s[w.argmax()] == 1.0 and int((s == 1.0).sum()) == 1
    assert torch.allclose(lamp_scores(w * 37.5), s, rtol=1e-6, atol=0)  # w·37.5 is rounded to float32
    # monotone in the magnitude within a tensor
    assert torch.equal(torch.argsort(s), torch.argsort(w))


def test_lamp_keeps_dead_units_dead():
    s = lamp_scores(torch.tensor([1.0, float("-inf"), 2.0]))
    assert s[1] == float("-inf") and s[2] == 1.0


@pytest.mark.parametrize("sparsity", [0.5, 0.9, 0.98])
def test_lamp_global_sparsity_exact_and_largest_weight_survives(sparsity):
    model = make_tiny(1)
    prunekit.prune(model, sparsity, scope="lamp")
    assert _total_pruned(model) == round(sparsity * _total(model))
    for m in _layers(model):
        biggest = m.weight_orig.detach().abs().argmax()
        assert bool(keep_mask(m).reshape(-1)[biggest])


def test_lamp_is_invariant_to_per_layer_rescaling():
    a, b = make_tiny(2), make_tiny(2)
    with torch.no_grad():
        b.conv.weight.mul_(100.0)
        b.fc2.weight.mul_(0.01)
    prunekit.prune(a, 0.8, scope="lamp")
    prunekit.prune(b, 0.8, scope="lamp")
    for ma, mb in zip(_layers(a), _layers(b)):
        assert torch.equal(keep_mask(ma), keep_mask(mb))
    # a plain global ranking is not invariant
    c, d = make_tiny(2), make_tiny(2)
    with torch.no_grad():
        d.conv.weight.mul_(100.0)
    prunekit.prune(c, 0.8, scope="global")
    prunekit.prune(d, 0.8, scope="global")
    assert not torch.equal(keep_mask(c.conv), keep_mask(d.conv))


def test_lamp_structured_channels_and_iterative():
    model = make_tiny(3)
    pruner = prunekit.Pruner(model, scope="lamp", structure="channel", criterion="l2")
    pruner.step(0.3)
    first = [keep_mask(m).clone() for m in _layers(model)]
    pruner.step(0.6)
    for before, m in zip(first, _layers(model)):
        assert bool((keep_mask(m) <= before).all())  # only removes more
        assert bool(keep_mask(m).any(dim=tuple(range(1, keep_mask(m).dim()))).any())


def test_lamp_rejects_negative_scores_and_normalize_untouched():
    model = make_tiny(0)
    before = snapshot(model)
    with pytest.raises(prunekit.InvalidParameterError, match="non-negative"):
        prunekit.prune(model, 0.5, scope="lamp", criterion=lambda t: -t.effective().abs())
    with pytest.raises(prunekit.InvalidParameterError, match="normalize"):
        prunekit.prune(model, 0.5, scope="lamp", normalize="max")
    assert_unchanged(model, before)


# -- ERK -----------------------------------------------------------------------


def test_erk_densities_follow_formula_when_uncapped():
    shapes = [(16, 8, 3, 3), (64, 256), (10, 64)]
    d = erk_densities(shapes, 0.9)
    raw = [sum(s) / torch.Size(s).numel() for s in shapes]
    ratios = [di / ri for di, ri in zip(d, raw)]
    assert max(ratios) == pytest.approx(min(ratios), rel=1e-12)
    sizes = [torch.Size(s).numel() for s in shapes]
    assert sum(di * n for di, n in zip(d, sizes)) == pytest.approx(0.1 * sum(sizes), rel=1e-12)


def test_erk_caps_small_layers_at_density_one():
    shapes = [(4, 3), (512, 512), (2, 512)]
    d = erk_densities(shapes, 0.5)
    assert d[0] == 1.0  # a tiny layer would need density > 1: kept dense
    sizes = [torch.Size(s).numel() for s in shapes]
    assert sum(di * n for di, n in zip(d, sizes)) == pytest.approx(0.5 * sum(sizes), rel=1e-12)
    free = [i for i in range(3) if d[i] < 1.0]
    ratios = [d[i] / (sum(shapes[i]) / sizes[i]) for i in free]
    assert max(ratios) == pytest.approx(min(ratios), rel=1e-12)
    assert all(0.0 < di <= 1.0 for di in d)


@pytest.mark.parametrize("sparsity", [0.5, 0.9, 0.95, 0.99])
def test_erk_global_sparsity_exact_and_per_layer_follows_densities(sparsity):
    model = make_tiny(4)
    prunekit.prune(model, sparsity, scope="erk")
    assert _total_pruned(model) == round(sparsity * _total(model))
    densities = erk_densities([m.weight_orig.shape for m in _layers(model)], sparsity)
    for m, d in zip(_layers(model), densities):
        assert abs(_pruned(m) - (1 - d) * m.weight_orig.numel()) <= 1.0 + 1e-9


def test_erk_with_overrides_and_criterion_inside_layers():
    model = make_tiny(5)
    prunekit.prune(model, 0.9, scope="erk", overrides={"fc2": 0.0})
    assert _pruned(model.fc2) == 0
    rest = [model.conv, model.fc1]
    assert sum(_pruned(m) for m in rest) == round(0.9 * sum(m.weight_orig.numel() for m in rest))
    # inside each layer the magnitude criterion picks: kept weights are the largest
    for m in rest:
        w = m.weight_orig.detach().abs()
        keep = keep_mask(m)
        assert float(w[keep].min()) >= float(w[~keep].max())


def test_erk_errors_leave_model_untouched():
    model = make_tiny(0)
    before = snapshot(model)
    with pytest.raises(prunekit.InvalidParameterError, match="float"):
        prunekit.prune(model, 10, scope="erk")
    with pytest.raises(prunekit.InvalidParameterError, match="scope"):
        prunekit.prune(model, 0.5, scope="erdos")
    # min_keep guards every tensor: sparsity 1.0 is refused, min_keep=0 allows it
    with pytest.raises(prunekit.InvalidParameterError, match="min_keep"):
        prunekit.prune(model, 1.0, scope="erk")
    assert_unchanged(model, before)
    prunekit.prune(model, 1.0, scope="erk", min_keep=0)
    assert _total_pruned(model) == _total(model)


def test_erk_channels_structure():
    model = make_tiny(6)
    prunekit.prune(model, 0.5, scope="erk", structure="channel")
    for m in _layers(model):
        alive = keep_mask(m).reshape(m.weight_orig.shape[0], -1).any(1)
        assert int(alive.sum()) >= 1
    pruned = _total_pruned(model)
    assert abs(pruned - 0.5 * _total(model)) <= max(m.weight_orig[0].numel() for m in _layers(model)) * 3
