"""``y = x · Wᵀ + b`` with ``W`` compressed (:class:`~.compressed.CompressedWeight`).

:func:`sparse_linear` runs the compiled kernel (:mod:`.native_kernel`);
:func:`torch_linear` computes the same with stock torch ops (the weight
rebuilt dense), the fallback where no compiler exists. Both accumulate in
float32 and return ``x``'s dtype.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..errors import InvalidParameterError
from .compressed import MAX_INDEXED, CompressedWeight, column_indices
from .native_kernel import PATHS, check_isa, check_path, kernel

__all__ = ["check_input", "kernel_path", "kernel_product", "sparse_linear", "torch_linear"]


def check_input(x: torch.Tensor, in_features: int) -> None:
    """Refuse an input the kernel cannot take (the error names ``x`` and the fix)."""
    if not isinstance(x, torch.Tensor) or x.dim() < 1 or x.shape[-1] != in_features:
        raise InvalidParameterError(
            "x", f"a tensor whose last dim is in_features={in_features}",
            f"<{type(x).__name__} {tuple(getattr(x, 'shape', ()))}>",
            "Fix: pass inputs shaped (..., in_features), as for the dense Linear.")
    if not x.is_floating_point() or x.device.type != "cpu":
        raise InvalidParameterError("x", "a floating-point CPU tensor", f"<{x.dtype} on {x.device}>",
                                    "Fix: move the input to the CPU (the kernel is a CPU kernel).")


def sparse_linear(x: torch.Tensor, weight: CompressedWeight, bias: torch.Tensor | None = None, *,
                  isa: str | None = None, path: str = "auto", cols: torch.Tensor | None = None) -> torch.Tensor:
    """``x · Wᵀ + b`` through the compiled kernel; ``isa`` forces ``"scalar"``, ``"avx2"`` or
    ``"avx512"`` (``None``: ``$PRUNEKIT_SPARSE_ISA`` or the best this CPU has); ``path`` forces
    one of :data:`~.native_kernel.PATHS`; ``cols``: :func:`~.compressed.column_indices` of
    ``weight`` when already computed (else derived here)."""
    check_input(x, weight.in_features)
    code = check_path(path)
    if cols is None:
        cols = column_indices(weight)
    if cols is None and path in ("index", "tiled"):
        raise InvalidParameterError("path", "'auto', 'bitmask' or 'rows' for more than 65536 input features", path,
                                    "Fix: pass path='auto' (the index paths hold 16-bit columns).")
    b = None if bias is None else bias.detach().float().contiguous()
    return kernel_product(kernel(), x, weight.mask, weight.values, weight.row_ptr, weight.in_features, b,
                          check_isa(isa), cols, code)


def kernel_product(module: Any, x: torch.Tensor, mask: torch.Tensor, values: torch.Tensor, row_ptr: torch.Tensor,
                   in_features: int, bias32: torch.Tensor | None, isa_code: int, cols: torch.Tensor | None = None,
                   path_code: int = 0) -> torch.Tensor:
    """The kernel call itself, for callers that checked ``x`` and hold a float32 contiguous bias
    (``x`` is flattened to rows, converted to float32 and padded to whole chunks in C++)."""
    return module.sparse_linear_nd(x, mask, values, row_ptr, bias32, isa_code, in_features, cols, path_code)


def torch_linear(x: torch.Tensor, weight: CompressedWeight, bias: torch.Tensor | None = None,
                 dense: torch.Tensor | None = None) -> torch.Tensor:
    """The same product with stock torch ops (``dense``: the rebuilt weight, when cached)."""
    check_input(x, weight.in_features)
    w = weight.to_dense() if dense is None else dense
    y = F.linear(x.float(), w.float(), None if bias is None else bias.float())
    return y.to(x.dtype)


def kernel_path(weight: CompressedWeight, rows: int) -> str:
    """The path (one of :data:`~.native_kernel.PATHS` but ``"auto"``) the kernel takes for ``rows``
    input rows with ``weight`` (column indices available up to ``MAX_INDEXED`` input features)."""
    from_code = {code: name for name, code in PATHS.items()}
    chunks = int(weight.mask.shape[1])
    has_cols = weight.in_features <= MAX_INDEXED
    return from_code[int(kernel().choose_path(int(rows), weight.nnz, weight.out_features, chunks, has_cols))]
