"""One call for structural pruning: groups -> criterion -> allocation -> removal.

    result = prunekit.structural_prune(model, torch.randn(1, 3, 32, 32), macs_target=0.5, criterion="l2")
    result.macs_ratio, result.params_ratio   # about 0.5 and what that cost in parameters

Each of ``steps`` steps finds the dependency groups again
(:func:`prunekit.surgery.find_groups`), scores their channels with the group
criterion (:mod:`prunekit.surgery.importance`), decides how many each keeps
(:mod:`prunekit.surgery.allocate`) and removes the rest
(:func:`prunekit.surgery.prune_groups`). Step ``i`` of ``k`` reaches
``ratio · i / k`` of the original channels, or MACs of
``1 - (1 - macs_target) · i / k`` of the original; ``finetune(model, i)`` runs
between steps.

A MACs target is met by bisection on the channel ratio: each candidate is
applied to a copy of the model and counted with
:func:`prunekit.measure.count_macs`; the smallest ratio whose MACs are at most
the target is used (to one channel per group).
"""

from __future__ import annotations

import copy
import inspect
import logging
import numbers
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import InvalidParameterError, check_choice
from ..measure.macs import count_macs
from ..measure.params import count_parameters
from .allocate import SCOPES, allocate, check_ratio
from .groups import Group, find_groups
from .importance import GROUP_CRITERIA, GroupCriterion, create_group_criterion
from .remove import prune_groups
from .slicing import SurgeryRecord

__all__ = ["StructuralPruneResult", "structural_prune"]

logger = logging.getLogger(__name__)

_BISECTIONS = 14


@dataclass
class StructuralPruneResult:
    """What :func:`structural_prune` did: sizes before/after, per-group channels, the records."""

    criterion: str
    scope: str
    params_before: int | None
    params_after: int | None
    macs_before: int | None
    macs_after: int | None
    channels_before: dict[str, int]
    channels_after: dict[str, int]
    records: list[SurgeryRecord] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def params_ratio(self) -> float | None:
        """Parameters after / before (None when not measured)."""
        if self.params_before is None or self.params_after is None:
            return None
        return self.params_after / self.params_before if self.params_before else 1.0

    @property
    def macs_ratio(self) -> float | None:
        """MACs after / before (None when not measured)."""
        if self.macs_before is None or self.macs_after is None:
            return None
        return self.macs_after / self.macs_before if self.macs_before else 1.0

    @property
    def groups_pruned(self) -> list[str]:
        return [n for n, c in self.channels_after.items() if c < self.channels_before.get(n, c)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "criterion": self.criterion, "scope": self.scope,
            "params_before": self.params_before, "params_after": self.params_after, "params_ratio": self.params_ratio,
            "macs_before": self.macs_before, "macs_after": self.macs_after, "macs_ratio": self.macs_ratio,
            "channels_before": dict(self.channels_before), "channels_after": dict(self.channels_after),
            "steps": len(self.records), "seconds": self.seconds,
        }

    def __str__(self) -> str:
        head = f"structural_prune({self.criterion}, {self.scope}): {len(self.groups_pruned)} groups pruned"
        if self.params_ratio is None or self.macs_ratio is None:
            return head + " (not measured)"
        return (f"{head}, params {self.params_before:,} -> {self.params_after:,} ({self.params_ratio:.3f}x), "
                f"MACs {self.macs_before:,} -> {self.macs_after:,} ({self.macs_ratio:.3f}x)")


def _macs(model: nn.Module, example_inputs: Any) -> int:
    return count_macs(model, example_inputs, norms=False).dense_macs


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise InvalidParameterError(name, f"an int >= {minimum}", value)
    return int(value)


