"""Interleaved wall-clock timing of competing implementations.

:func:`interleaved_medians` runs ``warmup`` untimed rounds, then ``repeats``
timed rounds; in each round every candidate runs once, in turn. It returns the
median seconds of each. Used by ``to_sparse`` (dense against each kernel), the
recipe runner (every model of a run folder) and ``onnx_latency``. Interleaving puts every candidate under the same
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
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for round_ in range(warmup + repeats):
        for name, fn in candidates.items():
            start = time.perf_counter()
            fn()
            if round_ >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}
