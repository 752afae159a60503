"""Optimal Brain Damage with a diagonal empirical Fisher (LeCun et al. 1990)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import prunekit
from prunekit.scores import OBD, diagonal_fisher
from conftest import assert_unchanged, keep_mask, make_tiny, snapshot


def _data(n: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=g), torch.randint(0, 2, (n,), generator=g)


def _layer() -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(3, 2, bias=False)


def _hand_fisher(w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # ∂ℓ_n/∂W = (softmax(W x_n) − e_{y_n}) x_nᵀ for the cross-entropy of a linear layer
    p = torch.softmax(x @ w.t(), dim=1)
    p[torch.arange(len(y)), y] -= 1
    per_example = p[:, :, None] * x[:, None, :]
    return per_example.pow(2).mean(0)


def test_per_sample_fisher_equals_hand_computation():
    layer = _layer()
    x, y = _data()
    targets = prunekit.select_targets(layer)
    (fisher,) = diagonal_fisher(layer, targets, [(x[:5], y[:5]), (x[5:], y[5:])], chunk_size=2)
    assert torch.allclose(fisher, _hand_fisher(layer.weight.detach(), x, y), rtol=1e-5, atol=1e-7)


def test_batch_fisher_is_squared_minibatch_gradient_times_batch_size():
    layer = _layer()
    x, y = _data()
    targets = prunekit.select_targets(layer)
    w = layer.weight.detach()
    singles = [(x[i : i + 1], y[i : i + 1]) for i in range(8)]
    (one,) = diagonal_fisher(layer, targets, singles, fisher="batch")
    assert torch.allclose(one, _hand_fisher(w, x, y), rtol=1e-5, atol=1e-7)  # B = 1: exact
    (four,) = diagonal_fisher(layer, targets, [(x[:4], y[:4]), (x[4:], y[4:])], fisher="batch")
    p = torch.softmax(x @ w.t(), dim=1)
    p[torch.arange(8), y] -= 1
    g = p[:, :, None] * x[:, None, :]
    expected = (4 * g[:4].mean(0).pow(2) + 4 * g[4:].mean(0).pow(2)) / 2
    assert torch.allclose(four, expected, rtol=1e-5, atol=1e-7)


def test_obd_saliency_and_pruning():
    layer = _layer()
    x, y = _data()
    crit = prunekit.scores.as_criterion("obd")
    target = prunekit.select_targets(layer)[0]
    crit.prepare(layer, [target], data=(x, y))
    w = layer.weight.detach()
    saliency = 0.5 * _hand_fisher(w, x, y) * w.pow(2)
    assert torch.allclose(crit.score(target), saliency, rtol=1e-5, atol=1e-8)
    prunekit.prune(layer, 3, criterion=crit, context={"data": (x, y)})
    kept = keep_mask(layer).reshape(-1)
    assert set(kept.nonzero().reshape(-1).tolist()) == set(torch.topk(saliency.reshape(-1), 3).indices.tolist())


def test_masked_entries_get_no_fisher_and_train_mode_restored():
    model = make_tiny(0)
    prunekit.prune(model, 0.5)
    model.train()
    x = torch.randn(6, 8, 4, 4)
    y = torch.randint(0, 8, (6,))
    crit = OBD(max_batches=1)
    pruner = prunekit.Pruner(model, criterion=crit, scope="global")
    crit.prepare(model, pruner.targets, data=[(x, y), (x, y)])
    assert model.training
    for target in pruner.targets:
        fisher = crit.fisher_of(target)
        assert bool((fisher[~target.keep_mask()] == 0).all())
        assert bool((fisher[target.keep_mask()] > 0).any())


def test_structured_obd_sums_entry_saliencies():
    model = make_tiny(1)
    x = torch.randn(8, 8, 4, 4)
    y = torch.randint(0, 8, (8,))
    crit = OBD()
    targets = prunekit.select_targets(model)
    crit.prepare(model, targets, data=(x, y))
    fc1 = targets[1]
    rows = crit.reduce(crit.score(fc1), (1,))
    assert torch.allclose(rows, crit.score(fc1).sum(1))
    prunekit.prune(model, 12, criterion=crit, structure="channel", include="fc1", context={"data": (x, y)})
    alive = keep_mask(model.fc1).all(1)
    assert alive.sum() == 4
    assert set(alive.nonzero().reshape(-1).tolist()) == set(torch.topk(rows, 4).indices.tolist())


def test_obd_errors_change_nothing():
    model = make_tiny(0)
    before = snapshot(model)
    with pytest.raises(prunekit.InvalidParameterError, match="data"):
        prunekit.prune(model, 0.5, criterion="obd")
    with pytest.raises(prunekit.InvalidParameterError, match="data"):
        prunekit.prune(model, 0.5, criterion="obd", context={"data": torch.zeros(3)})
    with pytest.raises(prunekit.InvalidParameterError, match="fisher"):
        OBD(fisher="exact")
    with pytest.raises(prunekit.InvalidParameterError, match="max_batches"):
        OBD(max_batches=0)
    with pytest.raises(prunekit.InvalidParameterError, match="max_batches"):
        prunekit.prune(model, 0.5, criterion="obd", context={"data": (torch.randn(2, 8, 4, 4), torch.zeros(2)),
                                                             "max_batches": 0})
    assert_unchanged(model, before)
