"""prunekit.progress: the one progress protocol, its reporters, and fit / sensitivity analysis / the
recipe runner's stages reporting through it (old callback shapes adapted, with a warning)."""

from __future__ import annotations

import io
import logging
from collections import defaultdict

import pytest
import torch
from rich.console import Console
from torch import nn

import prunekit
from prunekit.analysis import sensitivity_analysis
from prunekit.deprecation import reset_warnings
from prunekit.errors import InvalidParameterError
from prunekit.progress import ProgressEvent, RichProgressBar, nested, progress_reporter
from prunekit.runner.core import StageProgress
from prunekit.training import TrainProgress


def passes(events):
    """``{(parent, stage): [[done, ...] per pass]}``: a pass starts where ``done`` falls back."""
    found = defaultdict(list)
    for e in events:
        runs = found[(e.parent, e.stage)]
        if not runs or e.done < runs[-1][-1][0]:
            runs.append([])
        runs[-1].append((e.done, e.total))
    return found


def assert_monotone_to_total(events, stage, parent=None):
    """Every pass of ``stage`` never goes back and ends with done == total; returns the passes."""
    runs = passes(events)[(parent, stage)]
    assert runs, f"no {stage} events"
    for run in runs:
        dones = [d for d, _ in run]
        assert dones == sorted(dones)
        assert all(t is None or d <= t for d, t in run)
        assert run[-1][0] == run[-1][1], run[-1]
    return runs


def tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 3))


def batches(n: int = 5, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 6, generator=g), torch.randint(0, 3, (8,), generator=g)) for _ in range(n)]


# -- the reporters ---------------------------------------------------------------------------------


def test_default_reporter_logs_at_debug_and_prints_nothing(capsys, caplog):
    with caplog.at_level(logging.DEBUG, logger="prunekit.progress"):
        for quiet in (None, False):
            with progress_reporter(quiet) as report:
                report(ProgressEvent("fit", 2, 4, {"loss": 0.5}, "epoch 1"))
    assert capsys.readouterr() == ("", "")
    assert [r.levelno for r in caplog.records] == [logging.DEBUG, logging.DEBUG]
    assert "fit: 2/4 epoch 1 loss 0.5" in caplog.records[0].getMessage()


def test_a_callable_receives_each_event_and_anything_else_is_refused():
    seen = []
    event = ProgressEvent("search", 1, 3, {})
    with progress_reporter(seen.append) as report:
        report(event)
    assert seen == [event]
    with pytest.raises(InvalidParameterError) as info:
        with progress_reporter(3, param="progress"):
            pass
    assert info.value.param == "progress" and "ProgressEvent" in str(info.value)


def test_rich_bar_draws_one_task_per_stage_and_restarts_a_stage_that_falls_back():
    out = io.StringIO()
    console = Console(file=out, width=200, force_terminal=False, color_system=None)
    with RichProgressBar(console) as bar:
        for done in range(4):
            bar(ProgressEvent("lottery", done, 3, {"accuracy": 0.5}, f"level {done}"))
        for level in range(2):
            for done in range(3):
                bar(ProgressEvent("fit", done, 2, {"loss": 1.0}, f"level {level}", parent="lottery"))
        tasks = bar.progress.tasks
    assert [t.description for t in tasks] == ["lottery level 3", "  fit level 1"]
    assert [(t.completed, t.total) for t in tasks] == [(3, 3), (2, 2)]
    text = out.getvalue()
    assert "lottery level 3" in text and "3/3" in text and "accuracy 0.5" in text and "  fit level 1" in text


def test_nested_sets_the_parent_and_keeps_an_old_event_class():
    seen = []
    inner = nested(seen.append, "lottery")
    inner(TrainProgress(0, 1, 4, 0.5, 0.1))
    inner(ProgressEvent("x", 0, 1, {}, parent="other"))
    assert [e.parent for e in seen] == ["lottery", "other"]
    assert isinstance(seen[0], TrainProgress) and seen[0].figures["loss"] == 0.5
    assert nested(None, "lottery") is None


# -- fit ---------------------------------------------------------------------------------------------


def test_fit_reports_every_step_up_to_the_total():
    events = []
    prunekit.fit(tiny_model(), batches(5), epochs=2, lr=0.05, progress=events.append)
    assert [e.done for e in events] == list(range(1, 11))
    assert {e.total for e in events} == {10} and {e.stage for e in events} == {"fit"}
    assert_monotone_to_total(events, "fit")
    assert set(events[0].figures) == {"loss", "lr", "epoch"} and events[-1].detail == "epoch 2/2"
    assert events[-1].figures["epoch"] == 1


def test_fit_on_data_without_a_length_ends_at_the_steps_taken():
    events = []
    prunekit.fit(tiny_model(), (b for b in batches(3)), epochs=1, progress=events.append)
    assert [(e.done, e.total) for e in events] == [(1, None), (2, None), (3, None), (3, 3)]


