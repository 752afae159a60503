"""Experiments that prune or score a model, then measure it (above the pruner, the controller and the lottery runs).

* :func:`sensitivity_analysis`: accuracy of each layer pruned alone at several sparsities;
* :func:`zero_cost_proxies`: one score per untrained network, from registered scores;
* :func:`instability_analysis` / :func:`linear_path_errors`: linear mode
  connectivity of two trainings of a lottery ticket (Frankle et al. 2020).
"""

from __future__ import annotations

from .instability import InstabilityResult, instability_analysis, linear_path_errors
from .proxies import PROXIES, rankdata, score_sum, spearman, zero_cost_proxies
from .sensitivity import DEFAULT_SPARSITIES, SensitivityResult, plot_sensitivity, sensitivity_analysis

__all__ = [
    "DEFAULT_SPARSITIES",
    "InstabilityResult",
    "PROXIES",
    "SensitivityResult",
    "instability_analysis",
    "linear_path_errors",
    "plot_sensitivity",
    "rankdata",
    "score_sum",
    "sensitivity_analysis",
    "spearman",
    "zero_cost_proxies",
]
