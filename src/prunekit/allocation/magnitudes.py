"""Exact global selection of the smallest magnitudes, read from the float bits.

Magnitude pruning of entries ranks ``|w|``. For IEEE-754 floats the order of
``|w|`` is the integer order of the bit pattern with the sign bit cleared,
``key = bits & 0x7FFFFFFF`` (float32; float16 and bfloat16 are widened to
float32 first, which is exact), so this selection never computes ``|w|``. It
is the radix select of :mod:`prunekit.allocation.streaming`, specialised to
these keys and to units of one entry each:

1. one pass: the high 16 bits of every key, read through an int16 view of
   the weights with the sign bit masked off, are counted in a histogram of
   2^15 bins (``torch.bincount``, which runs on one thread, so each tensor is
   split over the threads torch uses);
2. the bin ``b`` where the cumulative count reaches the budget holds the
   boundary: every entry of a lower bin is pruned, every entry of a higher
   bin kept;
3. one more pass writes each keep mask, ``high16(key) >= b``, and collects the
   entries of bin ``b`` (about 0.2% of normally distributed weights), which
   are ranked exactly by their full keys.

When bin ``b`` holds more than :data:`CANDIDATE_LIMIT` entries (many equal
weights), a pass in between counts the low 16 bits of its entries; the
boundary key ``T`` is then exact, and the final pass prunes every key below
``T`` and as many entries equal to ``T`` as the budget still needs.

The result is the one of :func:`~prunekit.allocation.streaming.select_lowest`
on the scores ``|w|``: exactly ``budget`` entries pruned, in the order (score,
then tensor, then flat index). Entries already pruned (not ``alive``) come
first and count towards the budget. The ``guard`` highest entries of a tensor
(``min_keep``) are never pruned; they are only looked up (``guarded(i)``, a
full pass over that tensor) when the histogram shows that the ``guard``-th
largest entry of the tensor lies in or below bin ``b``, as in a tensor of
zeros; otherwise guarding them changes nothing.

Extra memory: the keep masks (1 byte an entry, the result), 3 bytes an entry
of the largest tensor, and the candidates of bin ``b``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import torch

from ..errors import InvalidParameterError
from ..memory import TrimBudget

__all__ = ["CANDIDATE_LIMIT", "MAGNITUDE_DTYPES", "keep_largest_magnitudes", "nonfinite_weights"]

#: Largest boundary bin ranked from its collected entries; above it, one more pass counts their low bits.
CANDIDATE_LIMIT = 1 << 22
#: Float types whose magnitudes are ranked on their float32 bits.
MAGNITUDE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

_HIGH_BINS = 1 << 15  # high half of a key: the sign bit is masked off
_LOW_BINS = 1 << 16
_HIGH = 1 if sys.byteorder == "little" else 0  # index of the high int16 half of a float32
_NONFINITE = 0x7F80  # high halves of inf and NaN
#: Tensors smaller than this are counted on one thread.
_SPLIT_MIN = 1 << 20


def nonfinite_weights(name: str) -> InvalidParameterError:
    """The error for a tensor with NaN or inf entries."""
    return InvalidParameterError(
        "model",
        "finite weights (no NaN or inf)",
        f"NaN or inf in {name}",
        "Fix: repair or re-initialise the weights before pruning.",
    )


def keep_largest_magnitudes(
    values: Callable[[int], torch.Tensor],
    counts: Sequence[int],
    budget: int,
    alive: Sequence[torch.Tensor | None],
    guards: Sequence[int],
    guarded: Callable[[int], torch.Tensor],
    names: Sequence[str] | None = None,
) -> list[torch.Tensor]:
    """Keep masks after pruning the ``budget`` smallest ``|values(i)|`` over all tensors.

    Args:
        values: ``values(i)`` returns tensor ``i`` (float32, float16 or
            bfloat16, finite), whose absolute values are the scores; it is
            called two or three times per tensor and must return the same
            values each time.
        counts: number of entries of each tensor.
        budget: entries pruned in all, those already pruned included (at least as many
            as are already pruned).
        alive: per tensor, a flat bool tensor (False = already pruned) or None.
        guards: per tensor, how many of its highest entries are never pruned.
        guarded: ``guarded(i)`` returns the flat indices of those entries.
        names: the tensors' names, for the error on a NaN or inf.

    Returns:
        One flat bool tensor per input, True where the entry is kept.

    Raises:
        InvalidParameterError: an alive entry is NaN or inf (seen in the histogram:
            their high halves are ``0x7F80`` and above).
    """
    n = len(counts)
    largest = max(counts, default=0)
    if largest == 0:
        return [torch.ones(c, dtype=torch.bool) for c in counts]
    threads = max(1, torch.get_num_threads())
    high = torch.empty(largest, dtype=torch.int16)
    with ThreadPoolExecutor(threads - 1) if threads > 1 else _NoPool() as pool:
        scan = _Scan(values, counts, alive, high, pool, threads, names or [f"tensor {i}" for i in range(n)])
        hist, tops, dead = _count_high(scan, guards)
        need = budget - dead  # alive entries still to prune
        reserved: dict[int, torch.Tensor] = {}
        while True:
            b, below = _boundary(hist, need)
            late = [i for i in range(n) if guards[i] and i not in reserved and tops[i] <= b]
            if not late:
                break
            for i in late:  # guard them now: off the histogram, and no longer counted as pruned if dead
                reserved[i] = guarded(i).reshape(-1).to(torch.int64)
                need += _unguard(scan, i, reserved[i], hist)
        need -= below
        if int(hist[b]) <= CANDIDATE_LIMIT:
            return _keep_by_candidates(scan, b, need, reserved)
        threshold, need = _low_boundary(scan, b, need, reserved)
        return _keep_by_threshold(scan, threshold, need, reserved)


class _NoPool:
    """Stand-in for a thread pool when torch runs on one thread."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


