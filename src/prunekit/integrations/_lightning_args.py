"""Lightning's ``ModelPruning`` vocabulary, translated to prunekit (no Lightning import here).

* :func:`resolve_method`: ``pruning_fn`` (a torch pruner by name, function or
  class, a prunekit criterion, or a custom torch pruner) -> criterion,
  structure and the name Lightning logs;
* :func:`resolve_scope`: ``use_global_unstructured`` / ``scope``;
* :func:`check_how_much`: ``amount`` / ``sparsity`` / ``schedule``, one of them;
* :func:`check_parameter_names`: Lightning's ``parameter_names`` check.

torch's relative ``amount`` (a fraction *of what remains*) is realised by
:meth:`prunekit.Pruner.allocate` (:mod:`prunekit.allocation.relative`).
Messages quote Lightning's wording where Lightning's own tests match it.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch.nn.utils import prune as torch_prune

from ..allocation import SCOPES, Sparsity, check_sparsity
from ..errors import InvalidParameterError, PrunekitError, check_choice
from ..schedules import Schedule
from ..scores import Criterion, Magnitude, Random, as_criterion
from ..scores.torch_methods import TorchMethod, is_torch_method
from ..structures import Channel, Element, Structure, create_structure
from ._common import check_schedule

__all__ = [
    "PARAMETER_NAMES",
    "TORCH_PRUNING_FUNCTIONS",
    "AmountLike",
    "Method",
    "check_amount",
    "check_how_much",
    "check_parameter_names",
    "check_verbose",
    "resolve_method",
    "resolve_scope",
]

#: the parameter names Lightning's ``parameter_names`` takes (prunekit also takes glob patterns).
PARAMETER_NAMES = ("weight", "bias")

#: torch's pruners that ``pruning_fn`` accepts by name, function or class.
TORCH_PRUNING_FUNCTIONS = ("l1_unstructured", "random_unstructured", "ln_structured", "random_structured")

_TORCH_BY_OBJECT: dict[Any, str] = {
    torch_prune.l1_unstructured: "l1_unstructured",
    torch_prune.random_unstructured: "random_unstructured",
    torch_prune.ln_structured: "ln_structured",
    torch_prune.random_structured: "random_structured",
    torch_prune.L1Unstructured: "l1_unstructured",
    torch_prune.RandomUnstructured: "random_unstructured",
    torch_prune.LnStructured: "ln_structured",
    torch_prune.RandomStructured: "random_structured",
}

#: the ``BasePruningMethod`` class of each of torch's pruners, whose name Lightning logs for global pruning.
_TORCH_CLASS_NAMES = {
    "l1_unstructured": "L1Unstructured",
    "random_unstructured": "RandomUnstructured",
    "ln_structured": "LnStructured",
    "random_structured": "RandomStructured",
}

AmountLike = int | float | Callable[[int], int | float]


@dataclass
class Method:
    """What ``pruning_fn`` (or ``criterion``/``structure``) resolved to."""

    criterion: Criterion
    structure: Structure
    name: str
    custom: Callable[..., Any] | None = None  # a functional torch pruner fn(module, name=, amount=) run by torch
    torch_name: str | None = None  # one of TORCH_PRUNING_FUNCTIONS

    @property
    def is_torch_method(self) -> bool:
        """A ``BasePruningMethod`` subclass other than torch's four (run as a :class:`TorchMethod`)."""
        return isinstance(self.criterion, TorchMethod)

    @property
    def structured(self) -> bool:
        """Whether units are larger than an entry (torch's ``*_structured``, prunekit's structures)."""
        if self.is_torch_method:
            return getattr(self.criterion.method, "PRUNING_TYPE", "unstructured") != "unstructured"
        return not isinstance(self.structure, Element)

    def logged_name(self, scope: str) -> str:
        """The name Lightning logs: torch's class for global pruning (``L1Unstructured``), its
        function for local pruning (``l1_unstructured``); a custom method's class name."""
        if self.torch_name is not None:
            return _TORCH_CLASS_NAMES[self.torch_name] if scope == "global" else self.torch_name
        return self.name


def _torch_name(pruning_fn: Any) -> str | None:
    if isinstance(pruning_fn, str):
        name = pruning_fn.lower()
        return name if name in TORCH_PRUNING_FUNCTIONS else None
    try:
        return _TORCH_BY_OBJECT.get(pruning_fn)
    except TypeError:  # unhashable
        return None


def check_parameter_names(names: Any) -> list[str]:
    """Lightning's ``parameter_names``: ``"weight"``/``"bias"``; prunekit also takes glob patterns."""
    if isinstance(names, str) or not isinstance(names, (list, tuple)):
        raise InvalidParameterError("parameter_names", "a list of parameter names such as ['weight', 'bias']",
                                    names, "Fix: parameter_names=['weight'].")
    for name in names:
        if not isinstance(name, str) or not name:
            raise InvalidParameterError("parameter_names", "names (str) such as 'weight'", name,
                                        "Fix: parameter_names=['weight', 'bias'].")
        if name not in PARAMETER_NAMES and not any(c in name for c in "*?["):
            raise InvalidParameterError(
                "parameter_names",
                f"names in {PARAMETER_NAMES} or glob patterns (the provided `parameter_names` name: "
                f"{name} isn't in {PARAMETER_NAMES})", name,
                "Fix: parameter_names=['weight', 'bias'], a glob such as '*_weight' for other names, "
                "or parameters_to_prune=[(module, name)].",
            )
    return list(names)


