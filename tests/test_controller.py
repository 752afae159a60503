"""PruningController on its own (events, levels, monotone masks, lottery resets) and driven by fit."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import prunekit
from prunekit.controller import PruningController, PruningEvent, PruningHooks
from prunekit.schedules import AGP, Iterative, Linear, OneShot
from prunekit.training import fit


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 8))


def _data(n: int = 64, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 20, generator=g)
    y = (x[:, :3].sum(1) > 0).long()
    return [(x[i : i + 16], y[i : i + 16]) for i in range(0, n, 16)]


def _keeps(pruner: prunekit.Pruner) -> list[torch.Tensor]:
    return [t.keep_mask().clone() for t in pruner.targets]


def _drive(controller: PruningController, epochs: int, steps_per_epoch: int) -> None:
    """The loop of the controller's module docstring, without the training."""
    controller.begin()
    step = 0
    for epoch in range(epochs):
        controller.on_epoch_begin(epoch)
        for _ in range(steps_per_epoch):
            controller.on_step_begin(step, epoch)
            step += 1


# -- the controller on its own --------------------------------------------------------------------


def test_step_schedule_events_at_scheduled_steps_with_scheduled_levels():
    pruner = prunekit.Pruner(_model(), scope="local")
    schedule = Linear(final=0.6, initial=0.2, start=3, end=9, frequency=2, unit="step")
    controller = PruningController(pruner, schedule)
    _drive(controller, epochs=3, steps_per_epoch=4)  # steps 0..11
    assert [(e.t, e.unit) for e in controller.events] == [(3, "step"), (5, "step"), (7, "step"), (9, "step")]
    assert [e.level for e in controller.events] == pytest.approx([0.2, 0.2 + 0.4 / 3, 0.2 + 0.8 / 3, 0.6])
    # the sparsity after each event is the level, per tensor to one entry (local scope)
    for event in controller.events:
        assert event.sparsity == pytest.approx(event.level, abs=1 / 256)
        assert not event.reset
    for t in pruner.targets:
        assert int((~t.keep_mask()).sum()) == round(0.6 * t.numel)
    assert controller.level == pytest.approx(0.6)
    assert controller.sparsity() == pytest.approx(controller.events[-1].sparsity)


def test_epoch_schedule_ignores_steps_and_fires_at_epoch_starts():
    pruner = prunekit.Pruner(_model(), scope="global")
    controller = PruningController(pruner, AGP(final=0.75, start=1, end=3, unit="epoch"))
    assert controller.on_step_begin(1, 0) is None  # not its unit
    _drive(controller, epochs=5, steps_per_epoch=2)
    assert [(e.t, e.unit) for e in controller.events] == [(1, "epoch"), (2, "epoch"), (3, "epoch")]
    total = sum(t.numel for t in pruner.targets)
    assert controller.events[-1].sparsity == round(0.75 * total) / total


def test_iterative_pruning_only_removes_more():
    pruner = prunekit.Pruner(_model(), criterion="random", scope="global")
    controller = PruningController(pruner, Iterative(final=0.8, steps=4, frequency=1, unit="step"))
    controller.begin()
    previous = None
    sparsities = []
    for step in range(4):
        # perturb the weights so a magnitude ranking could change its mind: masks must still only shrink
        with torch.no_grad():
            for t in pruner.targets:
                t.original.add_(torch.randn_like(t.original))
        event = controller.on_step_begin(step)
        assert isinstance(event, PruningEvent)
        keeps = _keeps(pruner)
        if previous is not None:
            for old, new in zip(previous, keeps):
                assert not bool((new & ~old).any())  # nothing pruned comes back
        previous = keeps
        sparsities.append(event.sparsity)
    assert sparsities == sorted(sparsities) and len(set(sparsities)) == 4
    assert sparsities[-1] == pytest.approx(0.8, abs=1e-3)


def test_a_step_reported_twice_prunes_once_and_enabled_gates_events():
    pruner = prunekit.Pruner(_model())
    controller = PruningController(pruner, OneShot(final=0.5, start=2, unit="step"))
    assert controller.on_step_begin(2) is not None
    assert controller.on_step_begin(2) is None  # gradient accumulation reports a step again
    assert len(controller.events) == 1 and pruner.steps == 1

    gated = PruningController(prunekit.Pruner(_model()), Linear(final=0.5, start=0, end=2, unit="step"),
                              enabled=lambda epoch: epoch != 1)
    for step, epoch in [(0, 0), (1, 1), (2, 2)]:
        gated.on_step_begin(step, epoch)
    assert [e.t for e in gated.events] == [0, 2]


