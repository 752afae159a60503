""":class:`SparseLinear`: a Linear layer computing with its compressed weight.

The layer holds the compressed weight (:mod:`.compressed`: bitmask + packed
values + row offsets) as buffers ``mask``, ``values``, ``row_ptr`` and the
bias as ``bias``, and computes ``y = x · Wᵀ + b`` with one of three kernels:

* ``"prunekit"``: the compiled kernel decoding the bitmask inside the product
  (:mod:`.native_kernel`), for few input rows (memory-bound); where no
  compiler exists it computes with stock torch ops (weight rebuilt dense once,
  logged as a warning);
* ``"csr"`` / ``"bsr"``: torch's sparse CSR / BSR matrix product (float32),
  for many rows; the torch tensor is rebuilt from the buffers when first used.

:class:`SparseConv1x1` does the same for a 1×1 convolution (a matrix product
over channels, rows = batch × height × width).

It is an inference layer: it has no parameters and no gradient.
"""

from __future__ import annotations

import logging
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError, InvalidParameterError, PrunekitError, check_choice
from ..native import NativeBuildError
from .compressed import DTYPES, PAD, CompressedWeight, column_indices, compress, inconsistency
from .matmul import check_input, kernel_product, torch_linear
from .native_kernel import available, check_isa, kernel, loaded_module

__all__ = ["KERNELS", "SparseConv1x1", "SparseLinear", "is_conv1x1", "torch_sparse_weight"]

logger = logging.getLogger(__name__)

#: The kernels a :class:`SparseLinear` computes with.
KERNELS = ("prunekit", "csr", "bsr")


def torch_sparse_weight(dense: torch.Tensor, kernel_name: str, blocksize: int = 0) -> torch.Tensor:
    """``dense`` as a torch CSR (``"csr"``) or BSR (``"bsr"``, square blocks of ``blocksize``) tensor."""
    with warnings.catch_warnings():  # torch: "Sparse CSR tensor support is in beta state"
        warnings.simplefilter("ignore", UserWarning)
        if kernel_name == "csr":
            return dense.to_sparse_csr()
        return dense.to_sparse_bsr((blocksize, blocksize))


