"""Allocation: how much to prune where, and which units, for every caller.

One entry, :func:`allocate` (unit scores, unit sizes, a :class:`Budget`, a policy →
keep masks), and the pieces it is made of, one job per module:

* :mod:`~prunekit.allocation.budget`: :class:`Budget`, :func:`check_sparsity`,
  counts (:func:`units_to_prune`), ``min_keep``, ``round_to``, ``max_layer_ratio``;
* :mod:`~prunekit.allocation.normalize`: per-set normalisation (:data:`NORMALIZERS`)
  and :func:`lamp_scores`;
* :mod:`~prunekit.allocation.erk`: :func:`erk_densities`;
* :mod:`~prunekit.allocation.streaming`: exact global selection in bounded memory
  (:func:`select_lowest`);
* :mod:`~prunekit.allocation.magnitudes`: the same for magnitudes of entries, read from
  the float bits (``keep_largest_magnitudes``; local and global magnitude pruning);
* :mod:`~prunekit.allocation.units`: local / global / ERK over scored unit sets;
* :mod:`~prunekit.allocation.masks`: :func:`compute_keep_masks`, the pruner's path
  (targets, a criterion, a structure, scopes :data:`SCOPES`, overrides);
* :mod:`~prunekit.allocation.groups`: channel-group keep counts with caps and rounding
  (:func:`keep_counts`, :func:`select_channels`, :func:`allocate_channels`);
* :mod:`~prunekit.allocation.latency_greedy`: latency-aware greedy with pairwise
  exchanges (:func:`latency_keep_counts`);
* :mod:`~prunekit.allocation.rows`: per-row and N:M selection of one-shot pruning;
* :mod:`~prunekit.allocation.owl`: OWL per-block sparsities;
* :mod:`~prunekit.allocation.sensitivity`: per-layer sparsities from sensitivity curves;
* :mod:`~prunekit.allocation.api`: :func:`allocate`.
"""

from __future__ import annotations

from ..deprecation import deprecated_alias
from .api import POLICIES, allocate
from .budget import (
    Budget,
    Sparsity,
    check_max_layer_ratio,
    check_min_keep,
    check_round_to,
    check_sparsity,
    units_to_prune,
)
from .erk import erk_densities
from .groups import ALLOCATIONS, GROUP_SCOPES, ChannelGroup, allocate_channels, keep_counts, select_channels
from .latency_greedy import LatencyAllocation, latency_keep_counts
from .masks import SCOPES, compute_keep_masks
from .normalize import NORMALIZERS, lamp_scores, normalise
from .owl import check_owl, outlier_ratio, owl_sparsities
from .rows import keep_nm, keep_per_matrix, keep_per_row, nm_invalid_groups, prune_count
from .sensitivity import sensitivity_sparsities
from .streaming import all_finite, order_keys, select_lowest
from .units import ScoreSet, UnitSet


def _check_fraction(value: object, param: str = "ratio") -> float:
    """A fraction in [0, 1) (what ``check_ratio`` accepted)."""
    return float(check_sparsity(value, param, allow_count=False, allow_full=False))


#: Deprecated: ``check_sparsity(value, param, allow_count=False, allow_full=False)``.
check_ratio = deprecated_alias(
    _check_fraction, "prunekit.allocation.check_ratio",
    "prunekit.allocation.check_sparsity(value, param, allow_count=False, allow_full=False)",
)

__all__ = [
    "Budget",
    "ChannelGroup",
    "ALLOCATIONS",
    "GROUP_SCOPES",
    "LatencyAllocation",
    "NORMALIZERS",
    "POLICIES",
    "SCOPES",
    "ScoreSet",
    "Sparsity",
    "UnitSet",
    "all_finite",
    "allocate",
    "allocate_channels",
    "check_max_layer_ratio",
    "check_min_keep",
    "check_owl",
    "check_round_to",
    "check_sparsity",
    "compute_keep_masks",
    "erk_densities",
    "keep_counts",
    "keep_nm",
    "keep_per_matrix",
    "keep_per_row",
    "lamp_scores",
    "latency_keep_counts",
    "nm_invalid_groups",
    "normalise",
    "order_keys",
    "outlier_ratio",
    "owl_sparsities",
    "prune_count",
    "select_channels",
    "select_lowest",
    "sensitivity_sparsities",
    "units_to_prune",
]
