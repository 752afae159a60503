"""Learned supermasks on frozen weights (Zhou et al. 2019; edge-popup, Ramanujan et al. 2020)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import prunekit
from prunekit.learned import Supermask
from conftest import keep_mask, make_tiny


def _layer(weight: torch.Tensor | None = None) -> nn.Linear:
    torch.manual_seed(0)
    layer = nn.Linear(3, 2, bias=False)
    if weight is not None:
        with torch.no_grad():
            layer.weight.copy_(weight)
    return layer


def _scores(layer: nn.Module) -> nn.Parameter:
    return layer.parametrizations.weight[0].scores


def test_only_scores_train_and_gradient_is_straight_through_sigmoid():
    layer = _layer()
    w = layer.weight.detach().clone()
    sm = Supermask()
    sm.wrap(layer)
    assert [n for n, p in layer.named_parameters() if p.requires_grad] == ["parametrizations.weight.0.scores"]
    with torch.no_grad():
        _scores(layer).copy_(torch.tensor([[-1.0, 0.5, 2.0], [0.0, -0.3, 1.0]]))
    x = torch.randn(5, 3)
    layer(x).sum().backward()  # ∂L/∂W' = 1 ⊗ Σ_n x_n, whatever mask was drawn
    s = _scores(layer).detach().clone()
    expected = x.sum(0).expand(2, 3) * w * torch.sigmoid(s) * (1 - torch.sigmoid(s))
    assert torch.allclose(_scores(layer).grad, expected, atol=1e-6)
    assert layer.parametrizations.weight.original.grad is None
    opt = prunekit.training.make_optimizer(layer, "sgd", lr=0.5)
    opt.step()
    assert torch.equal(layer.parametrizations.weight.original.detach(), w)
    assert not torch.equal(_scores(layer).detach(), s)


def test_sampled_masks_follow_sigmoid_of_scores():
    layer = _layer(torch.ones(2, 3))
    sm = Supermask()
    sm.wrap(layer)
    target = torch.tensor([[-2.0, -0.5, 0.0], [0.4, 1.5, 3.0]])
    with torch.no_grad():
        _scores(layer).copy_(target)
    torch.manual_seed(1)
    draws = torch.stack([layer.weight.detach() for _ in range(4000)])
    assert set(draws.unique().tolist()) <= {0.0, 1.0}
    assert torch.allclose(draws.mean(0), torch.sigmoid(target), atol=0.03)
    assert sm.expected_density() == pytest.approx(float(torch.sigmoid(target).mean()), rel=1e-6)


def test_eval_is_deterministic_threshold_or_expected():
    target = torch.tensor([[-2.0, -0.5, 0.1], [0.4, 1.5, -3.0]])
    w = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    layer = _layer(w)
    Supermask().wrap(layer)
    with torch.no_grad():
        _scores(layer).copy_(target)
    layer.eval()
    first, second = layer.weight.detach(), layer.weight.detach()
    assert torch.equal(first, second) and torch.equal(first, w * (target > 0))
    layer = _layer(w)
    Supermask(eval_mask="expected").wrap(layer.eval())
    with torch.no_grad():
        _scores(layer).copy_(target)
    assert torch.allclose(layer.weight.detach(), w * torch.sigmoid(target))


def test_exported_mask_is_exact_and_saves(tmp_path):
    model = make_tiny(0)
    x = torch.randn(3, 8, 4, 4)
    sm = Supermask()
    sm.wrap(model)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in sm.score_parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    model.eval()
    expected_masks = sm.masks()
    out_before = model(x).detach()
    sm.finalize()
    assert all(p.requires_grad for p in model.parameters())  # unfrozen again
    for name, module in (("conv.weight", model.conv), ("fc1.weight", model.fc1), ("fc2.weight", model.fc2)):
        assert torch.equal(keep_mask(module), expected_masks[name])
    assert torch.allclose(model(x), out_before, atol=1e-6)
    report = prunekit.sparsity_report(model)
    total = sum(int(m.numel()) for m in expected_masks.values())
    kept = sum(int(m.sum()) for m in expected_masks.values())
    assert report.sparsity == pytest.approx(1 - kept / total)
    path = tmp_path / "sm.safetensors"
    prunekit.save_sparse(model, path)
    fresh = make_tiny(9)
    prunekit.load_sparse(path, fresh)
    assert torch.allclose(fresh(x), out_before, atol=1e-6)


def test_topk_edge_popup_counts_and_gradient():
    layer = _layer()
    w = layer.weight.detach().clone()
    sm = Supermask("topk", sparsity=0.5)
    sm.wrap(layer)
    assert int(layer.weight.detach().ne(0).sum()) == 3
    assert torch.equal(sm.masks()["weight"], w.abs() >= w.abs().reshape(-1).sort().values[3])  # |W| init
    x = torch.randn(4, 3)
    layer(x).sum().backward()
    assert torch.allclose(_scores(layer).grad, x.sum(0).expand(2, 3) * w, atol=1e-6)


def test_fit_trains_scores_of_a_frozen_random_network():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 2))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 6, generator=g)
    y = (x[:, 0] > 0).long()
    loader = [(x[i : i + 32], y[i : i + 32]) for i in range(0, 128, 32)]
    frozen = {n: p.detach().clone() for n, p in model.named_parameters()}
    sm = Supermask()
    sm.wrap(model)
    before = prunekit.evaluate(model.eval(), loader).loss
    prunekit.fit(model.train(), loader, epochs=15, optimizer="adam", lr=0.05)
    after = prunekit.evaluate(model.eval(), loader).loss
    sm.finalize()
    assert after < before
    for n, p in model.named_parameters():
        key = n.replace("_orig", "")
        assert torch.equal(p.detach(), frozen[key]), n


def test_errors_leave_the_model_alone():
    with pytest.raises(prunekit.InvalidParameterError, match="sparsity"):
        Supermask("topk")
    with pytest.raises(prunekit.InvalidParameterError, match="sparsity"):
        Supermask(sparsity=0.5)
    with pytest.raises(prunekit.InvalidParameterError, match="method"):
        Supermask("edge")
    model = make_tiny(0)
    prunekit.prune(model, 0.5, include="fc2")
    names = [n for n, _ in model.named_parameters()]
    with pytest.raises(prunekit.InvalidParameterError, match="make_permanent"):
        Supermask().wrap(model)
    assert [n for n, _ in model.named_parameters()] == names
    assert all(p.requires_grad for p in model.parameters())
    sm = Supermask()
    with pytest.raises(prunekit.InvalidParameterError, match="wrap"):
        sm.finalize()
    sm.wrap(model, exclude="fc2")
    with pytest.raises(prunekit.InvalidParameterError, match="one wrap"):
        sm.wrap(model)


def test_signed_constant_weights():
    layer = _layer()
    w = layer.weight.detach().clone()
    Supermask(signed_constant=True).wrap(layer)
    new = layer.parametrizations.weight.original.detach()
    assert torch.equal(new.sign(), w.sign())
    assert torch.allclose(new.abs(), torch.full_like(w, float(w.std())))
