"""Measurement: sparsity, parameters, MACs, size on disk, latency, task metrics, comparison,
plots and reports. Measurement only reads models; sensitivity analysis, which prunes, is in
:mod:`prunekit.analysis` (its old names here are deprecated aliases)."""

from ..deprecation import moved_names
from .accuracy import AccuracyResult, PerplexityResult, evaluate_accuracy, evaluate_perplexity
from .compare import Comparison, ModelMeasures, compare
from .latency import LatencyResult, measure_latency
from .mac_rules import register_mac_rule
from .macs import MacReport, MacRow, count_macs
from .params import ParamCount, count_parameters
from .plots import (
    plot_layer_sparsity,
    plot_metric_vs_sparsity,
    plot_ratio_bars,
    plot_relative_measures,
    plot_sensitivity_curves,
)
from .report import render_html, render_markdown, validate_report, write_report
from .size import SizeReport, dense_state_dict, model_size
from .sparsity import SparsityReport, TensorSparsity, sparsity_report, sparsity_report_from_state_dict

__all__ = [
    "SparsityReport",
    "TensorSparsity",
    "sparsity_report",
    "sparsity_report_from_state_dict",
    "AccuracyResult",
    "Comparison",
    "LatencyResult",
    "MacReport",
    "MacRow",
    "ModelMeasures",
    "ParamCount",
    "PerplexityResult",
    "SizeReport",
    "compare",
    "count_macs",
    "register_mac_rule",
    "count_parameters",
    "dense_state_dict",
    "evaluate_accuracy",
    "evaluate_perplexity",
    "measure_latency",
    "model_size",
    "plot_layer_sparsity",
    "plot_metric_vs_sparsity",
    "plot_ratio_bars",
    "plot_relative_measures",
    "plot_sensitivity_curves",
    "render_html",
    "render_markdown",
    "validate_report",
    "write_report",
]

__getattr__ = moved_names(
    "prunekit.measure",
    {
        "DEFAULT_SPARSITIES": "prunekit.analysis.sensitivity",
        "SensitivityResult": "prunekit.analysis.sensitivity",
        "sensitivity_analysis": "prunekit.analysis.sensitivity",
        "plot_sensitivity": "prunekit.analysis.sensitivity",
    },
)
