"""Handing freed temporaries back to the operating system during large streaming work.

Streaming over large targets frees a temporary of the target's size at every
step. Once glibc's dynamic mmap threshold has grown past that size, such
memory stays in the heap, fragmented by the long-lived masks allocated in
between, so the process's resident size creeps towards the size of the model
although little is live. ``malloc_trim(0)`` after each large target returns
the freed pages and keeps the peak near what is really live. Where glibc is
absent (macOS, Windows, musl) this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable

__all__ = ["release_freed_memory", "release_after", "TRIM_BYTES"]

#: Temporaries at least this large (bytes) are worth a trim once freed.
TRIM_BYTES = 1 << 24


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


def release_after(nbytes: int) -> None:
    """Trim if a temporary of ``nbytes`` was just freed and is large enough to matter."""
    if nbytes >= TRIM_BYTES:
        _trim()
