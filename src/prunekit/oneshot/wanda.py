"""Wanda's keep mask: ``|W_ij|·‖X_j‖₂`` compared within each output row (Sun et al. 2023).

The score is :class:`prunekit.scores.calibration.Wanda` (registered as ``wanda``);
this module chooses what it keeps: every row pruned to the sparsity, or the
``N`` highest of each group of ``M`` inputs of a row for N:M. The kept weights
are left unchanged (no update).
"""

from __future__ import annotations

import torch

from ..scores.calibration import wanda_scores
from ..structures import NM
from ..allocation.rows import keep_nm, keep_per_row

__all__ = ["wanda_keep", "wanda_scores"]


def wanda_keep(weight: torch.Tensor, norms: torch.Tensor, sparsity: float, nm: NM | None = None) -> torch.Tensor:
    """Keep mask of Wanda: per output row at ``sparsity``, or N:M within each row."""
    scores = wanda_scores(weight, norms)
    return keep_nm(scores, nm) if nm is not None else keep_per_row(scores, sparsity)
