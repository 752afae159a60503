"""Movement pruning (Sanh et al. 2020): hard top-k on a cubic schedule, soft threshold with a penalty."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import prunekit
from prunekit.learned import LearnedScores, MovementPruning
from conftest import keep_mask, make_tiny


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 24), nn.ReLU(), nn.Linear(24, 3))


def _data(n: int = 96):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 6, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long() + (x[:, 2] > 1).long()
    return x, y


def _cubic(t: int, s_i: float, s_f: float, t_w: int, span: int, dt: int) -> float:
    if t < t_w:
        return s_i
    last = min(t_w + span, t_w + (t - t_w) // dt * dt)
    return s_f + (s_i - s_f) * (1 - (last - t_w) / span) ** 3


def _pruned_counts(model: nn.Module) -> list[int]:
    return [int(m.weight.detach().eq(0).sum()) for m in model if isinstance(m, nn.Linear)]


@pytest.mark.parametrize("scope", ["local", "global"])
def test_hard_meets_the_cubic_schedule_exactly_at_every_step(scope):
    model = _model()
    with torch.no_grad():  # no exact zeros among the weights, so zeros of W' are the mask
        for m in model:
            if isinstance(m, nn.Linear):
                m.weight.copy_(torch.where(m.weight.abs() < 1e-3, torch.full_like(m.weight, 0.01), m.weight))
    mp = MovementPruning("hard", initial_sparsity=0.1, final_sparsity=0.85, warmup_steps=2, pruning_steps=9,
                         frequency=3, scope=scope)
    mp.wrap(model)
    x, y = _data()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    sizes = [144, 72]
    for t in range(13):
        level = mp.step(t)
        assert level == pytest.approx(_cubic(t, 0.1, 0.85, 2, 9, 3))
        counts = _pruned_counts(model)
        if scope == "local":
            assert counts == [round(level * n) for n in sizes]
        else:
            assert sum(counts) == round(level * sum(sizes))
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    mp.finalize()
    assert sum(int((~keep_mask(m)).sum()) for m in model if isinstance(m, nn.Linear)) in (
        round(0.85 * 216), sum(round(0.85 * n) for n in sizes))


def test_straight_through_gradient_of_scores_and_weights():
    torch.manual_seed(0)
    layer = nn.Linear(4, 3, bias=False)
    w = layer.weight.detach().clone()
    mp = MovementPruning("hard", initial_sparsity=0.5, final_sparsity=0.5, pruning_steps=0, score_init="magnitude")
    mp.wrap(layer)
    mask = mp.masks()["weight"]
    assert int(mask.sum()) == 6
    x = torch.randn(5, 4)
    out = layer(x)
    grad_out = torch.randn_like(out)
    out.backward(grad_out)
    grad_w_prime = grad_out.t() @ x  # ∂L/∂W' for W' x
    scores = layer.parametrizations.weight[0].scores
    assert torch.allclose(scores.grad, grad_w_prime * w, atol=1e-6)  # ∂L/∂S = ∂L/∂W' ⊙ W
    original = layer.parametrizations.weight.original
    assert torch.allclose(original.grad, grad_w_prime * mask, atol=1e-6)  # ∂L/∂W = ∂L/∂W' ⊙ M


def test_scores_learn_movement_during_warmup():
    # weights pushed away from zero gain score: the first pruning keeps the movers
    model = _model()
    mp = MovementPruning("hard", final_sparsity=0.5, warmup_steps=20, pruning_steps=0)
    mp.wrap(model)
    x, y = _data()
    w0 = [m.parametrizations.weight.original.detach().clone() for m in model if isinstance(m, nn.Linear)]
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for t in range(20):
        mp.step(t)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    layers = [m for m in model if isinstance(m, nn.Linear)]
    for layer, before in zip(layers, w0):
        after = layer.parametrizations.weight.original.detach()
        moved = (after.abs() - before.abs())  # magnitude increase
        scores = layer.parametrizations.weight[0].scores.detach()
        # for SGD the accumulated score is −lr·Σ_t ∂L/∂W'·W ≈ growth of |W| (first order)
        corr = torch.corrcoef(torch.stack([moved.reshape(-1), scores.reshape(-1)]))[0, 1]
        assert corr > 0.8


def test_soft_penalty_reduces_density():
    x, y = _data()
    densities = []
    for lam in (0.0, 5.0):
        model = _model()
        mp = MovementPruning("soft", threshold=0.0, penalty=lam)
        mp.wrap(model)
        assert mp.density() == 1.0  # scores start at τ + 1
        opt = torch.optim.Adam(model.parameters(), lr=0.05)
        for t in range(40):
            mp.step(t)
            opt.zero_grad()
            (nn.functional.cross_entropy(model(x), y) + mp.penalty()).backward()
            opt.step()
        densities.append(mp.density())
        assert mp.penalty().item() == pytest.approx(
            lam * float(sum(torch.sigmoid(p.detach()).sum() for p in mp.score_parameters())) / 216, rel=1e-5)
        masks = mp.masks()
        mp.finalize()
        for i, m in enumerate(m for m in model if isinstance(m, nn.Linear)):
            assert torch.equal(keep_mask(m), masks[f"{2 * i}.weight"])
    assert densities[0] > 0.9 and densities[1] < 0.6


def test_fit_integration_and_learned_scores_criterion():
    model = make_tiny(0)
    g = torch.Generator().manual_seed(0)
    loader = [(torch.randn(8, 8, 4, 4, generator=g), torch.randint(0, 8, (8,), generator=g)) for _ in range(4)]
    mp = MovementPruning("hard", final_sparsity=0.75, warmup_steps=2, pruning_steps=4, frequency=2)
    mp.wrap(model)
    result = prunekit.fit(model, loader, epochs=2, lr=0.05, loss_fn=mp.loss(prunekit.training.classification_loss),
                          progress=mp.on_progress)
    assert result.steps == 8 and mp.t == 8 and mp.sparsity == 0.75
    scores = mp.finalize(apply=False)
    assert not any(n.endswith("_mask") for n, _ in model.named_buffers())
    prunekit.prune(model, 0.9, criterion=LearnedScores(scores), scope="global")
    for name, module in (("conv.weight", model.conv), ("fc1.weight", model.fc1), ("fc2.weight", model.fc2)):
        kept = scores[name][keep_mask(module)]
        dropped = scores[name][~keep_mask(module)]
        assert kept.numel() and dropped.numel()
    flat_kept = torch.cat([scores[n][keep_mask(m)] for n, m in
                           (("conv.weight", model.conv), ("fc1.weight", model.fc1), ("fc2.weight", model.fc2))])
    flat_dropped = torch.cat([scores[n][~keep_mask(m)] for n, m in
                              (("conv.weight", model.conv), ("fc1.weight", model.fc1), ("fc2.weight", model.fc2))])
    assert float(flat_kept.min()) >= float(flat_dropped.max())
    crit = prunekit.scores.as_criterion("learned")
    with pytest.raises(prunekit.InvalidParameterError, match="scores"):
        prunekit.prune(make_tiny(1), 0.5, criterion=crit)
    with pytest.raises(prunekit.InvalidParameterError, match="shape"):
        prunekit.prune(make_tiny(1), 0.5, criterion=crit, context={"scores": {"conv.weight": torch.ones(3)}})


def test_errors():
    with pytest.raises(prunekit.InvalidParameterError, match="method"):
        MovementPruning("medium")
    with pytest.raises(prunekit.InvalidParameterError, match="scope"):
        MovementPruning("soft", scope="global")
    with pytest.raises(prunekit.InvalidParameterError, match="end"):
        MovementPruning(pruning_steps=10, frequency=3)
    with pytest.raises(prunekit.InvalidParameterError, match="penalty"):
        MovementPruning("soft", penalty=-1.0)
    mp = MovementPruning()
    with pytest.raises(prunekit.InvalidParameterError, match="wrap"):
        mp.step(0)
    mp.wrap(_model())
    with pytest.raises(prunekit.InvalidParameterError, match="t"):
        mp.step(-1)
