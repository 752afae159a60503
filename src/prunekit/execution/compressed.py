"""The compressed weight of a sparse Linear: a bitmask per row plus the packed kept values.

For a weight ``W`` of shape ``(out, in)`` and ``C = ceil(in / 16)`` chunks of 16
columns:

* ``mask``: int16 ``(out, C)``; bit ``j`` of ``mask[o, c]`` is 1 when
  ``W[o, 16c + j]`` is kept (non-zero);
* ``values``: the kept values, row by row in column order, in the weight's
  dtype (float32 or bfloat16), followed by 32 zero entries of padding (the
  vector paths read up to 32 entries past the last value);
* ``row_ptr``: int64 ``(out + 1)``; row ``o``'s values are
  ``values[row_ptr[o]:row_ptr[o + 1]]``.

Bytes read by one product: ``out·in/8`` (mask) ``+ nnz·s`` (values, ``s`` = 4
or 2) ``+ 8·(out + 1)``, against ``out·in·s`` for the dense weight; at sparsity
``p`` the limit of the speedup in the memory-bound regime is
``s / (1/8 + (1 − p)·s)``: 1.88×/3.02×/7.6× at 50/70/90 % for float32,
1.78×/2.76×/6.2× for bfloat16.

The kernel's column-index paths (:mod:`.kernel_index`) also read ``cols``, the
16-bit column of each kept value (:func:`column_indices`), derived from the
mask once per layer in memory and never saved. The gather path (1–2 rows,
weights more than 80 % zeros) reads ``nnz·(s + 2) + 8·(out + 1)`` bytes and not
the mask: its limit is ``s / ((1 − p)·(s + 2))`` (:func:`index_limit_speedup`),
6.7× at 90 % for float32 and 5.0× for bfloat16 — lower than the bitmask's
7.6×/6.2×, but its work grows with the kept values, not with the columns, so
it reaches more of its limit.

N:M weights (2:4) use the same layout: 2:4 with 2-bit indices reads
``(4 + 0.25)/2`` bytes an entry for float32, exactly the bitmask's
``4/2 + 1/8``, so one format serves both.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import InvalidParameterError

__all__ = ["CHUNK", "DTYPES", "MAX_INDEXED", "PAD", "CompressedWeight", "column_indices", "compress", "inconsistency",
           "index_limit_speedup", "limit_speedup"]

CHUNK = 16
PAD = 32
#: Weight dtypes the format (and the kernel) hold.
DTYPES = (torch.float32, torch.bfloat16)
_BITS = (1 << torch.arange(CHUNK, dtype=torch.int32))
#: The widest layer whose columns fit the 16-bit indices of the kernel's index paths.
MAX_INDEXED = 1 << 16


@dataclass(frozen=True, eq=False)
class CompressedWeight:
    """A ``(out, in)`` weight as bitmask + packed values + row offsets (see the module's docstring)."""

    mask: torch.Tensor
    values: torch.Tensor
    row_ptr: torch.Tensor
    in_features: int

    @property
    def out_features(self) -> int:
        return int(self.mask.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        return (self.out_features, self.in_features)

    @property
    def dtype(self) -> torch.dtype:
        return self.values.dtype

    @property
    def nnz(self) -> int:
        return int(self.row_ptr[-1])

    @property
    def sparsity(self) -> float:
        total = self.out_features * self.in_features
        return 1.0 - self.nnz / total if total else 0.0

    @property
    def nbytes(self) -> int:
        """Bytes a product reads: mask, kept values and row offsets (not the padding)."""
        return (self.mask.numel() * 2 + self.nnz * self.values.element_size() + self.row_ptr.numel() * 8)

    @property
    def dense_nbytes(self) -> int:
        return self.out_features * self.in_features * self.values.element_size()

    def keep_mask(self) -> torch.Tensor:
        """The bool ``(out, in)`` mask of kept entries."""
        bits = (self.mask.to(torch.int32)[..., None] & _BITS.to(self.mask.device)) != 0
        return bits.reshape(self.out_features, -1)[:, : self.in_features]

    def to_dense(self) -> torch.Tensor:
        """The dense ``(out, in)`` weight (zeros where pruned)."""
        keep = self.keep_mask()
        dense = torch.zeros(self.shape, dtype=self.dtype, device=self.values.device)
        dense[keep] = self.values[: self.nnz]
        return dense


def inconsistency(weight: CompressedWeight) -> str | None:
    """What makes ``weight`` unsafe for the kernel (which trusts its offsets), or None when it is sound.

    Checked: dtypes and shapes, ``row_ptr[0] = 0``, each row's count of values
    equal to the set bits of its mask (so offsets never decrease), no bit set
    past ``in_features``, and ``len(values) = nnz + PAD`` (the padding).
    """
    mask, values, row_ptr = weight.mask, weight.values, weight.row_ptr
    chunks = -(-weight.in_features // CHUNK)
    if mask.dtype != torch.int16 or mask.dim() != 2 or mask.shape[1] != chunks:
        return f"mask must be int16 (out, {chunks}), got {mask.dtype} {tuple(mask.shape)}"
    if values.dtype not in DTYPES or values.dim() != 1:
        return f"values must be 1-D float32 or bfloat16, got {values.dtype} {tuple(values.shape)}"
    if row_ptr.dtype != torch.int64 or tuple(row_ptr.shape) != (mask.shape[0] + 1,):
        return f"row_ptr must be int64 ({mask.shape[0] + 1},), got {row_ptr.dtype} {tuple(row_ptr.shape)}"
    bits = (mask.to(torch.int32)[..., None] & _BITS.to(mask.device)) != 0
    bits = bits.reshape(mask.shape[0], -1)
    if bits[:, weight.in_features:].any():
        return "mask has bits set past in_features"
    counts = torch.zeros_like(row_ptr)
    counts[1:] = torch.cumsum(bits.sum(1), 0)
    if not torch.equal(row_ptr, counts):
        return "row_ptr does not match the number of set mask bits per row"
    if values.numel() != int(row_ptr[-1]) + PAD:
        return f"values must hold {int(row_ptr[-1])} kept values plus {PAD} padding entries, got {values.numel()}"
    return None


def limit_speedup(sparsity: float, element_size: int) -> float:
    """Dense bytes over compressed bytes at ``sparsity`` (the memory-bound speedup limit)."""
    return element_size / (1 / 8 + (1 - sparsity) * element_size)


def index_limit_speedup(sparsity: float, element_size: int) -> float:
    """Dense bytes over the index paths' bytes (``s`` per kept value + 2 for its 16-bit column)."""
    return element_size / ((1 - sparsity) * (element_size + 2))


@torch.no_grad()
def column_indices(weight: CompressedWeight) -> torch.Tensor | None:
    """The column of each kept value as int16 bits (unsigned 16-bit; ``nnz + PAD`` entries, aligned
    with ``values``), derived from the bitmask for the kernel's index paths; None when
    ``in_features > MAX_INDEXED``."""
    if weight.in_features > MAX_INDEXED:
        return None
    cols = weight.keep_mask().to("cpu").nonzero()[:, 1].to(torch.int32)
    cols = torch.where(cols >= 1 << 15, cols - (1 << 16), cols).to(torch.int16)
    return torch.cat([cols, torch.zeros(PAD, dtype=torch.int16)]).contiguous()


@torch.no_grad()
def compress(weight: torch.Tensor) -> CompressedWeight:
    """Compress a 2-D float32/bfloat16 weight; its zeros are the pruned entries."""
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        raise InvalidParameterError("weight", "a 2-D tensor (out_features, in_features)",
                                    f"<{type(weight).__name__} {tuple(getattr(weight, 'shape', ()))}>",
                                    "Fix: pass a Linear's weight (reshape a 1x1 convolution's to 2-D).")
    if weight.dtype not in DTYPES:
        raise InvalidParameterError("weight", "a float32 or bfloat16 tensor", f"<{weight.dtype}>",
                                    "Fix: convert the layer with .float() or .bfloat16() first.")
    weight = weight.detach().to("cpu").contiguous()
    out, inp = weight.shape
    chunks = -(-inp // CHUNK)
    keep = weight != 0
    padded = torch.zeros(out, chunks * CHUNK, dtype=torch.bool)
    padded[:, :inp] = keep
    words = (padded.reshape(out, chunks, CHUNK).to(torch.int32) * _BITS).sum(-1)
    mask = torch.where(words >= 1 << 15, words - (1 << 16), words).to(torch.int16).contiguous()
    counts = keep.sum(1)
    row_ptr = torch.zeros(out + 1, dtype=torch.int64)
    row_ptr[1:] = torch.cumsum(counts, 0)
    values = torch.cat([weight[keep], torch.zeros(PAD, dtype=weight.dtype)]).contiguous()
    return CompressedWeight(mask=mask, values=values, row_ptr=row_ptr, in_features=inp)
