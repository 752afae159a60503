"""Per-layer statistics of the inputs of linear layers, gathered by forward hooks.

For a layer with input ``X`` of shape ``(in_features, n)`` (``n`` tokens over
the whole calibration set):

* ``sq[j] = Σ_t X_jt²``, so ``‖X_j‖₂ = sqrt(sq[j])`` (Wanda, OWL);
* ``H = (2 / n) · X Xᵀ`` accumulated in float32 (SparseGPT's Hessian of the
  layer-wise squared error; the 1/n scale leaves its results unchanged, the
  dampening being relative to the mean diagonal).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from ..targets import Target

__all__ = ["InputStats", "collect_input_stats"]


class InputStats:
    """Running sums over the inputs of one layer."""

    def __init__(self, in_features: int, norms: bool, hessian: bool, device: torch.device) -> None:
        self.tokens = 0
        self.sq = torch.zeros(in_features, dtype=torch.float32, device=device) if norms else None
        self.xx = torch.zeros(in_features, in_features, dtype=torch.float32, device=device) if hessian else None

    @torch.no_grad()
    def add(self, x: torch.Tensor) -> None:
        flat = x.reshape(-1, x.shape[-1]).float()
        self.tokens += flat.shape[0]
        if self.sq is not None:
            self.sq += flat.square().sum(0)
        if self.xx is not None:
            self.xx.addmm_(flat.t(), flat)

    def norms(self) -> torch.Tensor:
        """``‖X_j‖₂`` over every token seen."""
        if self.sq is None:
            raise RuntimeError("input norms were not collected")
        return self.sq.sqrt()

    def hessian(self) -> torch.Tensor:
        """``H = (2 / n) X Xᵀ`` (float32)."""
        if self.xx is None:
            raise RuntimeError("the Hessian was not collected")
        return self.xx * (2.0 / max(self.tokens, 1))

    def take_hessian(self) -> torch.Tensor:
        """``H`` made in place from the running sum, which is handed over (this object drops it)."""
        if self.xx is None:
            raise RuntimeError("the Hessian was not collected")
        h, self.xx = self.xx.mul_(2.0 / max(self.tokens, 1)), None
        return h

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * 4 for t in (self.sq, self.xx) if t is not None)


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