def test_fit_with_a_pruning_schedule_reports_the_sparsity():
    model = tiny_model()
    pruner = prunekit.Pruner(model, scope="global")
    events = []
    prunekit.fit(model, batches(4), epochs=3, pruner=pruner, schedule=prunekit.create_schedule(
        "agp", final=0.5, start=1, end=2), progress=events.append)
    assert "sparsity" not in events[0].figures
    assert events[-1].figures["sparsity"] == pytest.approx(0.5)


def test_fit_progress_bar_is_drawn_and_changes_nothing(capsys):
    def train(progress):
        model = tiny_model()
        torch.manual_seed(5)
        result = prunekit.fit(model, batches(4), epochs=2, lr=0.05, progress=progress)
        return result, model.state_dict()

    quiet, quiet_state = train(None)
    assert capsys.readouterr() == ("", "")  # by default nothing is printed
    drawn, drawn_state = train(True)
    out, err = capsys.readouterr()
    assert out == "" and "fit epoch 2/2" in err and "8/8" in err
    assert drawn.epoch_losses == quiet.epoch_losses
    assert all(torch.equal(drawn_state[k], quiet_state[k]) for k in quiet_state)


def test_fit_old_train_progress_callback_still_works_and_warns():
    reset_warnings()
    seen = []
    with pytest.warns(FutureWarning, match=r"TrainProgress\.loss .*figures\['loss'\]"):
        prunekit.fit(tiny_model(), batches(3), epochs=1, lr=0.05,
                     progress=lambda p: seen.append((p.epoch, p.step, p.total_steps, p.loss > 0, p.lr, p.sparsity)))
    assert seen == [(0, 1, 3, True, 0.05, None), (0, 2, 3, True, 0.05, None), (0, 3, 3, True, 0.05, None)]


def test_fit_refuses_a_bad_progress_before_training():
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(InvalidParameterError) as info:
        prunekit.fit(model, batches(2), progress="yes")
    assert info.value.param == "progress"
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# -- sensitivity analysis ----------------------------------------------------------------------------


def _evaluate(data):
    def evaluate(model):
        with torch.no_grad():
            return float(sum((model(x).argmax(1) == y).float().mean() for x, y in data)) / len(data)
    return evaluate


def test_sensitivity_reports_each_point_up_to_the_total():
    model, data = tiny_model(), batches(2)
    events = []
    sensitivity_analysis(model, _evaluate(data), sparsities=(0.0, 0.5, 0.9), progress=events.append)
    assert [e.done for e in events] == list(range(1, 7)) and {e.total for e in events} == {6}
    assert_monotone_to_total(events, "sensitivity")
    assert [(e.detail, e.figures["sparsity"]) for e in events[:3]] == [("0.weight", 0.0), ("0.weight", 0.5),
                                                                       ("0.weight", 0.9)]
    assert all(isinstance(e, ProgressEvent) and "metric" in e.figures for e in events)


def test_sensitivity_progress_bar_is_drawn_and_changes_nothing(capsys):
    model, data = tiny_model(), batches(2)
    quiet = sensitivity_analysis(model, _evaluate(data), sparsities=(0.0, 0.5, 0.9))
    assert capsys.readouterr() == ("", "")
    drawn = sensitivity_analysis(model, _evaluate(data), sparsities=(0.0, 0.5, 0.9), progress=True)
    out, err = capsys.readouterr()
    assert out == "" and "sensitivity 2.weight" in err and "6/6" in err
    assert drawn.curves == quiet.curves and drawn.baseline == quiet.baseline


@pytest.mark.parametrize("shape", ["star", "named"])
def test_sensitivity_old_five_argument_callback_still_works_and_warns(shape):
    reset_warnings()
    seen = []

    def named(done, total, layer, sparsity, metric):
        seen.append((done, total, layer, sparsity, metric))

    callback = (lambda *a: seen.append(a)) if shape == "star" else named
    with pytest.warns(FutureWarning, match=r"f\(event\)"):
        sensitivity_analysis(tiny_model(), _evaluate(batches(2)), sparsities=(0.0, 0.5), progress=callback)
    assert [s[:4] for s in seen] == [(1, 4, "0.weight", 0.0), (2, 4, "0.weight", 0.5), (3, 4, "2.weight", 0.0),
                                     (4, 4, "2.weight", 0.5)]
    assert all(isinstance(s[4], float) for s in seen)


# -- the recipe runner's stage events ---------------------------------------------------------------------


def test_stage_progress_is_an_event_and_its_old_attributes_warn():
    reset_warnings()
    event = StageProgress("mag", "step", 1, 3, step=4, total=10, loss=0.25)
    assert isinstance(event, ProgressEvent)
    assert (event.stage, event.done, event.total, event.detail, dict(event.figures)) == ("mag", 4, 10, "step",
                                                                                         {"loss": 0.25})
    with pytest.warns(FutureWarning, match=r"StageProgress\.status .*use detail"):
        assert event.status == "step"
    with pytest.warns(FutureWarning, match=r"StageProgress\.loss"):
        assert event.loss == 0.25
    assert (event.index, event.count, event.step, event.seconds) == (1, 3, 4, None)
    with pytest.raises(AttributeError):
        event.nothing  # noqa: B018
