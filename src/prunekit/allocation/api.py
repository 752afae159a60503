"""One entry for every allocation: unit scores, unit sizes, a budget and a policy in, keep masks out.

    keep = allocate({"fc1": s1, "fc2": s2}, Budget(sparsity=0.5), "global", unit_sizes={"fc1": 784, "fc2": 300})
    keep["fc1"]  # bool tensor shaped like s1, True = kept

A *unit set* is one key of ``unit_scores``: the units of a tensor, a channel
group, an attention layer's heads, an MLP's neurons, or a matrix's entries,
with one score each (higher = more important). Policies:

* ``"local"``: every set prunes ``round(sparsity × units)`` of its lowest units;
* ``"global"``: one ranking over all sets' units (after ``normalize``), the
  budget a fraction of their summed sizes (``unit_sizes``), exact to one unit;
* ``"lamp"``: global ranking of LAMP scores (:mod:`prunekit.allocation.normalize`);
* ``"erk"``: per-set counts by Erdős–Rényi-Kernel (:mod:`prunekit.allocation.erk`;
  ``shapes`` gives each set's tensor shape), then local;
* ``"per_row"``: in every row of a 2-D score matrix, ``round(sparsity × columns)``
  lowest entries pruned (Wanda's comparison group, :mod:`prunekit.allocation.rows`);
* ``"nm"``: in every ``M`` consecutive entries of a row, the ``N`` highest kept (``nm=``);
* ``"latency"``: latency-aware greedy with pairwise exchanges to a ``macs`` or
  ``latency_ms`` budget (:mod:`prunekit.allocation.latency_greedy`; ``sites=`` and
  ``table=`` give the latency model).

``local`` and ``global`` follow the element-pruning rules of
:func:`prunekit.compute_keep_masks` (counts rounded half to even, ties pruned in
key then index order, ``min_keep`` highest units of every set guarded) unless the
budget has ``round_to`` or ``max_layer_ratio``, or ``multiples`` are given: then
the channel-group rules of :mod:`prunekit.allocation.groups` apply (counts
rounded half up, caps, multiples; ties kept towards the lower index), as
:func:`prunekit.structural_prune` uses them.

Per-set targets from other policies plug in as ``overrides`` (``{key: sparsity}``,
pruned locally): OWL levels (:func:`prunekit.allocation.owl_sparsities`),
sensitivity curves (:func:`prunekit.allocation.sensitivity_sparsities`), ERK
densities (:func:`prunekit.allocation.erk_densities`).

A budget that cannot be met is an :class:`~prunekit.errors.InvalidParameterError`
naming the parameter, never a silent success (``Budget(strict=False)`` lowers a
count to what ``min_keep`` allows and logs it, for callers that document that).
"""

from __future__ import annotations

import numbers
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch

from ..errors import InvalidParameterError, check_choice
from ..measure.layer_latency import LatencyTable, LayerSite
from ..progress import ProgressArg, check_progress
from ..structures import NM
from .budget import Budget, Sparsity, check_sparsity
from .groups import keep_counts, select_channels
from .latency_greedy import latency_keep_counts
from .normalize import NORMALIZERS
from .rows import keep_nm, keep_per_row
from .streaming import all_finite
from .units import ScoreSet, erk_prune_counts, global_keep, local_keep

__all__ = ["POLICIES", "allocate"]

K = TypeVar("K", bound=Hashable)

POLICIES = ("local", "global", "lamp", "erk", "per_row", "nm", "latency")


@dataclass
class _Units:
    """A unit set seen as a channel group (name, size, multiple)."""

    name: Hashable
    size: int
    multiple: int = 1


