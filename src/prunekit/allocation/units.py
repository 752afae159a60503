"""Keep masks over sets of scored units: local, global (normalised, LAMP) and ERK counts.

A *unit set* is the units of one tensor, group or layer with one score each
(higher = more important). The algorithms here only see unit sets; where the
scores come from (a criterion on a target, a group score, a head score) is the
caller's business (:mod:`prunekit.allocation.masks`, :mod:`prunekit.allocation.api`).

* :func:`local_keep`: ``round(sparsity × units)`` lowest units of one set pruned;
* :func:`global_keep`: one ranking over all sets' units, the budget a fraction
  of their summed unit sizes (exact to one unit), ``min_keep`` highest units of
  every set guarded;
* :func:`erk_prune_counts`: per-set counts by the Erdős–Rényi-Kernel rule
  (:mod:`prunekit.allocation.erk`), rounded by largest remainders so that the
  total is exact (to one unit per set when units weigh differently).

Units already dead (score ``-inf``) stay pruned and count towards a request.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from ..errors import InvalidParameterError
from .budget import Sparsity, units_to_prune
from .erk import erk_raw, water_fill
from .magnitudes import keep_largest_magnitudes
from .normalize import lamp_scores, normalise
from .streaming import select_lowest

__all__ = ["ScoreSet", "UnitSet", "erk_prune_counts", "global_keep", "local_keep", "ranks_on_bits"]

logger = logging.getLogger(__name__)


class UnitSet:
    """The scored units of one tensor, group or layer, with its dead units at ``-inf``.

    Subclasses give :meth:`raw_scores` (flat scores) and the attributes ``name``,
    ``units``, ``dead``, ``alive`` (flat bool or None), ``size`` (weight of one unit)
    and ``shape`` (the tensor's shape, for ERK).
    """

    name: str
    units: int
    dead: int
    alive: torch.Tensor | None

    def __init__(self, normalize: str, min_keep: int, nonnegative: bool):
        self.normalize = normalize
        self.min_keep = min_keep
        # normalising divides by a positive statistic, so the sign is kept; LAMP scores are in [0, 1]
        self.nonnegative = normalize == "lamp" or nonnegative
        self._reserved: torch.Tensor | None = None

    @property
    def size(self) -> int:
        raise NotImplementedError

    @property
    def shape(self) -> Sequence[int]:
        raise NotImplementedError

    def raw_scores(self) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, reserve: bool = False) -> torch.Tensor:
        """Flat float32/float64 scores, dead units at ``-inf``, normalised; with ``reserve`` the
        ``min_keep`` highest at ``+inf`` (chosen once)."""
        scores = self.raw_scores().detach().reshape(-1)
        scores = scores.to(torch.float64) if scores.dtype == torch.float64 else scores.to(torch.float32)
        if self.alive is not None:
            scores.masked_fill_(~self.alive.reshape(-1).to(scores.device), float("-inf"))
        if self.normalize == "lamp":
            scores = lamp_scores(scores, self.name)
        elif self.normalize != "none":
            scores = normalise(scores, self.normalize)
        if reserve and self.min_keep:
            scores[self._guard(scores)] = float("inf")
        return scores

    def _guard(self, scores: torch.Tensor) -> torch.Tensor:
        if self._reserved is None:
            keep = min(self.min_keep, scores.numel())
            self._reserved = scores.argmax().reshape(1) if keep == 1 else torch.topk(scores, keep).indices
        return self._reserved

    def guarded(self) -> torch.Tensor:
        """Flat indices of the ``min_keep`` highest units (chosen once: the first maximum, or ``topk``)."""
        return self._guard(self() if self._reserved is None else torch.empty(0))

    def magnitudes(self) -> torch.Tensor | None:
        """A tensor whose absolute values are exactly :meth:`raw_scores` at every alive unit
        (float32, float16 or bfloat16, one entry a unit, no normalisation), or None. Sets that give one are ranked on
        the float bits (:mod:`prunekit.allocation.magnitudes`); :attr:`has_magnitudes` says so
        without computing it."""
        return None

    @property
    def has_magnitudes(self) -> bool:
        return False


class ScoreSet(UnitSet):
    """A unit set from a plain score tensor (one score per unit)."""

    def __init__(self, name: str, scores: torch.Tensor, *, size: int = 1, shape: Sequence[int] | None = None,
                 alive: torch.Tensor | None = None, normalize: str = "none", min_keep: int = 1,
                 nonnegative: bool = False):
        super().__init__(normalize, min_keep, nonnegative)
        self.name = name
        self._scores = scores
        self.units = int(scores.numel())
        self._size = int(size)
        self._shape = tuple(shape) if shape is not None else tuple(scores.shape)
        self.alive = None if alive is None else alive.reshape(-1).bool()
        self.dead = 0 if self.alive is None else int((~self.alive).sum())

    @property
    def size(self) -> int:
        return self._size

    @property
    def shape(self) -> Sequence[int]:
        return self._shape

    def raw_scores(self) -> torch.Tensor:
        return self._scores.clone()


def local_keep(unit_set: UnitSet, sparsity: Sparsity, *, strict: bool = True) -> torch.Tensor:
    """Flat keep mask of one set: its ``round(sparsity × units)`` lowest units pruned (ties: lower
    flat index pruned first). ``strict=False`` lowers a count that would break ``min_keep``."""
    units = unit_set.units
    k = units_to_prune(sparsity, units, unit_set.name)
    if k < unit_set.dead:
        logger.info("%s already has %d of %d units pruned (asked for %d); keeping them pruned",
                    unit_set.name, unit_set.dead, units, k)
        k = unit_set.dead
    if units - k < unit_set.min_keep:
        if strict or units - unit_set.dead < unit_set.min_keep:
            raise InvalidParameterError(
                "sparsity",
                f"at most {units - unit_set.min_keep} of the {units} units of {unit_set.name} pruned "
                f"(min_keep={unit_set.min_keep} guards against removing a whole layer)",
                sparsity,
                "Fix: lower the sparsity, or pass min_keep=0 to allow emptying the tensor.",
            )
        logger.info("%s: %d of %d units pruned instead of %d (min_keep=%d)",
                    unit_set.name, units - unit_set.min_keep, units, k, unit_set.min_keep)
        k = units - unit_set.min_keep
    if ranks_on_bits([unit_set]):
        return keep_largest_magnitudes(lambda _i: unit_set.magnitudes(), [units], k, [unit_set.alive], [0],
                                       unit_set.guarded, [unit_set.name])[0]
    scores = unit_set()
    selected = select_lowest(lambda _i: scores, [units], k, nonnegative=unit_set.nonnegative)[0]
    return selected.logical_not_()


def global_keep(unit_sets: Sequence[UnitSet], sparsity: Sparsity, *, strict: bool = True) -> list[torch.Tensor]:
    """Flat keep masks of one ranking over all sets (module docstring). ``strict=False`` lowers a
    budget that would break ``min_keep`` to the most allowed (logged) instead of raising."""
    counts = [s.units for s in unit_sets]
    if isinstance(sparsity, int):
        sizes = [1] * len(unit_sets)
        total_units = sum(counts)
        budget = float(units_to_prune(sparsity, total_units, "all global targets"))
    else:
        sizes = [s.size for s in unit_sets]
        budget = sparsity * sum(c * w for c, w in zip(counts, sizes))
        if all(w == 1 for w in sizes):
            # round() as torch's global_unstructured does (half to even), not half up
            budget = float(round(budget))
    dead = sum(s.dead * w for s, w in zip(unit_sets, sizes))
    if budget < dead:
        logger.info("global targets already have %d pruned (asked for %d); keeping them pruned", dead, budget)
        budget = float(dead)
    reserved = sum(min(s.min_keep, s.units) * w for s, w in zip(unit_sets, sizes))
    available = sum(c * w for c, w in zip(counts, sizes)) - reserved
    if budget > available + 0.5 * max(sizes):
        if strict or dead > available:
            raise InvalidParameterError(
                "sparsity",
                f"a global budget of at most {available} of {sum(c * w for c, w in zip(counts, sizes))} "
                f"(min_keep={unit_sets[0].min_keep} unit(s) of every tensor are guarded)",
                sparsity,
                "Fix: lower the sparsity, or pass min_keep=0 to allow emptying tensors.",
            )
        logger.info("global budget lowered from %g to %g (min_keep=%d)", budget, available, unit_sets[0].min_keep)
        budget = float(available)
    if ranks_on_bits(unit_sets):  # budget is a whole number of entries here
        return keep_largest_magnitudes(
            lambda i: unit_sets[i].magnitudes(), counts, int(budget), [s.alive for s in unit_sets],
            [min(s.min_keep, s.units) for s in unit_sets], lambda i: unit_sets[i].guarded(),
            [s.name for s in unit_sets],
        )
    nonnegative = all(s.nonnegative for s in unit_sets)
    selected = select_lowest(lambda i: unit_sets[i](reserve=True), counts, budget, sizes, nonnegative=nonnegative)
    return [s.logical_not_() for s in selected]


def ranks_on_bits(unit_sets: Sequence[UnitSet]) -> bool:
    """True if :func:`global_keep` ranks these sets on their float bits
    (:mod:`prunekit.allocation.magnitudes`): magnitudes of single entries, every one."""
    return bool(unit_sets) and all(s.has_magnitudes and s.size == 1 for s in unit_sets)


def erk_prune_counts(unit_sets: Sequence[UnitSet], sparsity: Sparsity) -> list[int]:
    """Units to prune in each set for an ERK allocation of ``sparsity`` (a fraction of their parameters)."""
    if isinstance(sparsity, int):
        raise InvalidParameterError(
            "sparsity", "a float in [0, 1] for scope='erk' (a fraction of the targets' parameters)", sparsity,
            "Fix: pass e.g. 0.9, or use scope='global' for a count of units.",
        )
    units = [s.units for s in unit_sets]
    sizes = [s.size for s in unit_sets]
    raw = [erk_raw(s.shape) for s in unit_sets]
    total = sum(u * w for u, w in zip(units, sizes))
    pruned = float(round(sparsity * total)) if all(w == 1 for w in sizes) else sparsity * total
    low = [float(min(s.min_keep, s.units)) for s in unit_sets]
    reserved = sum(lo * w for lo, w in zip(low, sizes))
    if pruned > total - reserved + 0.5 * max(sizes):
        raise InvalidParameterError(
            "sparsity",
            f"at most {1 - reserved / total:.6g} for scope='erk' "
            f"(min_keep={unit_sets[0].min_keep} unit(s) of every tensor are guarded)",
            sparsity,
            "Fix: lower the sparsity, or pass min_keep=0 to allow emptying tensors.",
        )
    kept = water_fill(raw, units, sizes, total - pruned, low, [float(u) for u in units])
    if all(w == 1 for w in sizes):
        keep = [int(v) for v in kept]  # floor, then largest remainders up to the exact total
        short = int(total - pruned) - sum(keep)
        order = sorted(range(len(kept)), key=lambda i: (-(kept[i] - keep[i]), i))
        for i in order:
            if short <= 0:
                break
            if keep[i] < units[i]:
                keep[i] += 1
                short -= 1
    else:
        keep = [min(u, max(int(lo), round(v))) for u, lo, v in zip(units, low, kept)]
    logger.info("ERK densities: %s", ", ".join(f"{s.name}={k / u:.4f}" for s, k, u in zip(unit_sets, keep, units)))
    return [u - k for u, k in zip(units, keep)]
