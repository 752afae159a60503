"""Exact selection of the lowest-scoring units over many tensors, in bounded memory.

Global pruning must rank every unit of every target together. Concatenating
all scores costs as much memory as the model (``torch.nn.utils.prune.
global_unstructured`` does that and more), so the selection here streams:
it asks for one target's unit scores at a time and narrows down the exact
threshold by a radix select on order-preserving integer keys of the float
scores, 16 bits a pass. As soon as the critical bucket holds few enough
units, one last pass builds the masks and collects the units of that bucket,
which are then ranked exactly. For float32 scores that is two passes over the
data in all; extra memory is a few times the largest single target plus the
critical bucket, never the sum of all targets.

Ties are broken deterministically: in target order, then in flat index
order. Units may weigh differently (a filter of a big conv is worth more
parameters than one of a small conv); the selection then keeps the pruned
weight closest to the budget, exact to one unit.

Magnitudes of single entries (the commonest case) take a specialised path,
:mod:`prunekit.allocation.magnitudes`, that reads the keys straight from the
weights' bits; this module serves every other score.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..memory import TrimBudget

__all__ = ["order_keys", "select_lowest", "all_finite"]

_DIGIT = 1 << 16
#: Largest critical bucket collected in the final pass before one more radix level is used.
_CANDIDATE_LIMIT = 1 << 22


def all_finite(tensor: torch.Tensor) -> bool:
    """True if ``tensor`` has no NaN or inf.

    A sum is NaN or inf whenever an entry is, so a finite sum proves the
    tensor finite at the cost of one reduction; an overflowing sum falls back
    to the exact elementwise check.
    """
    if tensor.numel() == 0:
        return True
    accumulate = torch.float32 if tensor.dtype in (torch.float16, torch.bfloat16) else None
    total = tensor.sum(dtype=accumulate)
    if bool(torch.isfinite(total)):
        return True
    return bool(torch.isfinite(tensor).all())


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
        flip = bits >> 63
        flip.bitwise_and_(0x7FFF_FFFF_FFFF_FFFF)
    else:
        if scores.dtype != torch.float32:
            scores = scores.float()
        bits = scores.contiguous().view(torch.int32).reshape(-1)
        flip = bits >> 31
        flip.bitwise_and_(0x7FFF_FFFF)
    return flip.bitwise_xor_(bits)


def _keys(scores: torch.Tensor, wide: bool, nonnegative: bool = False) -> torch.Tensor:
    if wide and scores.dtype != torch.float64:
        scores = scores.to(torch.float64)
    if nonnegative:
        # Bit patterns of non-negative floats already sort as signed ints, and
        # so does -inf (negative, above only -0.0), the mark of dead units.
        if scores.dtype not in (torch.float32, torch.float64):
            scores = scores.float()
        itype = torch.int64 if scores.dtype == torch.float64 else torch.int32
        return scores.contiguous().view(itype).reshape(-1)
    return order_keys(scores)


def select_lowest(
    unit_scores: Callable[[int], torch.Tensor],
    counts: Sequence[int],
    budget: float,
    sizes: Sequence[int] | None = None,
    nonnegative: bool = False,
) -> list[torch.Tensor]:
    """Choose the lowest-scoring units over several tensors.

    Args:
        unit_scores: ``unit_scores(i)`` returns the flat float scores of the
            units of tensor ``i``. It is called a few times per tensor (twice
            for float32 scores) and must return the same values each time;
            NaN is not allowed.
        counts: number of units of each tensor.
        budget: total weight to select; with ``sizes`` omitted, a number of units.
        sizes: weight of one unit of each tensor (for example the number of
            parameters in one filter).
        nonnegative: promise that scores are >= 0 apart from -inf and +inf
            (magnitudes), which saves the key transform.

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

    # keep freed-but-retained heap memory under a tenth of the scores' size
    scan = _Scan(unit_scores, n, weights, budget, nonnegative, TrimBudget(sum(counts) * 4 // 10))
    wide = False
    while True:
        found = _narrow(scan, wide)
        if found is not None:
            break
        wide = True  # a float64 score appeared: redo with 64-bit keys
    low, high, below = found
    return _final_pass(scan, wide, low, high, below)


@dataclass(frozen=True)
class _Scan:
    """What every pass over the ``n`` targets reads: the scores of target ``i``, the
    weight of its units, the budget, how keys are made, and the heap trimming."""

    unit_scores: Callable[[int], torch.Tensor]
    n: int
    weights: Sequence[int]
    budget: float
    nonnegative: bool
    trim: TrimBudget


def _narrow(scan: _Scan, wide: bool) -> tuple[int, int, float] | None:
    """Radix levels until the bucket holding the budget's boundary is small.

    Returns the bucket's key range ``[low, high]`` and the weight of all units
    below it; None if 64-bit keys are needed.
    """
    bits = 64 if wide else 32
    low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    below = 0.0
    shift = bits - 16
    level = 0
    while shift >= 0:
        hist = torch.zeros(_DIGIT, dtype=torch.float64)
        count_hist = torch.zeros(_DIGIT, dtype=torch.int64)
        for i in range(scan.n):
            scores = scan.unit_scores(i)
            if not wide and scores.dtype == torch.float64:
                return None
            keys = _keys(scores, wide, scan.nonnegative)
            if level > 0:
                keys = keys[(keys >= low) & (keys <= high)]
                digits = (keys >> shift).bitwise_and_(_DIGIT - 1)
            else:
                digits = (keys >> shift).add_(_DIGIT // 2)
            if digits.numel():
                counts = torch.bincount(digits.cpu(), minlength=_DIGIT)
                count_hist += counts
                hist += counts.to(torch.float64) * scan.weights[i]
            nbytes = scores.numel() * scores.element_size()
            del scores, keys, digits
            scan.trim.freed_bytes(nbytes)
        cumulative = torch.cumsum(hist, 0) + below
        b = int(torch.searchsorted(cumulative, torch.tensor([scan.budget], dtype=torch.float64)).item())
        b = min(b, _DIGIT - 1)
        below += float(hist[:b].sum())
        low = low + (b << shift) if level > 0 else ((b - _DIGIT // 2) << shift)
        high = low + (1 << shift) - 1
        level += 1
        if int(count_hist[b]) <= _CANDIDATE_LIMIT or shift == 0:
            return low, high, below
        shift -= 16
    return low, high, below


def _final_pass(scan: _Scan, wide: bool, low: int, high: int, below: float) -> list[torch.Tensor]:
    masks: list[torch.Tensor] = []
    if low == high:
        # the boundary key is known exactly: ties are taken in target order
        running = below
        for i in range(scan.n):
            keys = _keys(scan.unit_scores(i), wide, scan.nonnegative)
            selected = keys < low
            ties = torch.nonzero(keys == low).reshape(-1)
            if ties.numel():
                take = math.floor((scan.budget - running) / scan.weights[i] + 0.5)
                take = max(0, min(take, ties.numel()))
                selected[ties[:take]] = True
                running += take * scan.weights[i]
            masks.append(selected.cpu())
            nbytes = keys.numel() * keys.element_size()
            del keys, ties
            scan.trim.freed_bytes(nbytes)
        return masks

    cand_keys, cand_idx, cand_owner = [], [], []
    for i in range(scan.n):
        keys = _keys(scan.unit_scores(i), wide, scan.nonnegative)
        selected = keys < low
        idx = torch.nonzero((keys >= low) & (keys <= high)).reshape(-1)
        if idx.numel():
            cand_keys.append(keys[idx].to(torch.int64).cpu())
            cand_idx.append(idx.cpu())
            cand_owner.append(torch.full((idx.numel(),), i, dtype=torch.int64))
        masks.append(selected.cpu())
        nbytes = keys.numel() * keys.element_size()
        del keys, idx
        scan.trim.freed_bytes(nbytes)
    if not cand_keys:
        return masks
    keys = torch.cat(cand_keys)
    idx = torch.cat(cand_idx)
    owner = torch.cat(cand_owner)
    order = torch.sort(keys, stable=True).indices  # stable: ties stay in (target, index) order
    w = torch.tensor(scan.weights, dtype=torch.float64)[owner[order]]
    before = torch.cumsum(w, 0) - w + below
    take = (before + w / 2) <= scan.budget
    chosen = order[take]
    for i in range(scan.n):
        mine = idx[chosen[owner[chosen] == i]]
        if mine.numel():
            masks[i][mine] = True
    return masks
