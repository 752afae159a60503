"""Measurement: sparsity, parameters, MACs, size on disk, latency, task metrics, comparison,
sensitivity analysis, plots and reports."""

from .accuracy import AccuracyResult, PerplexityResult, evaluate_accuracy, evaluate_perplexity
from .compare import Comparison, ModelMeasures, compare
from .latency import LatencyResult, measure_latency
from .macs import MacReport, MacRow, count_macs
from .params import ParamCount, count_parameters
from .plots import plot_layer_sparsity, plot_metric_vs_sparsity, plot_relative_measures, plot_sensitivity_curves
from .report import render_html, render_markdown, validate_report, write_report
from .sensitivity import DEFAULT_SPARSITIES, SensitivityResult, plot_sensitivity, sensitivity_analysis
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
    "count_parameters",
    "dense_state_dict",
    "evaluate_accuracy",
    "evaluate_perplexity",
    "measure_latency",
    "model_size",
    "DEFAULT_SPARSITIES",
    "SensitivityResult",
    "sensitivity_analysis",
    "plot_sensitivity",
    "plot_layer_sparsity",
    "plot_metric_vs_sparsity",
    "plot_relative_measures",
    "plot_sensitivity_curves",
    "render_html",
    "render_markdown",
    "validate_report",
    "write_report",
]
