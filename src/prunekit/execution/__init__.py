"""Sparse execution: pruned Linear layers computed from their compressed weights, where that is faster.

* :mod:`.compressed`: the weight format (bitmask per 16 columns + packed values + row offsets);
* :mod:`.kernel_source`, :mod:`.kernel_index`, :mod:`.kernel_many_rows`, :mod:`.native_kernel`: the
  compiled CPU kernel (AVX-512 / AVX2 / scalar; bitmask, column-index and tiled paths), optional;
* :mod:`.matmul`: ``y = x · Wᵀ + b`` through the kernel, or stock torch ops;
* :mod:`.module`: :class:`SparseLinear`;
* :mod:`.candidates`, :mod:`.convert`: :func:`to_sparse`, timing dense against each kernel per layer;
* :mod:`.checkpoint`: saving and loading converted models.
"""

from __future__ import annotations

from .checkpoint import load_sparse_model, save_sparse_model
from .compressed import CompressedWeight, column_indices, compress, index_limit_speedup, limit_speedup
from .convert import to_sparse
from .matmul import kernel_path, sparse_linear, torch_linear
from .module import KERNELS, SparseConv1x1, SparseLinear
from .report import LayerChoice, SparseConversion

__all__ = [
    "KERNELS",
    "CompressedWeight",
    "LayerChoice",
    "SparseConversion",
    "SparseConv1x1",
    "SparseLinear",
    "column_indices",
    "compress",
    "index_limit_speedup",
    "kernel_path",
    "limit_speedup",
    "load_sparse_model",
    "save_sparse_model",
    "sparse_linear",
    "to_sparse",
    "torch_linear",
]
