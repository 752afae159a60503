"""One progress protocol for every long call: :class:`ProgressEvent`, and where it goes.

Every call that can take more than a few seconds (:func:`prunekit.fit`,
:func:`prunekit.analysis.sensitivity_analysis`, lottery runs, one-shot
pruning, :func:`prunekit.surgery.structural_prune`, :func:`prunekit.execution.to_sparse`,
recipe runs) takes ``progress: ProgressArg = None``:

- ``None`` or ``False`` (default): nothing is printed; each event is logged at
  DEBUG on the ``prunekit.progress`` logger;
- ``True``: a rich progress bar on stderr (in a notebook, rich's live display
  there), one bar per stage, nested stages indented under their parent;
- a callable: called with each :class:`ProgressEvent` (and the event is logged at DEBUG too).

An event says how far one *stage* of the work is: ``done`` units of
``total`` (``None`` while unknown). Within one pass of a stage ``done`` never
decreases and the pass ends with ``done == total``; a stage that starts again
(the next lottery level's training, the next search step's bisection) begins
again from a smaller ``done``. ``figures`` carries the current numbers (loss,
accuracy, sparsity, ...), ``detail`` what is being worked on (a layer, ``"level 3"``,
``"block 7"``), ``parent`` the enclosing stage of nested work.

The event classes of earlier releases (``TrainProgress``, ``OneShotProgress``,
``StageProgress``) are :class:`LegacyEvent` subclasses of :class:`ProgressEvent`:
a callback written for them keeps working for one release, and each old
attribute it reads warns once with the new form.
"""

from __future__ import annotations

import copy
import logging
import numbers
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional, Union

from .deprecation import warn_once
from .errors import InvalidParameterError

