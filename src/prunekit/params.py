"""The declared parameters of :func:`prunekit.prune` / :class:`prunekit.Pruner` and of
:func:`prunekit.structural_prune` (see :mod:`prunekit.validation`).

One declaration per parameter: the Python checks, the ``prunekit prune``
options and the recipe schema fragments (:func:`prunekit.validation.schema`)
all read these tables. Options that name registered components (criteria,
structures, group criteria, scopes) read the registries at each check, so a
component registered by a user is accepted everywhere at once.

This module sits above the realisations it describes (it reads the surgery's
allocation names) and below the pruner, which validates with it.
"""

from __future__ import annotations

import numbers

from .allocation import ALLOCATIONS, GROUP_SCOPES, NORMALIZERS, SCOPES
from .errors import InvalidParameterError, did_you_mean
from .masks import list_realisations
from .registry import parse_spec
from .scores import SCORES, Criterion, GroupCriterion, as_criterion, criterion_names
from .structures import Structure, create_structure, list_structures
from .validation import (
    AnyOf,
    Fraction,
    InstanceOf,
    Interval,
    IsCallable,
    Options,
    Param,
    Spec,
    Strings,
    declare,
)

__all__ = ["COUNT", "PRUNE_PARAMS", "SPARSITY", "STRUCTURAL_PARAMS"]

#: ``sparsity`` as a fraction (the command line's ``--sparsity``; ``--count`` for counts).
SPARSITY = Fraction(count_option="--count")
#: A count of units pruned per tensor (``prune(model, 3)``; the command line's ``--count``).
COUNT = Interval(numbers.Integral, 0, None, example=1)

CRITERION = Spec(as_criterion, criterion_names, "criterion", "lnorm:3", listed_by="prunekit list scores")
STRUCTURE = Spec(create_structure, list_structures, "structure", "2:4, block:4x4, channel:1",
                 listed_by="prunekit list structures")

PRUNE_PARAMS = declare(
    Param("sparsity", AnyOf(SPARSITY, COUNT, None), None,
          "fraction of each tensor (local) or of all targets (global, lamp, erk) that is zero afterwards",
          metavar="FRACTION"),
    Param("criterion", AnyOf(CRITERION, InstanceOf(Criterion, "a Criterion"), IsCallable("a function target -> scores")),
          "magnitude", "importance score of each weight or unit (see `prunekit list scores`)", metavar="SPEC"),
    Param("structure", AnyOf(STRUCTURE, InstanceOf(Structure, "a Structure")), "element",
          "unit pruned together: element, 2:4 (any N:M), block:4x4, kernel, channel, channel:<dim>", metavar="SPEC"),
    Param("scope", Options(SCOPES, "scope"), "local",
          "local (each tensor), global (one ranking), lamp (LAMP scores), erk (Erdős–Rényi-Kernel densities)"),
    Param("normalize", Options(NORMALIZERS, "normalisation"), "none",
          "per-tensor normalisation of unit scores before a global ranking"),
    Param("min_keep", Interval(numbers.Integral, 0, None, example=1), 1,
          "units of every tensor never pruned (0 allows emptying one)"),
    Param("include", AnyOf(Strings("a glob, re:<regex>, or a list of them"), None), None,
          "glob or re:<regex> of tensors to prune (repeatable)", repeat=True, metavar="PATTERN"),
    Param("exclude", AnyOf(Strings("a glob, re:<regex>, or a list of them"), None), None,
          "glob or re:<regex> of tensors to skip (repeatable)", repeat=True, metavar="PATTERN"),
    Param("params", Strings("a parameter name or a list of them"), "weight",
          "parameter names to prune (repeatable)", repeat=True, metavar="NAME"),
    Param("mode", Options(list_realisations, "realisation", "prunekit list realisations"), "reparam",
          "realisation: reparam (torch.nn.utils.prune compatible), inplace (lean), permanent (zeros) or a registered one"),
)



def _group_score(spec: str) -> object:
    """The factory of the channel-group score named by ``spec`` (an error naming the group scores if none)."""
    name, names = parse_spec(spec)[0], _group_score_names()
    if name not in SCORES or "group" not in SCORES.entry(name).unit_spaces:
        raise InvalidParameterError(
            "criterion", f"a registered group criterion name ({', '.join(names)})", spec,
            ("Fix: use one of them (prunekit list scores --unit-space group)." + did_you_mean(name, names)).strip(),
        )
    return SCORES.factory(name, "group")


def _group_score_names() -> list[str]:
    return SCORES.names(unit_space="group")


GROUP_CRITERION = Spec(_group_score, _group_score_names, "group criterion", listed_by="prunekit list scores")

STRUCTURAL_PARAMS = declare(
    Param("sparsity", AnyOf(Fraction("left", count_option=None), None), None,
          "fraction of each group's channels removed (local) or of all channels (global)",
          metavar="FRACTION"),
    Param("macs_target", AnyOf(Interval(numbers.Real, 0, 1, "right", example=0.5), None), None,
          "MACs after / before to reach (e.g. 0.5), by bisection on the channel ratio", metavar="FRACTION"),
    Param("latency_target", AnyOf(Interval(numbers.Real, 0, 1, "right", example=0.5), None), None,
          "modelled latency after / before to reach (implies --allocation latency)", metavar="FRACTION"),
    Param("criterion", AnyOf(GROUP_CRITERION, InstanceOf(GroupCriterion, "a GroupCriterion")), "magnitude",
          "group criterion scoring each coupled channel group", metavar="NAME"),
    Param("scope", Options(GROUP_SCOPES, "scope"), "local", "local (each group) or global (one ranking)"),
    Param("max_layer_ratio", AnyOf(Interval(numbers.Real, 0, 1, "both", example=0.8), None), None,
          "largest fraction of any group's channels removed", metavar="FRACTION"),
    Param("round_to", AnyOf(Interval(numbers.Integral, 1, None, example=8), None), None,
          "channels kept per group rounded to a multiple of this", metavar="N"),
    Param("allocation", Options(ALLOCATIONS, "allocation"), "ranking",
          "ranking (scope's ranking) or latency (greedy latency-saliency on this machine's layer timings)"),
    Param("steps", Interval(numbers.Integral, 1, None, example=1), 1, "prune in this many increments", option=None),
    Param("exclude", AnyOf(Strings("a glob, re:<regex>, or a list of them"), None), (),
          "modules whose channels are kept", repeat=True, metavar="PATTERN"),
)
