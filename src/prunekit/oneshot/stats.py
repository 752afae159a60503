"""Per-layer statistics of the inputs of linear layers, gathered by forward hooks.

The statistics (:class:`~prunekit.scores.calibration.InputStats`: squared
input norms for Wanda and OWL, the Hessian ``X Xᵀ`` for SparseGPT) are what a
calibration score receives (:mod:`prunekit.scores.calibration`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from torch import nn

from ..scores.calibration import InputStats
from ..targets import Target

__all__ = ["InputStats", "collect_input_stats"]


@contextmanager
def collect_input_stats(
    targets: Sequence[Target], norms: bool, hessian: bool
) -> Iterator[dict[str, InputStats]]:
    """Hooks on the modules of ``targets`` that sum their inputs' statistics while open.

    Yields ``{target.name: InputStats}``; the hooks are removed on exit.
    """
    stats: dict[str, InputStats] = {}
    handles = []
    for target in targets:
        weight = target.original
        in_features = weight.shape[target.in_dim] if target.in_dim is not None else weight.shape[0]
        entry = InputStats(in_features, norms, hessian, weight.device)
        stats[target.name] = entry

        def hook(module: nn.Module, args: tuple[Any, ...], output: Any, entry: InputStats = entry) -> None:
            entry.add(args[0])

        handles.append(target.module.register_forward_hook(hook))
    try:
        yield stats
    finally:
        for handle in handles:
            handle.remove()
