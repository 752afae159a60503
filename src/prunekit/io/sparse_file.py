"""The bytes of a sparse checkpoint: safetensors written in one fixed order, with a checksum.

``safetensors.torch.save_file`` orders the metadata through a hash map, so the
same model saved twice gives different bytes. This writer lays the header out
with sorted keys and the tensors in name order, so equal state dicts give
equal files, and it records ``sha256`` in the metadata: the SHA-256 of the
whole file with that value replaced by 64 zeros. A reader that finds the
field checks it before trusting anything else in the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
from collections.abc import Callable, Mapping

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from ..errors import CheckpointError
from ..files import atomic_write

__all__ = ["CHECKSUM_KEY", "safetensors_writer", "verify_checksum", "write_safetensors"]

CHECKSUM_KEY = "sha256"
_ZEROS = "0" * 64
_HEX = re.compile(r"[0-9a-f]{64}")
_MAX_HEADER = 100 * 2**20  # the limit safetensors itself applies

_CODES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL",
}
for _name, _code in (("float8_e4m3fn", "F8_E4M3"), ("float8_e5m2", "F8_E5M2"), ("uint16", "U16"),
                     ("uint32", "U32"), ("uint64", "U64")):
    if hasattr(torch, _name):
        _CODES[getattr(torch, _name)] = _code


def _header_bytes(header: Mapping[str, object]) -> bytes:
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text


def write_safetensors(path: str | os.PathLike[str], tensors: Mapping[str, torch.Tensor],
                      metadata: Mapping[str, str]) -> None:
    """Write ``tensors`` and string ``metadata`` as safetensors, byte-for-byte reproducibly, atomically."""
    atomic_write(path, safetensors_writer(tensors, metadata))


def safetensors_writer(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> Callable[[str], None]:
    """A function writing ``tensors`` and ``metadata`` to a path as safetensors: tensors in name
    order, header keys sorted and a ``sha256`` of the whole file in the metadata, so the same
    tensors always give the same bytes (for writers that manage their own atomic write)."""
    header: dict[str, object] = {}
    blobs: list[bytes] = []
    offset = 0
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        if tensor.dtype not in _CODES:
            raise CheckpointError(f"tensor {name!r}: dtype {tensor.dtype} cannot be stored in safetensors")
        data = tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b""
        header[name] = {"dtype": _CODES[tensor.dtype], "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    meta = {str(k): str(v) for k, v in metadata.items()}
    meta[CHECKSUM_KEY] = _ZEROS
    header["__metadata__"] = meta
    digest = hashlib.sha256(_header_bytes(header))
    for blob in blobs:
        digest.update(blob)
    meta[CHECKSUM_KEY] = digest.hexdigest()
    head = _header_bytes(header)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            handle.write(head)
            for blob in blobs:
                handle.write(blob)

    return write


def verify_checksum(path: str | os.PathLike[str]) -> bool:
    """Check the file's ``sha256`` metadata against its bytes.

    Returns False when the file has no such field (files written before it
    existed), True when it matches; raises :class:`CheckpointError` otherwise.
    """
    where = str(path)
    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise CheckpointError(f"checkpoint {where!r} is truncated: {size} bytes, no safetensors header.")
        (length,) = struct.unpack("<Q", prefix)
        if length > min(_MAX_HEADER, size - 8):
            raise CheckpointError(f"checkpoint {where!r}: field 'header length' declares {length} bytes; "
                                  f"the file has {size - 8} after it (truncated or corrupt).")
        raw = handle.read(length)
        try:
            header = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise CheckpointError(f"checkpoint {where!r}: the safetensors header is not JSON ({exc}).") from exc
        meta = header.get("__metadata__") if isinstance(header, dict) else None
        if not isinstance(meta, dict) or CHECKSUM_KEY not in meta:
            return False
        expected = meta[CHECKSUM_KEY]
        quoted = json.dumps(expected).encode("utf-8") if isinstance(expected, str) else b""
        if not isinstance(expected, str) or not _HEX.fullmatch(expected) or raw.count(quoted) != 1:
            raise CheckpointError(f"checkpoint {where!r}: field {CHECKSUM_KEY!r} of the metadata is malformed "
                                  f"(corrupt or edited file). Fix: re-save it with prunekit.save_sparse.")
        digest = hashlib.sha256(prefix + raw.replace(quoted, json.dumps(_ZEROS).encode("utf-8")))
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    if digest.hexdigest() != expected:
        raise CheckpointError(f"checkpoint {where!r}: field {CHECKSUM_KEY!r}: the file's bytes do not match "
                              "its checksum (corrupt or edited file). Fix: re-save it with prunekit.save_sparse, "
                              "or restore it from a good copy.")
    return True


def read_safetensors(path: str | os.PathLike[str], writer: str = "prunekit.save_sparse"
                     ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The stored tensors (at most the file's size in memory) and the string metadata of a
    safetensors file, its ``sha256`` checked first; any failure is a :class:`CheckpointError`
    whose fix names ``writer``, the function that wrote such files."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist or is not a file. Fix: check the path.")
    try:
        verify_checksum(path)
        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError, OverflowError) as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(
            f"checkpoint {str(path)!r} is not a readable safetensors file ({exc}). "
            f"Fix: re-save it with {writer}; it may be truncated or corrupt."
        ) from exc
    return tensors, meta

