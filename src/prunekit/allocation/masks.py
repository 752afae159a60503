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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from ..scores.base import Criterion
from ..errors import InvalidParameterError, check_choice
from ..masks.apply import check_unique_targets
from ..scores.magnitude import Magnitude
from ..structures import Element, Structure
from ..targets import Target, check_materialised, pattern_matches
from .budget import Sparsity, check_sparsity
from .magnitudes import MAGNITUDE_DTYPES, nonfinite_weights
from .streaming import all_finite
from .units import UnitSet, erk_prune_counts, global_keep, local_keep, ranks_on_bits

__all__ = ["SCOPES", "compute_keep_masks"]

logger = logging.getLogger(__name__)

SCOPES = ("local", "global", "lamp", "erk")


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


def _finite_check(target: Target) -> None:
    if not all_finite(target.original.detach()):
        raise nonfinite_weights(target.name)



class _Scorer(UnitSet):
    """Unit scores of one target from a criterion, checked once, with dead units at -inf."""

    def __init__(self, target: Target, criterion: Criterion, structure: Structure, normalize: str, min_keep: int):
        super().__init__(normalize, min_keep, bool(getattr(criterion, "nonnegative", False)))
        self.target = target
        self.name = target.name
        self.criterion = criterion
        self.structure = structure
        prev = target.keep_mask()
        self.alive = None if prev is None else structure.unit_alive(prev, target)
        self.units = structure.num_units(target)
        self.dead = 0 if self.alive is None else int((~self.alive).sum())
        self._checked = False

    @property
    def size(self) -> int:
        return self.structure.unit_size(self.target)

    @property
    def shape(self) -> Sequence[int]:
        return self.target.shape

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

    def raw_scores(self) -> torch.Tensor:
        return self.structure.unit_scores(self.entry_scores(), self.target, self.criterion.reduce)

    @property
    def has_magnitudes(self) -> bool:
        """Plain magnitude of entries of a CPU tensor: the scores are ``|weights|``, ranked on their bits."""
        return (
            type(self.criterion).score is Magnitude.score
            and type(self.structure) is Element
            and self.normalize == "none"
            and self.target.original.dtype in MAGNITUDE_DTYPES
            and self.target.original.device.type == "cpu"
        )

    def magnitudes(self) -> torch.Tensor | None:
        # the unmasked tensor: it equals the effective one at every alive entry, and the selection
        # never reads a dead one (torch's layout would otherwise multiply weight_orig by the mask)
        return self.target.original.detach().reshape(-1) if self.has_magnitudes else None


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
    check_unique_targets(targets)  # a repeated tensor would count twice in a global ranking
    check_materialised(targets)
    for target in targets:
        _floating_check(target)
        structure.check(target)

    if structure.fixed_sparsity is not None:
        for target in targets:
            _finite_check(target)
        return _fixed_structure_masks(targets, criterion, structure, sparsity, scope, overrides)

    if sparsity is None:
        for target in targets:
            _finite_check(target)
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
            counts = erk_prune_counts([scorers[i] for i in erk_ids], sparsity)
            for i, count in zip(erk_ids, counts):
                plans[i] = _Plan(plans[i].target, count, True)
    global_ids = [i for i, p in enumerate(plans) if not p.local]
    # the selection on the float bits sees every NaN or inf of a tensor without a mask in the one pass it makes
    checked_there = set(global_ids) if global_ids and ranks_on_bits([scorers[i] for i in global_ids]) else set()
    for i, scorer in enumerate(scorers):
        if i not in checked_there or scorer.alive is not None:
            _finite_check(scorer.target)
    unit_keep: list[torch.Tensor | None] = [None] * len(plans)

    for i, plan in enumerate(plans):
        if plan.local:
            unit_keep[i] = local_keep(scorers[i], plan.sparsity)

    if global_ids:
        masks = global_keep([scorers[i] for i in global_ids], sparsity)
        for i, mask in zip(global_ids, masks):
            unit_keep[i] = mask

    out = []
    for scorer, keep in zip(scorers, unit_keep):
        if keep is None:  # every plan is local or global, so this cannot happen
            raise RuntimeError(f"no keep mask was computed for {scorer.name}")
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
            if pattern_matches(pattern, target.name, target.module_name, param="overrides"):
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