def check_verbose(verbose: Any) -> int:
    """Lightning's ``verbose``: 0, 1 or 2."""
    if verbose not in (0, 1, 2) or isinstance(verbose, bool):
        raise InvalidParameterError("verbose", "0, 1 or 2", verbose,
                                    "Fix: `verbose` must be any of (0, 1, 2): 0 silent, 1 the total, 2 per tensor.")
    return int(verbose)


def _norm_p(pruning_norm: Any) -> float:
    if pruning_norm == "fro":
        return 2.0
    if isinstance(pruning_norm, bool) or not isinstance(pruning_norm, (int, float)) or not pruning_norm > 0:
        raise InvalidParameterError(
            "pruning_norm", "a positive norm order (1, 2, float('inf')) or 'fro'", pruning_norm,
            "Fix: pruning_norm=1 (L1) or 2 (L2) for ln_structured.",
        )
    return float(pruning_norm)


def _torch_method(torch_name: str, pruning_dim: int | None, pruning_norm: Any) -> Method:
    if not torch_name.endswith("_structured"):
        crit: Criterion = Magnitude(p=1) if torch_name == "l1_unstructured" else Random()
        return Method(crit, Element(), torch_name, torch_name=torch_name)
    if pruning_dim is None:
        raise InvalidParameterError(
            "pruning_dim", f"the tensor dimension to prune along, for {torch_name!r}", None,
            "Fix: when requesting `structured` pruning, the `pruning_dim` should be provided, "
            "e.g. pruning_dim=0 (output channels).",
        )
    if torch_name == "random_structured":
        return Method(Random(), Channel(pruning_dim), torch_name, torch_name=torch_name)
    if pruning_norm is None:
        raise InvalidParameterError(
            "pruning_norm", "the norm order for 'ln_structured'", None,
            "Fix: when requesting `ln_structured` pruning, the `pruning_norm` should be provided, "
            "e.g. pruning_norm=2.",
        )
    return Method(Magnitude(p=_norm_p(pruning_norm)), Channel(pruning_dim), torch_name, torch_name=torch_name)


def resolve_method(
    pruning_fn: Any,
    criterion: Any,
    structure: Any,
    pruning_dim: int | None,
    pruning_norm: Any,
) -> Method:
    """Criterion, structure and logged name from Lightning's ``pruning_fn`` or prunekit's arguments."""
    torch_name = _torch_name(pruning_fn)
    if pruning_fn is not None and (criterion is not None or structure is not None) and (
        torch_name is not None or not isinstance(pruning_fn, (str, Criterion))
    ):
        raise InvalidParameterError(
            "pruning_fn", "no criterion= or structure= next to a torch pruner (it fixes both)", pruning_fn,
            "Fix: pass either pruning_fn (Lightning style) or criterion=/structure= (prunekit style).",
        )
    if torch_name is not None:
        return _torch_method(torch_name, pruning_dim, pruning_norm)
    if isinstance(pruning_fn, (str, Criterion)):
        if criterion is not None:
            raise InvalidParameterError(
                "criterion", "None when pruning_fn already names a criterion", criterion,
                "Fix: pass the criterion once, as pruning_fn or as criterion=.",
            )
        try:
            crit = as_criterion(pruning_fn)
        except PrunekitError as exc:
            raise InvalidParameterError(
                "pruning_fn",
                f"one of torch's pruners {list(TORCH_PRUNING_FUNCTIONS)} or a prunekit criterion name",
                pruning_fn,
                f"Fix: see prunekit.list_scores(unit_space='element') ({exc}).",
            ) from exc
        name = str(pruning_fn) if isinstance(pruning_fn, str) else repr(crit)
        return Method(crit, create_structure(structure if structure is not None else "element"), name)
    if pruning_fn is not None:
        if isinstance(pruning_fn, torch_prune.BasePruningMethod):
            raise InvalidParameterError(
                "pruning_fn", "a BasePruningMethod subclass, not an instance", pruning_fn,
                f"Fix: pass {type(pruning_fn).__name__} itself.",
            )
        if not callable(pruning_fn):
            raise InvalidParameterError(
                "pruning_fn",
                f"to be a str in {list(TORCH_PRUNING_FUNCTIONS)} or a prunekit criterion name, a "
                "BasePruningMethod subclass (the class, not an instance) or a function fn(module, name=, amount=)",
                pruning_fn,
                "Fix: e.g. pruning_fn='l1_unstructured'.",
            )
        if is_torch_method(pruning_fn):  # prunekit's Pruner runs it: the masks Method.apply would give
            return Method(TorchMethod(pruning_fn), Element(), pruning_fn.__name__)
        # the criterion is unused (torch prunes); it keeps the Pruner's checks happy
        return Method(as_criterion("magnitude"), Element(), getattr(pruning_fn, "__name__", repr(pruning_fn)),
                      custom=pruning_fn)
    crit = as_criterion(criterion if criterion is not None else "magnitude")
    struct = create_structure(structure if structure is not None else "element")
    name = repr(crit) if struct.spec() == "element" else f"{crit!r} {struct.spec()}"
    return Method(crit, struct, name)


