"""Experiments that prune and then measure (above the pruner, the controller and the lottery runs).

* :func:`sensitivity_analysis`: accuracy of each layer pruned alone at several sparsities;
* :func:`instability_analysis` / :func:`linear_path_errors`: linear mode
  connectivity of two trainings of a lottery ticket (Frankle et al. 2020).
"""

from __future__ import annotations

from .instability import InstabilityResult, instability_analysis, linear_path_errors
from .sensitivity import DEFAULT_SPARSITIES, SensitivityResult, plot_sensitivity, sensitivity_analysis

__all__ = [
    "DEFAULT_SPARSITIES",
    "InstabilityResult",
    "SensitivityResult",
    "instability_analysis",
    "linear_path_errors",
    "plot_sensitivity",
    "sensitivity_analysis",
]
