"""Every field of a sparse checkpoint's metadata, checked against the stored bytes before decoding.

A sparse checkpoint's metadata says, for each tensor, its shape, dtype,
pruning state and encoding; the stored tensors hold the kept values and a
bitmask or a sorted index. Nothing is decoded (nothing the size of a declared
shape is allocated) until every entry agrees with what is stored: index
range, sign, order and uniqueness; the values' dtype equal to the declared
one; the bitmask's length and count; aliases naming a stored entry; and the
total decoded size within what the file can encode. Any disagreement is a
:class:`~prunekit.errors.CheckpointError` naming the tensor and the field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError

__all__ = ["SEP", "STATES", "checked_entries", "decoded_bytes_limit", "dtype_from_name", "stored_names"]

SEP = "::"
STATES = ("dense", "zeros", "reparam", "inplace")
_ENCODINGS = ("dense", "bitmask", "index")
_KEYS = {"shape", "dtype", "state", "encoding", "mask_dtype", "alias"}
_MAX_DIMS = 64
_INDEX_LIMIT = 2**31 - 1
#: Decoded bytes a file may declare: this many times its size on disk, plus a fixed allowance.
DECODED_PER_FILE_BYTE = 64
DECODED_ALLOWANCE = 64 * 2**20
_DTYPES = {str(d).removeprefix("torch."): d for d in (
    torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32,
    torch.int16, torch.int8, torch.uint8, torch.bool,
)}


def decoded_bytes_limit(file_bytes: int) -> int:
    """The most bytes the tensors decoded from a file of ``file_bytes`` may take by default."""
    return DECODED_PER_FILE_BYTE * file_bytes + DECODED_ALLOWANCE


def dtype_from_name(name: Any, tensor: str = "?", field: str = "dtype") -> torch.dtype:
    if not isinstance(name, str) or name not in _DTYPES:
        raise CheckpointError(f"tensor {tensor!r}: field {field!r} is {name!r}, not one of {sorted(_DTYPES)}.")
    return _DTYPES[name]


def stored_names(name: str, encoding: str) -> tuple[str, ...]:
    """The stored tensors an entry of this encoding owns."""
    if encoding == "dense":
        return (name,)
    return (name + SEP + encoding, name + SEP + "values")


def _fail(name: str, field: str, problem: str) -> CheckpointError:
    return CheckpointError(f"tensor {name!r}: field {field!r} {problem} (corrupt or edited file). "
                           "Fix: re-save the model with prunekit.save_sparse, or restore the file from a good copy.")


def _shape(name: str, info: Mapping[str, Any]) -> tuple[int, ...]:
    shape = info.get("shape")
    if not isinstance(shape, list) or len(shape) > _MAX_DIMS or not all(
        type(d) is int and d >= 0 for d in shape
    ):
        raise _fail(name, "shape", f"is {shape!r}, not a list of at most {_MAX_DIMS} non-negative integers")
    return tuple(shape)


def _stored(name: str, field: str, tensors: Mapping[str, torch.Tensor], key: str,
            dtype: torch.dtype, shape: tuple[int, ...] | None = None) -> torch.Tensor:
    tensor = tensors.get(key)
    if tensor is None:
        raise _fail(name, field, f"needs the stored tensor {key!r}, which the file lacks")
    if tensor.dtype != dtype:
        raise _fail(name, field, f"declares {dtype}, but {key!r} is stored as {tensor.dtype}")
    if shape is not None and tuple(tensor.shape) != shape:
        raise _fail(name, field, f"declares shape {list(shape)}, but {key!r} has {list(tensor.shape)}")
    return tensor


def _check_encoded(name: str, info: Mapping[str, Any], numel: int, dtype: torch.dtype,
                   tensors: Mapping[str, torch.Tensor]) -> None:
    values = tensors.get(name + SEP + "values")
    if values is None or values.dim() != 1:
        raise _fail(name, "encoding", f"needs a 1-D stored tensor {name + SEP + 'values'!r}")
    _stored(name, "dtype", tensors, name + SEP + "values", dtype)
    nnz = values.numel()
    if nnz > numel:
        raise _fail(name, "shape", f"holds {numel} entries but {nnz} values are stored")
    if info["encoding"] == "bitmask":
        packed = _stored(name, "shape", tensors, name + SEP + "bitmask", torch.uint8, ((numel + 7) // 8,))
        bits = np.unpackbits(packed.numpy(), bitorder="little")
        if bits[numel:].any():
            raise _fail(name, "bitmask", "has bits set beyond the tensor's last entry")
        if int(bits.sum()) != nnz:
            raise _fail(name, "bitmask", f"keeps {int(bits.sum())} entries but {nnz} values are stored")
    else:
        if numel > _INDEX_LIMIT:
            raise _fail(name, "encoding", f"'index' cannot address {numel} entries (int32 positions)")
        index = _stored(name, "encoding", tensors, name + SEP + "index", torch.int32, (nnz,)).numpy()
        if nnz and (int(index.min()) < 0 or int(index.max()) >= numel):
            raise _fail(name, "index", f"has positions outside [0, {numel}) (negative or out of range)")
        if nnz > 1 and not bool((np.diff(index.astype(np.int64)) > 0).all()):
            raise _fail(name, "index", "is not strictly increasing (unsorted or repeated positions)")


def _check_entry(name: str, info: Any, tensors: Mapping[str, torch.Tensor]) -> int:
    """Check one entry; return the bytes its decoded tensors take."""
    if not isinstance(info, dict):
        raise _fail(name, "<entry>", f"is a {type(info).__name__}, not an object")
    unknown = sorted(set(info) - _KEYS)
    if unknown:
        raise _fail(name, unknown[0], "is not a field of this format")
    numel = math.prod(_shape(name, info))
    dtype = dtype_from_name(info.get("dtype"), name)
    state = info.get("state")
    if state not in STATES:
        raise _fail(name, "state", f"is {state!r}, not one of {list(STATES)}")
    if "alias" in info:
        if not isinstance(info["alias"], str) or set(info) - {"shape", "dtype", "state", "alias"}:
            raise _fail(name, "alias", f"is {info['alias']!r}; an alias is the name of a stored entry, "
                        "with only shape, dtype and state of its own")
        return 0
    if state == "reparam":
        mask_item = dtype_from_name(info.get("mask_dtype"), name, "mask_dtype").itemsize
    elif "mask_dtype" in info:
        raise _fail(name, "mask_dtype", f"is set, but the state is {state!r}, not 'reparam'")
    else:
        mask_item = 1 if state == "inplace" else 0
    encoding = info.get("encoding")
    if encoding not in _ENCODINGS:
        raise _fail(name, "encoding", f"is {encoding!r}, not one of {list(_ENCODINGS)}")
    if (encoding == "dense") != (state == "dense"):
        raise _fail(name, "encoding", f"is {encoding!r}, which the state {state!r} is never stored in")
    if encoding == "dense":
        _stored(name, "dtype", tensors, name, dtype, tuple(info["shape"]))
    else:
        _check_encoded(name, info, numel, dtype, tensors)
    return numel * (dtype.itemsize + mask_item + (0 if encoding == "dense" else 1))


def checked_entries(entries: Any, tensors: Mapping[str, torch.Tensor], *, limit: int | None,
                    source: str) -> dict[str, dict[str, Any]]:
    """The metadata's entries once every field agrees with ``tensors``.

    ``limit``: the most bytes all decoded tensors may take together (None: no limit).
    """
    if not isinstance(entries, dict):
        raise CheckpointError(f"{source!r}: field 'tensors' of the metadata is a {type(entries).__name__}, "
                              "not an object (corrupt or edited file).")
    total = 0
    owned: set[str] = set()
    keys: set[str] = set()
    for name, info in entries.items():
        if not name or SEP in name:
            raise _fail(name, "<name>", f"must be non-empty and without {SEP!r}")
        total += _check_entry(name, info, tensors)
        state = info["state"]
        produced = {"reparam": ("_orig", "_mask"), "inplace": ("", "_mask")}.get(state, ("",))
        for suffix in produced:
            if name + suffix in keys:
                raise _fail(name, "<name>", f"gives the key {name + suffix!r} that another entry gives too")
            keys.add(name + suffix)
        if "alias" not in info:
            owned.update(stored_names(name, info["encoding"]))
    for name, info in entries.items():
        if "alias" in info:
            source_info = entries.get(info["alias"])
            if not isinstance(source_info, dict) or "alias" in source_info:
                raise _fail(name, "alias", f"names {info['alias']!r}, which is not a stored entry")
            for field in ("shape", "dtype", "state"):
                if info.get(field) != source_info.get(field):
                    raise _fail(name, field, f"differs from that of its alias {info['alias']!r}")
    extra = sorted(set(tensors) - owned)
    if extra:
        raise _fail(extra[0], "<stored>", "is stored but no metadata entry uses it")
    if limit is not None and total > limit:
        raise CheckpointError(
            f"{source!r}: the metadata declares tensors that decode to {total:,} bytes, more than this file "
            f"can encode ({limit:,} bytes; corrupt or edited file). Fix: if you trust the file, load it with "
            f"prunekit.load_sparse(path, max_decoded_bytes={total})."
        )
    return entries
