"""The declared parameters of :func:`prunekit.prune` / :class:`prunekit.Pruner`,
:func:`prunekit.structural_prune`, :func:`prunekit.prune_heads`,
:func:`prunekit.prune_mlp_neurons` and :func:`prunekit.oneshot_prune`
(see :mod:`prunekit.validation`).

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
from collections.abc import Mapping
from typing import Any

from .allocation import ALLOCATIONS, GROUP_SCOPES, NORMALIZERS, SCOPES
from .errors import InvalidParameterError, did_you_mean
from .masks import list_realisations
from .registry import parse_spec
from .scores.torch_methods import is_torch_method
from .scores import SCORES, Criterion, GroupCriterion, as_criterion, criterion_names
from .structures import NM, Element, Structure, create_structure, list_structures
from .validation import (
    AnyOf,
    Constraint,
    Flag,
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

__all__ = [
    "COUNT",
    "HEADS_PARAMS",
    "HEAD_SCORE",
    "NEURONS_PARAMS",
    "NEURON_SCORE",
    "ONESHOT_PARAMS",
    "PRUNE_PARAMS",
    "SPARSITY",
    "STRUCTURAL_PARAMS",
    "is_layer_score",
    "list_oneshot_methods",
]

#: ``sparsity`` as a fraction (the command line's ``--sparsity``; ``--count`` for counts).
SPARSITY = Fraction(count_option="--count")
#: A count of units pruned per tensor (``prune(model, 3)``; the command line's ``--count``).
COUNT = Interval(numbers.Integral, 0, None, example=1)

class TorchMethodClass(Constraint):
    """A ``torch.nn.utils.prune.BasePruningMethod`` subclass (used as a criterion; it decides its masks)."""

    def accepts(self, value: Any) -> bool:
        return is_torch_method(value)

    def describe(self) -> str:
        return "a torch.nn.utils.prune.BasePruningMethod subclass"


CRITERION = Spec(as_criterion, criterion_names, "criterion", "lnorm:3", listed_by="prunekit list scores")
STRUCTURE = Spec(create_structure, list_structures, "structure", "2:4, block:4x4, channel:1",
                 listed_by="prunekit list structures")

PRUNE_PARAMS = declare(
    Param("sparsity", AnyOf(SPARSITY, COUNT, None), None,
          "fraction of each tensor (local) or of all targets (global, lamp, erk) that is zero afterwards",
          metavar="FRACTION"),
    Param("amount", AnyOf(Fraction(count_option=None, example=0.2), COUNT, None), None,
          "torch's relative level: fraction (or int count) of the entries still unpruned that are pruned now; "
          "instead of sparsity", option=None),
    Param("criterion", AnyOf(CRITERION, InstanceOf(Criterion, "a Criterion"), IsCallable("a function target -> scores"),
                             TorchMethodClass()),
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
    Param("types", AnyOf(Strings("a module type name or a list of them"), InstanceOf(type, "a module class"),
                         InstanceOf(list, "a list of module classes"), None), None,
          "module types whose parameters are pruned (default: every Linear and ConvNd)", option=None),
    Param("overrides", AnyOf(InstanceOf(Mapping, "a mapping {name pattern: sparsity}"), None), None,
          "per-tensor sparsity for the tensors whose names match a pattern", option=None),
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
    Param("normalize", AnyOf(Options(NORMALIZERS, "normalisation"), None), None,
          "per-group normalisation of scores (None: mean for ranking, sum for latency)", option=None),
    Param("max_layer_ratio", AnyOf(Interval(numbers.Real, 0, 1, "both", example=0.8), None), None,
          "largest fraction of any group's channels removed", metavar="FRACTION"),
    Param("round_to", AnyOf(Interval(numbers.Integral, 1, None, example=8), None), None,
          "channels kept per group rounded to a multiple of this", metavar="N"),
    Param("allocation", Options(ALLOCATIONS, "allocation"), "ranking",
          "ranking (scope's ranking) or latency (greedy latency-saliency on this machine's layer timings)"),
    Param("steps", Interval(numbers.Integral, 1, None, example=1), 1, "prune in this many increments", option=None),
    Param("exclude", AnyOf(Strings("a glob, re:<regex>, or a list of them"), None), (),
          "modules whose channels are kept", repeat=True, metavar="PATTERN"),
    Param("approximate", Flag(), False,
          "also prune channels whose removal changes the kept values (those a LayerNorm normalises, with the norm); "
          "fine-tune afterwards"),
)


# -- attention heads and MLP neurons ---------------------------------------------------------


def _unit_score(unit_space: str) -> Spec:
    """A score name registered for ``unit_space`` (``head`` or ``neuron``; aliases allowed)."""

    def names() -> list[str]:
        return SCORES.names(unit_space=unit_space)

    def create(spec: str) -> str:
        if spec not in SCORES or unit_space not in SCORES.entry(spec).factories:
            raise InvalidParameterError(
                "importance", f"a registered {unit_space} score ({', '.join(names())})", spec,
                (f"Fix: use one of them (prunekit list scores --unit-space {unit_space})."
                 + did_you_mean(spec, names())).strip(),
            )
        return spec

    return Spec(create, names, f"{unit_space} score", listed_by=f"prunekit list scores --unit-space {unit_space}")


#: ``sparsity`` of a physical removal: at least one unit of each layer is kept.
UNIT_SPARSITY = AnyOf(Fraction("left", example=0.25), None)
_OWN_SCORES = InstanceOf(Mapping, "your own {layer: scores}")
#: A registered head score / MLP neuron score (by name).
HEAD_SCORE = _unit_score("head")
NEURON_SCORE = _unit_score("neuron")

HEADS_PARAMS = declare(
    Param("sparsity", UNIT_SPARSITY, None, "fraction of attention heads removed", metavar="FRACTION"),
    Param("importance", AnyOf(HEAD_SCORE, _OWN_SCORES), "magnitude",
          "head score: magnitude (L1), l2, gradient or taylor (with data), or {layer: scores}", metavar="NAME"),
    Param("scope", Options(GROUP_SCOPES, "scope"), "local", "local (each layer) or global (one ranking)"),
    Param("gqa", Options(("query", "group"), "grouped-query rule"), "query",
          "grouped-query attention: query (the same number of query heads from every group) or group (whole groups)"),
    Param("round_to", AnyOf(Interval(numbers.Integral, 1, None, example=8), None), None,
          "kept heads x head size of every layer rounded to a multiple of this (N:M kernels)", metavar="N"),
    Param("uniform", Flag(), False,
          "the same number of heads kept in every layer (configs with one head count, e.g. stock transformers)"),
)

NEURONS_PARAMS = declare(
    Param("sparsity", UNIT_SPARSITY, None, "fraction of MLP hidden neurons removed (the same number per layer)",
          metavar="FRACTION"),
    Param("importance", AnyOf(NEURON_SCORE, _OWN_SCORES), "magnitude",
          "neuron score: magnitude (L1), l2, gradient or taylor (with data), or {layer: scores}", metavar="NAME"),
    Param("round_to", AnyOf(Interval(numbers.Integral, 1, None, example=8), None), None,
          "kept MLP neurons of every layer rounded to a multiple of this (N:M kernels)", metavar="N"),
    Param("uniform", Flag(), False,
          "the same number of MLP neurons kept in every layer (configs with one width, e.g. stock transformers)"),
)


# -- one-shot ------------------------------------------------------------------------------


def is_layer_score(name: str) -> bool:
    """Whether the score ``name`` can prune a linear layer from calibration statistics (its element
    factory is a class with ``score_layer``): the one-shot view of :data:`prunekit.scores.SCORES`."""
    key = str(name).lower()
    if key not in SCORES or "element" not in SCORES.entry(key).factories:
        return False
    factory = SCORES.entry(key).factories["element"]
    return isinstance(factory, type) and callable(getattr(factory, "score_layer", None))


def list_oneshot_methods(pattern: str = "*") -> list[str]:
    """Names of the registered one-shot methods (the scores of ``SCORES`` that score linear layers)."""
    return [n for n in SCORES.names(pattern, unit_space="element") if is_layer_score(n)]


def _oneshot_method(spec: str) -> str:
    if not is_layer_score(spec):
        names = list_oneshot_methods()
        raise InvalidParameterError("method", f"a one-shot method ({', '.join(names)})", spec,
                                    ("Fix: use one of the listed methods." + did_you_mean(spec, names)).strip())
    return spec


def _oneshot_structure(spec: str) -> Any:
    made = None
    if spec.strip().lower() not in ("n:m", "nm"):
        made = create_structure(spec)
    if not isinstance(made, (Element, NM)):
        raise InvalidParameterError("structure", "'element' or an N:M pattern such as '2:4'", spec,
                                    "Fix: one-shot methods prune elements; use prunekit.prune for other structures.")
    return made


ONESHOT_PARAMS = declare(
    Param("method", Spec(_oneshot_method, list_oneshot_methods, "one-shot method", listed_by="prunekit list scores"),
          "wanda", "wanda (Sun et al. 2023), sparsegpt (Frantar & Alistarh 2023), magnitude or a registered one",
          metavar="NAME"),
    Param("sparsity", AnyOf(Fraction("left"), None), None,
          "fraction of each layer's weights pruned (default 0.5; fixed by an N:M structure)", metavar="FRACTION"),
    Param("structure", Spec(_oneshot_structure, lambda: ["element"], "one-shot structure", "2:4, 4:8"), "element",
          "element or an N:M pattern", metavar="SPEC"),
    Param("owl", Flag(), False, "per-block sparsities from outlier ratios (OWL, Yin et al. 2023)"),
    Param("owl_lambda", Interval(numbers.Real, 0, 1, "both", example=0.08), 0.08,
          "OWL's spread of the block sparsities around the target", metavar="LAMBDA"),
    Param("owl_m", Interval(numbers.Real, 0, None, "neither", example=5.0), 5.0,
          "OWL's outlier threshold (times the mean)", metavar="M"),
    Param("sequential", Flag(), False, "prune a block's layers group by group with re-captured inputs"),
    Param("include", AnyOf(Strings("a glob or a list of them"), None), None,
          "globs on the layer names inside a block to prune", repeat=True, metavar="PATTERN"),
    Param("exclude", AnyOf(Strings("a glob or a list of them"), None), None,
          "globs on the layer names inside a block to skip", repeat=True, metavar="PATTERN"),
    Param("mode", Options(list_realisations, "realisation", "prunekit list realisations"), "permanent",
          "permanent (zeros written, no mask), inplace or reparam (masks kept)"),
    Param("blocksize", Interval(numbers.Integral, 1, None, example=128), 128, "SparseGPT's column block", metavar="N"),
    Param("percdamp", Interval(numbers.Real, 0, None, "neither", example=0.01), 0.01,
          "SparseGPT's dampening (fraction of the mean Hessian diagonal)", metavar="FRACTION"),
)