def test_lottery_reset_puts_survivors_back_to_their_values_at_begin():
    model = _model()
    pruner = prunekit.Pruner(model, scope="global")
    controller = PruningController(pruner, OneShot(final=0.6, start=1, unit="epoch"), lottery=True)
    controller.begin()
    initial = [t.original.detach().clone() for t in pruner.targets]
    fit(model, _data(), epochs=1, lr=0.1)  # the weights move away from their initial values
    assert not torch.equal(pruner.targets[0].original.detach(), initial[0])
    event = controller.on_epoch_begin(1)
    assert event is not None and event.reset
    for t, w0 in zip(pruner.targets, initial):
        keep = t.keep_mask()
        w = t.effective().detach()
        assert torch.equal(w[keep], w0[keep])
        assert bool((w[~keep] == 0).all())


def test_no_lottery_reset_when_the_flag_is_off_at_that_epoch():
    model = _model()
    pruner = prunekit.Pruner(model)
    controller = PruningController(pruner, Linear(final=0.5, start=0, end=1, unit="epoch"),
                                   lottery=lambda epoch: epoch == 1)
    controller.begin()
    assert [controller.on_epoch_begin(e).reset for e in (0, 1)] == [False, True]


def test_fixed_structure_decides_the_level():
    pruner = prunekit.Pruner(_model(), structure="2:4")
    controller = PruningController(pruner, OneShot(final=0.3, start=0, unit="step"))
    event = controller.on_step_begin(0)
    assert event.level is None and event.sparsity == 0.5


def test_context_reaches_the_criterion_at_every_event():
    seen = []

    class Spy(prunekit.Pruner):
        def prepare(self, **context):
            seen.append(context)
            super().prepare(**context)

    loader = _data()
    controller = PruningController(Spy(_model()), Linear(final=0.5, start=0, end=1, unit="step"),
                                   context={"data": loader})
    _drive(controller, epochs=1, steps_per_epoch=2)
    assert seen == [{"data": loader}, {"data": loader}]


def test_apply_and_record_separate_realising_from_logging():
    pruner = prunekit.Pruner(_model())
    controller = PruningController(pruner)
    description = controller.apply(0.5)
    assert "sparsity=0.5" in description and controller.events == []
    event = controller.record(3, 0.5, description=description)
    assert (event.t, event.unit, event.level) == (3, "epoch", 0.5)
    assert event.sparsity == pytest.approx(0.5, abs=1e-3)


@pytest.mark.parametrize(
    "kwargs, param",
    [
        ({"pruner": object()}, "pruner"),
        ({"schedule": "agp"}, "schedule"),
        ({"lottery": "yes"}, "lottery"),
        ({"enabled": 1}, "enabled"),
        ({"context": [1]}, "context"),
    ],
)
def test_bad_arguments_name_the_parameter(kwargs, param):
    args = {"pruner": prunekit.Pruner(_model()), **kwargs}
    with pytest.raises(prunekit.InvalidParameterError) as info:
        PruningController(**args)
    assert info.value.param == param


# -- fit drives the controller ----------------------------------------------------------------------


def test_fit_prunes_through_the_controller(monkeypatch):
    calls = []
    original = PruningController.event

    def spy(self, t, level, **kwargs):
        calls.append(t)
        return original(self, t, level, **kwargs)

    monkeypatch.setattr(PruningController, "event", spy)
    model = _model()
    pruner = prunekit.Pruner(model)
    result = fit(model, _data(), epochs=3, pruner=pruner, schedule=Linear(final=0.5, start=2, end=8, frequency=3,
                                                                             unit="step"))
    assert calls == [2, 5, 8]
    assert result.pruning_events == [(2, 0.0), (5, pytest.approx(0.25)), (8, pytest.approx(0.5))]
    assert pruner.report().sparsity == pytest.approx(0.5, abs=1e-3)


def test_fit_with_a_controller_gives_the_hand_driven_event_log():
    schedule = Linear(final=0.6, start=1, end=9, frequency=4, unit="step")
    by_hand = PruningController(prunekit.Pruner(_model()), schedule)
    _drive(by_hand, epochs=3, steps_per_epoch=4)
    model = _model()
    controller = PruningController(prunekit.Pruner(model), schedule)
    assert isinstance(controller, PruningHooks)
    result = fit(model, _data(), epochs=3, controller=controller)
    assert controller.events == by_hand.events
    assert result.pruning_events == [(e.t, e.level) for e in by_hand.events]


def test_fit_controller_arguments_are_exclusive():
    model = _model()
    pruner = prunekit.Pruner(model)
    with pytest.raises(prunekit.InvalidParameterError, match="^controller:"):
        fit(model, _data(), controller=PruningController(pruner, OneShot()), pruner=pruner, schedule=OneShot())
    with pytest.raises(prunekit.InvalidParameterError, match="^controller:"):
        fit(model, _data(), controller=object())
