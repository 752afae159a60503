"""``y = x · Wᵀ + b`` with ``W`` compressed (:class:`~.compressed.CompressedWeight`).

:func:`sparse_linear` runs the compiled kernel (:mod:`.native_kernel`);
:func:`torch_linear` computes the same with stock torch ops (the weight
rebuilt dense), the fallback where no compiler exists. Both accumulate in
float32 and return ``x``'s dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import InvalidParameterError
from .compressed import CHUNK, CompressedWeight
from .native_kernel import check_isa, kernel

__all__ = ["sparse_linear", "torch_linear"]


def _check_input(x: torch.Tensor, weight: CompressedWeight) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() < 1 or x.shape[-1] != weight.in_features:
        raise InvalidParameterError(
            "x", f"a tensor whose last dim is in_features={weight.in_features}",
            f"<{type(x).__name__} {tuple(getattr(x, 'shape', ()))}>",
            "Fix: pass inputs shaped (..., in_features), as for the dense Linear.")
    if not x.is_floating_point() or x.device.type != "cpu":
        raise InvalidParameterError("x", "a floating-point CPU tensor", f"<{x.dtype} on {x.device}>",
                                    "Fix: move the input to the CPU (the kernel is a CPU kernel).")


def sparse_linear(x: torch.Tensor, weight: CompressedWeight, bias: torch.Tensor | None = None, *,
                  isa: str | None = None) -> torch.Tensor:
    """``x · Wᵀ + b`` through the compiled kernel; ``isa`` forces ``"scalar"``, ``"avx2"`` or
    ``"avx512"`` (``None``: ``$PRUNEKIT_SPARSE_ISA`` or the best this CPU has)."""
    _check_input(x, weight)
    code = check_isa(isa)
    lead = x.shape[:-1]
    x2 = x.reshape(-1, weight.in_features)
    if x2.dtype != torch.float32:
        x2 = x2.float()
    width = weight.mask.shape[1] * CHUNK
    if width != weight.in_features:
        x2 = F.pad(x2, (0, width - weight.in_features))
    x2 = x2.contiguous()
    b = None if bias is None else bias.detach().float().contiguous()
    y = kernel().sparse_linear(x2, weight.mask, weight.values, weight.row_ptr, b, code)
    return y.reshape(*lead, weight.out_features).to(x.dtype)


def torch_linear(x: torch.Tensor, weight: CompressedWeight, bias: torch.Tensor | None = None,
                 dense: torch.Tensor | None = None) -> torch.Tensor:
    """The same product with stock torch ops (``dense``: the rebuilt weight, when cached)."""
    _check_input(x, weight)
    w = weight.to_dense() if dense is None else dense
    y = F.linear(x.float(), w.float(), None if bias is None else bias.float())
    return y.to(x.dtype)
