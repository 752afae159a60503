"""Experiments that prune or score a model, then measure it: sensitivity analysis
(:mod:`.sensitivity`) and zero-cost proxies (:mod:`.proxies`). They sit above the pruner."""

from __future__ import annotations

from .proxies import PROXIES, rankdata, score_sum, spearman, zero_cost_proxies
from .sensitivity import DEFAULT_SPARSITIES, SensitivityResult, plot_sensitivity, sensitivity_analysis

__all__ = [
    "DEFAULT_SPARSITIES",
    "PROXIES",
    "SensitivityResult",
    "plot_sensitivity",
    "rankdata",
    "score_sum",
    "sensitivity_analysis",
    "spearman",
    "zero_cost_proxies",
]
