"""How many channels each dependency group keeps, and which.

``ratio`` is the fraction of a group's channels removed (of its size when the
groups were found, or of ``base_sizes`` in iterative pruning).

* ``scope="local"``: every group removes ``round(ratio · size)`` channels, its
  lowest-scoring ones.
* ``scope="global"``: one ranking over the channels of all groups; the
  ``round(ratio · Σ size)`` lowest are removed. ``normalize`` divides each
  group's scores by a per-group statistic first (``"mean"`` by default, as the
  magnitude of a group grows with the number of slices it couples; ``"max"``,
  ``"sum"``, ``"l2"``, or ``"none"``), see :mod:`prunekit.allocation`.

Then, in this order, per group:

1. ``max_layer_ratio`` caps the fraction removed (a global ranking skips the
   channels beyond a group's cap and takes the next lowest elsewhere);
2. the kept count is rounded to the nearest multiple of
   ``step = lcm(round_to, group.multiple)`` (never below ``step``; a group of fewer
   channels than ``step`` is left as it is), rounding up when rounding down
   would break the cap;
3. at least one channel (and ``group.multiple``) is always kept.

Rounding moves a group's count by less than ``step / 2``; without rounding
the counts are exact (local: per group; global: in total, unless caps forbid).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..allocation import NORMALIZERS, _normalise
from ..errors import InvalidParameterError, check_choice
from .groups import Group

__all__ = ["SCOPES", "check_ratio", "keep_counts", "select_channels", "allocate"]

SCOPES = ("local", "global")


def check_ratio(value: object, param: str = "ratio") -> float:
    """A fraction in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= float(value) < 1.0:
        raise InvalidParameterError(param, "a float in [0, 1) (fraction of channels removed)", value,
                                    "Fix: e.g. 0.5 removes half of each group's channels.")
    return float(value)


def _check_round_to(round_to: object) -> int:
    if round_to is None:
        return 1
    if isinstance(round_to, bool) or not isinstance(round_to, numbers.Integral) or round_to < 1:
        raise InvalidParameterError("round_to", "None or a positive int (e.g. 8)", round_to)
    return int(round_to)


def _step(group: Group, round_to: int) -> int:
    return math.lcm(max(int(group.multiple), 1), round_to)


def _max_removed(group: Group, base: int, max_layer_ratio: float | None) -> int:
    """Most channels the group may lose, counted on its current size."""
    floor_keep = max(int(group.multiple), 1)
    limit = group.size - floor_keep
    if max_layer_ratio is not None:
        # the cap is a fraction of the original size; channels already gone count towards it
        gone_before = base - group.size
        limit = min(limit, math.floor(max_layer_ratio * base + 1e-9) - gone_before)
    return max(limit, 0)


def _round_keep(keep: int, group: Group, step: int, max_removed: int) -> int:
    if step <= 1 or group.size < step:
        return keep
    lower = max((keep // step) * step, step)
    upper = min(lower + step, group.size)
    rounded = lower if keep - lower <= upper - keep else upper  # ties keep fewer
    if group.size - rounded > max_removed:
        rounded = min(upper, group.size)
    return min(max(rounded, step), group.size)


def keep_counts(
    groups: Sequence[Group],
    scores: Mapping[str, torch.Tensor],
    ratio: float,
    *,
    scope: str = "local",
    normalize: str = "mean",
    max_layer_ratio: float | None = None,
    round_to: int | None = None,
    base_sizes: Mapping[str, int] | None = None,
) -> dict[str, int]:
    """The number of channels each group keeps (see the module docstring)."""
    ratio = check_ratio(ratio)
    scope = check_choice("scope", scope, SCOPES)
    normalize = check_choice("normalize", normalize, NORMALIZERS)
    if max_layer_ratio is not None:
        max_layer_ratio = check_ratio(max_layer_ratio, "max_layer_ratio") if max_layer_ratio != 1 else 1.0
    step_to = _check_round_to(round_to)
    bases = {g.name: int((base_sizes or {}).get(g.name, g.size)) for g in groups}
    caps = {g.name: _max_removed(g, bases[g.name], max_layer_ratio) for g in groups}
    removed: dict[str, int] = {}
    if scope == "local":
        for g in groups:
            want = math.floor(ratio * bases[g.name] + 0.5) - (bases[g.name] - g.size)
            removed[g.name] = min(max(want, 0), caps[g.name])
    else:
        target = math.floor(ratio * sum(bases.values()) + 0.5) - sum(bases[g.name] - g.size for g in groups)
        pooled, owner = [], []
        for k, g in enumerate(groups):
            s = scores[g.name].detach().double().cpu()
            if normalize != "none":
                s = _normalise(s, normalize)
            eligible = torch.sort(s).values[: caps[g.name]]
            pooled.append(eligible)
            owner.append(torch.full((eligible.numel(),), k, dtype=torch.long))
        values = torch.cat(pooled) if pooled else torch.zeros(0, dtype=torch.float64)
        owners = torch.cat(owner) if owner else torch.zeros(0, dtype=torch.long)
        n = min(max(target, 0), values.numel())
        chosen = owners[torch.sort(values, stable=True).indices[:n]]
        counts = torch.bincount(chosen, minlength=len(groups))
        removed = {g.name: int(counts[k]) for k, g in enumerate(groups)}
    out = {}
    for g in groups:
        keep = g.size - removed[g.name]
        out[g.name] = _round_keep(keep, g, _step(g, step_to), caps[g.name])
    return out


def select_channels(groups: Sequence[Group], scores: Mapping[str, torch.Tensor],
                    counts: Mapping[str, int]) -> dict[str, torch.Tensor]:
    """The ``counts[name]`` highest-scoring channels of each group, as sorted LongTensors
    (ties broken towards the lower channel id)."""
    out = {}
    for g in groups:
        s = scores[g.name].detach().double().cpu()
        if s.shape != (g.size,) or not bool(torch.isfinite(s).all()):
            raise InvalidParameterError(f"scores[{g.name!r}]", f"{g.size} finite scores", f"<{tuple(s.shape)}>")
        order = torch.sort(-s, stable=True).indices[: counts[g.name]]
        out[g.name] = torch.sort(order).values
    return out


def allocate(
    groups: Sequence[Group],
    scores: Mapping[str, torch.Tensor],
    ratio: float,
    **options: Any,
) -> dict[str, torch.Tensor]:
    """``{group name: sorted LongTensor of channels to keep}`` for :func:`prunekit.surgery.prune_groups`;
    ``options`` are those of :func:`keep_counts` (``scope``, ``normalize``, ``max_layer_ratio``,
    ``round_to``, ``base_sizes``)."""
    missing = [g.name for g in groups if g.name not in scores]
    if missing:
        raise InvalidParameterError("scores", "a score tensor for every group", f"<missing {missing[:5]}>")
    return select_channels(groups, scores, keep_counts(groups, scores, ratio, **options))
