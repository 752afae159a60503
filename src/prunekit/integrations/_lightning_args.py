"""Lightning's ``ModelPruning`` vocabulary, translated to prunekit (no Lightning import here).

* :func:`resolve_method`: ``pruning_fn`` (a torch pruner by name, function or
  class, a prunekit criterion, or a custom torch pruner) -> criterion,
  structure and the name Lightning logs;
* :func:`resolve_scope`: ``use_global_unstructured`` / ``scope``;
* :func:`check_how_much`: ``amount`` / ``sparsity`` / ``schedule``, one of them;
* :func:`amount_keeps`: torch's ``amount`` (a fraction *of what remains*)
  as prunekit keep masks.

``amount`` exists only here and in the callback: everywhere else prunekit
speaks of ``sparsity``, the fraction zero afterwards.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn.utils import prune as torch_prune

from ..allocation import SCOPES, Sparsity, check_sparsity, compute_keep_masks
from ..controller import mask_stats
from ..scores import Criterion, Magnitude, Random, as_criterion
from ..errors import InvalidParameterError, PrunekitError, check_choice
from ..pruner import Pruner
from ..schedules import Schedule
from ..structures import Channel, Element, Structure, create_structure
from ..targets import Target
from ._common import check_schedule

__all__ = [
    "TORCH_PRUNING_FUNCTIONS",
    "AmountLike",
    "Method",
    "amount_counts",
    "amount_keeps",
    "check_amount",
    "check_how_much",
    "resolve_method",
    "resolve_scope",
]

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

AmountLike = int | float | Callable[[int], int | float]


@dataclass
class Method:
    """What ``pruning_fn`` (or ``criterion``/``structure``) resolved to."""

    criterion: Criterion
    structure: Structure
    name: str
    custom: Callable[..., Any] | None = None  # a torch pruner run by torch itself
    custom_is_method: bool = False  # a BasePruningMethod subclass (global pruning possible)


def _torch_name(pruning_fn: Any) -> str | None:
    if isinstance(pruning_fn, str):
        name = pruning_fn.lower()
        return name if name in TORCH_PRUNING_FUNCTIONS else None
    try:
        return _TORCH_BY_OBJECT.get(pruning_fn)
    except TypeError:  # unhashable
        return None


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
        return Method(crit, Element(), torch_name)
    if pruning_dim is None:
        raise InvalidParameterError(
            "pruning_dim", f"the tensor dimension to prune along, for {torch_name!r}", None,
            "Fix: e.g. pruning_dim=0 (output channels).",
        )
    if torch_name == "random_structured":
        return Method(Random(), Channel(pruning_dim), torch_name)
    if pruning_norm is None:
        raise InvalidParameterError(
            "pruning_norm", "the norm order for 'ln_structured'", None, "Fix: e.g. pruning_norm=2.",
        )
    return Method(Magnitude(p=_norm_p(pruning_norm)), Channel(pruning_dim), torch_name)


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
        if not callable(pruning_fn):
            raise InvalidParameterError(
                "pruning_fn",
                "a torch pruner name, a prunekit criterion, a BasePruningMethod subclass or a function "
                "fn(module, name=, amount=)",
                pruning_fn,
                "Fix: e.g. pruning_fn='l1_unstructured'.",
            )
        if isinstance(pruning_fn, torch_prune.BasePruningMethod):
            raise InvalidParameterError(
                "pruning_fn", "a BasePruningMethod subclass, not an instance", pruning_fn,
                f"Fix: pass {type(pruning_fn).__name__} itself.",
            )
        is_method = isinstance(pruning_fn, type) and issubclass(pruning_fn, torch_prune.BasePruningMethod)
        # the criterion is unused (torch prunes); it keeps the Pruner's checks happy
        return Method(as_criterion("magnitude"), Element(), getattr(pruning_fn, "__name__", repr(pruning_fn)),
                      custom=pruning_fn, custom_is_method=is_method)
    crit = as_criterion(criterion if criterion is not None else "magnitude")
    struct = create_structure(structure if structure is not None else "element")
    name = repr(crit) if struct.spec() == "element" else f"{crit!r} {struct.spec()}"
    return Method(crit, struct, name)


def resolve_scope(method: Method, scope: str | None, use_global_unstructured: bool | None) -> str:
    """``scope`` wins; else Lightning's ``use_global_unstructured``; else global for elements, local otherwise."""
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
    if method.custom is not None and not method.custom_is_method and scope == "global":
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


def _dead_units(target: Target, structure: Structure) -> int:
    keep = target.keep_mask()
    return 0 if keep is None else int((~structure.unit_alive(keep, target)).sum())


def amount_counts(
    targets: Sequence[Target], structure: Structure, amount: float | int, scope: str
) -> list[int] | int | float:
    """Translate torch's relative ``amount`` into prunekit's absolute sparsity.

    torch prunes ``round(amount × remaining)`` more units (an int amount:
    ``amount`` more). prunekit asks for the total pruned afterwards, so the
    request is ``dead + round(amount × (units − dead))`` units: the same
    numbers torch uses, i.e. new_total = old_total + amount·(1 − old_total).
    Returns one count per target (local), one count (global, single-entry
    units) or a fraction of the parameters (global with larger units, and the
    ``lamp``/``erk`` allocations, which take the overall fraction).
    """
    amount = check_amount(amount)

    def more(remaining: int, where: str) -> int:
        if isinstance(amount, int):
            if amount > remaining:
                raise InvalidParameterError(
                    "amount", f"at most {remaining} (the units still unpruned in {where})", amount,
                    "Fix: lower the amount, or pass a float fraction of what remains.",
                )
            return amount
        return round(amount * remaining)

    if scope == "local":
        out = []
        for t in targets:
            units, dead = structure.num_units(t), _dead_units(t, structure)
            out.append(dead + more(units - dead, t.name))
        return out
    if scope != "global" and isinstance(amount, int):
        raise InvalidParameterError(
            "amount", f"a float fraction of what remains with scope={scope!r}", amount,
            "Fix: pass amount as a float (e.g. 0.2), or use scope='global' for a count.",
        )
    if scope == "global" and (isinstance(structure, Element) or isinstance(amount, int)):
        units = sum(structure.num_units(t) for t in targets)
        dead = sum(_dead_units(t, structure) for t in targets)
        return dead + more(units - dead, "all global targets")
    total = sum(t.numel for t in targets)
    old = sum(z for z, _n in mask_stats(targets)) / total
    return min(1.0, old + amount * (1.0 - old))


def amount_keeps(pruner: Pruner, amount: float | int, scope: str, normalize: str,
                 min_keep: int) -> list[torch.Tensor]:
    """Keep masks that prune ``amount`` of what remains (torch's meaning), through prunekit's allocation."""
    targets, structure, criterion = pruner.targets, pruner.structure, pruner.criterion
    request = amount_counts(targets, structure, amount, scope)
    if isinstance(request, list):
        keeps: list[torch.Tensor] = []
        for t, count in zip(targets, request):
            keeps += compute_keep_masks([t], criterion, structure, count, scope="local", min_keep=min_keep)
        return keeps
    return compute_keep_masks(targets, criterion, structure, request,
                              scope=scope if scope in ("lamp", "erk") else "global",
                              normalize=normalize, min_keep=min_keep)