class _Scan:
    """What every pass reads: the tensors, their alive masks, a reused int16
    buffer for the high halves, and the threads for counting."""

    def __init__(self, values, counts, alive, high, pool, threads, names) -> None:
        self.names = names
        # widened float16/bfloat16 copies are freed one after another: keep the heap from holding them
        self.trim = TrimBudget(sum(counts) * 4 // 10)
        self.values = values
        self.counts = counts
        self.alive = alive
        self.high = high
        self.pool = pool
        self.threads = threads

    def floats(self, i: int) -> torch.Tensor:
        v = self.values(i).detach().reshape(-1)
        if v.dtype != torch.float32:
            v = v.float()
            self.trim.freed_bytes(4 * v.numel())  # the copy of the tensor before, freed by now
        return v.contiguous()

    def high_keys(self, i: int, v: torch.Tensor) -> torch.Tensor:
        """High 16 bits of the keys of ``v`` (sign bit cleared), in the shared buffer."""
        return torch.bitwise_and(v.view(torch.int16)[_HIGH::2], 0x7FFF, out=self.high[: v.numel()])

    def bincount(self, digits: torch.Tensor, bins: int) -> torch.Tensor:
        if self.pool is None or digits.numel() < _SPLIT_MIN:
            return torch.bincount(digits, minlength=bins)
        parts = digits.chunk(self.threads)
        futures = [self.pool.submit(torch.bincount, part, minlength=bins) for part in parts[1:]]
        total = torch.bincount(parts[0], minlength=bins)
        for future in futures:
            total += future.result()
        return total


def _count_high(scan: _Scan, guards: Sequence[int]) -> tuple[torch.Tensor, list[int], int]:
    """Histogram of the alive entries' high key halves; per tensor the bin of its
    ``guard``-th largest alive entry (-1 if it has fewer); the number of dead entries."""
    hist = torch.zeros(_HIGH_BINS, dtype=torch.int64)
    tops: list[int] = []
    dead = 0
    for i in range(len(scan.counts)):
        if scan.counts[i] == 0:
            tops.append(-1)
            continue
        v = scan.floats(i)
        digits = scan.high_keys(i, v)
        lost = 0
        if scan.alive[i] is not None:
            digits.mul_(scan.alive[i])  # dead entries all in bin 0, taken out below
            lost = scan.counts[i] - int(torch.count_nonzero(scan.alive[i]))
        counts = scan.bincount(digits, _HIGH_BINS)
        if bool(counts[_NONFINITE:].any()):
            raise nonfinite_weights(scan.names[i])
        counts[0] -= lost
        dead += lost
        hist += counts
        tops.append(_top_bin(counts, guards[i]))
        del v, digits
    return hist, tops, dead


def _top_bin(counts: torch.Tensor, guard: int) -> int:
    """Bin of the ``guard``-th largest entry counted in ``counts`` (-1 if fewer)."""
    if guard <= 0:
        return _HIGH_BINS
    from_top = torch.cumsum(counts.flip(0), 0)
    j = int(torch.searchsorted(from_top, torch.tensor([guard])).item())
    return _HIGH_BINS - 1 - j if j < _HIGH_BINS else -1


def _boundary(hist: torch.Tensor, need: int) -> tuple[int, int]:
    """First bin where the cumulative count reaches ``need``, and the count below it."""
    cumulative = torch.cumsum(hist, 0)
    b = int(torch.searchsorted(cumulative, torch.tensor([need])).item())
    b = min(b, hist.numel() - 1)
    return b, int(cumulative[b] - hist[b])


def _unguard(scan: _Scan, i: int, idx: torch.Tensor, hist: torch.Tensor) -> int:
    """Take the guarded entries ``idx`` of tensor ``i`` off the histogram; returns how many
    of them were dead (no longer counted as pruned, as a guarded entry is kept)."""
    v = scan.values(i).detach().reshape(-1)[idx].float()
    digits = (v.view(torch.int32) >> 16) & 0x7FFF
    revived = 0
    if scan.alive[i] is not None:
        live = scan.alive[i][idx]
        revived = int((~live).sum())
        digits = digits[live]
    hist -= torch.bincount(digits, minlength=_HIGH_BINS)
    return revived


def _band(scan: _Scan, i: int, digits: torch.Tensor, b: int, flags: torch.Tensor,
          reserved: dict[int, torch.Tensor]) -> torch.Tensor:
    """Flags (in ``flags``) of the alive, unguarded entries of tensor ``i`` whose high half is ``b``."""
    torch.eq(digits, b, out=flags)
    if scan.alive[i] is not None:
        flags.logical_and_(scan.alive[i])
    if i in reserved:
        flags[reserved[i]] = False
    return flags


def _finish(scan: _Scan, i: int, keep: torch.Tensor, reserved: dict[int, torch.Tensor]) -> torch.Tensor:
    if scan.alive[i] is not None:
        keep.logical_and_(scan.alive[i])
    if i in reserved:
        keep[reserved[i]] = True
    return keep


def _keep_by_candidates(scan: _Scan, b: int, need: int, reserved: dict[int, torch.Tensor]) -> list[torch.Tensor]:
    """Final pass when bin ``b`` is small: masks ``high >= b``, then the ``need`` lowest of bin ``b`` pruned."""
    flags = torch.empty(max(scan.counts), dtype=torch.bool)
    masks: list[torch.Tensor] = []
    cand_keys, cand_idx, cand_owner = [], [], []
    for i, count in enumerate(scan.counts):
        if count == 0:
            masks.append(torch.ones(0, dtype=torch.bool))
            continue
        v = scan.floats(i)
        digits = scan.high_keys(i, v)
        keep = torch.ge(digits, b)
        idx = torch.nonzero(_band(scan, i, digits, b, flags[:count], reserved)).reshape(-1)
        if idx.numel():
            cand_keys.append(v.view(torch.int32)[idx].bitwise_and_(0x7FFFFFFF))
            cand_idx.append(idx)
            cand_owner.append(torch.full((idx.numel(),), i, dtype=torch.int32))
        masks.append(_finish(scan, i, keep, reserved))
        del v, digits
    if need <= 0 or not cand_keys:
        return masks
    keys = torch.cat(cand_keys)
    order = torch.sort(keys, stable=True).indices[:need]  # stable: ties stay in (tensor, index) order
    idx = torch.cat(cand_idx)[order]
    owner = torch.cat(cand_owner)[order]
    for i in torch.unique(owner).tolist():
        masks[i][idx[owner == i]] = False
    return masks


def _low_boundary(scan: _Scan, b: int, need: int, reserved: dict[int, torch.Tensor]) -> tuple[int, int]:
    """Pass over bin ``b``'s entries counting their low halves: the exact boundary key
    and how many entries equal to it are pruned."""
    flags = torch.empty(max(scan.counts), dtype=torch.bool)
    hist = torch.zeros(_LOW_BINS, dtype=torch.int64)
    for i, count in enumerate(scan.counts):
        if count == 0:
            continue
        v = scan.floats(i)
        digits = scan.high_keys(i, v)
        band = _band(scan, i, digits, b, flags[:count], reserved)
        low = torch.masked_select(v.view(torch.int32), band).bitwise_and_(0xFFFF)
        hist += scan.bincount(low, _LOW_BINS)
        del v, digits, low
    b_low, below = _boundary(hist, need)
    return (b << 16) | b_low, need - below


def _keep_by_threshold(scan: _Scan, threshold: int, need: int,
                       reserved: dict[int, torch.Tensor]) -> list[torch.Tensor]:
    """Final pass for an exact boundary key: keys below it pruned, then the first
    ``need`` entries equal to it in (tensor, index) order."""
    largest = max(scan.counts)
    keys_buf = torch.empty(largest, dtype=torch.int32)
    flags = torch.empty(largest, dtype=torch.bool)
    masks: list[torch.Tensor] = []
    for i, count in enumerate(scan.counts):
        if count == 0:
            masks.append(torch.ones(0, dtype=torch.bool))
            continue
        v = scan.floats(i)
        keys = torch.bitwise_and(v.view(torch.int32), 0x7FFFFFFF, out=keys_buf[:count])
        keep = torch.gt(keys, threshold)
        ties = torch.eq(keys, threshold, out=flags[:count])
        if scan.alive[i] is not None:
            ties.logical_and_(scan.alive[i])
        if i in reserved:
            ties[reserved[i]] = False
        tied = torch.nonzero(ties).reshape(-1)
        take = max(0, min(need, tied.numel()))
        keep[tied[take:]] = True  # ties beyond the budget are kept
        need -= take
        masks.append(_finish(scan, i, keep, reserved))
        del v, keys
    return masks
