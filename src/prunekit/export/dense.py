"""Masked models as plain dense safetensors: the effective weights, zeros in place, under a plain model's names.

prunekit's compressed format (:func:`prunekit.save_sparse`) is small but needs
prunekit to read. :func:`save_dense` writes what any safetensors reader loads:
for each masked tensor the effective value ``orig · mask`` (reparametrised) or
the zeroed parameter (in place), stored as ``weight``, never as
``weight_orig`` / ``weight_mask``. ``safetensors.torch.load_file`` then a
plain ``load_state_dict`` into a fresh, unpruned model of the same class gives
the pruned model's outputs. The bytes are reproducible (tensors in name order,
sorted header, a ``sha256`` of the file in its metadata) and the write is atomic.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..errors import InvalidParameterError
from ..io.sparse_file import write_safetensors
from ..targets import logical_tensors

__all__ = ["DENSE_FORMAT", "dense_state_dict", "save_dense"]

#: the ``format`` field of a dense file's metadata
DENSE_FORMAT = "prunekit-dense"


def _state(model_or_state_dict: Any) -> Mapping[str, torch.Tensor]:
    if isinstance(model_or_state_dict, nn.Module):
        return model_or_state_dict.state_dict()
    if isinstance(model_or_state_dict, Mapping):
        return model_or_state_dict
    raise InvalidParameterError("model_or_state_dict", "an nn.Module or a state dict",
                                f"<{type(model_or_state_dict).__name__}>", "Fix: pass the pruned model itself.")


@torch.no_grad()
def dense_state_dict(model_or_state_dict: nn.Module | Mapping[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
    """The state dict an unpruned model of the same class has, holding the effective (masked) values.

    A reparametrised tensor (``<name>_orig``, ``<name>_mask``) becomes
    ``<name> = orig · mask``; an in-place masked one (``<name>``, ``<name>_mask``)
    becomes ``<name> · mask``; other tensors are copied as they are. Tensors are
    detached copies on the CPU, in the model's order.
    """
    state = _state(model_or_state_dict)
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for name, (kind, tensor, mask) in logical_tensors(state).items():
        value = tensor.detach()
        if kind in ("reparam", "inplace") and mask is not None:
            value = value * mask.detach().to(value.dtype)
        out[name] = value.cpu().contiguous().clone()
    return out


def save_dense(model_or_state_dict: nn.Module | Mapping[str, torch.Tensor], path: str | os.PathLike[str],
               metadata: Mapping[str, Any] | None = None) -> int:
    """Save a pruned model as plain dense safetensors (zeros in place); return the file's size in bytes.

    The file holds :func:`dense_state_dict`: names as a plain model's, so
    ``model.load_state_dict(safetensors.torch.load_file(path))`` into a fresh,
    unpruned model gives the pruned model's outputs, with no prunekit installed.
    Same model, same bytes; written atomically.

    Args:
        model_or_state_dict: a pruned model (any mask mode, or torch's
            ``torch.nn.utils.prune``) or its state dict.
        path: the ``.safetensors`` file to write.
        metadata: string-able values stored under ``user`` in the file's metadata.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise InvalidParameterError("path", "a file path (str or os.PathLike)", path,
                                    "Fix: e.g. path='model.dense.safetensors'.")
    tensors = dense_state_dict(model_or_state_dict)
    header = {"format": DENSE_FORMAT, "user": json.dumps(dict(metadata or {}), sort_keys=True)}
    write_safetensors(path, tensors, header)
    return os.path.getsize(path)
