"""The kernels that may replace one dense Linear, each as a ready-to-time layer.

For a layer's effective weight ``W`` (float32/bfloat16, zeros where pruned):

* ``"prunekit"``: :class:`~.module.SparseLinear` with the compiled bitmask kernel;
* ``"csr"``: torch's CSR product (float32 weights only: torch has no CPU
  bfloat16 sparse CSR matmul);
* ``"bsr"``: torch's BSR product (float32), with the largest square block size
  from :data:`BLOCK_SIZES` that divides both dims and leaves at least half the
  blocks entirely zero; a weight with no such block structure gets none.
"""

from __future__ import annotations

import torch
from torch import nn

from .module import SparseConv1x1, SparseLinear

__all__ = ["BLOCK_SIZES", "bsr_blocksize", "build_candidates"]

BLOCK_SIZES = (32, 16, 8, 4)
#: The least fraction of all-zero blocks for BSR to be tried.
MIN_BLOCK_SPARSITY = 0.5


def bsr_blocksize(weight: torch.Tensor) -> int:
    """The block size BSR would use for ``weight``, or 0 when none fits (see the module docstring)."""
    out, inp = weight.shape
    for b in BLOCK_SIZES:
        if out % b or inp % b:
            continue
        blocks = (weight != 0).reshape(out // b, b, inp // b, b).any(dim=(1, 3))
        if 1.0 - blocks.float().mean().item() >= MIN_BLOCK_SPARSITY:
            return b
    return 0


def build_candidates(weight: torch.Tensor, bias: torch.Tensor | None, kernels: tuple[str, ...], *,
                     conv: bool = False) -> tuple[dict[str, nn.Module], dict[str, str]]:
    """``({kernel: layer}, {kernel: why it cannot run here})`` for the requested ``kernels``
    (``weight`` 2-D; ``conv``: the layers are :class:`SparseConv1x1`)."""
    cls = SparseConv1x1 if conv else SparseLinear
    layers: dict[str, nn.Module] = {}
    refused: dict[str, str] = {}
    for name in kernels:
        if name in ("csr", "bsr") and weight.dtype != torch.float32:
            refused[name] = f"torch has no CPU {name.upper()} product for {str(weight.dtype).replace('torch.', '')}"
            continue
        blocksize = 0
        if name == "bsr":
            blocksize = bsr_blocksize(weight)
            if not blocksize:
                refused[name] = "no block structure (too few all-zero blocks)"
                continue
        layers[name] = cls.from_dense(weight, bias, kernel=name, blocksize=blocksize)
    return layers, refused
