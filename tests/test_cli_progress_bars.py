"""The command line's progress bars: ProgressEvents as rich tasks keyed by stage and parent, and the
adapters from the library's older callback shapes."""

from __future__ import annotations

import io

from rich.console import Console

from prunekit.cli.progress_bars import figures_text, progress_bars, stage_events, working
from prunekit.progress import ProgressEvent


def _console() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, width=160, force_terminal=False), buffer


def test_events_become_one_task_per_stage_nested_under_their_parent():
    console, buffer = _console()
    with progress_bars(console) as bars:
        for level in range(3):
            bars(ProgressEvent("lottery", level, 3, {}, f"level {level}"))
            for step in range(1, 5):
                bars(ProgressEvent("fit", step, 4, {"loss": 1 / step}, f"level {level}", "lottery"))
        bars(ProgressEvent("lottery", 3, 3, {"accuracy": 0.5}, "done"))
        tasks = {t.id: t for t in bars.progress.tasks}
        states = dict(bars.tasks)
    assert set(states) == {(None, "lottery"), ("lottery", "fit")}
    outer, inner = tasks[states[(None, "lottery")].task], tasks[states[("lottery", "fit")].task]
    assert (outer.completed, outer.total) == (3, 3) and (inner.completed, inner.total) == (4, 4)
    assert states[("lottery", "fit")].depth == 1 and states[("lottery", "fit")].events == 12
    text = buffer.getvalue()
    assert "lottery: done" in text and "3/3" in text and "accuracy 50.00%" in text
    assert "\n  training: level 2" in text and "4/4" in text and "loss 0.25" in text


def test_a_stage_that_starts_over_restarts_its_task():
    console, _ = _console()
    with progress_bars(console) as bars:
        bars(ProgressEvent("fit", 10, 10, {}, "level 1"))
        state = bars.tasks[(None, "fit")]
        bars(ProgressEvent("fit", 1, 8, {}, "level 2"))
        task = bars.progress.tasks[0]
        assert (task.completed, task.total) == (1, 8) and "level 2" in task.description
        assert state.done == 1 and state.detail == "level 2"


def test_working_finishes_a_stage_that_reports_nothing_itself():
    with working("sparse-timing", "layers") as bars:
        assert bars.progress.tasks[0].total is None
    assert bars.progress.tasks[0].completed == 1 == bars.progress.tasks[0].total


def test_stage_events_nest_the_training_steps_under_the_recipe_stages():
    sent: list[ProgressEvent] = []
    lines: list[str] = []
    on_event = stage_events(sent.append, lines.append, lambda: 2)
    on_event(ProgressEvent("dense", 0, 3, {}, "start"))
    on_event(ProgressEvent("dense", 3, 3, {"loss": 0.5}, "step"))
    on_event(ProgressEvent("dense", 3, 3, {"seconds": 1.0}, "done"))
    on_event(ProgressEvent("m50", 0, 0, {"seconds": 2.0}, "skipped"))
    runs = [e for e in sent if e.stage == "run"]
    fits = [e for e in sent if e.stage == "fit"]
    assert [(e.done, e.total, e.detail) for e in runs] == [(0, 2, "dense"), (0, 2, "dense"), (1, 2, "dense"),
                                                           (2, 2, "m50")]
    assert [(e.done, e.total, e.parent, dict(e.figures)) for e in fits] == [(0, 3, "run", {}),
                                                                           (3, 3, "run", {"loss": 0.5})]
    assert lines == ["m50: finished before, reused (2.0 s then)"]


def test_figures_text_shows_fractions_as_percentages_and_skips_non_finite():
    assert figures_text({"loss": 0.31234, "accuracy": 0.97, "lr": float("nan")}) == "loss 0.3123  accuracy 97.00%"
