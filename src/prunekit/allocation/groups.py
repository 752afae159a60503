"""How many channels each dependency group keeps, and which.

``sparsity`` is the fraction of a group's channels removed (of its size when the
groups were found, or of ``base_sizes`` in iterative pruning), rounded half up.

* ``scope="local"``: every group removes ``round(sparsity · size)`` channels, its
  lowest-scoring ones.
* ``scope="global"``: one ranking over the channels of all groups; the
  ``round(sparsity · Σ size)`` lowest are removed. ``normalize`` divides each
  group's scores by a per-group statistic first (``"mean"`` by default, as the
  magnitude of a group grows with the number of slices it couples; ``"max"``,
  ``"sum"``, ``"l2"``, or ``"none"``), see :mod:`prunekit.allocation.normalize`.

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

Latency-aware allocation is :mod:`prunekit.allocation.latency_greedy`.

A group is anything with a ``name``, a ``size`` (channels now) and a ``multiple``
(channels move in multiples of it), such as :class:`prunekit.surgery.Group`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Protocol

import torch

from ..deprecation import renamed_value
from ..errors import InvalidParameterError, check_choice
from .budget import check_max_layer_ratio, check_round_to, check_sparsity
from .normalize import NORMALIZERS, normalise

__all__ = ["ALLOCATIONS", "GROUP_SCOPES", "ChannelGroup", "allocate_channels", "check_group_scores", "keep_counts",
           "max_removed", "select_channels", "step_of"]

GROUP_SCOPES = ("local", "global")
#: How channel groups are allocated: by a ranking (``GROUP_SCOPES``) or by the latency-aware greedy.
ALLOCATIONS = ("ranking", "latency")


class ChannelGroup(Protocol):
    """What the allocation needs of a dependency group."""

    name: str
    size: int
    multiple: int


def step_of(group: ChannelGroup, round_to: int) -> int:
    """Channels move in multiples of ``lcm(group.multiple, round_to)``."""
    return math.lcm(max(int(group.multiple), 1), round_to)


def max_removed(group: ChannelGroup, base: int, max_layer_ratio: float | None) -> int:
    """Most channels the group may lose, counted on its current size."""
    floor_keep = max(int(group.multiple), 1)
    limit = group.size - floor_keep
    if max_layer_ratio is not None:
        # the cap is a fraction of the original size; channels already gone count towards it
        gone_before = base - group.size
        limit = min(limit, math.floor(max_layer_ratio * base + 1e-9) - gone_before)
    return max(limit, 0)


def _round_keep(keep: int, group: ChannelGroup, step: int, max_removed: int) -> int:
    if step <= 1 or group.size < step:
        return keep
    lower = max((keep // step) * step, step)
    upper = min(lower + step, group.size)
    rounded = lower if keep - lower <= upper - keep else upper  # ties keep fewer
    if group.size - rounded > max_removed:
        rounded = min(upper, group.size)
    return min(max(rounded, step), group.size)


def check_group_scores(groups: Sequence[ChannelGroup], scores: Mapping[str, torch.Tensor]) -> None:
    """Every group has a score tensor (shape and finiteness are checked where they are read)."""
    missing = [g.name for g in groups if g.name not in scores]
    if missing:
        raise InvalidParameterError("scores", "a score tensor for every group", f"<missing {missing[:5]}>")


def keep_counts(
    groups: Sequence[ChannelGroup],
    scores: Mapping[str, torch.Tensor],
    sparsity: float | None = None,
    *,
    scope: str = "local",
    normalize: str = "mean",
    max_layer_ratio: float | None = None,
    round_to: int | None = None,
    base_sizes: Mapping[str, int] | None = None,
    ratio: float | None = None,
) -> dict[str, int]:
    """The number of channels each group keeps (see the module docstring).

    ``ratio`` is the deprecated name of ``sparsity``.
    """
    sparsity = renamed_value(ratio, "ratio", "sparsity", "keep_counts", new_value=sparsity)
    fraction = check_sparsity(sparsity, "sparsity", allow_count=False, allow_full=False)
    scope = check_choice("scope", scope, GROUP_SCOPES)
    normalize = check_choice("normalize", normalize, NORMALIZERS)
    cap = check_max_layer_ratio(max_layer_ratio)
    step_to = check_round_to(round_to)
    bases = {g.name: int((base_sizes or {}).get(g.name, g.size)) for g in groups}
    caps = {g.name: max_removed(g, bases[g.name], cap) for g in groups}
    removed: dict[str, int] = {}
    if scope == "local":
        for g in groups:
            want = math.floor(fraction * bases[g.name] + 0.5) - (bases[g.name] - g.size)
            removed[g.name] = min(max(want, 0), caps[g.name])
    else:
        target = math.floor(fraction * sum(bases.values()) + 0.5) - sum(bases[g.name] - g.size for g in groups)
        pooled, owner = [], []
        for k, g in enumerate(groups):
            s = normalise(scores[g.name].detach().double().cpu(), normalize)
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
        out[g.name] = _round_keep(keep, g, step_of(g, step_to), caps[g.name])
    return out


def select_channels(groups: Sequence[ChannelGroup], scores: Mapping[str, torch.Tensor],
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


def allocate_channels(
    groups: Sequence[ChannelGroup],
    scores: Mapping[str, torch.Tensor],
    sparsity: float | None = None,
    *,
    scope: str = "local",
    normalize: str = "mean",
    max_layer_ratio: float | None = None,
    round_to: int | None = None,
    base_sizes: Mapping[str, int] | None = None,
    ratio: float | None = None,
) -> dict[str, torch.Tensor]:
    """``{group name: sorted LongTensor of channels to keep}`` for :func:`prunekit.surgery.prune_groups`:
    :func:`keep_counts` then :func:`select_channels` (``ratio`` is the deprecated name of ``sparsity``)."""
    sparsity = renamed_value(ratio, "ratio", "sparsity", "allocate_channels", new_value=sparsity)
    check_group_scores(groups, scores)
    counts = keep_counts(groups, scores, sparsity, scope=scope, normalize=normalize,
                         max_layer_ratio=max_layer_ratio, round_to=round_to, base_sizes=base_sizes)
    return select_channels(groups, scores, counts)
