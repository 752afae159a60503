"""Wanda: pruning by weights and activations (Sun, Liu, Bair & Kolter 2023,
"A Simple and Effective Pruning Approach for Large Language Models", arXiv:2306.11695).

Score of weight ``W_ij`` (output ``i``, input ``j``)::

    S_ij = |W_ij| · ‖X_j‖₂

with ``‖X_j‖₂`` the norm of input feature ``j`` over all calibration tokens.
Scores are compared within each output row (every row is pruned to the
sparsity), or within each group of ``M`` inputs of a row for N:M. The kept
weights are left unchanged (no update). The mask does not change when an input
channel is scaled by ``c`` and its weights by ``1/c``.
"""

from __future__ import annotations

import torch

from ..structures import NM
from ..allocation.rows import keep_nm, keep_per_row

__all__ = ["wanda_keep", "wanda_scores"]


def wanda_scores(weight: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
    """``|W| · ‖X_j‖₂`` for an ``(out, in)`` weight and the ``(in,)`` input norms."""
    return weight.detach().float().abs() * norms.to(weight.device).float().unsqueeze(0)


def wanda_keep(weight: torch.Tensor, norms: torch.Tensor, sparsity: float, nm: NM | None = None) -> torch.Tensor:
    """Keep mask of Wanda: per output row at ``sparsity``, or N:M within each row."""
    scores = wanda_scores(weight, norms)
    return keep_nm(scores, nm) if nm is not None else keep_per_row(scores, sparsity)
