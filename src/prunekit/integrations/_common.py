"""What the Lightning and Hugging Face callbacks share (no framework imports here).

Both callbacks keep their settings until the framework hands them the model,
then build a :class:`~prunekit.Pruner` and a
:class:`~prunekit.controller.PruningController` with :func:`build_controller`
and forward the framework's hooks to the controller. Everything about when
and how much to prune lives in the controller; this module only checks the
settings the two callbacks have in common.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..allocation import NORMALIZERS, Sparsity, check_sparsity
from ..controller import Flag, PruningController, PruningEvent
from ..scores import Criterion
from ..errors import InvalidParameterError, check_choice
from ..masks import list_realisations
from ..pruner import Pruner
from ..schedules import Schedule
from ..structures import Structure
from ..targets import Target

__all__ = [
    "ControllerViews", "build_controller", "check_context", "check_flag", "check_overrides", "check_schedule", "check_settings"]

logger = logging.getLogger(__name__)


class ControllerViews:
    """The read-only views both callbacks give of their controller (``None``/empty until the
    framework hands over the model: ``setup`` in Lightning, ``on_train_begin`` in Hugging Face)."""

    controller: PruningController | None

    @property
    def pruner(self) -> Pruner | None:
        """The controller's pruner (None before the callback has the model)."""
        return None if self.controller is None else self.controller.pruner  # type: ignore[return-value]

    @property
    def events(self) -> list[tuple[int, float]]:
        """``(t, sparsity after)`` of every event so far (t in the schedule's unit: epoch or step)."""
        return [(e.t, e.sparsity) for e in self.event_log]

    @property
    def event_log(self) -> list[PruningEvent]:
        """The controller's :class:`~prunekit.controller.PruningEvent` log."""
        return [] if self.controller is None else list(self.controller.events)


def check_flag(name: str, value: Any, what: str = "epoch") -> Flag:
    """A bool, or a function ``what -> bool``."""
    if not (isinstance(value, bool) or callable(value)):
        raise InvalidParameterError(name, f"a bool or a function {what} -> bool", value)
    return value


def check_context(context: Any) -> dict[str, Any] | None:
    """What the criterion reads at every event (``{"data": ..., "loss_fn": ...}``), or None."""
    if context is None:
        return None
    if not isinstance(context, Mapping):
        raise InvalidParameterError("context", "a mapping such as {'data': [batch, ...]}", context,
                                    "Fix: context={'data': [(x, y)]} for criteria that need data.")
    return dict(context)


def check_overrides(overrides: Mapping[str, Sparsity] | None) -> dict[str, Sparsity] | None:
    """``{name pattern: sparsity}`` checked, or None."""
    if overrides is None:
        return None
    if not isinstance(overrides, Mapping):
        raise InvalidParameterError("overrides", "a mapping {name pattern: sparsity}", overrides)
    for pattern, value in overrides.items():
        check_sparsity(value, f"overrides[{pattern!r}]")
    return dict(overrides) or None


def check_schedule(schedule: Any) -> Schedule:
    """A prunekit schedule, or an error that says how to make one."""
    if not isinstance(schedule, Schedule):
        raise InvalidParameterError(
            "schedule", "a prunekit Schedule (prunekit.create_schedule(...))", schedule,
            "Fix: e.g. prunekit.schedules.Linear(final=0.8, start=0, end=100, frequency=10, unit='step').",
        )
    return schedule


def check_settings(normalize: str, mode: str) -> tuple[str, str]:
    """``normalize`` and ``mode`` checked against prunekit's choices."""
    return check_choice("normalize", normalize, NORMALIZERS), check_choice("mode", mode, list_realisations())


def build_controller(
    model: nn.Module,
    *,
    criterion: Criterion | Callable[[Target], torch.Tensor],
    structure: Structure,
    scope: str,
    schedule: Schedule | None,
    targets: Sequence[Target] | Sequence[tuple[nn.Module, str]] | None = None,
    selection: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Sparsity] | None = None,
    normalize: str = "none",
    min_keep: int = 1,
    mode: str = "reparam",
    context: Mapping[str, Any] | None = None,
    lottery: Flag = False,
    resample: bool = False,
    enabled: Flag = True,
    sync: bool = True,
) -> PruningController:
    """The callback's pruner over ``model`` (every target checked against ``structure``) and its controller."""
    pruner = Pruner(model, criterion=criterion, structure=structure, scope=scope, targets=targets,
                    overrides=overrides, normalize=normalize, min_keep=min_keep, mode=mode, **dict(selection or {}))
    for t in pruner.targets:
        structure.check(t)
    logger.debug("%d targets: %s", len(pruner.targets), ", ".join(t.name for t in pruner.targets))
    return PruningController(pruner, schedule, context=context, lottery=lottery, resample=resample, enabled=enabled, sync=sync)
