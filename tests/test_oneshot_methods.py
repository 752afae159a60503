"""One-shot pruning: the layer-level methods (Wanda, SparseGPT, magnitude, OWL) on plain tensors."""

from __future__ import annotations

import logging

import pytest
import torch

from prunekit.errors import InvalidParameterError, PrunekitError
from prunekit.oneshot.magnitude import magnitude_keep
from prunekit.allocation.owl import check_owl, outlier_ratio, owl_sparsities
from prunekit.allocation.rows import nm_invalid_groups
from prunekit.oneshot.sparsegpt import inverse_hessian_cholesky, sparsegpt_prune
from prunekit.oneshot.stats import InputStats
from prunekit.oneshot.wanda import wanda_keep
from prunekit.structures import NM


def _stats(x: torch.Tensor, hessian: bool = False) -> InputStats:
    stats = InputStats(x.shape[-1], norms=True, hessian=hessian, device=x.device)
    stats.add(x)
    return stats


def _correlated_inputs(n: int = 512, d: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # features driven by d/4 latent factors plus noise: strongly correlated, as in real activations
    latent = torch.randn(n, max(d // 4, 1), generator=g) @ torch.randn(max(d // 4, 1), d, generator=g)
    return (latent + 0.1 * torch.randn(n, d, generator=g)) * torch.logspace(-0.5, 0.5, d)


def test_wanda_prunes_every_row_to_the_sparsity_and_uses_the_input_norms():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(16, 40, generator=g)
    x = _correlated_inputs(200, 40)
    keep = wanda_keep(w, _stats(x).norms(), 0.5)
    assert (keep.sum(1) == 20).all()
    scores = w.abs() * x.norm(dim=0)
    for row in range(16):  # the kept scores of a row are its 20 largest
        assert set(keep[row].nonzero().flatten().tolist()) == set(scores[row].topk(20).indices.tolist())
    # not what magnitude keeps: the norms matter
    assert not torch.equal(keep, magnitude_keep(w, 0.5))


def test_wanda_mask_unchanged_when_a_channel_is_scaled_by_c_and_its_weights_by_1_over_c():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(12, 32, generator=g)
    x = _correlated_inputs(128, 32)
    before = wanda_keep(w, _stats(x).norms(), 0.5)
    for c in (4.0, 0.125, 1000.0):
        x2, w2 = x.clone(), w.clone()
        x2[:, 5] *= c
        w2[:, 5] /= c
        assert torch.allclose(x2 @ w2.t(), x @ w.t(), rtol=1e-4, atol=1e-4)
        assert torch.equal(wanda_keep(w2, _stats(x2).norms(), 0.5), before)
        assert torch.equal(wanda_keep(w2, _stats(x2).norms(), 0.5, NM(2, 4)), wanda_keep(w, _stats(x).norms(), 0.5, NM(2, 4)))
    # magnitude is not invariant: the scaled column is now pruned (c = 1000 makes it tiny)
    assert magnitude_keep(w2, 0.5)[:, 5].sum() == 0


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8), (1, 4)])
def test_nm_masks_are_valid_for_every_method(n, m):
    nm = NM(n, m)
    g = torch.Generator().manual_seed(2)
    w = torch.randn(8, 64, generator=g)
    x = _correlated_inputs(256, 64)
    stats = _stats(x, hessian=True)
    new, keep_sg = sparsegpt_prune(w, stats.hessian(), nm.fixed_sparsity, nm, blocksize=32)
    for keep in (magnitude_keep(w, 0, nm), wanda_keep(w, stats.norms(), 0, nm), keep_sg):
        assert (keep.reshape(-1, m).sum(1) == n).all()
    assert nm_invalid_groups(new, nm) == 0
    assert torch.equal(new != 0, keep_sg)


def test_sparsegpt_with_identity_hessian_is_magnitude_with_unchanged_weights():
    g = torch.Generator().manual_seed(3)
    w = torch.randn(16, 96, generator=g)
    eye = torch.eye(96)
    new, keep = sparsegpt_prune(w, eye, 0.5, blocksize=128)  # one column block: one threshold as magnitude
    assert torch.equal(keep, magnitude_keep(w, 0.5))
    assert torch.equal(new, w * keep)
    new, keep = sparsegpt_prune(w, eye, 0.5, NM(2, 4), blocksize=32)
    assert torch.equal(keep, magnitude_keep(w, 0.5, NM(2, 4)))
    assert torch.equal(new, w * keep)


