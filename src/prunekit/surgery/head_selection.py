"""Which heads and MLP neurons to remove for a fraction ``sparsity`` of them, from their scores.

:func:`select_neurons` removes the lowest scores, the same number in every
layer (``scope="local"``) or across layers (``scope="global"``, scores
compared directly, one unit kept per layer). :func:`select_heads` does the
same for heads; under grouped-query attention ``gqa="query"`` removes the same
number of query heads from every key/value group (keeping every KV head) and
``gqa="group"`` removes whole groups ranked by their summed score.
:func:`round_plan` then moves each layer's kept count to a multiple of
``round_to`` (for N:M kernels), and :func:`check_multiples` refuses explicit
requests that leave other counts.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import torch

from ..allocation import Budget, allocate
from ..coupling.units import AttentionSpec
from ..errors import InvalidParameterError, check_choice

__all__ = ["select_heads", "select_neurons", "select_uniform", "check_same_count", "round_plan", "check_multiples",
           "head_multiple"]

logger = logging.getLogger(__name__)


def _check_sparsity(sparsity: Any) -> float:
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0.0 <= sparsity < 1.0 \
            or math.isnan(sparsity):
        raise InvalidParameterError("sparsity", "a fraction in [0, 1) of units to remove", sparsity)
    return float(sparsity)


def _check_scores(scores: Mapping[Any, torch.Tensor], sizes: Mapping[Any, int]) -> None:
    for key, size in sizes.items():
        s = scores.get(key)
        if not isinstance(s, torch.Tensor) or s.shape != (size,):
            raise InvalidParameterError(
                "importance", f"a score tensor of shape ({size},) for layer {key!r}",
                f"<{type(s).__name__}{'' if s is None else ' ' + str(tuple(getattr(s, 'shape', ())))}>",
            )


def _removed(keep: Mapping[Any, torch.Tensor]) -> dict[Any, list[int]]:
    return {k: torch.nonzero(~m.flatten()).flatten().tolist() for k, m in keep.items()}


def select_neurons(
    sizes: Mapping[Any, int], scores: Mapping[Any, torch.Tensor], sparsity: float, *, scope: str = "local"
) -> dict[Any, list[int]]:
    """Units to remove: the lowest ``round(sparsity * size)`` per layer (local), or the
    lowest ``round(sparsity * total)`` over all layers keeping one per layer (global).

    One call of :func:`prunekit.allocation.allocate` (one unit kept per layer; a
    request that would empty a layer is lowered to what is allowed, and logged).
    """
    sparsity = _check_sparsity(sparsity)
    check_choice("scope", scope, ("local", "global"))
    _check_scores(scores, sizes)
    keep = allocate({k: scores[k] for k in sizes}, Budget(sparsity=sparsity, strict=False), scope)
    return _removed(keep)


def select_uniform(sizes: Mapping[Any, int], scores: Mapping[Any, torch.Tensor], sparsity: float) -> dict[Any, list[int]]:
    """Units to remove so that every layer keeps the same number ``k`` (uniform mode).

    Layers of equal size: ``round(sparsity * size)`` removed from each, lowest scores first (as
    :func:`select_neurons` with ``scope="local"``). Layers of different sizes (a model pruned per layer
    before): ``k = round((1 - sparsity) * mean size)``, at most the smallest layer, at least one; each
    layer keeps its ``k`` highest scores. Which units go is decided inside each layer, by that layer's
    importance (Minitron, Muralidharan et al. 2024, ranks heads and neurons within a layer and keeps
    the same width in every layer, so that one config value describes the model).
    """
    sparsity = _check_sparsity(sparsity)
    _check_scores(scores, sizes)
    if len(set(sizes.values())) <= 1:
        return select_neurons(sizes, scores, sparsity)
    mean = sum(sizes.values()) / len(sizes)
    keep = max(1, min(min(sizes.values()), round((1.0 - sparsity) * mean)))
    logger.info("uniform: %d units kept in every layer (sizes %s, sparsity %.3f)", keep, sorted(set(sizes.values())),
                sparsity)
    plan: dict[Any, list[int]] = {}
    for key, size in sizes.items():
        order = torch.argsort(scores[key].detach().float().cpu(), stable=True).tolist()  # lowest first
        plan[key] = sorted(order[:size - keep])
    return plan


def check_same_count(param: str, what: str, kept: Mapping[Any, int]) -> None:
    """Refuse (uniform mode) kept counts that differ between layers."""
    if len(set(kept.values())) > 1:
        raise InvalidParameterError(
            param, f"the same number of {what} kept in every layer (uniform=True)",
            f"<{what} kept per layer: {dict(kept)}>",
            f"Fix: remove the same number of {what} from every layer, pass sparsity= (with uniform=True the "
            "count is the same in every layer), or uniform=False.")


def select_heads(
    specs: Mapping[Any, AttentionSpec],
    scores: Mapping[Any, torch.Tensor],
    sparsity: float,
    *,
    gqa: str = "query",
    scope: str = "local",
) -> dict[Any, list[int]]:
    """Heads to remove for ``sparsity`` (see the module doc); GQA layers keep equal groups."""
    check_choice("gqa", gqa, ("query", "group"))
    grouped = {k: s for k, s in specs.items() if s.group_size > 1}
    if not grouped:
        return select_neurons({k: s.num_heads for k, s in specs.items()}, scores, sparsity, scope=scope)
    sparsity = _check_sparsity(sparsity)
    if scope != "local":
        raise InvalidParameterError(
            "scope", "'local' for grouped-query attention (groups must stay equal)", scope, "Fix: scope='local'.",
        )
    _check_scores(scores, {k: s.num_heads for k, s in specs.items()})
    budget = Budget(sparsity=sparsity, strict=False)
    plan: dict[Any, list[int]] = {}
    for key, spec in specs.items():
        g, kv, s = spec.group_size, spec.num_kv_heads, scores[key]
        if gqa == "query":  # each key/value group is a unit set of its query heads
            removed = _removed(allocate({grp: s[grp * g:(grp + 1) * g] for grp in range(kv)}, budget, "local"))
            plan[key] = sorted(grp * g + i for grp, ids in removed.items() for i in ids)
        else:  # a key/value group is one unit, scored by the sum of its heads
            groups = _removed(allocate({key: s.view(kv, g).sum(dim=1)}, budget, "local"))[key]
            plan[key] = [grp * g + i for grp in groups for i in range(g)]
        if len(plan[key]) != round(sparsity * spec.num_heads):
            logger.info("%s: %d heads removed for sparsity %.3f (rounded to whole %s units of grouped-query "
                        "attention)", key, len(plan[key]), sparsity, gqa)
    return plan


def head_multiple(round_to: int | None, head_dim: int) -> int:
    """Heads kept must be a multiple of this for ``kept heads x head_dim`` to be a multiple of ``round_to``."""
    return 1 if not round_to else round_to // math.gcd(round_to, head_dim)


def _rounded(kept: int, size: int, multiple: int) -> int:
    """``kept`` moved to the nearest multiple of ``multiple`` (half rounds down) within ``[multiple, size]``."""
    nearest = multiple * math.floor(kept / multiple + 0.5 - 1e-9)
    return min(max(nearest, multiple), multiple * (size // multiple))


def _too_small(round_to: int, key: Any, size: int, multiple: int, what: str) -> InvalidParameterError:
    return InvalidParameterError(
        "round_to", f"a round_to that keeps a multiple of {multiple} {what}s, at most the {size} {what}s of "
        f"layer {key!r}", round_to, "Fix: a smaller round_to (e.g. 4 for 2:4), or round_to=None.")


def round_plan(
    plan: Mapping[Any, list[int]], sizes: Mapping[Any, int], scores: Mapping[Any, torch.Tensor],
    multiples: Mapping[Any, int], round_to: int, *, what: str = "unit",
) -> dict[Any, list[int]]:
    """``plan`` ({layer: units to remove}) with each layer's kept count moved to the nearest
    multiple of ``multiples[layer]`` (at least one multiple, at most the size rounded down):
    more units removed lowest score first, or removed units restored highest score first."""
    out: dict[Any, list[int]] = {}
    for key, size in sizes.items():
        removed = sorted(plan.get(key, []))
        multiple = multiples.get(key, 1)
        if multiple <= 1:
            out[key] = removed
            continue
        if size < multiple:
            raise _too_small(round_to, key, size, multiple, what)
        kept = size - len(removed)
        target = _rounded(kept, size, multiple)
        order = torch.argsort(scores[key].detach().float().cpu(), stable=True).tolist()  # lowest first
        gone = set(removed)
        if target < kept:
            gone.update([u for u in order if u not in gone][:kept - target])
        elif target > kept:
            for u in [u for u in reversed(order) if u in gone][:target - kept]:
                gone.discard(u)
        if target != kept:
            logger.info("%s: %d %ss kept instead of %d (a multiple of %d)", key, target, what, kept, multiple)
        out[key] = sorted(gone)
    return out


def check_multiples(param: str, kept: Mapping[Any, int], sizes: Mapping[Any, int], multiples: Mapping[Any, int],
                    round_to: int, what: str) -> None:
    """Refuse kept counts that are not multiples of their layer's multiple (explicit requests)."""
    for key, count in kept.items():
        multiple = multiples.get(key, 1)
        if multiple > sizes[key]:
            raise _too_small(round_to, key, sizes[key], multiple, what)
        if multiple > 1 and count % multiple:
            target = count - count % multiple or multiple
            change = f"{count - target} more" if target < count else f"{target - count} fewer"
            if param == "round_to":  # chosen by sparsity, but grouped-query groups could not be rounded
                raise InvalidParameterError(
                    param, f"a round_to met by the {count} {what}s that grouped-query layer {key!r} keeps "
                    f"(a multiple of {multiple} needed)", round_to,
                    "Fix: a round_to that divides the head size (e.g. 8 for heads of 64), or another sparsity.")
            raise InvalidParameterError(
                param, f"a removal that keeps a multiple of {multiple} {what}s in layer {key!r} (round_to={round_to})",
                f"<{count} {what}s kept in layer {key!r}>",
                f"Fix: remove {change} {what}s from layer {key!r}"
                + ", pass sparsity= instead (counts are rounded), or round_to=None.")
