"""OWL: outlier-weighed layerwise sparsity (Yin et al. 2023, "Outlier Weighed Layerwise
Sparsity (OWL): A Missing Secret Sauce for Pruning LLMs to High Sparsity", arXiv:2310.05175).

For block ``l`` the layerwise outlier distribution ``D_l`` is the share of the
Wanda scores ``|W_ij| · ‖X_j‖₂`` of all its linear layers (taken together) that
exceed ``M`` times their mean (``M = 5``). The ratios are mapped linearly
around the target::

    s_l = s − λ · (D_l − mean D) / max_k |D_k − mean D|

so a block with more outliers is pruned less, every ``s_l`` lies within
``s ± λ`` (the most distant block exactly at the bound) and the mean of the
``s_l`` is exactly ``s`` (blocks of equal size: the overall sparsity is the
target). The authors' code maps ``D`` to ``[0, 2λ]`` by min-max and centres it,
which keeps the mean but can leave ``s ± λ`` when the ratios are skewed; the
form above is the same linear map scaled to honour both constraints.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from ..errors import InvalidParameterError

__all__ = ["check_owl", "outlier_ratio", "owl_sparsities"]

logger = logging.getLogger(__name__)


def outlier_ratio(scores: Sequence[torch.Tensor], m: float = 5.0) -> float:
    """Share of the entries of ``scores`` (taken together) above ``m`` × their mean."""
    total = sum(s.numel() for s in scores)
    mean = sum(float(s.double().sum()) for s in scores) / total
    above = sum(int((s > m * mean).sum()) for s in scores)
    return above / total


def check_owl(sparsity: float, lam: float, m: float) -> None:
    """Validate OWL's parameters: ``0 <= s − λ`` and ``s + λ < 1``, ``λ >= 0``, ``M > 0``."""
    if isinstance(lam, bool) or not isinstance(lam, (int, float)) or lam < 0:
        raise InvalidParameterError("owl_lambda", "a non-negative float", lam, "Fix: e.g. owl_lambda=0.08.")
    if isinstance(m, bool) or not isinstance(m, (int, float)) or m <= 0:
        raise InvalidParameterError("owl_m", "a positive number", m, "Fix: e.g. owl_m=5.")
    if sparsity - lam < 0 or sparsity + lam >= 1:
        raise InvalidParameterError(
            "owl_lambda", f"at most {min(sparsity, 1 - sparsity):.4g} so that sparsity ± owl_lambda stays in [0, 1)",
            lam, "Fix: lower owl_lambda or move the target sparsity away from 0 and 1.",
        )


def owl_sparsities(ratios: Sequence[float], sparsity: float, lam: float = 0.08) -> list[float]:
    """Per-block sparsities from the outlier ratios ``D_l`` (see the module docstring)."""
    d = torch.tensor(list(ratios), dtype=torch.float64)
    centred = d - d.mean() if len(d) else d
    spread = float(centred.abs().max()) if len(d) else 0.0
    if spread == 0.0:
        logger.info("OWL: every block has the same outlier ratio; all blocks at the target %.4f", sparsity)
        return [float(sparsity)] * len(d)
    out = sparsity - lam * centred / spread
    return [float(v) for v in out]
