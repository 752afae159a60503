"""Choosing what to prune from a score matrix ``(out, in)`` (higher = more important).

* :func:`keep_per_matrix`: the ``round(s · numel)`` lowest scores of the whole matrix are pruned;
* :func:`keep_per_row`: the ``round(s · in)`` lowest scores of each output row are pruned;
* :func:`keep_nm`: in every group of ``M`` consecutive inputs of a row the ``N``
  highest scores are kept (:class:`prunekit.NM`'s own selection).
"""

from __future__ import annotations

import torch

from ..structures import NM

__all__ = ["keep_nm", "keep_per_matrix", "keep_per_row", "nm_invalid_groups", "prune_count"]


def prune_count(sparsity: float, numel: int) -> int:
    """Number of entries pruned out of ``numel`` at ``sparsity`` (rounded to the nearest)."""
    return min(numel, max(0, round(sparsity * numel)))


def keep_per_matrix(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep mask pruning the ``round(s · numel)`` lowest scores (one threshold per matrix)."""
    keep = torch.ones(scores.numel(), dtype=torch.bool, device=scores.device)
    k = prune_count(sparsity, scores.numel())
    if k:
        keep[scores.reshape(-1).float().topk(k, largest=False).indices] = False
    return keep.view_as(scores)


def keep_per_row(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep mask pruning the ``round(s · in)`` lowest scores of every row (Wanda's comparison group)."""
    keep = torch.ones_like(scores, dtype=torch.bool)
    k = prune_count(sparsity, scores.shape[1])
    if k:
        keep.scatter_(1, scores.float().topk(k, dim=1, largest=False).indices, False)
    return keep


def keep_nm(scores: torch.Tensor, nm: NM) -> torch.Tensor:
    """Keep the ``N`` highest of every ``M`` consecutive inputs of each row."""
    groups = scores.float().reshape(-1, nm.m)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(1, groups.topk(nm.n, dim=1).indices, True)
    return keep.view_as(scores)


def nm_invalid_groups(weight: torch.Tensor, nm: NM) -> int:
    """Groups of ``M`` consecutive inputs (of an ``(out, in)`` matrix) with more than ``N`` non-zeros."""
    nonzero = (weight.reshape(-1, nm.m) != 0).sum(1)
    return int((nonzero > nm.n).sum())
