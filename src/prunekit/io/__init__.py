"""Checkpoints: compressed sparse safetensors, and state dicts of pruned models.

The sparse format ("prunekit-sparse", version 1) is a safetensors file, so
loading it never unpickles anything. Each tensor of the state dict is stored
in the smallest of three encodings:

* ``dense``: the tensor as is;
* ``bitmask``: the keep mask packed 8 entries a byte (``<name>::bitmask``)
  plus the kept values in order (``<name>::values``): numel/8 + nnz·itemsize bytes;
* ``index``: the flat positions of kept entries as int32 (``<name>::index``)
  plus the kept values: nnz·(4 + itemsize) bytes, smaller beyond about 97% sparsity.

The file's metadata records each tensor's shape, dtype, encoding and pruning
state, so a masked tensor comes back masked, in the same mode, bit-exact in its
effective values and masks. In ``reparam`` mode the original values under a
mask (``<name>_orig`` where the mask is 0) are not stored; they come back as 0.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import CheckpointError, InvalidParameterError
from ..files import atomic_write, atomic_write_text, read_json_object
from ..masks import apply_masks, link_consumers, pruned_tensors
from ..masks.transaction import all_or_nothing, check_fits
from ..targets import Target, find_reparam_hook, logical_tensors, tensor_state
from .checks import SEP as _SEP
from .checks import checked_entries, decoded_bytes_limit, dtype_from_name
from .sparse_file import read_safetensors, write_safetensors

__all__ = [
    "FORMAT",
    "atomic_write",
    "atomic_write_text",
    "read_json_object",
    "save_sparse",
    "load_sparse",
    "restore_masks",
    "load_pruned_state_dict",
    "load_state_dict_file",
    "logical_tensors",
]

logger = logging.getLogger(__name__)

FORMAT = "prunekit-sparse"
VERSION = 1


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _pack_bits(keep: torch.Tensor) -> torch.Tensor:
    packed = np.packbits(keep.reshape(-1).cpu().numpy(), bitorder="little")
    return torch.from_numpy(packed)


def _unpack_bits(packed: torch.Tensor, numel: int) -> torch.Tensor:
    bits = np.unpackbits(packed.numpy(), count=numel, bitorder="little")
    return torch.from_numpy(bits.astype(np.bool_))


def _encode(name: str, values_source: torch.Tensor, keep: torch.Tensor, out: dict[str, torch.Tensor]) -> str:
    """Store the entries of ``values_source`` where ``keep``; return the encoding."""
    flat_keep = keep.reshape(-1).cpu()
    values = values_source.detach().reshape(-1).cpu()[flat_keep].contiguous()
    numel, nnz, item = flat_keep.numel(), values.numel(), values_source.element_size()
    sizes = {"bitmask": (numel + 7) // 8 + nnz * item, "index": nnz * (4 + item)}
    if numel >= 2**31:
        del sizes["index"]
    encoding = min(sizes, key=sizes.get)
    if encoding == "bitmask":
        out[name + _SEP + "bitmask"] = _pack_bits(flat_keep)
    else:
        out[name + _SEP + "index"] = torch.nonzero(flat_keep).reshape(-1).to(torch.int32)
    out[name + _SEP + "values"] = values
    return encoding


def _decode(name: str, info: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The dense tensor (zeros where not kept) and the bool keep mask.

    ``info`` must have passed :func:`~prunekit.io.checks.checked_entries`:
    the declared size, dtype, index and bitmask agree with the stored bytes.
    """
    shape = tuple(info["shape"])
    numel = math.prod(shape)
    dtype = dtype_from_name(info["dtype"], name)
    values = tensors[name + _SEP + "values"]
    if info["encoding"] == "bitmask":
        keep = _unpack_bits(tensors[name + _SEP + "bitmask"], numel)
    else:
        keep = torch.zeros(numel, dtype=torch.bool)
        keep[tensors[name + _SEP + "index"].long()] = True
    dense = torch.zeros(numel, dtype=dtype)
    dense[keep] = values
    return dense.reshape(shape), keep.reshape(shape)


# -- save / load sparse -------------------------------------------------------------


def _view_key(tensor: torch.Tensor, mask: torch.Tensor | None) -> tuple[Any, ...]:
    """Identifies tensors that are views of the same memory (tied weights)."""
    key = (tensor.device, tensor.data_ptr(), tensor.dtype, tuple(tensor.shape), tuple(tensor.stride()))
    return key + (() if mask is None else (mask.data_ptr(), tuple(mask.shape)))