def resolve_scope(method: Method, scope: str | None, use_global_unstructured: bool | None) -> str:
    """``scope`` wins; else Lightning's ``use_global_unstructured``; else global for elements, local otherwise.

    Lightning's flag keeps Lightning's rules: ``use_global_unstructured=True`` refuses structured
    pruning, ``False`` refuses a custom ``BasePruningMethod``. prunekit's ``scope`` lifts both:
    ``scope="global"`` ranks channels over all tensors, ``scope="local"`` runs a custom method
    on each tensor (``Method.apply``)."""
    if scope is None and use_global_unstructured is not None:
        if use_global_unstructured and method.structured:
            raise InvalidParameterError(
                "use_global_unstructured",
                'False for structured pruning: only the "unstructured" PRUNING_TYPE is supported with '
                "`use_global_unstructured=True`", True,
                "Fix: use_global_unstructured=False (each tensor on its own), or scope='global' for "
                "prunekit's global ranking of structured units.",
            )
        if not use_global_unstructured and method.is_torch_method:
            raise InvalidParameterError(
                "use_global_unstructured",
                "True with a custom `BasePruningMethod`: it is currently only supported with "
                "`use_global_unstructured=True` (as in Lightning)", False,
                "Fix: use_global_unstructured=True, or scope='local' to run it on each tensor (Method.apply).",
            )
    if scope is not None:
        scope = check_choice("scope", scope, SCOPES)
        if use_global_unstructured is not None and bool(use_global_unstructured) != (scope == "global"):
            raise InvalidParameterError(
                "use_global_unstructured", f"{scope == 'global'} or None with scope={scope!r}",
                use_global_unstructured, "Fix: pass only one of scope and use_global_unstructured.",
            )
    elif use_global_unstructured is not None:
        scope = "global" if use_global_unstructured else "local"
    else:
        scope = "global" if isinstance(method.structure, Element) else "local"
    if scope == "global" and method.structure.fixed_sparsity is not None:
        raise InvalidParameterError(
            "scope", f"'local' for structure {method.structure.spec()!r} (it selects within each group)", scope,
            "Fix: leave scope and use_global_unstructured out.",
        )
    if method.custom is not None and scope == "global":
        raise InvalidParameterError(
            "use_global_unstructured", "False for a functional pruner fn(module, name=, amount=)", True,
            "Fix: pass use_global_unstructured=False, or a BasePruningMethod subclass for global pruning.",
        )
    return scope


def check_how_much(
    method: Method,
    amount: AmountLike | None,
    sparsity: Sparsity | Callable[[int], Sparsity] | None,
    schedule: Schedule | None,
) -> AmountLike | None:
    """Exactly one of ``amount``, ``sparsity``, ``schedule`` (or none for N:M); returns ``amount``
    (Lightning's default 0.5 when nothing says how much)."""
    given = [n for n, v in (("amount", amount), ("sparsity", sparsity), ("schedule", schedule)) if v is not None]
    if len(given) > 1:
        raise InvalidParameterError(
            given[1], f"not given together with {given[0]}", "<both given>",
            "Fix: amount is Lightning's fraction of what remains, sparsity prunekit's fraction zero afterwards, "
            "schedule a prunekit Schedule; pass exactly one.",
        )
    fixed = method.structure.fixed_sparsity
    if not given and fixed is None:
        amount = 0.5  # Lightning's default
    if amount is not None:
        if fixed is not None:
            raise InvalidParameterError(
                "amount", f"None with structure {method.structure.spec()!r} (it fixes the sparsity)", amount,
                "Fix: leave amount out.",
            )
        if not callable(amount):
            check_amount(amount)
    if sparsity is not None:
        if not callable(sparsity):
            check_sparsity(sparsity)
        if method.custom is not None:
            raise InvalidParameterError(
                "sparsity", "None with a custom torch pruner (it takes amount)", sparsity,
                "Fix: pass amount=, or use a prunekit criterion.",
            )
    if schedule is not None:
        check_schedule(schedule)
        if method.custom is not None:
            raise InvalidParameterError(
                "schedule", "None with a custom torch pruner", "<Schedule>", "Fix: use a prunekit criterion.",
            )
    return amount


def check_amount(value: Any, param: str = "amount") -> float | int:
    """Validate a Lightning/torch ``amount``: a float in [0, 1] (of what remains) or an int count."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidParameterError(
            param,
            "a float in [0, 1] (fraction of the remaining weights pruned now), an int count, "
            "or a function epoch -> one of those",
            value,
            "Fix: e.g. amount=0.2.",
        )
    return check_sparsity(value, param)
