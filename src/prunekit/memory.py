"""Handing freed temporaries back to the operating system during large streaming work.

Streaming over large targets frees a temporary of the target's size at every
step. Once glibc's dynamic mmap threshold has grown past that size, such
memory stays in the heap, fragmented by the long-lived masks allocated in
between, so the process's resident size creeps towards the size of the model
although little is live. ``malloc_trim(0)`` returns the freed pages. It costs
a walk of the heap (about 10 ms here), so :class:`TrimBudget` calls it only
once the bytes freed since the last call exceed a budget: the peak stays
within the budget of what is live, at a handful of calls per pass. Where
glibc is absent (macOS, Windows, musl) trimming is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable

__all__ = ["release_freed_memory", "TrimBudget"]

#: Smallest budget worth a trim (bytes).
MIN_BUDGET = 1 << 26


def _load() -> Callable[[], object]:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return lambda: None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


_trim = _load()


def release_freed_memory() -> None:
    """Return the heap's free pages to the operating system (glibc only)."""
    _trim()


class TrimBudget:
    """Counts bytes of freed temporaries and trims once they pass ``budget``."""

    def __init__(self, budget: int) -> None:
        self.budget = max(int(budget), MIN_BUDGET)
        self.freed = 0

    def freed_bytes(self, nbytes: int) -> None:
        self.freed += nbytes
        if self.freed >= self.budget:
            _trim()
            self.freed = 0