__all__ = [
    "LegacyEvent",
    "ProgressArg",
    "ProgressCallback",
    "ProgressEvent",
    "RichProgressBar",
    "check_progress",
    "nested",
    "progress_reporter",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProgressEvent:
    """How far one stage of a long call is.

    Attributes:
        stage: the kind of work: ``"fit"``, ``"sensitivity"``, ``"lottery"``,
            ``"capture"`` / ``"owl"`` / ``"prune"`` (one-shot), ``"search"``,
            ``"macs-search"``, ``"sparse-timing"``, or a recipe run's stage name.
        done: units of the stage finished (monotone within a pass; ends at ``total``).
        total: units in the stage, ``None`` while unknown.
        figures: the current numbers, e.g. ``{"loss": 0.31, "lr": 0.05}``.
        detail: what is being worked on: a layer name, ``"level 3"``, ``"block 7"``.
        parent: the enclosing stage of nested work (a lottery's ``fit``), else None.
    """

    stage: str
    done: int
    total: int | None
    figures: Mapping[str, float] = field(default_factory=dict)
    detail: str = ""
    parent: str | None = None

    def with_parent(self, parent: str | None) -> ProgressEvent:
        """This event (same class, old attributes kept) with ``parent`` set."""
        twin = copy.copy(self)
        object.__setattr__(twin, "parent", parent)
        return twin


ProgressCallback = Callable[[ProgressEvent], None]
#: The type of every public ``progress=`` parameter.
ProgressArg = Union[bool, ProgressCallback, None]


class LegacyEvent(ProgressEvent):
    """A :class:`ProgressEvent` that also answers an old event class's attributes.

    Subclasses set ``_new_forms`` (old attribute -> what to read instead) and
    store the old values in ``self._legacy`` (:meth:`_keep_legacy`). Reading an
    old attribute returns its old value and warns once (:class:`FutureWarning`).
    """

    _new_forms: ClassVar[Mapping[str, str]] = {}

    def _keep_legacy(self, **values: Any) -> None:
        object.__setattr__(self, "_legacy", values)

    def __getattr__(self, name: str) -> Any:  # only reached when normal lookup fails
        legacy = object.__getattribute__(self, "__dict__").get("_legacy", {})
        if name in legacy:
            cls = type(self).__name__
            warn_once(f"{cls}.{name} (a progress callback reading the old event)",
                      f"{self._new_forms.get(name, name)} of the prunekit.progress.ProgressEvent it receives")
            return legacy[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


def _label(event: ProgressEvent) -> str:
    text = event.stage + (f" {event.detail}" if event.detail else "")
    return ("  " + text) if event.parent else text


def _figures_text(figures: Mapping[str, float]) -> str:
    parts = []
    for key, value in figures.items():
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            parts.append(f"{key} {value}")
        elif isinstance(value, numbers.Real):
            parts.append(f"{key} {float(value):.4g}")
    return " ".join(parts)


class RichProgressBar:
    """A :data:`ProgressCallback` drawing one rich task per ``(parent, stage)``.

    A stage whose ``done`` falls back starts its task again. Use it as a
    context manager (the live display starts and stops with it); ``console``
    defaults to a rich console on stderr (rich shows it as a live widget in
    Jupyter).
    """

    def __init__(self, console: Any = None) -> None:
        from rich.console import Console  # rich is a dependency; imported here to keep `import prunekit` light
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = console if console is not None else Console(stderr=True)
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[figures]}"), TimeElapsedColumn(), console=self.console)
        self._tasks: dict[tuple[str | None, str], tuple[Any, int]] = {}

    def __enter__(self) -> RichProgressBar:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def __call__(self, event: ProgressEvent) -> None:
        key = (event.parent, event.stage)
        known = self._tasks.get(key)
        label, figures = _label(event), _figures_text(event.figures)
        if known is None:
            task = self.progress.add_task(label, total=event.total, figures=figures)
        else:
            task, last = known
            if event.done < last:
                self.progress.reset(task, total=event.total, description=label, figures=figures)
        self.progress.update(task, completed=event.done, total=event.total, description=label, figures=figures)
        self._tasks[key] = (task, event.done)


def _log(event: ProgressEvent) -> None:
    logger.debug("%s%s: %d/%s %s%s", f"{event.parent}/" if event.parent else "", event.stage, event.done,
                 "?" if event.total is None else event.total, event.detail, (" " + _figures_text(event.figures))
                 if event.figures else "")


def check_progress(progress: Any, param: str = "progress") -> None:
    """Raise :class:`~prunekit.errors.InvalidParameterError` unless ``progress`` is a :data:`ProgressArg`."""
    if progress is None or isinstance(progress, bool) or callable(progress):
        return
    raise InvalidParameterError(
        param, "None, False (log only), True (a progress bar) or a function taking a prunekit.progress.ProgressEvent",
        f"<{type(progress).__name__}>", f"Fix: {param}=True for a bar, or {param}=print to see the events.",
    )


@contextmanager
def progress_reporter(progress: ProgressArg, *, param: str = "progress",
                      console: Any = None) -> Iterator[ProgressCallback]:
    """The :data:`ProgressCallback` a long call reports to, for the duration of the ``with`` block.

    ``None``/``False``: events logged at DEBUG only. ``True``: a :class:`RichProgressBar`
    (on ``console``, default stderr), stopped when the block ends. A callable: called with
    each event (after the DEBUG log line). Anything else: :class:`InvalidParameterError`
    naming ``param``.
    """
    check_progress(progress, param)
    if progress is None or progress is False:
        yield _log
        return
    if progress is True:
        with RichProgressBar(console) as bar:
            def draw(event: ProgressEvent) -> None:
                _log(event)
                bar(event)
            yield draw
        return
    user: ProgressCallback = progress  # type: ignore[assignment]

    def call(event: ProgressEvent) -> None:
        _log(event)
        user(event)
    yield call


def nested(callback: Optional[ProgressCallback], parent: str) -> Optional[ProgressCallback]:
    """``callback`` with ``parent`` set on the events that have none (for work inside a stage)."""
    if callback is None:
        return None

    def inner(event: ProgressEvent) -> None:
        callback(event if event.parent is not None else event.with_parent(parent))
    return inner
