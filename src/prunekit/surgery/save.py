"""Save a shrunk model and load it into a freshly built model of its class.

The file is one safetensors file (``prunekit.io.save_sparse``: masks, if any,
are kept in their mode) whose metadata also holds, as JSON, the removal
history (module, tensor, dim, kept indices) and any ``extra`` entries. Loading
replays the history on the fresh model, so its shapes match, then loads the
weights. Nothing is unpickled.
"""

from __future__ import annotations

import json
import os
from typing import Any

from safetensors import safe_open
from torch import nn

from ..errors import CheckpointError, InvalidParameterError
from ..io import load_pruned_state_dict, load_sparse, save_sparse
from ..masks.transaction import all_or_nothing
from .heads import after_replay, before_replay
from .history import add_history, surgery_history
from .slicing import SurgeryRecord, replay

__all__ = ["save_shrunk", "load_shrunk", "read_history"]

_KEY = "prunekit-surgery"


def save_shrunk(model: nn.Module, path: str | os.PathLike[str], *, record: SurgeryRecord | None = None) -> int:
    """Write ``model``'s weights and its removal history (or ``record``) to ``path``
    (written atomically). Returns the file size in bytes."""
    if not isinstance(model, nn.Module):
        raise InvalidParameterError("model", "an nn.Module", f"<{type(model).__name__}>")
    history = surgery_history(model) if record is None else record
    return save_sparse(model.state_dict(), path, metadata={_KEY: history.to_json()})  # tied weights stored once


def read_history(path: str | os.PathLike[str]) -> SurgeryRecord:
    """The removal history stored in a file written by :func:`save_shrunk`."""
    load_sparse(path)  # checks the format
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata() or {}
    try:
        user: dict[str, Any] = json.loads(meta.get("user", "{}"))
        return SurgeryRecord.from_json(user[_KEY])
    except (KeyError, json.JSONDecodeError, TypeError) as exc:
        raise CheckpointError(
            f"{str(path)!r} has no surgery history ({exc}). Fix: save shrunk models with prunekit.surgery.save_shrunk."
        ) from exc


def load_shrunk(model: nn.Module, path: str | os.PathLike[str], *, strict: bool = True) -> nn.Module:
    """Shrink a freshly built ``model`` of the original class as recorded in ``path``
    and load the saved weights into it; returns the model.

    All or nothing: if the file does not fit ``model`` (another architecture,
    other shapes, missing or extra tensors), the error says so and ``model``
    is left exactly as it was (parameters, buffers, hooks, attributes).
    """
    if not isinstance(model, nn.Module):
        raise InvalidParameterError("model", "an nn.Module", f"<{type(model).__name__}>",
                                    "Fix: build the model of the saved class first, then load into it.")
    history = read_history(path)
    state_dict = load_sparse(path)
    with all_or_nothing(model):  # surgery replaces tensors and modules; the load below is checked first
        before_replay(model, history.extra)  # attention modules a head surgery replaced
        replay(model, history.removals)
        after_replay(model, history.extra)  # head counts, config
        add_history(model, history)
        return load_pruned_state_dict(model, state_dict, strict=strict, source=repr(str(path)))
