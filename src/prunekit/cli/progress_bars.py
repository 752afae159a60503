"""Progress bars for the long commands: :class:`prunekit.progress.ProgressEvent` s drawn as rich tasks on stderr.

One task per stage (``fit``, ``lottery``, ``oneshot``, ``sparse-timing`` ...),
keyed by ``(parent, stage)`` and indented under its parent, so that a lottery
run shows its levels and, below them, the training steps of the current level::

    lottery: level 3 ticket      ━━━━━━━━━━╸━━━━━━━━━  3/6     0:00:41
      training: level 3 ticket   ━━━━━━━━━━━━━━━━━━━━  2000/2000  loss 0.0412  0:00:09

A stage whose ``done`` goes back (the next level's training) starts over.
Events in the older callback shapes the library still sends (``TrainProgress``
from ``fit``, ``OneShotProgress``, the recipe runner's ``StageProgress``) are
translated by the adapters below; they go once the library sends
``ProgressEvent`` s itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from ..progress import ProgressEvent

__all__ = ["ProgressBars", "progress_bars", "working", "stage_events", "figures_text"]

#: what each stage is called on screen (other stages show their own name)
LABELS = {"fit": "training", "oneshot": "pruning blocks", "prune": "pruning blocks", "capture": "capturing the first block's inputs",
          "owl": "measuring outliers (OWL)", "sparse-timing": "timing layers", "search": "searching",
          "run": "stages", "sensitivity": "sensitivity"}

#: figures shown as percentages
PERCENT = ("accuracy", "sparsity", "remaining", "val_accuracy", "test_accuracy", "instability")


def figures_text(figures: Mapping[str, float]) -> str:
    """``{"loss": 0.31, "accuracy": 0.97}`` -> ``"loss 0.3100  accuracy 97.00%"`` (non-finite values left out)."""
    parts = []
    for name, value in figures.items():
        if value is None or not math.isfinite(float(value)):
            continue
        parts.append(f"{name} {100 * value:.2f}%" if name in PERCENT else f"{name} {float(value):.4g}")
    return "  ".join(parts)


@dataclass
class TaskState:
    """What a stage's task shows now (read by tests)."""

    task: TaskID
    done: int
    total: int | None
    detail: str
    depth: int
    events: int = 0


class ProgressBars:
    """The callable a long call gets as ``progress=``: each :class:`ProgressEvent` updates the
    rich task of its ``(parent, stage)`` (created at its first event)."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[tuple[str | None, str], TaskState] = {}
        self._depth: dict[str, int] = {}

    def __call__(self, event: ProgressEvent) -> None:
        key = (event.parent, event.stage)
        state = self.tasks.get(key)
        figures = figures_text(event.figures)
        if state is None:
            depth = 0 if event.parent is None else self._depth.get(event.parent, 0) + 1
            self._depth.setdefault(event.stage, depth)
            task = self.progress.add_task(self._description(event, depth), total=event.total,
                                          completed=event.done, figures=figures)
            self.tasks[key] = TaskState(task, event.done, event.total, event.detail, depth, 1)
            return
        description = self._description(event, state.depth)
        if event.done < state.done:  # the stage starts over (the next level's training): restart its clock
            self.progress.reset(state.task, total=event.total, completed=event.done, description=description,
                                figures=figures)
        else:
            self.progress.update(state.task, total=event.total, completed=event.done, description=description,
                                 figures=figures)
        state.done, state.total, state.detail = event.done, event.total, event.detail
        state.events += 1

    @staticmethod
    def _description(event: ProgressEvent, depth: int = 0) -> str:
        label = LABELS.get(event.stage, event.stage)
        return "  " * depth + (f"{label}: {event.detail}" if event.detail else label)


@contextmanager
def progress_bars(console: Console | None = None) -> Iterator[ProgressBars]:
    """Rich progress bars on ``console`` (default: a new one on stderr) for as long as the block
    runs; yields the :class:`ProgressBars` to pass as ``progress=``. On a terminal they are
    redrawn live; written to a file, they appear once, in their final state."""
    console = console if console is not None else Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[figures]}"), TimeElapsedColumn(), console=console) as progress:
        yield ProgressBars(progress)


@contextmanager
def working(stage: str, detail: str = "") -> Iterator[ProgressBars]:
    """:func:`progress_bars` with ``stage`` shown as running (a bar without a total) while the
    block runs, and finished when it ends, for a call that does not report its own progress;
    a call that does (``progress=bars``, events of the same stage) moves the same bar."""
    with progress_bars() as bars:
        bars(ProgressEvent(stage, 0, None, {}, detail))
        yield bars
        state = bars.tasks[(None, stage)]
        if state.total is None:
            bars(ProgressEvent(stage, 1, 1, {}, detail))


# -- the recipe runner's events as nested stages ----------------------------------------------------------


def stage_events(send: Callable[[ProgressEvent], None], print_line: Callable[[str], None],
                 count: Callable[[], int]) -> Callable[[ProgressEvent], None]:
    """The recipe runner's events (``stage`` a run's name, ``detail`` its status, ``done`` / ``total``
    its training steps) as a ``run`` stage counting the ``count()`` stages finished, with a ``fit``
    stage below it for the steps of the stage being trained; a stage reused from an earlier start
    is printed with ``print_line``."""
    finished = 0

    def on_event(event: ProgressEvent) -> None:
        nonlocal finished
        status = event.detail
        if status in ("done", "skipped"):
            finished += 1
        send(ProgressEvent("run", finished, count(), {}, event.stage))
        steps = max(event.total or 0, 1)
        if status == "start":
            send(ProgressEvent("fit", 0, steps, {}, event.stage, "run"))
        elif status == "step":
            figures = {"loss": event.figures["loss"]} if "loss" in event.figures else {}
            send(ProgressEvent("fit", event.done, steps, figures, event.stage, "run"))
        elif status == "skipped":
            print_line(f"{event.stage}: finished before, reused ({event.figures.get('seconds', 0.0):.1f} s then)")

    return on_event
