"""Experiments that prune and then measure: sensitivity analysis (and, after them, other
analyses that sit above the pruner)."""

from __future__ import annotations

from .sensitivity import DEFAULT_SPARSITIES, SensitivityResult, plot_sensitivity, sensitivity_analysis

__all__ = [
    "DEFAULT_SPARSITIES",
    "SensitivityResult",
    "plot_sensitivity",
    "sensitivity_analysis",
]
