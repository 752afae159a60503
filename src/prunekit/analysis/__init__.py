"""Experiments that prune and then measure (above the pruner, the controller and the lottery runs).

* :func:`instability_analysis` / :func:`linear_path_errors`: linear mode
  connectivity of two trainings of a lottery ticket (Frankle et al. 2020).
"""

from __future__ import annotations

from .instability import InstabilityResult, instability_analysis, linear_path_errors

__all__ = [
    "InstabilityResult",
    "instability_analysis",
    "linear_path_errors",
]
