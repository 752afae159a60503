"""The magnitude baseline of one-shot pruning: ``|W_ij|``, one threshold per matrix
(Han et al. 2015, "Learning both Weights and Connections for Efficient Neural
Networks"), or the ``N`` largest of every ``M`` inputs for N:M. No data needed."""

from __future__ import annotations

import torch

from ..structures import NM
from ..allocation.rows import keep_nm, keep_per_matrix

__all__ = ["magnitude_keep"]


def magnitude_keep(weight: torch.Tensor, sparsity: float, nm: NM | None = None) -> torch.Tensor:
    """Keep mask of the largest ``|W|`` of an ``(out, in)`` weight."""
    scores = weight.detach().float().abs()
    return keep_nm(scores, nm) if nm is not None else keep_per_matrix(scores, sparsity)
