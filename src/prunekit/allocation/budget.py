"""The budget of an allocation and its checks: how much to prune, and the limits per unit set.

``sparsity`` is the fraction of a tensor's (or group's, or layer's) units that
are pruned *afterwards*; an int is an absolute count of units. The limits:

* ``min_keep``: units of every unit set never pruned (default 1, so no layer is
  emptied; 0 allows it);
* ``round_to``: kept counts rounded to a multiple (e.g. 8, for fast kernels);
* ``max_layer_ratio``: the largest fraction of any one unit set removed.

A budget that cannot be met within these limits is an
:class:`~prunekit.errors.InvalidParameterError` naming the parameter, never a
silent success.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

from ..errors import InvalidParameterError

__all__ = [
    "Budget",
    "Sparsity",
    "check_max_layer_ratio",
    "check_min_keep",
    "check_round_to",
    "check_sparsity",
    "units_to_prune",
]

Sparsity = float | int


def check_sparsity(
    value: object, param: str = "sparsity", *, allow_count: bool = True, allow_full: bool = True
) -> Sparsity:
    """Validate a sparsity: a float in [0, 1] or a non-negative int count of units.

    Args:
        value: what the caller passed.
        param: the parameter's name in the error.
        allow_count: accept an int as a count of units (otherwise an int is read
            as a fraction, so only 0 and, with ``allow_full``, 1 pass).
        allow_full: accept 1.0 (prune everything); False asks for a fraction
            in [0, 1), as channel and head removal do (a group is never emptied).
    """
    if not allow_count or not allow_full:
        upper = "1]" if allow_full else "1)"
        if (
            isinstance(value, bool)
            or not isinstance(value, numbers.Real)
            or not 0.0 <= float(value) <= 1.0
            or (not allow_full and float(value) >= 1.0)
        ):
            raise InvalidParameterError(
                param, f"a float in [0, {upper} (fraction of units removed)", value,
                "Fix: e.g. 0.5 removes half of each group's units.",
            )
        return float(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidParameterError(
            param,
            "a float in [0, 1] (fraction of the tensor pruned afterwards) or an int count of units",
            value,
            "Fix: pass e.g. 0.5.",
        )
    if isinstance(value, numbers.Integral):
        if value < 0:
            raise InvalidParameterError(param, "a non-negative int count of units", value)
        return int(value)
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise InvalidParameterError(
            param,
            "a float in [0, 1]",
            value,
            "Fix: 0.9 prunes 90% of the entries; for a count of units pass an int.",
        )
    return value


def units_to_prune(sparsity: Sparsity, units: int, where: str) -> int:
    """Units to prune in a tensor of ``units`` units (``round`` as torch does)."""
    if isinstance(sparsity, int):
        if sparsity > units:
            raise InvalidParameterError(
                "sparsity",
                f"a count of at most {units} (the units of {where})",
                sparsity,
                "Fix: lower the count, or pass a fraction in [0, 1].",
            )
        return sparsity
    return round(sparsity * units)


def check_round_to(round_to: object) -> int:
    """``None`` (no rounding, i.e. 1) or a positive int."""
    if round_to is None:
        return 1
    if isinstance(round_to, bool) or not isinstance(round_to, numbers.Integral) or round_to < 1:
        raise InvalidParameterError("round_to", "None or a positive int (e.g. 8)", round_to)
    return int(round_to)


def check_max_layer_ratio(max_layer_ratio: object) -> float | None:
    """``None`` (no cap) or a fraction in [0, 1) (1 is accepted and means no cap beyond the floor)."""
    if max_layer_ratio is None:
        return None
    if max_layer_ratio == 1 and not isinstance(max_layer_ratio, bool):
        return 1.0
    return float(check_sparsity(max_layer_ratio, "max_layer_ratio", allow_count=False, allow_full=False))


def check_min_keep(min_keep: object) -> int:
    """A non-negative int."""
    if isinstance(min_keep, bool) or not isinstance(min_keep, numbers.Integral) or min_keep < 0:
        raise InvalidParameterError("min_keep", "a non-negative int", min_keep, "Fix: 1 (default) or 0.")
    return int(min_keep)


@dataclass(frozen=True)
class Budget:
    """What an allocation must reach, and the limits it must respect.

    Exactly one goal: ``sparsity`` (a fraction of the units pruned afterwards;
    with ``unit_sizes`` in :func:`~prunekit.allocation.allocate` a global
    fraction is of their parameters; an int is a count of units), ``macs``
    (modelled MACs at most) or ``latency_ms`` (modelled latency at most); the
    last two are for the latency-aware policy.

    Attributes:
        sparsity: fraction in [0, 1] or int count of units.
        macs: MACs goal of the latency-aware policy.
        latency_ms: latency goal (ms) of the latency-aware policy.
        min_keep: units of every unit set never pruned.
        round_to: kept counts rounded to multiples of this (channel groups).
        max_layer_ratio: most of any one unit set removed (a fraction of its size).
        strict: False lowers a count (local or global) that would break
            ``min_keep`` to the most allowed (logged) instead of raising.
    """

    sparsity: Sparsity | None = None
    macs: int | None = None
    latency_ms: float | None = None
    min_keep: int = 1
    round_to: int | None = None
    max_layer_ratio: float | None = None
    strict: bool = True

    def __post_init__(self) -> None:
        goals = [n for n in ("sparsity", "macs", "latency_ms") if getattr(self, n) is not None]
        if len(goals) != 1:
            raise InvalidParameterError(
                "budget", "exactly one of sparsity=, macs= and latency_ms=", f"<{', '.join(goals) or 'none'} given>",
                "Fix: e.g. Budget(sparsity=0.5).",
            )
        if self.sparsity is not None:
            object.__setattr__(self, "sparsity", check_sparsity(self.sparsity))
        if self.macs is not None and (
            isinstance(self.macs, bool) or not isinstance(self.macs, numbers.Integral) or self.macs < 0
        ):
            raise InvalidParameterError("macs", "a non-negative int (MACs after pruning)", self.macs)
        if self.latency_ms is not None and (
            isinstance(self.latency_ms, bool) or not isinstance(self.latency_ms, numbers.Real) or self.latency_ms < 0
        ):
            raise InvalidParameterError("latency_ms", "a non-negative number of milliseconds", self.latency_ms)
        object.__setattr__(self, "min_keep", check_min_keep(self.min_keep))
        check_round_to(self.round_to)
        check_max_layer_ratio(self.max_layer_ratio)
        if not isinstance(self.strict, bool):
            raise InvalidParameterError("strict", "True or False", self.strict)

    @property
    def constrained(self) -> bool:
        """Whether ``round_to`` or ``max_layer_ratio`` apply (the channel-group rules)."""
        return self.round_to is not None or self.max_layer_ratio is not None
