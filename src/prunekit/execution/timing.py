"""Interleaved wall-clock timing of competing implementations.

:func:`interleaved_medians` runs each candidate ``warmup`` times, then
``repeats`` rounds in which every candidate runs once (in turn), and returns
the median seconds of each. Interleaving puts every candidate under the same
load drift (another process, frequency changes), which timing one after the
other does not.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping

__all__ = ["interleaved_medians"]


def interleaved_medians(candidates: Mapping[str, Callable[[], object]], *, repeats: int, warmup: int) -> dict[str, float]:
    """``{name: median seconds}`` of the candidates, timed in interleaved rounds."""
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}
