"""Pruned models written for other runtimes: ONNX (checked in onnxruntime) and plain dense safetensors.

* :mod:`.onnx`: :func:`export_onnx` of shrunk and masked models, checked with
  onnxruntime; :func:`onnx_latency` times onnxruntime sessions (optional
  extra ``prunekit[onnx]``);
* :mod:`.dense`: :func:`save_dense`, a masked model as plain safetensors with
  zeros in place, which a fresh unpruned model loads with ``load_state_dict``.
"""

from __future__ import annotations

from .dense import DENSE_FORMAT, dense_state_dict, save_dense
from .onnx import MissingDependencyError, OnnxExport, OnnxExportError, export_onnx, onnx_latency, require_onnx

__all__ = [
    "DENSE_FORMAT",
    "MissingDependencyError",
    "OnnxExport",
    "OnnxExportError",
    "dense_state_dict",
    "export_onnx",
    "onnx_latency",
    "require_onnx",
    "save_dense",
]
