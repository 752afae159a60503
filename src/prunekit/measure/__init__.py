"""Measurement: sparsity now; MACs, size, latency and sensitivity follow."""

from .sparsity import SparsityReport, TensorSparsity, sparsity_report, sparsity_report_from_state_dict

__all__ = ["SparsityReport", "TensorSparsity", "sparsity_report", "sparsity_report_from_state_dict"]