def save_sparse(
    model_or_state_dict: nn.Module | Mapping[str, torch.Tensor],
    path: str | os.PathLike[str],
    metadata: Mapping[str, Any] | None = None,
) -> int:
    """Save a pruned model (or state dict) compressed; return the file's size in bytes.

    The size follows the number of non-zeros: at 90% sparsity fp32 weights take
    about 0.13 of their dense size (1 bit of mask + 10% of the values). Tied
    tensors (one memory under several names, e.g. a language-model head and
    its embedding) are stored once and come back as one tensor.
    """
    if isinstance(model_or_state_dict, nn.Module):
        state_dict = model_or_state_dict.state_dict()
    elif isinstance(model_or_state_dict, Mapping):
        state_dict = dict(model_or_state_dict)
    else:
        raise InvalidParameterError(
            "model_or_state_dict", "an nn.Module or a state dict", type(model_or_state_dict).__name__
        )
    tensors: dict[str, torch.Tensor] = {}
    entries: dict[str, dict[str, Any]] = {}
    seen: dict[tuple[Any, ...], str] = {}
    for name, (state, tensor, mask) in logical_tensors(state_dict).items():
        if _SEP in name:
            raise InvalidParameterError("state_dict", f"keys without {_SEP!r}", name)
        info: dict[str, Any] = {"shape": list(tensor.shape), "dtype": _dtype_name(tensor.dtype), "state": state}
        view = _view_key(tensor, mask)
        if view in seen:  # a tied tensor: stored once, the other names refer to it
            info["alias"] = seen[view]
            entries[name] = info
            continue
        seen[view] = name
        if state == "reparam":
            info["mask_dtype"] = _dtype_name(mask.dtype)
            info["encoding"] = _encode(name, tensor, mask != 0, tensors)
        elif state == "inplace":
            info["encoding"] = _encode(name, tensor, mask.bool(), tensors)
        elif tensor.is_floating_point() and tensor.numel() >= 64:
            keep = tensor != 0
            nnz = int(keep.sum())
            if (tensor.numel() + 7) // 8 + nnz * tensor.element_size() < tensor.numel() * tensor.element_size():
                info["state"] = "zeros"
                info["encoding"] = _encode(name, tensor, keep, tensors)
            else:
                info["encoding"] = "dense"
                tensors[name] = tensor.detach().cpu().contiguous()
        else:
            info["encoding"] = "dense"
            tensors[name] = tensor.detach().cpu().contiguous().clone()
        entries[name] = info
    header = {
        "format": FORMAT,
        "version": str(VERSION),
        "tensors": json.dumps(entries),
        "user": json.dumps(dict(metadata or {})),
    }
    write_safetensors(path, tensors, header)
    return os.path.getsize(path)


