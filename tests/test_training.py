"""The plain training loop: scheduled pruning events, masks kept through optimizers, lr schedules."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import prunekit
from prunekit.schedules import AGP, Iterative, OneShot
from prunekit.training import TrainProgress, fit, make_optimizer


def _data(n: int = 96, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 20, generator=g)
    y = (x[:, :5].sum(1) > 0).long()
    return [(x[i : i + 16], y[i : i + 16]) for i in range(0, n, 16)]


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 2))


def test_fit_trains_and_loss_decreases():
    model = _model()
    result = fit(model, _data(), epochs=8, lr=0.1)
    assert result.steps == 8 * 6
    assert result.epoch_losses[-1] < 0.7 * result.epoch_losses[0]


@pytest.mark.parametrize("mode", ["reparam", "inplace"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_epoch_schedule_prunes_at_events_and_zeros_survive_every_step(mode, optimizer):
    model = _model()
    pruner = prunekit.Pruner(model, scope="global", mode=mode)
    schedule = AGP(final=0.75, start=1, end=3)
    seen = []

    def check(p: TrainProgress) -> None:
        for target in pruner.targets:
            mask = target.keep_mask()
            if mask is not None:
                assert bool((target.effective()[~mask] == 0).all())
        seen.append(p.sparsity)

    result = fit(model, _data(), epochs=5, optimizer=optimizer, lr=0.05, weight_decay=0.01,
                 pruner=pruner, schedule=schedule, progress=check)
    assert [t for t, _ in result.pruning_events] == [1, 2, 3]
    assert result.pruning_events[-1][1] == pytest.approx(0.75)
    assert pruner.report().sparsity == pytest.approx(0.75, abs=1e-3)
    assert seen[0] is None and seen[-1] == pytest.approx(0.75)


def test_step_schedule_events_use_global_step():
    model = _model()
    pruner = prunekit.Pruner(model, mode="inplace")
    schedule = Iterative(final=0.6, steps=3, frequency=4, start=2, unit="step")
    result = fit(model, _data(), epochs=3, pruner=pruner, schedule=schedule)
    assert [t for t, _ in result.pruning_events] == [2, 6, 10]
    assert pruner.report()["0.weight"].sparsity == pytest.approx(0.6, abs=1 / 640)


def test_max_steps_and_lr_schedules():
    model = _model()
    lrs = []
    fit(model, _data(), epochs=10, lr=0.2, lr_schedule="cosine", max_steps=10, progress=lambda p: lrs.append(p.lr))
    assert len(lrs) == 10
    assert lrs[0] == pytest.approx(0.2) and lrs[-1] < 0.02
    assert all(b <= a for a, b in zip(lrs, lrs[1:]))
    steps = []
    fit(_model(), _data(), epochs=4, lr=1.0, lr_schedule="step", progress=lambda p: steps.append(p.lr))
    assert steps[0] == 1.0 and steps[12] == pytest.approx(0.1) and steps[-1] == pytest.approx(0.01)


def test_bad_arguments_name_the_parameter():
    model = _model()
    with pytest.raises(prunekit.InvalidParameterError, match="^schedule:"):
        fit(model, _data(), pruner=prunekit.Pruner(model))
    with pytest.raises(prunekit.InvalidParameterError, match="^optimizer:.*Did you mean 'adam'"):
        make_optimizer(model, "adan")
    with pytest.raises(prunekit.InvalidParameterError, match="^lr:"):
        make_optimizer(model, lr=-1)
    with pytest.raises(prunekit.InvalidParameterError, match="^lr_schedule:"):
        fit(model, _data(), lr_schedule="warm")
    with pytest.raises(prunekit.InvalidParameterError, match="^epochs:"):
        fit(model, _data(), epochs=-1)
    one = OneShot(final=0.5)
    assert one.sparsity_at(0) == 0.5


def test_evaluate_dispatches_to_the_metric():
    model = _model()
    fit(model, _data(), epochs=8, lr=0.1)
    acc = prunekit.evaluate(model, _data(seed=1))
    assert 0.7 < acc.accuracy <= 1.0 and acc.samples == 96

    class Bigram(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(5, 5)

        def forward(self, x):
            return self.emb(x)

    x = torch.randint(0, 5, (4, 8))
    ppl = prunekit.evaluate(Bigram(), [(x, x.roll(-1, 1))], metric="perplexity")
    assert ppl.perplexity > 1.0 and ppl.tokens == 32
    with pytest.raises(prunekit.InvalidParameterError, match="^metric:"):
        prunekit.evaluate(model, _data(), metric="f1")