@pytest.mark.parametrize("structure", [None, NM(2, 4), NM(4, 8)])
def test_sparsegpt_reconstructs_better_than_magnitude_at_equal_sparsity(structure):
    g = torch.Generator().manual_seed(4)
    w = torch.randn(32, 64, generator=g)
    x = _correlated_inputs(512, 64)
    stats = _stats(x, hessian=True)
    new, keep = sparsegpt_prune(w, stats.hessian(), 0.5, structure)
    mag = w * magnitude_keep(w, 0.5, structure)
    err_sg = (x @ (w - new).t()).square().sum()
    err_mag = (x @ (w - mag).t()).square().sum()
    assert keep.sum() == mag.ne(0).sum() == w.numel() // 2
    assert err_sg < 0.7 * err_mag


def test_sparsegpt_unstructured_sparsity_is_exact_over_blocks_and_dead_inputs_are_zeroed():
    g = torch.Generator().manual_seed(5)
    w = torch.randn(7, 50, generator=g)
    x = _correlated_inputs(128, 50)
    x[:, 3] = 0.0  # a dead input
    new, keep = sparsegpt_prune(w, _stats(x, hessian=True).hessian(), 0.3, blocksize=16)
    assert int((~keep).sum()) == round(0.3 * 350)
    assert (new[:, 3] == 0).all()


def test_sparsegpt_at_zero_sparsity_changes_nothing():
    g = torch.Generator().manual_seed(6)
    w = torch.randn(8, 32, generator=g)
    new, keep = sparsegpt_prune(w, _stats(_correlated_inputs(64, 32), hessian=True).hessian(), 0.0)
    assert keep.all() and torch.equal(new, w)


def test_cholesky_failure_raises_dampening_with_a_warning(caplog):
    h = torch.diag(torch.tensor([1.0, 1.0, 1.0, -0.05]))
    with caplog.at_level(logging.WARNING, logger="prunekit.oneshot.sparsegpt"):
        u = inverse_hessian_cholesky(h, name="layer")
    assert torch.isfinite(u).all()
    assert "Cholesky failed" in caplog.text and "layer" in caplog.text
    with pytest.raises(PrunekitError, match="not positive definite"):
        inverse_hessian_cholesky(torch.diag(torch.tensor([1.0, -100.0])), max_retries=2)


def test_owl_sparsities_keep_the_mean_stay_within_lambda_and_favour_outliers():
    ratios = [0.01, 0.05, 0.02, 0.03]
    s = owl_sparsities(ratios, 0.7, 0.08)
    assert sum(s) / 4 == pytest.approx(0.7, abs=1e-12)
    assert max(abs(v - 0.7) for v in s) == pytest.approx(0.08)
    assert all(0.62 - 1e-12 <= v <= 0.78 + 1e-12 for v in s)
    assert s[3] - s[2] == pytest.approx((s[2] - s[0]) / 1.0)  # linear in the ratio (equal steps of 0.01)
    assert s[1] == min(s) and s[0] == max(s)  # more outliers -> pruned less
    assert owl_sparsities([0.02, 0.02], 0.5) == [0.5, 0.5]


def test_outlier_ratio_counts_scores_above_m_times_the_mean():
    scores = [torch.tensor([1.0] * 98 + [100.0, 100.0])]  # mean 2.98: the two 100s are > 5 x mean
    assert outlier_ratio(scores, 5) == pytest.approx(0.02)
    assert outlier_ratio([torch.ones(10), torch.ones(10)], 5) == 0.0


def test_owl_parameter_errors():
    with pytest.raises(InvalidParameterError, match="owl_lambda"):
        check_owl(0.95, 0.08, 5)
    with pytest.raises(InvalidParameterError, match="owl_m"):
        check_owl(0.5, 0.08, 0)