def _read_safetensors(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The stored tensors (at most the file's size in memory) and the string metadata."""
    if path is None or not isinstance(path, (str, os.PathLike)):
        raise InvalidParameterError("path", "a path to a checkpoint file", path, "Fix: pass the file's path.")
    return read_safetensors(path)


def _entries(path: str | os.PathLike[str], meta: Mapping[str, str]) -> Any:
    where = str(path)
    if meta.get("format") != FORMAT:
        raise CheckpointError(
            f"{where!r} is a safetensors file but not a prunekit sparse checkpoint. "
            "Fix: load plain safetensors with safetensors.torch.load_file or prunekit.load_state_dict_file."
        )
    if meta.get("version") != str(VERSION):
        raise CheckpointError(f"{where!r}: field 'version' is {meta.get('version')!r}; this prunekit reads "
                              f"{VERSION}. Fix: load it with the prunekit version that wrote it.")
    try:
        return json.loads(meta["tensors"])
    except (KeyError, json.JSONDecodeError, RecursionError) as exc:
        raise CheckpointError(f"{where!r}: field 'tensors' of the metadata is missing or not JSON ({exc}) "
                              "(corrupt or edited file).") from exc


def load_sparse(
    path: str | os.PathLike[str], model: nn.Module | None = None, *, strict: bool = True,
    max_decoded_bytes: int | None = None,
) -> dict[str, torch.Tensor] | nn.Module:
    """Load a file written by :func:`save_sparse`.

    Without ``model``: the state dict in the layout it was saved in
    (``<name>_orig``/``<name>_mask`` for reparametrised tensors). With
    ``model``: masks are recreated on the model in the saved mode, the values
    are loaded, and the model is returned.

    Loading never runs code from the file and checks every field of its
    metadata against the stored bytes (and the file's checksum, when it has
    one) before decoding: any inconsistency is a :class:`CheckpointError`
    naming the tensor and the field. ``max_decoded_bytes`` bounds the memory
    the decoded tensors may take; by default 64 times the file's size plus
    64 MiB, so a small file cannot declare a huge tensor.
    """
    tensors, meta = _read_safetensors(path)
    state_dict = _sparse_state_dict(path, tensors, meta, max_decoded_bytes)
    if model is None:
        return state_dict
    return load_pruned_state_dict(model, state_dict, strict=strict)


def _sparse_state_dict(path: str | os.PathLike[str], tensors: Mapping[str, torch.Tensor],
                       meta: Mapping[str, str], max_decoded_bytes: int | None) -> dict[str, torch.Tensor]:
    entries = _entries(path, meta)
    if max_decoded_bytes is None:
        limit = decoded_bytes_limit(os.path.getsize(path))
    elif isinstance(max_decoded_bytes, int) and not isinstance(max_decoded_bytes, bool) and max_decoded_bytes >= 0:
        limit = max_decoded_bytes
    else:
        raise InvalidParameterError("max_decoded_bytes", "None or a non-negative integer", max_decoded_bytes,
                                    "Fix: pass the number of bytes the decoded tensors may take.")
    entries = checked_entries(entries, tensors, limit=limit, source=str(path))
    state_dict: dict[str, torch.Tensor] = {}
    for name, info in entries.items():
        if "alias" in info:
            continue
        if info["encoding"] == "dense":
            state_dict[name] = tensors[name]
            continue
        dense, keep = _decode(name, info, tensors)
        if info["state"] == "reparam":
            state_dict[name + "_orig"] = dense
            state_dict[name + "_mask"] = keep.to(dtype_from_name(info["mask_dtype"], name, "mask_dtype"))
        elif info["state"] == "inplace":
            state_dict[name] = dense
            state_dict[name + "_mask"] = keep
        else:
            state_dict[name] = dense
    for name, info in entries.items():
        if "alias" in info:  # tied tensors come back as one tensor under every name
            source = info["alias"]
            for suffix in ("", "_orig", "_mask"):
                if source + suffix in state_dict:
                    state_dict[name + suffix] = state_dict[source + suffix]
    return state_dict


def load_state_dict_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Any state-dict file: prunekit sparse, plain safetensors, or a torch file
    loaded with ``weights_only=True`` (never unpickling code).

    A prunekit sparse file is checked and bounded as in :func:`load_sparse`.
    """
    if path is None or not isinstance(path, (str, os.PathLike)):
        raise InvalidParameterError("path", "a path to a checkpoint file", path, "Fix: pass the file's path.")
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist or is not a file. Fix: check the path.")
    if path.suffix == ".safetensors":
        tensors, meta = _read_safetensors(path)
        if meta.get("format") == FORMAT:
            return _sparse_state_dict(path, tensors, meta, None)
        return tensors
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or unsafe files
        raise CheckpointError(
            f"could not read {str(path)!r} as a torch checkpoint with weights_only=True ({exc}). "
            "Fix: save a state dict (not a whole model) or use safetensors."
        ) from exc
    if isinstance(loaded, Mapping) and "state_dict" in loaded and isinstance(loaded["state_dict"], Mapping):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, Mapping) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise CheckpointError(f"{str(path)!r} does not hold a state dict of tensors.")
    return dict(loaded)


# -- state dicts of pruned models -----------------------------------------------------


def restore_masks(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    """Recreate on ``model`` the masks that ``state_dict`` has, in the same mode.

    Then ``model.load_state_dict(state_dict)`` loads bit-exactly. Tensors
    already masked the same way are left as they are.
    """
    modules = dict(model.named_modules())
    targets, keeps, modes = [], [], []
    for name, (state, _tensor, mask) in logical_tensors(state_dict).items():
        if state == "dense":
            continue
        module_name, _, pname = name.rpartition(".")
        module = modules.get(module_name)
        if module is None or (pname not in module._parameters and pname + "_orig" not in module._parameters):
            raise InvalidParameterError(
                "state_dict", "masked tensors that exist in the model", name,
                "Fix: load into a model of the same architecture.",
            )
        current = tensor_state(module, pname)
        if current == state:
            continue
        if current != "dense":
            raise InvalidParameterError(
                "model", f"{name} dense or pruned in {state!r} mode", f"<pruned in {current!r} mode>",
                "Fix: load into a freshly built model.",
            )
        targets.append(Target(name, module_name, module, pname))
        keeps.append(torch.ones(mask.shape, dtype=torch.bool))
        modes.append(state)
    with all_or_nothing(model):  # a second mode's masks may fail after the first's are on
        for mode in ("reparam", "inplace"):
            chosen = [i for i, m in enumerate(modes) if m == mode]
            if chosen:
                apply_masks([targets[i] for i in chosen], [keeps[i] for i in chosen], mode=mode, description="restored")
        link_consumers(model)
    return model


def load_pruned_state_dict(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], *, strict: bool = True,
    source: str = "the state dict",
) -> nn.Module:
    """Recreate masks and load ``state_dict`` into a freshly built ``model``; all or nothing
    (keys and shapes are checked before a value is written; ``source`` names the origin in errors)."""
    with all_or_nothing(model):
        restore_masks(model, state_dict)
        check_fits(model, state_dict, strict=strict, source=source)
    model.load_state_dict(state_dict, strict=strict)
    for _q, module, name, state in pruned_tensors(model):
        if state == "reparam":
            hook = find_reparam_hook(module, name)
            setattr(module, name, hook.apply_mask(module))
    return model
