"""Exact selection of the lowest-scoring units over many tensors, in bounded memory.

Global pruning must rank every unit of every target together. Concatenating
all scores costs as much memory as the model (``torch.nn.utils.prune.
global_unstructured`` does that and more), so the selection here streams:
it asks for one target's unit scores at a time and finds the exact threshold
by a radix select on order-preserving integer keys of the float scores
(16 bits a pass: two passes for float32, four for float64), then makes one
last pass to build the masks. Extra memory is a few times the largest single
target, never the sum of all targets.

Ties at the threshold are broken deterministically: in target order, then in
flat index order. Units may weigh differently (a filter of a big conv is
worth more parameters than one of a small conv); the selection then keeps the
pruned weight closest to the budget, exact to one unit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

__all__ = ["order_keys", "select_lowest"]

_DIGIT = 1 << 16


def order_keys(scores: torch.Tensor) -> torch.Tensor:
    """Flat integer keys whose signed order equals the float order of ``scores``.

    float64 gives int64 keys; every other float type is read as float32 and
    gives int32 keys. For a float's bit pattern ``b`` (as a signed int) the key
    is ``b ^ ((b >> (w-1)) & (2^(w-1) - 1))``: positive floats keep their
    pattern, negative floats get their magnitude bits flipped so that larger
    magnitudes sort lower. NaN must have been rejected before.
    """
    if scores.dtype == torch.float64:
        bits = scores.contiguous().view(torch.int64).reshape(-1)
        return bits ^ ((bits >> 63) & 0x7FFF_FFFF_FFFF_FFFF)
    if scores.dtype != torch.float32:
        scores = scores.float()
    bits = scores.contiguous().view(torch.int32).reshape(-1)
    return bits ^ ((bits >> 31) & 0x7FFF_FFFF)


def select_lowest(
    unit_scores: Callable[[int], torch.Tensor],
    counts: Sequence[int],
    budget: float,
    sizes: Sequence[int] | None = None,
) -> list[torch.Tensor]:
    """Choose the lowest-scoring units over several tensors.

    Args:
        unit_scores: ``unit_scores(i)`` returns the flat float scores of the
            units of tensor ``i`` (it is called up to five times per tensor and
            must return the same values each time; NaN not allowed).
        counts: number of units of each tensor.
        budget: total weight to select; with ``sizes`` omitted, a number of units.
        sizes: weight of one unit of each tensor (for example the number of
            parameters in one filter).

    Returns:
        One flat bool tensor per input, True where the unit is selected. In
        sorted order (score, then tensor, then index), a unit is selected when
        the weight before it plus half its own weight is at most ``budget``:
        the total is the closest to ``budget`` that a prefix can be, and
        exactly ``budget`` units when all weights are one and ``budget`` is an int.
    """
    n = len(counts)
    weights = [1] * n if sizes is None else list(sizes)
    total = float(sum(c * w for c, w in zip(counts, weights)))
    if budget <= 0 or total == 0:
        return [torch.zeros(c, dtype=torch.bool) for c in counts]
    if budget >= total:
        return [torch.ones(c, dtype=torch.bool) for c in counts]

    wide = False
    while True:
        found = _radix_threshold(unit_scores, n, weights, budget, wide)
        if found is None:  # a float64 score appeared: redo with 64-bit keys
            wide = True
            continue
        threshold, below = found
        break

    masks: list[torch.Tensor] = []
    running = below
    for i in range(n):
        keys = _keys(unit_scores(i), wide)
        selected = keys < threshold
        ties = torch.nonzero(keys == threshold).reshape(-1)
        if ties.numel():
            take = math.floor((budget - running) / weights[i] + 0.5)
            take = max(0, min(take, ties.numel()))
            selected[ties[:take]] = True
            running += take * weights[i]
        masks.append(selected.cpu())
    return masks


def _keys(scores: torch.Tensor, wide: bool) -> torch.Tensor:
    if wide:
        return order_keys(scores.to(torch.float64))
    return order_keys(scores)


def _radix_threshold(
    unit_scores: Callable[[int], torch.Tensor],
    n: int,
    weights: Sequence[int],
    budget: float,
    wide: bool,
) -> tuple[int, float] | None:
    """The smallest key ``v`` whose cumulative weight reaches ``budget``, and
    the weight strictly below it. None if 64-bit keys are needed."""
    bits = 64 if wide else 32
    shifts = list(range(bits - 16, -1, -16))
    prefix = 0
    below = 0.0
    for level, shift in enumerate(shifts):
        hist = torch.zeros(_DIGIT, dtype=torch.float64)
        for i in range(n):
            scores = unit_scores(i)
            if not wide and scores.dtype == torch.float64:
                return None
            keys = _keys(scores, wide)
            if level == 0:
                digits = (keys >> shift) + (_DIGIT // 2)
            else:
                keys = keys[(keys >> (shift + 16)) == prefix]
                digits = (keys >> shift) & (_DIGIT - 1)
            if digits.numel():
                counts = torch.bincount(digits.reshape(-1).cpu(), minlength=_DIGIT)
                hist += counts.to(torch.float64) * weights[i]
        cumulative = torch.cumsum(hist, 0) + below
        b = int(torch.searchsorted(cumulative, torch.tensor([budget], dtype=torch.float64)).item())
        b = min(b, _DIGIT - 1)
        below += float(hist[:b].sum())
        prefix = (b - _DIGIT // 2) if level == 0 else (prefix << 16) | b
    return prefix, below