def _criterion_factory(criterion: str | GroupCriterion, batches: Any, loss_fn: Any,
                       options: Mapping[str, Any]) -> Callable[[], GroupCriterion]:
    """A function building the criterion (data-driven criteria get ``batches`` and ``loss_fn``)."""
    if isinstance(criterion, GroupCriterion):
        return lambda: criterion
    if not isinstance(criterion, str):
        raise InvalidParameterError("criterion", f"a name among {GROUP_CRITERIA.names()} or a GroupCriterion",
                                    f"<{type(criterion).__name__}>")
    factory = GROUP_CRITERIA.get(criterion)
    kwargs = dict(options)
    if getattr(factory, "needs_data", False):
        kwargs["batches"] = list(batches) if batches is not None else None
        if loss_fn is not None and "loss_fn" in inspect.signature(factory).parameters:
            kwargs["loss_fn"] = loss_fn
    elif batches is not None:
        logger.info("criterion %r uses no data; batches are ignored", criterion)
    create_group_criterion(criterion, **kwargs)  # validates now, before anything changes
    return lambda: create_group_criterion(criterion, **kwargs)


def _apply_copy(model: nn.Module, groups: Sequence[Group], keep: Mapping[str, torch.Tensor],
                example_inputs: Any) -> int:
    """MACs of a copy of ``model`` with ``keep`` applied."""
    twin, twin_groups = copy.deepcopy((model, list(groups)))
    prune_groups(twin, keep, twin_groups)
    return _macs(twin, example_inputs)


def _ratio_for_macs(model: nn.Module, groups: Sequence[Group], target: int, example_inputs: Any,
                    alloc: Callable[[float], dict[str, torch.Tensor]]) -> float:
    """Smallest channel ratio whose MACs are <= ``target`` (bisection on copies; ratios giving
    the same channel counts are counted once)."""
    seen: dict[tuple[int, ...], int] = {}

    def macs_at(r: float) -> int:
        keep = alloc(r)
        key = tuple(int(keep[g.name].numel()) for g in groups)
        if key not in seen:
            seen[key] = _apply_copy(model, groups, keep, example_inputs)
        return seen[key]

    lo, hi = 0.0, 1.0 - 1e-6
    if macs_at(hi) > target:
        raise InvalidParameterError(
            "macs_target", "a target reachable within the caps (removing every allowed channel still exceeds it)",
            target, "Fix: raise macs_target, relax max_layer_ratio, or exclude fewer layers.",
        )
    for _ in range(_BISECTIONS):
        mid = (lo + hi) / 2
        if macs_at(mid) <= target:
            hi = mid
        else:
            lo = mid
    logger.debug("macs target %d: ratio %.5f after %d MAC counts", target, hi, len(seen))
    return hi


