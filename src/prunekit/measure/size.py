"""Bytes on disk of a model: dense, and compressed with :func:`prunekit.save_sparse`.

* ``dense_bytes``: the *dense effective* state dict, i.e. what a plain model
  computing the same function stores: every reparametrised tensor folded to
  ``orig * mask`` under its plain name, masks dropped, other tensors (biases,
  BatchNorm statistics, ...) as they are, each in its own dtype. It is
  serialised with ``safetensors`` (``dense_format="safetensors"``, exact size
  computed in memory, no file written) or with ``torch.save`` to a temporary
  file (``dense_format="torch"``).
* ``compressed_bytes``: the size of the file :func:`prunekit.save_sparse`
  writes (to a temporary directory, removed afterwards).
* ``ratio = compressed_bytes / dense_bytes``. For fp32 weights at sparsity
  ``s`` under the bitmask encoding it tends to ``1/32 + (1 - s)`` (0.131 at
  90%), plus headers and the tensors stored dense.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from safetensors.torch import save as safetensors_save
from torch import nn

from ..errors import InvalidParameterError, check_choice
from ..io import logical_tensors, save_sparse

__all__ = ["SizeReport", "model_size", "dense_state_dict", "dense_bytes"]

DENSE_FORMATS = ("safetensors", "torch")


@dataclass(frozen=True)
class SizeReport:
    """Bytes of the dense effective state dict and of the compressed file."""

    dense_bytes: int
    compressed_bytes: int
    dense_format: str

    @property
    def ratio(self) -> float:
        """``compressed_bytes / dense_bytes``."""
        return self.compressed_bytes / self.dense_bytes if self.dense_bytes else 1.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio}


def dense_state_dict(model_or_state_dict: nn.Module | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The dense effective state dict: ``<name>_orig``·``<name>_mask`` folded to
    ``<name>``, in-place masks (``<name>_mask`` next to ``<name>``) dropped,
    everything else kept. Tensors are detached CPU copies."""
    out: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, (state, tensor, mask) in logical_tensors(_as_state_dict(model_or_state_dict)).items():
            if state == "reparam":
                out[name] = (tensor.detach() * mask.to(tensor.dtype)).cpu().contiguous()
            else:
                out[name] = tensor.detach().cpu().contiguous().clone()
    return out


def _as_state_dict(value: Any) -> dict[str, torch.Tensor]:
    if isinstance(value, nn.Module):
        return value.state_dict()
    if isinstance(value, Mapping) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items()):
        return dict(value)
    raise InvalidParameterError(
        "model", "an nn.Module or a state dict {name: tensor}", f"<{type(value).__name__}>",
        "Fix: pass the model or model.state_dict().",
    )


def model_size(
    model: nn.Module | Mapping[str, torch.Tensor], *, dense_format: str = "safetensors"
) -> SizeReport:
    """Bytes of ``model`` stored dense and compressed, and their ratio.

    Args:
        model: a model in any pruning state, or its state dict.
        dense_format: ``"safetensors"`` (default; same container as the
            compressed file, so the ratio compares encodings only) or
            ``"torch"`` (``torch.save`` of the dense state dict).

    Returns:
        :class:`SizeReport` with ``dense_bytes``, ``compressed_bytes`` and
        ``ratio = compressed_bytes / dense_bytes``.
    """
    check_choice("dense_format", dense_format, DENSE_FORMATS)
    state_dict = _as_state_dict(model)
    dense = dense_bytes(state_dict, dense_format=dense_format)
    with tempfile.TemporaryDirectory(prefix="prunekit-size-") as tmp:
        # copies, so tied tensors (one storage under two names) can be saved
        copies = {k: v.detach().cpu().clone() for k, v in state_dict.items()}
        compressed_bytes = save_sparse(copies, os.path.join(tmp, "sparse.safetensors"))
    return SizeReport(int(dense), int(compressed_bytes), dense_format)


def dense_bytes(model: nn.Module | Mapping[str, torch.Tensor], *, dense_format: str = "safetensors") -> int:
    """Bytes of the dense effective state dict of ``model`` (see the module docstring)."""
    check_choice("dense_format", dense_format, DENSE_FORMATS)
    dense = dense_state_dict(model)
    if dense_format == "safetensors":
        return len(safetensors_save(dense))
    with tempfile.TemporaryDirectory(prefix="prunekit-size-") as tmp:
        path = os.path.join(tmp, "dense.pt")
        torch.save(dense, path)
        return os.path.getsize(path)
