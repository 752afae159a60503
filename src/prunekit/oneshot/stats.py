"""Per-layer statistics of the inputs of linear layers, gathered by forward hooks.

The statistics (:class:`~prunekit.scores.calibration.InputStats`: squared
input norms for Wanda and OWL, the Hessian ``X Xᵀ`` for SparseGPT) are what a
calibration score receives (:mod:`prunekit.scores.calibration`). Only the
real positions of each batch are summed: :class:`RealPositions` holds those of
the batch the block is running on (set by
:func:`prunekit.oneshot.capture.run_block`), so padding never counts.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from ..scores.calibration import InputStats
from ..targets import Target

__all__ = ["InputStats", "RealPositions", "collect_input_stats"]


class RealPositions:
    """The real (not padding) positions of the batch being run: ``keep`` is a bool tensor of the
    batch's ``(batch, tokens)`` shape, or None when every position is real. Called with the next
    batch's positions by :func:`prunekit.oneshot.capture.run_block`."""

    def __init__(self) -> None:
        self.keep: torch.Tensor | None = None

    def __call__(self, keep: torch.Tensor | None) -> None:
        self.keep = keep


@contextmanager
def collect_input_stats(
    targets: Sequence[Target], norms: bool, hessian: bool, positions: RealPositions | None = None
) -> Iterator[dict[str, InputStats]]:
    """Hooks on the modules of ``targets`` that sum their inputs' statistics while open, over the
    positions ``positions.keep`` of the current batch (every position without ``positions``).

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
            entry.add(args[0], None if positions is None else positions.keep)

        handles.append(target.module.register_forward_hook(hook))
    try:
        yield stats
    finally:
        for handle in handles:
            handle.remove()