def structural_prune(
    model: nn.Module,
    example_inputs: Any,
    *,
    ratio: float | None = None,
    macs_target: float | None = None,
    criterion: str | GroupCriterion = "l1",
    scope: str = "local",
    normalize: str = "mean",
    max_layer_ratio: float | None = None,
    round_to: int | None = None,
    steps: int = 1,
    batches: Iterable[Any] | None = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    exclude: str | Iterable[str] = (),
    extra_groups: Sequence[Sequence[Sequence[Any]]] = (),
    finetune: Callable[[nn.Module, int], None] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    criterion_options: Mapping[str, Any] | None = None,
    measure: bool = True,
) -> StructuralPruneResult:
    """Physically remove channels from ``model`` (in place) and return what changed.

    Args:
        model: the network; ``example_inputs`` a tensor or tuple for one forward pass (tracing, MACs).
        ratio: fraction of each group's channels removed (local), or of all channels (global).
        macs_target: instead of ``ratio``: MACs after / before to reach (e.g. 0.5), by bisection.
        criterion: a group criterion name (``l1``, ``l2``, ``slimming``, ``taylor``, ``hrank``,
            ``thinet``, ``random``) or a :class:`~prunekit.surgery.importance.GroupCriterion`.
        scope, normalize, max_layer_ratio, round_to: see :mod:`prunekit.surgery.allocate`.
        steps: prune in this many increments, scoring again each time.
        batches: ``(inputs, targets)`` batches for ``taylor``, ``hrank`` and ``thinet``;
            ``loss_fn(logits, targets)`` for ``taylor`` (cross-entropy by default).
        exclude, extra_groups: passed to :func:`prunekit.surgery.find_groups`.
        finetune: ``finetune(model, step)`` called after each step but the last.
        optimizer: its state is carried over to the smaller parameters.
        criterion_options: extra keyword arguments of the criterion (e.g. ``{"roles": ("out",)}``).
        measure: count parameters and MACs before and after (``False`` skips the two forward
            passes of the count when only ``ratio`` is given; the counts are then None).

    Raises:
        InvalidParameterError: for bad arguments, before anything is changed.
    """
    if (ratio is None) == (macs_target is None):
        raise InvalidParameterError(
            "ratio", "exactly one of ratio= and macs_target=", f"<ratio={ratio}, macs_target={macs_target}>",
            "Fix: e.g. ratio=0.3 (remove 30% of the channels) or macs_target=0.5 (keep half the MACs).",
        )
    if ratio is not None:
        ratio = check_ratio(ratio)
    if macs_target is not None and (isinstance(macs_target, bool) or not isinstance(macs_target, numbers.Real)
                                    or not 0.0 < float(macs_target) <= 1.0):
        raise InvalidParameterError("macs_target", "a float in (0, 1] (MACs after / before)", macs_target,
                                    "Fix: e.g. macs_target=0.5.")
    steps = _check_int("steps", steps, 1)
    if not isinstance(measure, bool):
        raise InvalidParameterError("measure", "True or False", measure)
    measure = measure or macs_target is not None  # a MACs target needs the counts anyway
    scope = check_choice("scope", scope, SCOPES)
    if finetune is not None and not callable(finetune):
        raise InvalidParameterError("finetune", "None or a callable finetune(model, step)", finetune)
    make = _criterion_factory(criterion, batches, loss_fn, criterion_options or {})
    if scope == "global" and not make().comparable:
        raise InvalidParameterError(
            "scope", f"'local' for criterion {make().name!r} (its scores are per-group ranks)", scope,
            "Fix: scope='local', or a criterion such as 'l2' or 'taylor'.",
        )
    # one dry allocation on the unchanged model validates scope/normalize/caps/round_to
    t0 = time.perf_counter()
    groups = find_groups(model, example_inputs, exclude=exclude, extra_groups=extra_groups)
    allocate(groups, {g.name: torch.zeros(g.size) for g in groups}, 0.0, scope=scope, normalize=normalize,
             max_layer_ratio=max_layer_ratio, round_to=round_to)
    params_before = count_parameters(model).params if measure else None
    macs_before = _macs(model, example_inputs) if measure else None
    base_sizes = {g.name: g.size for g in groups}
    records: list[SurgeryRecord] = []
    crit = make()
    current: dict[str, int] = dict(base_sizes)
    for i in range(1, steps + 1):
        if i > 1:
            groups = find_groups(model, example_inputs, exclude=exclude, extra_groups=extra_groups)
            crit = make()
        for g in groups:
            base_sizes.setdefault(g.name, g.size)
        scores = crit(model, groups)

        def alloc(r: float) -> dict[str, torch.Tensor]:
            return allocate(groups, scores, r, scope=scope, normalize=normalize, max_layer_ratio=max_layer_ratio,
                            round_to=round_to, base_sizes=base_sizes)

        if ratio is not None:
            keep = alloc(ratio * i / steps)
        else:
            goal = int((macs_before or 0) * (1 - (1 - float(macs_target)) * i / steps))
            keep = alloc(_ratio_for_macs(model, groups, goal, example_inputs, alloc))
        keep = {g.name: keep[g.name] for g in groups if keep[g.name].numel() < g.size}
        crit.after_selection(model, groups, keep)
        records.append(prune_groups(model, keep, groups, optimizer=optimizer))
        for g in groups:
            current[g.name] = int(keep[g.name].numel()) if g.name in keep else g.size
        logger.info("structural_prune step %d/%d: %d groups pruned", i, steps, len(keep))
        if finetune is not None and i < steps:
            finetune(model, i)
    result = StructuralPruneResult(
        criterion=getattr(crit, "name", type(crit).__name__), scope=scope,
        params_before=params_before, params_after=count_parameters(model).params if measure else None,
        macs_before=macs_before, macs_after=_macs(model, example_inputs) if measure else None,
        channels_before={n: base_sizes[n] for n in current}, channels_after=current, records=records,
        seconds=time.perf_counter() - t0,
    )
    logger.info("%s", result)
    return result