def allocate(
    unit_scores: Mapping[K, torch.Tensor],
    budget: Budget | float | int,
    policy: str = "local",
    *,
    unit_sizes: Mapping[K, int] | None = None,
    normalize: str = "none",
    overrides: Mapping[K, Sparsity] | None = None,
    shapes: Mapping[K, Sequence[int]] | None = None,
    alive: Mapping[K, torch.Tensor] | None = None,
    multiples: Mapping[K, int] | None = None,
    base_sizes: Mapping[K, int] | None = None,
    nm: NM | None = None,
    sites: Sequence[LayerSite] | None = None,
    table: LatencyTable | None = None,
    progress: ProgressArg = None,
) -> dict[K, torch.Tensor]:
    """Keep masks (bool, True = kept, shaped like each score tensor) for a budget and a policy.

    Args:
        unit_scores: ``{key: scores}``, one finite score per unit (any shape; flattened
            except for ``per_row`` and ``nm``, which need ``(rows, columns)`` matrices).
        budget: a :class:`Budget`, or a sparsity (float fraction / int count) for short.
        policy: one of :data:`POLICIES` (module docstring).
        unit_sizes: weight of one unit of each set (its parameters), for ``global``,
            ``lamp`` and ``erk``; 1 by default.
        normalize: per-set normalisation before a ``global`` ranking, one of
            :data:`~prunekit.allocation.NORMALIZERS`.
        overrides: ``{key: sparsity}`` pruned locally at their own sparsity (the rest
            as ``policy`` says).
        shapes: each set's tensor shape for ``erk`` (default: the score tensor's shape).
        alive: ``{key: bool mask over its units}`` of units still alive; dead units stay
            pruned and count towards the budget (``local``, ``global``, ``lamp``, ``erk``).
        multiples: units of a set move in multiples of this (channel-group rules).
        base_sizes: sizes before earlier pruning steps (channel-group rules).
        nm: the N:M pattern for ``policy="nm"``.
        sites, table: the latency model for ``policy="latency"``
            (:func:`prunekit.measure.layer_latency.layer_sites`, :class:`LatencyTable`).
        progress: for ``policy="latency"``, whose search can take a while: ``True`` for a
            progress bar, or a callable receiving :class:`~prunekit.progress.ProgressEvent`
            (stage ``"latency-search"``, see :func:`latency_keep_counts`); other policies
            report nothing.

    Raises:
        InvalidParameterError: bad input, or a budget the limits do not allow to meet.
    """
    policy = check_choice("policy", policy, POLICIES)
    normalize = check_choice("normalize", normalize, NORMALIZERS)
    check_progress(progress)
    if not isinstance(budget, Budget):
        budget = Budget(sparsity=check_sparsity(budget, "budget"))
    scores = _checked_scores(unit_scores)
    keys = list(scores)
    for name, mapping in (("unit_sizes", unit_sizes), ("overrides", overrides), ("shapes", shapes),
                          ("alive", alive), ("multiples", multiples), ("base_sizes", base_sizes)):
        _check_keys(name, mapping, keys)
    if policy == "latency":
        return _latency(scores, budget, normalize, multiples, base_sizes, sites, table, progress)
    if budget.sparsity is None:
        raise InvalidParameterError(
            "budget", f"a sparsity for policy={policy!r} (macs= and latency_ms= are for policy='latency')",
            budget, "Fix: e.g. Budget(sparsity=0.5), or policy='latency'.",
        )
    if policy in ("per_row", "nm"):
        return _rows(scores, budget, policy, nm, overrides)
    if budget.constrained or multiples is not None or base_sizes is not None:
        return _groups(scores, budget, policy, normalize, overrides, multiples, base_sizes)
    return _units(scores, budget, policy, normalize, unit_sizes or {}, overrides or {}, shapes or {}, alive or {})


def _checked_scores(unit_scores: object) -> dict:
    if not isinstance(unit_scores, Mapping) or not unit_scores:
        raise InvalidParameterError("unit_scores", "a non-empty mapping {key: score tensor}", unit_scores)
    out = {}
    for key, value in unit_scores.items():
        if not isinstance(value, torch.Tensor) or not value.is_floating_point() or value.numel() == 0:
            raise InvalidParameterError(
                f"unit_scores[{key!r}]", "a non-empty floating-point tensor (one score per unit)",
                f"<{type(value).__name__}>",
            )
        if not all_finite(value.detach()):
            raise InvalidParameterError(f"unit_scores[{key!r}]", "finite scores (no NaN or inf)", "<NaN or inf>")
        out[key] = value.detach()
    return out


def _check_keys(name: str, mapping: Mapping | None, keys: Sequence) -> None:
    if mapping is None:
        return
    if not isinstance(mapping, Mapping):
        raise InvalidParameterError(name, "None or a mapping keyed like unit_scores", mapping)
    unknown = [k for k in mapping if k not in keys]
    if unknown:
        raise InvalidParameterError(name, "keys of unit_scores", unknown[:5],
                                    f"Fix: the keys are {keys[:10]}{'…' if len(keys) > 10 else ''}.")


def _units(scores: Mapping, budget: Budget, policy: str, normalize: str, unit_sizes: Mapping,
           overrides: Mapping, shapes: Mapping, alive: Mapping) -> dict:
    if policy == "lamp" and normalize != "none":
        raise InvalidParameterError(
            "normalize", "'none' with policy='lamp' (LAMP is itself a per-set normalisation)", normalize,
            "Fix: leave normalize out.",
        )
    checked = {k: check_sparsity(v, f"overrides[{k!r}]") for k, v in overrides.items()}
    ranking = "lamp" if policy == "lamp" else normalize
    sets = {}
    for key, s in scores.items():
        size = unit_sizes.get(key, 1)
        if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
            raise InvalidParameterError(f"unit_sizes[{key!r}]", "a positive int (parameters per unit)", size)
        sets[key] = ScoreSet(
            str(key), s, size=int(size), shape=shapes.get(key), alive=alive.get(key),
            normalize="none" if key in checked or policy == "local" else ranking,
            min_keep=budget.min_keep,
        )
    sparsity = budget.sparsity
    plan = {k: checked.get(k, sparsity if policy == "local" else None) for k in scores}
    if policy == "erk":
        free = [k for k in scores if plan[k] is None]
        if free:
            for key, count in zip(free, erk_prune_counts([sets[k] for k in free], sparsity)):
                plan[key] = count
    keep: dict = {}
    for key, own in plan.items():
        if own is not None:
            keep[key] = local_keep(sets[key], own, strict=budget.strict)
    ranked = [k for k in scores if plan[k] is None]
    if ranked:
        for key, mask in zip(ranked, global_keep([sets[k] for k in ranked], sparsity, strict=budget.strict)):
            keep[key] = mask
    return {k: keep[k].reshape(scores[k].shape) for k in scores}