class _InferenceOnly(torch.autograd.Function):
    """Passes the layer's output on; a backward pass through it raises (the kernels have no gradient)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # noqa: D102 - autograd protocol
        return y.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: D102 - autograd protocol
        raise PrunekitError(
            "SparseLinear computes inference only: no gradient flows through its kernels. Fix: train the dense "
            "model and convert it with to_sparse afterwards (or run the converted model under torch.no_grad()).")


class SparseLinear(nn.Module):
    """``y = x · Wᵀ + b`` with ``W`` stored compressed; outputs equal the dense Linear's to float tolerance.

    Build one with :meth:`from_dense` (or :func:`prunekit.to_sparse`, which
    picks the kernel by timing). The constructor makes an empty layer of the
    given sizes, to load a saved state dict into.
    """

    def __init__(self, in_features: int, out_features: int, *, nnz: int = 0, bias: bool = True,
                 dtype: torch.dtype = torch.float32, kernel: str = "prunekit", blocksize: int = 0) -> None:
        super().__init__()
        check_choice("kernel", kernel, KERNELS)
        if dtype not in DTYPES:
            raise InvalidParameterError("dtype", "torch.float32 or torch.bfloat16", dtype,
                                        "Fix: keep float16/float64 layers dense (to_sparse does).")
        if kernel == "bsr" and (blocksize < 1 or in_features % blocksize or out_features % blocksize):
            raise InvalidParameterError("blocksize", "a block size dividing in_features and out_features",
                                        blocksize, "Fix: use kernel='csr' or a block size such as 4 or 8.")
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.kernel = kernel
        self.blocksize = int(blocksize)
        chunks = -(-self.in_features // 16)
        self.register_buffer("mask", torch.zeros(self.out_features, chunks, dtype=torch.int16))
        self.register_buffer("values", torch.zeros(int(nnz) + PAD, dtype=dtype))
        self.register_buffer("row_ptr", torch.zeros(self.out_features + 1, dtype=torch.int64))
        self.register_buffer("bias", torch.zeros(self.out_features, dtype=dtype) if bias else None)
        self._cache: torch.Tensor | None = None  # torch's sparse weight, or the dense fallback
        # (mask, values, row_ptr, float32 bias, column indices) as the kernel takes them, cached:
        # buffer access is slow
        self._packed: tuple | None = None

    @classmethod
    @torch.no_grad()
    def from_dense(cls, weight: torch.Tensor | nn.Linear, bias: torch.Tensor | None = None, *,
                   kernel: str = "prunekit", blocksize: int = 0) -> SparseLinear:
        """Compress ``weight`` (a 2-D float32/bfloat16 tensor whose zeros are pruned, or a Linear)."""
        if isinstance(weight, (nn.Linear, nn.Conv2d)):
            weight, bias = weight.weight, weight.bias
        packed = compress(weight.reshape(weight.shape[0], -1) if weight.dim() == 4 else weight)
        layer = cls(packed.in_features, packed.out_features, nnz=packed.nnz, bias=bias is not None,
                    dtype=packed.dtype, kernel=kernel, blocksize=blocksize)
        layer.mask.copy_(packed.mask)
        layer.values.copy_(packed.values)
        layer.row_ptr.copy_(packed.row_ptr)
        if bias is not None:
            layer.bias.copy_(bias.detach())
        return layer

    @property
    def compressed(self) -> CompressedWeight:
        return CompressedWeight(self.mask, self.values, self.row_ptr, self.in_features)

    @property
    def sparsity(self) -> float:
        return self.compressed.sparsity

    @property
    def dtype(self) -> torch.dtype:
        return self.values.dtype

    def to_dense(self) -> torch.Tensor:
        """The dense weight (zeros where pruned)."""
        return self.compressed.to_dense()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: D401 - torch hook
        # the number of kept values is known only from the checkpoint: size the buffer to it
        values = state_dict.get(prefix + "values")
        if isinstance(values, torch.Tensor) and values.shape != self.values.shape:
            self.values = torch.zeros_like(values, dtype=self.values.dtype)
        self._cache = self._packed = None
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        # the kernel trusts the offsets: a state dict that contradicts itself is refused here
        problem = inconsistency(self.compressed)
        if problem is not None:
            raise CheckpointError(f"{prefix or 'SparseLinear.'}: the compressed weight is inconsistent ({problem}). "
                                  "Fix: re-save it with save_sparse_model; the file may be corrupt or edited.")

    def _apply(self, fn, recurse=True):
        self._cache = self._packed = None
        return super()._apply(fn, recurse)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and isinstance(x, torch.Tensor) and x.requires_grad:
            with torch.no_grad():
                y = self._product(x)
            return _InferenceOnly.apply(x, y)
        return self._product(x)

    def _product(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel == "prunekit":
            native = loaded_module()
            if native is None and available():
                try:
                    native = kernel()
                except NativeBuildError as exc:
                    logger.warning("SparseLinear: the compiled kernel is not used (%s); computing with torch ops", exc)
            if native is not None:
                check_input(x, self.in_features)
                packed = self._packed
                if packed is None:
                    bias = None if self.bias is None else self.bias.detach().float().contiguous()
                    # the column indices of the index paths: derived from the mask, never saved
                    packed = self._packed = (self.mask, self.values, self.row_ptr, bias,
                                             column_indices(self.compressed))
                return kernel_product(native, x, *packed[:3], self.in_features, packed[3], check_isa(None),
                                      packed[4])
            if self._cache is None:
                logger.warning("SparseLinear: no C++ compiler here; computing with the weight rebuilt dense")
                self._cache = self.to_dense()
            return torch_linear(x, self.compressed, self.bias, dense=self._cache)
        if self._cache is None:
            self._cache = torch_sparse_weight(self.to_dense().float(), self.kernel, self.blocksize)
        lead = x.shape[:-1]
        y = F.linear(x.reshape(-1, self.in_features).float(), self._cache,
                     None if self.bias is None else self.bias.float())
        return y.reshape(*lead, self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, kernel={self.kernel!r}, dtype={self.dtype}, "
                f"sparsity={self.sparsity:.3f}")


def is_conv1x1(module: nn.Module) -> bool:
    """True for a plain ``nn.Conv2d`` that is a matrix product over channels (1×1, stride 1, no padding, one group)."""
    return (isinstance(module, nn.Conv2d) and type(module).forward is nn.Conv2d.forward
            and module.kernel_size == (1, 1) and module.stride == (1, 1) and module.dilation == (1, 1)
            and module.groups == 1 and all(p == 0 for p in module.padding) and not isinstance(module.padding, str))


class SparseConv1x1(SparseLinear):
    """A 1×1 ``Conv2d`` (stride 1, no padding, one group) computed as :class:`SparseLinear` over channels:
    ``y[n, :, h, w] = W · x[n, :, h, w] + b`` with the rows ``N·H·W``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != self.in_features:
            raise InvalidParameterError(
                "x", f"a (N, {self.in_features}, H, W) tensor", f"<{type(x).__name__} {tuple(getattr(x, 'shape', ()))}>",
                "Fix: pass the input the 1x1 convolution took.")
        n, c, h, w = x.shape
        y = super().forward(x.permute(0, 2, 3, 1).reshape(-1, c))
        return y.reshape(n, h, w, self.out_features).permute(0, 3, 1, 2).contiguous()
