"""Which heads and MLP neurons to remove for a fraction ``ratio`` of them, from their scores.

:func:`select_neurons` removes the lowest scores, the same number in every
layer (``scope="local"``) or across layers (``scope="global"``, scores
compared directly, one unit kept per layer). :func:`select_heads` does the
same for heads; under grouped-query attention ``gqa="query"`` removes the same
number of query heads from every key/value group (keeping every KV head) and
``gqa="group"`` removes whole groups ranked by their summed score.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import torch

from ..coupling.units import AttentionSpec
from ..errors import InvalidParameterError, check_choice

__all__ = ["select_heads", "select_neurons"]

logger = logging.getLogger(__name__)


def _check_ratio(ratio: Any) -> float:
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 <= ratio < 1.0 or math.isnan(ratio):
        raise InvalidParameterError("ratio", "a fraction in [0, 1) of units to remove", ratio)
    return float(ratio)


def _lowest(scores: torch.Tensor, n: int) -> list[int]:
    """Indices of the ``n`` lowest scores (ties: lower index first), sorted."""
    order = sorted(range(len(scores)), key=lambda i: (float(scores[i]), i))
    return sorted(order[:n])


def _check_scores(scores: Mapping[Any, torch.Tensor], sizes: Mapping[Any, int]) -> None:
    for key, size in sizes.items():
        s = scores.get(key)
        if not isinstance(s, torch.Tensor) or s.shape != (size,):
            raise InvalidParameterError(
                "importance", f"a score tensor of shape ({size},) for layer {key!r}",
                f"<{type(s).__name__}{'' if s is None else ' ' + str(tuple(getattr(s, 'shape', ())))}>",
            )


def select_neurons(
    sizes: Mapping[Any, int], scores: Mapping[Any, torch.Tensor], ratio: float, *, scope: str = "local"
) -> dict[Any, list[int]]:
    """Units to remove: the lowest ``round(ratio * size)`` per layer (local), or the
    lowest ``round(ratio * total)`` over all layers keeping one per layer (global)."""
    ratio = _check_ratio(ratio)
    check_choice("scope", scope, ("local", "global"))
    _check_scores(scores, sizes)
    if scope == "local":
        return {k: _lowest(scores[k], min(round(ratio * n), n - 1)) for k, n in sizes.items()}
    pool = sorted((float(scores[k][i]), j, i, k) for j, (k, n) in enumerate(sizes.items()) for i in range(n))
    budget = round(ratio * sum(sizes.values()))
    left = dict(sizes)
    chosen: dict[Any, list[int]] = {k: [] for k in sizes}
    for _, _, i, k in pool:
        if budget == 0:
            break
        if left[k] > 1:
            chosen[k].append(i)
            left[k] -= 1
            budget -= 1
    return {k: sorted(v) for k, v in chosen.items()}


def select_heads(
    specs: Mapping[Any, AttentionSpec],
    scores: Mapping[Any, torch.Tensor],
    ratio: float,
    *,
    gqa: str = "query",
    scope: str = "local",
) -> dict[Any, list[int]]:
    """Heads to remove for ``ratio`` (see the module doc); GQA layers keep equal groups."""
    check_choice("gqa", gqa, ("query", "group"))
    grouped = {k: s for k, s in specs.items() if s.group_size > 1}
    if not grouped:
        return select_neurons({k: s.num_heads for k, s in specs.items()}, scores, ratio, scope=scope)
    ratio = _check_ratio(ratio)
    if scope != "local":
        raise InvalidParameterError(
            "scope", "'local' for grouped-query attention (groups must stay equal)", scope, "Fix: scope='local'.",
        )
    _check_scores(scores, {k: s.num_heads for k, s in specs.items()})
    plan: dict[Any, list[int]] = {}
    for key, spec in specs.items():
        g, kv, s = spec.group_size, spec.num_kv_heads, scores[key]
        if gqa == "query":
            m = min(round(ratio * g), g - 1)
            plan[key] = sorted(grp * g + i for grp in range(kv) for i in _lowest(s[grp * g:(grp + 1) * g], m))
        else:
            m = min(round(ratio * kv), kv - 1)
            groups = _lowest(s.view(kv, g).sum(dim=1), m)
            plan[key] = [grp * g + i for grp in groups for i in range(g)]
        if len(plan[key]) != round(ratio * spec.num_heads):
            logger.info("%s: %d heads removed for ratio %.3f (rounded to whole %s units of grouped-query attention)",
                        key, len(plan[key]), ratio, gqa)
    return plan
