"""How much to prune where, and which units: local, global, per-target overrides.

``sparsity`` is the fraction of a target's units that are pruned *afterwards*
(a fraction of the whole tensor, not of what remains, unlike the ``amount`` of
``torch.nn.utils.prune``, which applies to the entries still unpruned). An
int is an absolute count of units pruned afterwards. Units already pruned stay
pruned and count towards the request, so asking again with a higher value
prunes further and a lower value changes nothing.

* ``local``: every target reaches the requested sparsity on its own, exactly
  (``round(sparsity × units)`` units).
* ``global``: one ranking over the units of all targets; the fraction is of all
  their parameters (units weighted by their size), exact to one unit.
  ``normalize`` divides each target's unit scores by a per-target statistic
  first (useful for structured units whose scales differ between layers).
* ``lamp``: a global ranking of LAMP scores (Lee, Park, Mo, Ahn & Shin 2021,
  "Layer-adaptive sparsity for the magnitude-based pruning", ICLR): within
  each target, with the unit scores ``s`` sorted ascending (index ``u``),
  ``lamp(u) = s_u² / Σ_{v ≥ u} s_v²``. The largest unit of every target
  scores 1, scores lie in (0, 1], and they do not change when a target's
  scores are multiplied by a constant. With the magnitude criterion this is
  the paper's ``w_u² / Σ_{v≥u} w_v²``; any criterion with non-negative
  scores can be used. The fraction is of all the targets' parameters, exact
  to one unit, as for ``global``.
* ``erk``: per-target densities by the Erdős–Rényi-Kernel rule (Evci, Gale,
  Menick, Castro & Elsen 2020, "Rigging the Lottery", RigL; Mocanu et al.
  2018 for Erdős–Rényi): the density of a tensor of shape
  ``(n_out, n_in, k_h, k_w)`` is ``ε · (n_out + n_in + k_h + k_w) /
  (n_out · n_in · k_h · k_w)`` (any number of dims: sum over product of the
  dims), with the one ``ε`` that meets the requested sparsity over all the
  targets' parameters. A tensor whose density would exceed 1 is kept dense
  and ``ε`` is solved again for the rest (repeated until none exceeds 1), as
  RigL does; a tensor is never left with fewer than ``min_keep`` units.
  Counts are rounded by largest remainders so that the total is exact (to
  one unit per tensor for structured units of different sizes); each target
  is then pruned locally, by the criterion, to its count.
* ``overrides``: ``{pattern: sparsity}``; matching targets are pruned locally at
  their own sparsity, the rest as ``scope`` says (for ``erk``, the requested
  sparsity is spread over the targets not overridden).
* A guard (``min_keep``, default 1) never prunes the last units of a tensor;
  set it to 0 to allow removing every unit.
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from .scores.base import Criterion
from .errors import InvalidParameterError, check_choice
from .selection import all_finite, select_lowest
from .structures import Structure
from .targets import Target, pattern_matches

__all__ = [
    "NORMALIZERS",
    "SCOPES",
    "check_sparsity",
    "compute_keep_masks",
    "erk_densities",
    "lamp_scores",
    "units_to_prune",
]

logger = logging.getLogger(__name__)

SCOPES = ("local", "global", "lamp", "erk")
NORMALIZERS = ("none", "max", "sum", "mean", "l2")

Sparsity = float | int


def check_sparsity(value: object, param: str = "sparsity") -> Sparsity:
    """Validate a sparsity: a float in [0, 1] or a non-negative int count."""
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


@dataclass
class _Plan:
    target: Target
    sparsity: Sparsity | None
    local: bool


def _floating_check(target: Target) -> None:
    tensor = target.original
    if not tensor.is_floating_point():
        raise InvalidParameterError(
            "targets",
            "floating-point parameters",
            f"{target.name} of dtype {tensor.dtype}",
            f"Fix: exclude {target.name!r} (only float tensors can be pruned).",
        )
    if not all_finite(tensor.detach()):
        raise InvalidParameterError(
            "model",
            "finite weights (no NaN or inf)",
            f"NaN or inf in {target.name}",
            "Fix: repair or re-initialise the weights before pruning.",
        )


class _Scorer:
    """Unit scores of one target, checked once, with dead units at -inf."""

    def __init__(self, target: Target, criterion: Criterion, structure: Structure, normalize: str, min_keep: int):
        self.target = target
        self.criterion = criterion
        self.structure = structure
        self.normalize = normalize
        self.min_keep = min_keep
        prev = target.keep_mask()
        self.alive = None if prev is None else structure.unit_alive(prev, target)
        self.units = structure.num_units(target)
        self.dead = 0 if self.alive is None else int((~self.alive).sum())
        self._checked = False
        self._reserved: torch.Tensor | None = None
        # normalising divides by a positive statistic, so the sign is kept; LAMP scores are in [0, 1]
        self.nonnegative = normalize == "lamp" or bool(getattr(criterion, "nonnegative", False))

    def entry_scores(self) -> torch.Tensor:
        scores = self.criterion.score(self.target)
        if not getattr(self.criterion, "fresh_scores", False) and isinstance(scores, torch.Tensor):
            scores = scores.clone()  # the allocation edits scores in place; never edit a criterion's cache
        if not self._checked:
            if not isinstance(scores, torch.Tensor) or scores.shape != self.target.shape:
                got = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
                raise InvalidParameterError(
                    "criterion",
                    f"scores of shape {tuple(self.target.shape)} for {self.target.name}",
                    f"<{got} from {self.criterion!r}>",
                    "Fix: make the criterion return one score per entry of the parameter.",
                )
            if not getattr(self.criterion, "finite_scores", False) and not all_finite(scores.detach()):
                raise InvalidParameterError(
                    "criterion",
                    "finite scores (no NaN or inf)",
                    f"<NaN or inf in the scores of {self.target.name} from {self.criterion!r}>",
                    "Fix: check the criterion's inputs (weights, gradients, data).",
                )
            self._checked = True
        return scores

    def __call__(self, reserve: bool = False) -> torch.Tensor:
        scores = self.structure.unit_scores(self.entry_scores(), self.target, self.criterion.reduce)
        scores = scores.detach().reshape(-1)
        scores = scores.to(torch.float64) if scores.dtype == torch.float64 else scores.to(torch.float32)
        if self.alive is not None:
            scores.masked_fill_(~self.alive.reshape(-1).to(scores.device), float("-inf"))
        if self.normalize == "lamp":
            scores = lamp_scores(scores, self.target.name)
        elif self.normalize != "none":
            scores = _normalise(scores, self.normalize)
        if reserve and self.min_keep:
            if self._reserved is None:
                keep = min(self.min_keep, scores.numel())
                self._reserved = scores.argmax().reshape(1) if keep == 1 else torch.topk(scores, keep).indices
            scores[self._reserved] = float("inf")
        return scores


def _normalise(scores: torch.Tensor, how: str) -> torch.Tensor:
    alive = torch.isfinite(scores)
    values = scores[alive].abs()
    if values.numel() == 0:
        return scores
    if how == "max":
        stat = values.max()
    elif how == "sum":
        stat = values.sum()
    elif how == "mean":
        stat = values.mean()
    else:
        stat = torch.linalg.vector_norm(values)
    if float(stat) == 0.0:
        return scores
    return torch.where(alive, scores / stat, scores)


def lamp_scores(scores: torch.Tensor, where: str = "the target") -> torch.Tensor:
    """LAMP scores (Lee et al. 2021) of one tensor's flat unit scores, as float64.

    With the finite scores sorted ascending, ``lamp(u) = s_u² / Σ_{v ≥ u} s_v²``
    (ties in flat-index order); ``-inf`` (dead units) stays ``-inf``. A zero
    score gets 0 unless every score is zero.
    """
    out = scores.to(torch.float64)
    alive = torch.isfinite(out)
    values = out[alive]
    if values.numel() == 0:
        return out
    if bool((values < 0).any()):
        raise InvalidParameterError(
            "scope",
            f"a criterion with non-negative scores for scope='lamp' (LAMP squares them); {where} has negative ones",
            "lamp",
            "Fix: use a magnitude-like criterion (magnitude, l2, obd, large_init...) or scope='global'.",
        )
    squares = values.square()
    order = torch.argsort(squares, stable=True)
    ranked = squares[order]
    tail = ranked.flip(0).cumsum(0).flip(0)
    lamp = torch.where(tail > 0, ranked / tail.clamp_min(torch.finfo(torch.float64).tiny), torch.ones_like(ranked))
    values = torch.empty_like(values)
    values[order] = lamp
    out[alive] = values
    return out


def _erk_raw(shape: Sequence[int]) -> float:
    """Erdős–Rényi-Kernel density factor ``Σ dims / Π dims`` of one tensor."""
    product = 1
    for dim in shape:
        product *= int(dim)
    return sum(int(d) for d in shape) / product if product else 0.0


def _water_fill(raw: Sequence[float], units: Sequence[int], sizes: Sequence[int], keep: float,
                low: Sequence[float], high: Sequence[float]) -> list[float]:
    """Kept units per tensor ``clamp(ε·raw_l·units_l, low_l, high_l)`` with Σ kept·size = ``keep``.

    Tensors whose value leaves its bounds are fixed at the bound and ``ε`` is
    solved again for the others, until none leaves its bounds (RigL's loop).
    """
    fixed: dict[int, float] = {}
    eps = 0.0
    while len(fixed) < len(raw):
        free = [i for i in range(len(raw)) if i not in fixed]
        weight = sum(raw[i] * units[i] * sizes[i] for i in free)
        rest = keep - sum(v * sizes[i] for i, v in fixed.items())
        eps = rest / weight if weight > 0 else float("inf")
        over = [i for i in free if eps * raw[i] * units[i] > high[i]]
        under = [i for i in free if eps * raw[i] * units[i] < low[i]]
        if not over and not under:
            break
        for i in over:
            fixed[i] = float(high[i])
        if not over:  # lower bounds only once no tensor is above its cap
            for i in under:
                fixed[i] = float(low[i])
    return [fixed[i] if i in fixed else eps * raw[i] * units[i] for i in range(len(raw))]


def erk_densities(shapes: Sequence[Sequence[int]], sparsity: float) -> list[float]:
    """ERK densities (RigL, Evci et al. 2020) of tensors of ``shapes`` for a global ``sparsity``.

    ``d_l = min(1, ε · Σ dims_l / Π dims_l)`` with ``ε`` such that
    ``Σ d_l·n_l = (1 − sparsity)·Σ n_l``; tensors capped at 1 are dense.
    """
    value = check_sparsity(sparsity)
    if isinstance(value, int):
        raise InvalidParameterError("sparsity", "a float in [0, 1] for ERK", sparsity, "Fix: pass e.g. 0.9.")
    sizes = [max(1, int(torch.Size(s).numel())) for s in shapes]
    raw = [_erk_raw(s) for s in shapes]
    kept = _water_fill(raw, [1] * len(sizes), sizes, (1.0 - value) * sum(sizes), [0.0] * len(sizes), [1.0] * len(sizes))
    return kept


def _erk_counts(scorers: Sequence[_Scorer], sparsity: Sparsity) -> list[int]:
    """Units to prune in each target for an ERK allocation of ``sparsity``."""
    if isinstance(sparsity, int):
        raise InvalidParameterError(
            "sparsity", "a float in [0, 1] for scope='erk' (a fraction of the targets' parameters)", sparsity,
            "Fix: pass e.g. 0.9, or use scope='global' for a count of units.",
        )
    units = [s.units for s in scorers]
    sizes = [s.structure.unit_size(s.target) for s in scorers]
    raw = [_erk_raw(s.target.shape) for s in scorers]
    total = sum(u * w for u, w in zip(units, sizes))
    pruned = float(round(sparsity * total)) if all(w == 1 for w in sizes) else sparsity * total
    low = [float(min(s.min_keep, s.units)) for s in scorers]
    reserved = sum(lo * w for lo, w in zip(low, sizes))
    if pruned > total - reserved + 0.5 * max(sizes):
        raise InvalidParameterError(
            "sparsity",
            f"at most {1 - reserved / total:.6g} for scope='erk' "
            f"(min_keep={scorers[0].min_keep} unit(s) of every tensor are guarded)",
            sparsity,
            "Fix: lower the sparsity, or pass min_keep=0 to allow emptying tensors.",
        )
    kept = _water_fill(raw, units, sizes, total - pruned, low, [float(u) for u in units])
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
    logger.info("ERK densities: %s", ", ".join(f"{s.target.name}={k / u:.4f}" for s, k, u in zip(scorers, keep, units)))
    return [u - k for u, k in zip(units, keep)]


def compute_keep_masks(
    targets: Sequence[Target],
    criterion: Criterion,
    structure: Structure,
    sparsity: Sparsity | None,
    *,
    scope: str = "local",
    overrides: Mapping[str, Sparsity] | None = None,
    normalize: str = "none",
    min_keep: int = 1,
) -> list[torch.Tensor]:
    """New keep masks (bool, True = kept) for ``targets``; the model is not touched.

    Every mask is a subset of the target's current mask. ``scope`` is one of
    :data:`SCOPES` (see the module docstring).
    """
    scope = check_choice("scope", scope, SCOPES)
    if scope == "lamp" and normalize != "none":
        raise InvalidParameterError(
            "normalize", "'none' with scope='lamp' (LAMP is itself a per-target normalisation)", normalize,
            "Fix: leave normalize out.",
        )
    for target in targets:
        _floating_check(target)
        structure.check(target)

    if structure.fixed_sparsity is not None:
        return _fixed_structure_masks(targets, criterion, structure, sparsity, scope, overrides)

    if sparsity is None:
        if not overrides:
            raise InvalidParameterError(
                "sparsity", "a float in [0, 1] or an int count", None,
                f"Fix: {structure!r} needs a sparsity (or overrides that name the targets to prune).",
            )
        # only the overridden targets are pruned; the others keep their masks
        sparsity, scope = 0.0, "local"
    sparsity = check_sparsity(sparsity)
    plans = _plan(targets, sparsity, scope, overrides or {})

    ranking = "lamp" if scope == "lamp" else normalize
    scorers = [_Scorer(p.target, criterion, structure, ranking if not p.local else "none", min_keep) for p in plans]
    if scope == "erk":
        erk_ids = [i for i, p in enumerate(plans) if not p.local]
        if erk_ids:
            counts = _erk_counts([scorers[i] for i in erk_ids], sparsity)
            for i, count in zip(erk_ids, counts):
                plans[i] = _Plan(plans[i].target, count, True)
    unit_keep: list[torch.Tensor | None] = [None] * len(plans)

    for i, plan in enumerate(plans):
        if plan.local:
            unit_keep[i] = _local(scorers[i], plan.sparsity)

    global_ids = [i for i, p in enumerate(plans) if not p.local]
    if global_ids:
        masks = _global([scorers[i] for i in global_ids], sparsity)
        for i, mask in zip(global_ids, masks):
            unit_keep[i] = mask

    out = []
    for scorer, keep in zip(scorers, unit_keep):
        assert keep is not None
        mask = structure.expand(keep.to(scorer.target.original.device), scorer.target)
        prev = scorer.target.keep_mask()
        out.append(mask if prev is None else mask & prev)
    return out


def _plan(targets: Sequence[Target], sparsity: Sparsity, scope: str, overrides: Mapping[str, Sparsity]) -> list[_Plan]:
    checked = {pattern: check_sparsity(value, f"overrides[{pattern!r}]") for pattern, value in overrides.items()}
    used = set()
    plans = []
    for target in targets:
        own = None
        for pattern, value in checked.items():
            if pattern_matches(pattern, target.name, target.module_name):
                own = value
                used.add(pattern)
                break
        if own is not None:
            plans.append(_Plan(target, own, True))
        else:
            plans.append(_Plan(target, sparsity, scope == "local"))
    unused = [p for p in checked if p not in used]
    if unused:
        raise InvalidParameterError(
            "overrides",
            "patterns that match at least one target",
            unused,
            "Fix: the targets are " + ", ".join(t.name for t in targets[:20]) + ("…" if len(targets) > 20 else "") + ".",
        )
    return plans


def _local(scorer: _Scorer, sparsity: Sparsity) -> torch.Tensor:
    target = scorer.target
    units = scorer.units
    k = units_to_prune(sparsity, units, target.name)
    if k < scorer.dead:
        logger.info("%s already has %d of %d units pruned (asked for %d); keeping them pruned",
                    target.name, scorer.dead, units, k)
        k = scorer.dead
    if units - k < scorer.min_keep:
        raise InvalidParameterError(
            "sparsity",
            f"at most {units - scorer.min_keep} of the {units} units of {target.name} pruned "
            f"(min_keep={scorer.min_keep} guards against removing a whole layer)",
            sparsity,
            "Fix: lower the sparsity, or pass min_keep=0 to allow emptying the tensor.",
        )
    scores = scorer()
    selected = select_lowest(lambda _i: scores, [units], k, nonnegative=scorer.nonnegative)[0]
    return selected.logical_not_()


def _global(scorers: Sequence[_Scorer], sparsity: Sparsity) -> list[torch.Tensor]:
    counts = [s.units for s in scorers]
    if isinstance(sparsity, int):
        sizes = [1] * len(scorers)
        total_units = sum(counts)
        budget = float(units_to_prune(sparsity, total_units, "all global targets"))
    else:
        sizes = [s.structure.unit_size(s.target) for s in scorers]
        budget = sparsity * sum(c * w for c, w in zip(counts, sizes))
        if all(w == 1 for w in sizes):
            # round() as torch's global_unstructured does (half to even), not half up
            budget = float(round(budget))
    dead = sum(s.dead * w for s, w in zip(scorers, sizes))
    if budget < dead:
        logger.info("global targets already have %d pruned (asked for %d); keeping them pruned", dead, budget)
        budget = float(dead)
    reserved = sum(min(s.min_keep, s.units) * w for s, w in zip(scorers, sizes))
    available = sum(c * w for c, w in zip(counts, sizes)) - reserved
    if budget > available + 0.5 * max(sizes):
        raise InvalidParameterError(
            "sparsity",
            f"a global budget of at most {available} of {sum(c * w for c, w in zip(counts, sizes))} "
            f"(min_keep={scorers[0].min_keep} unit(s) of every tensor are guarded)",
            sparsity,
            "Fix: lower the sparsity, or pass min_keep=0 to allow emptying tensors.",
        )
    nonnegative = all(s.nonnegative for s in scorers)
    selected = select_lowest(lambda i: scorers[i](reserve=True), counts, budget, sizes, nonnegative=nonnegative)
    return [s.logical_not_() for s in selected]


def _fixed_structure_masks(targets, criterion, structure, sparsity, scope, overrides) -> list[torch.Tensor]:
    fixed = structure.fixed_sparsity
    if sparsity is not None:
        value = check_sparsity(sparsity)
        if isinstance(value, int) or abs(value - fixed) > 1e-9:
            raise InvalidParameterError(
                "sparsity",
                f"None or {fixed:g}, which {structure.spec()} fixes",
                sparsity,
                "Fix: leave sparsity out for N:M structures.",
            )
    if scope != "local":
        raise InvalidParameterError(
            "scope", f"'local' for {structure.spec()} (it selects within each group of M)", scope
        )
    if overrides:
        raise InvalidParameterError("overrides", f"none for {structure.spec()} (sparsity is fixed)", dict(overrides))
    out = []
    for target in targets:
        scorer = _Scorer(target, criterion, structure, "none", 0)
        prev = target.keep_mask()
        keep = torch.ones(target.shape, dtype=torch.bool, device=target.original.device) if prev is None else prev
        out.append(structure.select(scorer.entry_scores(), keep, target))
    return out
