"""Saving a model converted by :func:`prunekit.to_sparse`, and loading it without pruning again.

:func:`save_sparse_model` writes the model's state dict as safetensors
(byte-for-byte reproducible, with a checksum: :mod:`prunekit.io.sparse_file`);
each :class:`~.module.SparseLinear` is stored compressed (``mask``, ``values``,
``row_ptr``, ``bias``) and described in the metadata (sizes, dtype, kernel).
:func:`load_sparse_model` takes a freshly built model of the same architecture
(dense, unpruned), puts an empty :class:`~.module.SparseLinear` at each recorded
name and loads the state dict into it: all or nothing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError, InvalidParameterError
from ..io import load_pruned_state_dict
from ..io.sparse_file import read_safetensors, write_safetensors
from ..masks.transaction import all_or_nothing
from .compressed import PAD
from .module import KERNELS, SparseConv1x1, SparseLinear, is_conv1x1
from .outputs import swap_modules

__all__ = ["METADATA_KEY", "load_sparse_model", "save_sparse_model"]

METADATA_KEY = "prunekit_sparse_layers"
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def _check_path(path: Any) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise InvalidParameterError("path", "a file path (str or os.PathLike)", path,
                                    "Fix: e.g. path='model.sparse.safetensors'.")
    return Path(path)


def save_sparse_model(model: nn.Module, path: str | os.PathLike[str]) -> None:
    """Write ``model`` (with its :class:`SparseLinear` layers compressed) to ``path`` as safetensors."""
    path = _check_path(path)
    if not isinstance(model, nn.Module):
        raise InvalidParameterError("model", "a torch.nn.Module", f"<{type(model).__name__}>",
                                    "Fix: pass the model returned in to_sparse(...).model.")
    layers = {name: {"in_features": m.in_features, "out_features": m.out_features, "nnz": m.values.numel() - PAD,
                     "dtype": str(m.dtype).replace("torch.", ""), "bias": m.bias is not None,
                     "kernel": m.kernel, "blocksize": m.blocksize,
                     "layer": "conv1x1" if isinstance(m, SparseConv1x1) else "linear"}
              for name, m in model.named_modules() if isinstance(m, SparseLinear)}
    tensors = {k: v for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
    write_safetensors(path, tensors, {METADATA_KEY: json.dumps(layers, sort_keys=True)})


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors, meta = read_safetensors(path, writer="save_sparse_model")
    try:
        layers = json.loads(meta[METADATA_KEY])
    except KeyError as exc:
        raise CheckpointError(f"checkpoint {str(path)!r} was not written by save_sparse_model (no {METADATA_KEY!r} "
                              "metadata). Fix: load it with the loader that matches its writer.") from exc
    except ValueError as exc:
        raise CheckpointError(f"checkpoint {str(path)!r}: its {METADATA_KEY!r} metadata is not JSON ({exc}). "
                              "Fix: re-save it with save_sparse_model.") from exc
    return tensors, layers


def _empty_layer(path: Path, name: str, info: Any) -> SparseLinear:
    try:
        cls = SparseConv1x1 if info.get("layer") == "conv1x1" else SparseLinear
        return cls(int(info["in_features"]), int(info["out_features"]), nnz=int(info["nnz"]),
                            bias=bool(info["bias"]), dtype=_DTYPES[info["dtype"]],
                            kernel=info["kernel"] if info["kernel"] in KERNELS else "prunekit",
                            blocksize=int(info["blocksize"]))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"checkpoint {str(path)!r}: the description of layer {name!r} is malformed ({exc}). "
                              "Fix: re-save it with save_sparse_model.") from exc


@torch.no_grad()
def load_sparse_model(model: nn.Module, path: str | os.PathLike[str]) -> nn.Module:
    """Load a :func:`save_sparse_model` file into ``model``, a fresh dense instance of the same architecture.

    The Linear layers recorded as sparse are replaced by :class:`SparseLinear`
    (no pruning, no timing again); the rest is loaded as saved. Returns ``model``.
    """
    path = _check_path(path)
    if not isinstance(model, nn.Module):
        raise InvalidParameterError("model", "a torch.nn.Module", f"<{type(model).__name__}>",
                                    "Fix: build the model as it was before to_sparse, then load into it.")
    tensors, layers = _read(path)
    with all_or_nothing(model):
        replacements = {}
        for name, info in layers.items():
            try:
                current = model.get_submodule(name)
            except AttributeError:
                current = None
            layer = _empty_layer(path, name, info)
            conv = isinstance(layer, SparseConv1x1)
            sizes = ((current.in_channels, current.out_channels) if conv and is_conv1x1(current)
                     else (current.in_features, current.out_features)
                     if not conv and isinstance(current, (nn.Linear, SparseLinear)) else None)
            if sizes != (layer.in_features, layer.out_features):
                what = "a 1x1 Conv2d" if conv else "a Linear"
                raise InvalidParameterError(
                    "model", f"a model with {what}({layer.in_features}, {layer.out_features}) at {name!r}",
                    f"<{type(current).__name__ if current is not None else 'nothing'} at {name!r}>",
                    "Fix: build the model with the class and arguments it had when it was converted.")
            replacements[name] = layer
        swap_modules(model, replacements)
        # layers left dense keep their masks (if any): recreated before the values are loaded
        load_pruned_state_dict(model, tensors, strict=True, source=f"checkpoint {str(path)!r}")
    return model
