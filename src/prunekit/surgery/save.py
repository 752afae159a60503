"""Save a shrunk model and load it into a freshly built model of its class.

The file is one safetensors file (``prunekit.io.save_sparse``: masks, if any,
are kept in their mode) whose metadata also holds, as JSON, the removal
history (module, tensor, dim, kept indices) and any ``extra`` entries, and
the state dict's per-module metadata (``state_dict()._metadata``: each
module's ``_version``, which ``_load_from_state_dict`` of, e.g., BatchNorm
and torchvision's MNASNet reads). Loading replays the history on the fresh
model, so its shapes match, then loads the weights with that metadata. Nothing
is unpickled; the metadata is checked like every other field of the file
(module prefixes of the model, string keys, scalar values) before use.
"""

from __future__ import annotations

import json
import logging
import os
from collections import OrderedDict
from collections.abc import Mapping
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
_STATE_KEY = "prunekit-state-metadata"
_SCALARS = (bool, int, float, str, type(None))

logger = logging.getLogger(__name__)


def _state_metadata(state_dict: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The JSON form of ``state_dict._metadata``: ``{module prefix: {key: scalar}}``."""
    found = getattr(state_dict, "_metadata", None) or {}
    out: dict[str, dict[str, Any]] = {}
    for prefix, values in found.items():
        kept = {str(k): v for k, v in dict(values).items() if isinstance(v, _SCALARS)}
        dropped = sorted(str(k) for k in dict(values) if str(k) not in kept)
        if dropped:
            logger.warning("state_dict metadata of %r: non-scalar entries %s not saved", prefix, dropped)
        out[str(prefix)] = kept
    return out


def _checked_state_metadata(raw: Any, model: nn.Module, where: str, strict: bool) -> OrderedDict[str, dict[str, Any]]:
    """``raw`` (from the file) as ``state_dict._metadata`` for ``model``, once every field is checked
    (a prefix that names no module of ``model`` is an error when ``strict``, else skipped)."""
    def bad(problem: str) -> CheckpointError:
        return CheckpointError(f"{where}: field {_STATE_KEY!r} of the metadata {problem} (corrupt or edited file). "
                               "Fix: re-save the model with prunekit.surgery.save_shrunk.")

    if not isinstance(raw, dict):
        raise bad(f"is a {type(raw).__name__}, not a mapping of module prefixes")
    modules = {name for name, _ in model.named_modules()}
    out: OrderedDict[str, dict[str, Any]] = OrderedDict()
    for prefix, values in raw.items():
        if prefix not in modules:
            if strict:
                raise bad(f"names {prefix!r}, which is not a module of this {type(model).__name__}")
            continue
        if not isinstance(values, dict) or not all(isinstance(v, _SCALARS) for v in values.values()):
            raise bad(f"holds {values!r} for {prefix!r}, not a mapping of names to numbers or strings")
        version = values.get("version")
        if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
            raise bad(f"gives {prefix!r} the version {version!r}, not an integer")
        out[prefix] = dict(values)
    return out


def save_shrunk(model: nn.Module, path: str | os.PathLike[str], *, record: SurgeryRecord | None = None) -> int:
    """Write ``model``'s weights and its removal history (or ``record``) to ``path``
    (written atomically). Returns the file size in bytes."""
    if not isinstance(model, nn.Module):
        raise InvalidParameterError("model", "an nn.Module", f"<{type(model).__name__}>")
    history = surgery_history(model) if record is None else record
    state_dict = model.state_dict()
    metadata = {_KEY: history.to_json(), _STATE_KEY: _state_metadata(state_dict)}
    return save_sparse(state_dict, path, metadata=metadata)  # tied weights stored once


def _user_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``user`` metadata of a file :func:`load_sparse` has checked."""
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata() or {}
    try:
        user = json.loads(meta.get("user", "{}"))
    except (json.JSONDecodeError, RecursionError) as exc:
        raise CheckpointError(f"{str(path)!r}: field 'user' of the metadata is not JSON ({exc}) "
                              "(corrupt or edited file).") from exc
    if not isinstance(user, dict):
        raise CheckpointError(f"{str(path)!r}: field 'user' of the metadata is not a JSON object "
                              "(corrupt or edited file).")
    return user


def read_history(path: str | os.PathLike[str]) -> SurgeryRecord:
    """The removal history stored in a file written by :func:`save_shrunk`."""
    load_sparse(path)  # checks the format
    return _history(path, _user_metadata(path))


def _history(path: str | os.PathLike[str], user: Mapping[str, Any]) -> SurgeryRecord:
    try:
        return SurgeryRecord.from_json(user[_KEY])
    except (KeyError, TypeError) as exc:
        raise CheckpointError(
            f"{str(path)!r} has no surgery history ({exc}). Fix: save shrunk models with prunekit.surgery.save_shrunk."
        ) from exc


def load_shrunk(model: nn.Module, path: str | os.PathLike[str], *, strict: bool = True) -> nn.Module:
    """Shrink a freshly built ``model`` of the original class as recorded in ``path``
    and load the saved weights into it; returns the model.

    All or nothing: if the file does not fit ``model`` (another architecture,
    other shapes, missing or extra tensors), the error says so and ``model``
    is left exactly as it was (parameters, buffers, hooks, attributes).
    Each module's ``_load_from_state_dict`` sees the metadata (``version``)
    it had when saved; files written before the metadata was kept load
    without it, as ``load_state_dict`` of a plain dict does.
    """
    if not isinstance(model, nn.Module):
        raise InvalidParameterError("model", "an nn.Module", f"<{type(model).__name__}>",
                                    "Fix: build the model of the saved class first, then load into it.")
    state_dict = OrderedDict(load_sparse(path))  # checks the format
    user = _user_metadata(path)
    history = _history(path, user)
    raw_state_metadata = user.get(_STATE_KEY)
    with all_or_nothing(model):  # surgery replaces tensors and modules; the load below is checked first
        before_replay(model, history.extra)  # attention modules a head surgery replaced
        replay(model, history.removals)
        after_replay(model, history.extra)  # head counts, config
        add_history(model, history)
        if raw_state_metadata is not None:  # read by each module's _load_from_state_dict
            state_dict._metadata = _checked_state_metadata(raw_state_metadata, model, repr(str(path)), strict)
        return load_pruned_state_dict(model, state_dict, strict=strict, source=repr(str(path)))
