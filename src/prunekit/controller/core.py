"""One controller from a schedule and training progress to pruning events.

:class:`PruningController` owns a pruner and a schedule. A training loop
tells it where training is; the controller decides whether that point is a
pruning event and, if so, runs the event:

1. **when**: ``schedule.sparsity_at(t)`` is not None (``t`` in the
   schedule's ``unit``, steps or epochs), the ``enabled`` flag holds, and
   ``t`` was not handled before (a loop may report a step twice, e.g. under
   gradient accumulation);
2. **how much**: the schedule's level at ``t`` (None when the structure fixes
   it, e.g. 2:4), the fraction of the targets zero afterwards;
3. **score, allocate, realise**: ``pruner.prepare(**context)``,
   ``pruner.allocate(level)``, rank 0's masks under ``torch.distributed``,
   ``pruner.realise(keeps)``; masks only ever lose entries, so iterative
   pruning only removes more;
4. **lottery reset**: when the ``lottery`` flag holds, the survivors go back
   to their values at :meth:`PruningController.begin` (Frankle & Carbin 2019);
5. a :class:`PruningEvent` is appended to :attr:`PruningController.events`.

Driving it from a new training loop (what :func:`prunekit.fit`, the
Lightning callback and the Hugging Face callback do)::

    controller = PruningController(pruner, schedule, lottery=False)
    controller.begin()                         # once, before the first step
    step = 0
    for epoch in range(epochs):
        controller.on_epoch_begin(epoch)       # prunes when unit="epoch" and epoch is an event
        for batch in loader:
            controller.on_step_begin(step, epoch)  # prunes when unit="step" and step is an event
            ...forward, backward, optimizer step...
            step += 1
    controller.events                          # [PruningEvent(t, unit, level, sparsity, reset, description)]

``step`` counts optimizer steps done, so the event of step ``t`` happens
before the ``t``-th optimizer step (0-based). Calling both hooks every time is
correct: each acts only for its unit. Training code needs only the small
:class:`PruningHooks` protocol (``begin``, ``on_epoch_begin``,
``on_step_begin``, ``events``).

Pruning outside a schedule: :meth:`PruningController.event` prunes to a
level as the event at ``t`` (``prune_at_init`` runs its rounds this way);
:meth:`PruningController.apply` prunes without logging or resetting, and
:meth:`PruningController.record` logs an event whose masks someone else put
on the model (Lightning's epoch-end pruning uses the two, since a torch
pruning function may realise the masks itself).

Extension points: ``context=`` reaches the criterion at every event (data,
loss function); ``allocate=`` of :meth:`~PruningController.apply` replaces
the pruner's allocation for one event (Lightning's ``amount``, relative to
what remains, is one); any object with ``prepare``, ``allocate``,
``realise`` and ``describe`` (:class:`StepPruner`) can stand for the
:class:`prunekit.Pruner`; any object with :class:`PruningHooks` can stand for
the controller in :func:`prunekit.fit`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from ..allocation import Sparsity
from ..errors import InvalidParameterError
from ..schedules import Schedule
from ..structures import Structure
from ..targets import Target
from .distributed import sync_keep_masks
from .ticket import LotteryTicket

__all__ = ["Flag", "PruningController", "PruningEvent", "PruningHooks", "StepPruner", "flag_at", "mask_stats"]

logger = logging.getLogger(__name__)

#: A bool, or a function of the epoch (or of ``t``) returning one.
Flag = bool | Callable[[int], Any]


@dataclass(frozen=True)
class PruningEvent:
    """One pruning event.

    Attributes:
        t: when, in ``unit`` (the schedule's ``"step"`` or ``"epoch"``).
        unit: ``"step"`` or ``"epoch"``.
        level: the level asked for: the schedule's sparsity at ``t`` (or the
            caller's), None when the structure fixes it or a custom
            allocation decided.
        sparsity: fraction of the targets' entries pruned afterwards (from the masks).
        reset: whether the survivors were reset to their lottery-ticket values after it.
        description: criterion, structure, scope and request, as logged.
    """

    t: int
    unit: str
    level: Sparsity | None
    sparsity: float
    reset: bool = False
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@runtime_checkable
class StepPruner(Protocol):
    """What the controller needs of a pruner (:class:`prunekit.Pruner` is one)."""

    model: nn.Module
    targets: list[Target]
    structure: Structure

    def prepare(self, **context: Any) -> None: ...

    def allocate(self, sparsity: Sparsity | None) -> list[torch.Tensor]: ...

    def realise(self, keeps: Sequence[torch.Tensor], description: str = "") -> None: ...

    def describe(self, sparsity: Sparsity | str | None) -> str: ...


@runtime_checkable
class PruningHooks(Protocol):
    """What a training loop calls: :class:`PruningController` is one."""

    events: list[PruningEvent]

    def begin(self) -> None: ...

    def on_epoch_begin(self, epoch: int) -> PruningEvent | None: ...

    def on_step_begin(self, step: int, epoch: int | None = None) -> PruningEvent | None: ...


def flag_at(value: Flag, t: int) -> bool:
    """A bool, or a function of ``t`` returning one."""
    return bool(value(t)) if callable(value) else bool(value)


def mask_stats(targets: Sequence[Target]) -> list[tuple[int, int]]:
    """``(pruned entries, entries)`` of each target, from its mask."""
    out = []
    for t in targets:
        keep = t.keep_mask()
        out.append((0 if keep is None else int((~keep).sum()), t.numel))
    return out


def _check_flag(name: str, value: Any) -> Flag:
    if not (isinstance(value, bool) or callable(value)):
        raise InvalidParameterError(name, "a bool or a function epoch -> bool", value, f"Fix: e.g. {name}=True.")
    return value


class PruningController:
    """Turns training progress into pruning events of ``pruner`` on ``schedule``.

    Args:
        pruner: a :class:`prunekit.Pruner` (or any :class:`StepPruner`).
        schedule: a :class:`~prunekit.schedules.Schedule` (``unit`` steps or
            epochs); None for a controller driven only through :meth:`event`.
        context: passed to the criterion at every event (``{"data": loader,
            "loss_fn": ...}`` for criteria that need data).
        lottery: bool or ``epoch -> bool``: after an event, reset the unpruned
            target weights to their values at :meth:`begin` (Frankle & Carbin
            2019).
        resample: with ``lottery``, draw fresh values with each layer's
            ``reset_parameters()`` instead.
        enabled: bool or ``epoch -> bool``: whether an event may prune now.
        sync: under ``torch.distributed``, prune every rank with rank 0's masks.

    The flags are functions of the epoch when the loop passes one to
    :meth:`on_step_begin`, else of ``t``. See the module docstring for the
    loop that drives it.
    """

    def __init__(
        self,
        pruner: StepPruner,
        schedule: Schedule | None = None,
        *,
        context: Mapping[str, Any] | None = None,
        lottery: Flag = False,
        resample: bool = False,
        enabled: Flag = True,
        sync: bool = True,
    ) -> None:
        if not isinstance(pruner, StepPruner):
            raise InvalidParameterError(
                "pruner", "a prunekit.Pruner (prepare, allocate, realise)", type(pruner).__name__,
                "Fix: pass prunekit.Pruner(model, ...).",
            )
        if schedule is not None and not isinstance(schedule, Schedule):
            raise InvalidParameterError(
                "schedule", "a prunekit Schedule (prunekit.create_schedule(...)) or None", schedule,
                "Fix: e.g. prunekit.create_schedule('agp', final=0.8, start=0, end=500, frequency=50, unit='step').",
            )
        if context is not None and not isinstance(context, Mapping):
            raise InvalidParameterError("context", "a mapping such as {'data': loader}", context)
        self.pruner = pruner
        self.schedule = schedule
        self.context = dict(context or {})
        self.lottery = _check_flag("lottery", lottery)
        self.resample = bool(resample)
        self.enabled = _check_flag("enabled", enabled)
        self.sync = bool(sync)
        self.events: list[PruningEvent] = []
        self._ticket: LotteryTicket | None = None
        self._done: set[int] = set()

    # -- the training loop's hooks ---------------------------------------------------

    @property
    def unit(self) -> str | None:
        """The schedule's unit (``"step"`` or ``"epoch"``), None without a schedule."""
        return None if self.schedule is None else self.schedule.unit

    def begin(self) -> None:
        """Training starts: remember the lottery-ticket values (when a reset may happen)."""
        if callable(self.lottery) or self.lottery:
            self._ticket = LotteryTicket(self.pruner.targets)

    def on_epoch_begin(self, epoch: int) -> PruningEvent | None:
        """Epoch ``epoch`` starts: the event of an ``unit="epoch"`` schedule, if any."""
        return self.at(epoch, epoch) if self.unit == "epoch" else None

    def on_step_begin(self, step: int, epoch: int | None = None) -> PruningEvent | None:
        """``step`` optimizer steps are done: the event of a ``unit="step"`` schedule, if any."""
        return self.at(step, epoch) if self.unit == "step" else None

    def at(self, t: int, epoch: int | None = None) -> PruningEvent | None:
        """Run the schedule's event at ``t`` (in its unit) unless ``t`` is none or was handled."""
        if self.schedule is None or t in self._done:
            return None
        level = self.schedule.sparsity_at(t)
        if level is None or not flag_at(self.enabled, t if epoch is None else epoch):
            return None
        self._done.add(t)
        return self.event(t, level, epoch=epoch)

    # -- events ------------------------------------------------------------------------

    def event(
        self,
        t: int,
        level: Sparsity | None,
        *,
        epoch: int | None = None,
        unit: str | None = None,
        allocate: Callable[[StepPruner], list[torch.Tensor]] | None = None,
        description: str | None = None,
    ) -> PruningEvent:
        """Prune to ``level`` now as the event at ``t``, reset if due, and log it."""
        description = self.apply(level, allocate=allocate, description=description)
        return self.record(t, level, epoch=epoch, unit=unit, description=description)

    def apply(
        self,
        level: Sparsity | None,
        *,
        allocate: Callable[[StepPruner], list[torch.Tensor]] | None = None,
        description: str | None = None,
    ) -> str:
        """Score, allocate and realise ``level`` (no event logged, no reset); returns the description.

        ``allocate(pruner) -> keeps`` replaces the pruner's own allocation
        (Lightning's ``amount``, relative to what remains, does this).
        """
        pruner = self.pruner
        if pruner.structure.fixed_sparsity is not None:
            level = None  # N:M and the like fix the level themselves
        pruner.prepare(**self.context)
        keeps = allocate(pruner) if allocate is not None else pruner.allocate(level)
        if self.sync:
            keeps = sync_keep_masks(keeps)
        description = description if description is not None else pruner.describe(level)
        pruner.realise(keeps, description)
        return description

    def record(
        self,
        t: int,
        level: Sparsity | None,
        *,
        epoch: int | None = None,
        unit: str | None = None,
        description: str = "",
    ) -> PruningEvent:
        """Log the event at ``t`` whose masks are already on the model; reset if due."""
        reset = self._ticket is not None and flag_at(self.lottery, t if epoch is None else epoch)
        if reset:
            self.reset_ticket()
        if self.pruner.structure.fixed_sparsity is not None:
            level = None
        event = PruningEvent(int(t), unit or self.unit or "epoch", level, self.sparsity(), reset, description)
        self.events.append(event)
        logger.info("pruned to %.4f at %s %d%s", event.sparsity, event.unit, event.t,
                    " (lottery reset)" if reset else "")
        return event

    def reset_ticket(self) -> bool:
        """Reset the survivors to their values at :meth:`begin`; False when no values were taken."""
        if self._ticket is None:
            return False
        self._ticket.reset(self.pruner.targets, resample=self.resample)
        return True

    def sparsity(self) -> float:
        """Fraction of the targets' entries pruned now (from the masks)."""
        stats = mask_stats(self.pruner.targets)
        return sum(z for z, _ in stats) / max(1, sum(n for _, n in stats))

    @property
    def level(self) -> Sparsity | None:
        """The level of the last event (None before the first)."""
        return self.events[-1].level if self.events else None

    def __repr__(self) -> str:
        return f"PruningController({self.pruner!r}, {self.schedule!r}, {len(self.events)} events)"
