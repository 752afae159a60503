"""Zero-cost proxies of a whole network and Spearman's rank correlation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import prunekit
from prunekit.analysis.proxies import PROXIES, rankdata, spearman, zero_cost_proxies


def small_cnn(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
    )


def data(n: int = 8, shape: tuple[int, ...] = (3, 8, 8), classes: int = 4, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g), torch.randint(0, classes, (n,), generator=g)


def test_every_proxy_is_a_finite_scalar_and_the_model_is_untouched():
    model = small_cnn()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    scores = zero_cost_proxies(model, data())
    assert list(scores) == list(PROXIES)
    assert all(isinstance(v, float) and math.isfinite(v) for v in scores.values())
    assert scores["grad_norm"] > 0 and scores["snip"] > 0 and scores["synflow"] > 0 and scores["fisher"] > 0
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in before.items())
    assert model.training and all(p.grad is None for p in model.parameters())


def test_grad_norm_snip_and_fisher_by_hand_on_a_linear_model():
    torch.manual_seed(0)
    model = nn.Linear(5, 3)
    x, y = data(6, (5,), 3)
    w, b = model.weight.detach(), model.bias.detach()
    logits = x @ w.T + b
    dlogits = (torch.softmax(logits, 1) - F.one_hot(y, 3).float()) / len(x)  # ∂(mean CE)/∂logits
    grad = dlogits.T @ x
    scores = zero_cost_proxies(model, (x, y), names=["grad_norm", "snip", "fisher"])
    assert scores["grad_norm"] == pytest.approx(float(grad.norm()), rel=1e-5)
    assert scores["snip"] == pytest.approx(float((grad * w).abs().sum()), rel=1e-5)
    # fisher of the layer's output channels: ½ · mean_n (a·∂L/∂a)² summed over channels
    assert scores["fisher"] == pytest.approx(float(0.5 * (logits * dlogits).pow(2).mean(0).sum()), rel=1e-5)


def test_synflow_proxy_is_layers_times_paths_in_a_chain():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6, bias=False), nn.ReLU(), nn.Linear(6, 3, bias=False))
    w1, w2 = model[0].weight.detach().double().abs(), model[2].weight.detach().double().abs()
    paths = float((w2 @ w1).sum())
    (value,) = zero_cost_proxies(model, data(4, (4,), 3), names=["synflow"]).values()
    assert value == pytest.approx(2 * paths, rel=1e-12)  # conservation: each layer sums to R


def test_jacob_cov_of_a_linear_model_has_one_eigenvalue_n():
    # f(x) = Wx has the same Jacobian for every input: the correlation matrix is all ones,
    # its eigenvalues n, 0, ..., 0
    torch.manual_seed(0)
    model = nn.Linear(10, 4)
    n, k = 6, 1e-5
    (value,) = zero_cost_proxies(model, data(n, (10,), 4), names="jacob_cov").values()
    expected = -((math.log(n + k) + 1 / (n + k)) + (n - 1) * (math.log(k) + 1 / k))
    assert value == pytest.approx(expected, rel=1e-6)


def test_proxy_names_and_batches_are_checked():
    model = small_cnn()
    with pytest.raises(prunekit.InvalidParameterError) as info:
        zero_cost_proxies(model, data(), names=["synflw"])
    assert info.value.param == "names" and "synflow" in str(info.value)
    with pytest.raises(prunekit.InvalidParameterError):
        zero_cost_proxies(model, data(n=1), names=["jacob_cov"])
    with pytest.raises(prunekit.InvalidParameterError):
        zero_cost_proxies(model, None)


def test_spearman_against_known_values():
    # Wikipedia's IQ / hours of TV example: rho = -29/165 (no ties)
    iq = [106, 100, 86, 101, 99, 103, 97, 113, 112, 110]
    tv = [7, 27, 2, 50, 28, 29, 20, 12, 6, 17]
    assert spearman(iq, tv) == pytest.approx(-29 / 165, abs=1e-12)
    assert spearman([1, 2, 3, 4], [10, 20, 30, 1000]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ties: ranks of y are 1, 2, 3.5, 5, 3.5 -> r of the ranks = 8/√(10·9.5)
    assert spearman([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]) == pytest.approx(8 / math.sqrt(95), abs=1e-12)
    assert math.isnan(spearman([1, 2, 3], [5, 5, 5]))


def test_rankdata_averages_ties():
    np.testing.assert_array_equal(rankdata([10, 20, 20, 30, 5]), [2, 3.5, 3.5, 5, 1])
    np.testing.assert_array_equal(rankdata([1, 1, 1]), [2, 2, 2])


def test_spearman_checks_its_input():
    with pytest.raises(prunekit.InvalidParameterError):
        spearman([1, 2, 3], [1, 2])
    with pytest.raises(prunekit.InvalidParameterError):
        spearman([1, float("nan")], [1, 2])


def test_snip_and_synflow_proxies_sum_the_registered_scores():
    model = small_cnn()
    batch = data()
    scores = zero_cost_proxies(model, batch, names=["snip", "synflow"])
    targets = prunekit.select_targets(model)
    for name in ("snip", "synflow"):
        crit = prunekit.scores.create_score(name)
        crit.prepare(model, targets, data=[batch])
        assert scores[name] == pytest.approx(float(sum(crit.score(t).double().sum() for t in targets)), rel=1e-6)


def test_any_registered_element_score_is_a_proxy():
    torch.manual_seed(0)
    model = nn.Linear(5, 3)
    batch = data(6, (5,), 3)
    name = "test_count_weights"

    @prunekit.register_score(name, unit_spaces=("element",))
    def ones(target):
        """Ones: every weight scores 1 (a test score)."""
        return torch.ones(target.shape)

    try:
        scores = zero_cost_proxies(model, batch, names=[name, "magnitude", "grasp"])
    finally:
        prunekit.scores.SCORES.unregister(name)
    assert scores[name] == 15.0
    assert scores["magnitude"] == pytest.approx(float(model.weight.detach().abs().sum()), rel=1e-6)
    assert math.isfinite(scores["grasp"])
    with pytest.raises(prunekit.InvalidParameterError, match="names"):
        zero_cost_proxies(model, batch, names=["large_init"])  # needs the initial weights, not one batch
