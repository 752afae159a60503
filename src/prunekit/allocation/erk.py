"""Erdős–Rényi-Kernel densities (Evci, Gale, Menick, Castro & Elsen 2020, "Rigging the
Lottery", RigL; Mocanu et al. 2018 for Erdős–Rényi).

The density of a tensor of shape ``(n_out, n_in, k_h, k_w)`` is
``ε · (n_out + n_in + k_h + k_w) / (n_out · n_in · k_h · k_w)`` (any number of
dims: sum over product of the dims), with the one ``ε`` that meets the
requested sparsity over all the tensors' parameters. A tensor whose density
would exceed 1 is kept dense and ``ε`` is solved again for the rest (repeated
until none exceeds 1), as RigL does.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import InvalidParameterError
from .budget import check_sparsity

__all__ = ["erk_densities", "erk_raw", "water_fill"]


def erk_raw(shape: Sequence[int]) -> float:
    """Erdős–Rényi-Kernel density factor ``Σ dims / Π dims`` of one tensor."""
    product = 1
    for dim in shape:
        product *= int(dim)
    return sum(int(d) for d in shape) / product if product else 0.0


def water_fill(raw: Sequence[float], units: Sequence[int], sizes: Sequence[int], keep: float,
               low: Sequence[float], high: Sequence[float]) -> list[float]:
    """Kept units per tensor ``clamp(ε·raw_l·units_l, low_l, high_l)`` with Σ kept·size = ``keep``.

    Tensors whose value leaves its bounds are fixed at the bound and ``ε`` is
    solved again for the others, until none leaves its bounds (RigL's loop).
    """
    fixed: dict[int, float] = {}
    eps = 0.0
    while len(fixed) < len(raw):
        free = [i for i in range(len(raw)) if i not in fixed]
        weight = sum(raw[i] * units[i] * sizes[i] for i in free)
        rest = keep - sum(v * sizes[i] for i, v in fixed.items())
        eps = rest / weight if weight > 0 else float("inf")
        over = [i for i in free if eps * raw[i] * units[i] > high[i]]
        under = [i for i in free if eps * raw[i] * units[i] < low[i]]
        if not over and not under:
            break
        for i in over:
            fixed[i] = float(high[i])
        if not over:  # lower bounds only once no tensor is above its cap
            for i in under:
                fixed[i] = float(low[i])
    return [fixed[i] if i in fixed else eps * raw[i] * units[i] for i in range(len(raw))]


def erk_densities(shapes: Sequence[Sequence[int]], sparsity: float) -> list[float]:
    """ERK densities (RigL, Evci et al. 2020) of tensors of ``shapes`` for a global ``sparsity``.

    ``d_l = min(1, ε · Σ dims_l / Π dims_l)`` with ``ε`` such that
    ``Σ d_l·n_l = (1 − sparsity)·Σ n_l``; tensors capped at 1 are dense.
    """
    value = check_sparsity(sparsity)
    if isinstance(value, int):
        raise InvalidParameterError("sparsity", "a float in [0, 1] for ERK", sparsity, "Fix: pass e.g. 0.9.")
    sizes = [max(1, int(torch.Size(s).numel())) for s in shapes]
    raw = [erk_raw(s) for s in shapes]
    kept = water_fill(raw, [1] * len(sizes), sizes, (1.0 - value) * sum(sizes), [0.0] * len(sizes), [1.0] * len(sizes))
    return kept