def _groups(scores: Mapping, budget: Budget, policy: str, normalize: str, overrides: Mapping | None,
            multiples: Mapping | None, base_sizes: Mapping | None) -> dict:
    if policy not in ("local", "global"):
        raise InvalidParameterError(
            "policy", "'local' or 'global' with round_to, max_layer_ratio, multiples or base_sizes", policy,
            "Fix: drop those limits, or use policy='local' or 'global'.",
        )
    if overrides:
        raise InvalidParameterError("overrides", "none with round_to, max_layer_ratio, multiples or base_sizes",
                                    dict(overrides))
    if budget.min_keep != 1:
        raise InvalidParameterError(
            "min_keep", "1 with round_to, max_layer_ratio, multiples or base_sizes (the floor is one multiple)",
            budget.min_keep,
        )
    flat = {k: s.reshape(-1) for k, s in scores.items()}
    groups = [_Units(k, int(s.numel()), int((multiples or {}).get(k, 1))) for k, s in flat.items()]
    counts = keep_counts(groups, flat, budget.sparsity, scope=policy, normalize=normalize,
                         max_layer_ratio=budget.max_layer_ratio, round_to=budget.round_to, base_sizes=base_sizes)
    return _masks(scores, select_channels(groups, flat, counts))


def _masks(scores: Mapping, kept: Mapping) -> dict:
    out = {}
    for key, s in scores.items():
        mask = torch.zeros(s.numel(), dtype=torch.bool)
        mask[kept[key]] = True
        out[key] = mask.reshape(s.shape)
    return out


def _rows(scores: Mapping, budget: Budget, policy: str, nm: NM | None, overrides: Mapping | None) -> dict:
    if overrides:
        raise InvalidParameterError("overrides", f"none with policy={policy!r}", dict(overrides))
    for key, s in scores.items():
        if s.dim() != 2:
            raise InvalidParameterError(f"unit_scores[{key!r}]", f"a 2-D (rows, columns) matrix for policy={policy!r}",
                                        f"<shape {tuple(s.shape)}>")
    if policy == "per_row":
        if isinstance(budget.sparsity, int) and budget.sparsity != 0:
            raise InvalidParameterError("sparsity", "a fraction in [0, 1] for policy='per_row' (counts are per set)",
                                        budget.sparsity, "Fix: e.g. 0.5.")
        return {k: keep_per_row(s, float(budget.sparsity)) for k, s in scores.items()}
    if not isinstance(nm, NM):
        raise InvalidParameterError("nm", "an NM pattern for policy='nm'", nm, "Fix: nm=prunekit.NM(2, 4).")
    if abs(float(budget.sparsity) - nm.fixed_sparsity) > 1e-9:
        raise InvalidParameterError("sparsity", f"{nm.fixed_sparsity:g}, which {nm.n}:{nm.m} fixes",
                                    budget.sparsity)
    for key, s in scores.items():
        if s.shape[1] % nm.m:
            raise InvalidParameterError(f"unit_scores[{key!r}]", f"a column count divisible by M={nm.m}",
                                        f"<shape {tuple(s.shape)}>")
    return {k: keep_nm(s, nm) for k, s in scores.items()}


def _latency(scores: Mapping, budget: Budget, normalize: str, multiples: Mapping | None,
             base_sizes: Mapping | None, sites: Sequence[LayerSite] | None, table: LatencyTable | None,
             progress: ProgressArg) -> dict:
    if budget.sparsity is not None:
        raise InvalidParameterError("budget", "macs= or latency_ms= for policy='latency'", budget,
                                    "Fix: e.g. Budget(macs=10_000_000).")
    if sites is None or not isinstance(table, LatencyTable):
        raise InvalidParameterError("table", "a LatencyTable and the layer sites for policy='latency'", table,
                                    "Fix: pass sites=layer_sites(model, x, groups) and table=LatencyTable(...).")
    flat = {k: s.reshape(-1) for k, s in scores.items()}
    groups = [_Units(k, int(s.numel()), int((multiples or {}).get(k, 1))) for k, s in flat.items()]
    try:
        decided = latency_keep_counts(
            groups, flat, sites, table, macs_goal=budget.macs, latency_goal_ms=budget.latency_ms,
            normalize=normalize, max_layer_ratio=budget.max_layer_ratio, round_to=budget.round_to,
            base_sizes=base_sizes, progress=progress,
        )
    except InvalidParameterError as error:
        renamed = {"macs_target": "macs", "latency_target": "latency_ms"}
        if error.param not in renamed:
            raise
        raise InvalidParameterError(renamed[error.param], error.expected, error.got, error.fix) from None
    return _masks(scores, select_channels(groups, flat, decided.counts))
