"""All or nothing: put a model's structure back as it was when a call that changes it fails.

:class:`ModelSnapshot` records, for every module of a model, its attribute
dictionary with shallow copies of its containers (parameters, buffers,
submodules, hooks), and the root's ``config`` attributes (Hugging Face
models). :meth:`ModelSnapshot.restore` puts each container's old contents back
into the same container object (so hook handles stay valid) and every other
attribute back to its old value. With ``values=True`` it also keeps a copy of
every parameter and buffer and writes it back, for calls that write into
tensors in place; without it, restoring is exact for calls that only replace
tensors, modules and hooks or swap a parameter's storage (surgery, mask
realisation, making masks permanent) and costs no memory.

Use :func:`all_or_nothing` around the part of a call that changes the model.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from ..errors import InvalidParameterError
from ..targets import tensor_state
from .inplace import track_inplace, untrack_inplace

__all__ = ["ModelSnapshot", "all_or_nothing", "check_fits"]

_CONTAINERS = (dict, set, list)


def _copy(value: Any) -> Any:
    try:
        return type(value)(value)
    except TypeError:
        return dict(value) if isinstance(value, dict) else list(value)


class ModelSnapshot:
    """The structure (and optionally the values) of ``model`` now, to restore after a failure."""

    def __init__(self, model: nn.Module, *, values: bool = False) -> None:
        self.model = model
        self._modules: list[tuple[nn.Module, dict[str, tuple[Any, Any]]]] = []
        self._inplace: set[tuple[int, str]] = set()
        for module in model.modules():
            attrs = {key: (value, _copy(value) if isinstance(value, _CONTAINERS) else value)
                     for key, value in vars(module).items()}
            self._modules.append((module, attrs))
            self._inplace.update((id(module), name) for name in list(module._parameters)
                                 if tensor_state(module, name) == "inplace")
        config = getattr(model, "config", None)
        self._config = (config, dict(vars(config))) if config is not None and hasattr(config, "__dict__") else None
        # ``param.data = other`` (as ``torch.nn.utils.prune.remove`` does) swaps a parameter's storage:
        # keep an alias of each one (no copy) to swap it back
        self._data = [(p, p.data) for module in model.modules() for p in module._parameters.values() if p is not None]
        self._values: list[tuple[torch.Tensor, torch.Tensor]] = []
        if values:
            seen: set[int] = set()
            for module in model.modules():
                for tensor in [*module._parameters.values(), *module._buffers.values()]:
                    if tensor is not None and id(tensor) not in seen:
                        seen.add(id(tensor))
                        self._values.append((tensor, tensor.detach().clone()))

    @torch.no_grad()
    def restore(self) -> None:
        """Put every recorded attribute, container and value back."""
        for module, attrs in self._modules:
            for name in list(module._parameters):  # masks realised in place since the snapshot
                if (id(module), name) not in self._inplace and tensor_state(module, name) == "inplace":
                    untrack_inplace(module, name)
        for module, attrs in self._modules:
            current = vars(module)
            for key in [k for k in current if k not in attrs]:
                del current[key]
            for key, (obj, saved) in attrs.items():
                if isinstance(obj, _CONTAINERS):
                    obj.clear()
                    if isinstance(obj, list):
                        obj.extend(saved)
                    else:
                        obj.update(saved)
                current[key] = obj
        for param, data in self._data:
            if param.data.data_ptr() != data.data_ptr() or param.shape != data.shape or param.dtype != data.dtype:
                param.data = data
        if self._config is not None:
            config, saved = self._config
            vars(config).clear()
            vars(config).update(saved)
        for module, _attrs in self._modules:  # in-place masks removed since the snapshot are tracked again
            for name in list(module._parameters):
                if (id(module), name) in self._inplace:
                    track_inplace(module, name)
        for tensor, copy in self._values:
            tensor.copy_(copy)


@contextmanager
def all_or_nothing(model: nn.Module, *, values: bool = False) -> Iterator[ModelSnapshot]:
    """Run the ``with`` body; if it raises, restore ``model`` (see :class:`ModelSnapshot`) and re-raise."""
    snapshot = ModelSnapshot(model, values=values)
    try:
        yield snapshot
    except BaseException:
        snapshot.restore()
        raise


def check_fits(model: nn.Module, state_dict: Mapping[str, torch.Tensor], *, strict: bool = True,
               source: str = "the state dict") -> None:
    """Refuse, before any value is written, a state dict whose shapes (and with ``strict``, keys)
    do not fit ``model``: ``model.load_state_dict`` would copy the tensors that fit and then raise."""
    expected = model.state_dict()
    wrong = [f"{k} {tuple(v.shape)} (model {tuple(expected[k].shape)})" for k, v in state_dict.items()
             if k in expected and isinstance(v, torch.Tensor) and tuple(v.shape) != tuple(expected[k].shape)]
    missing = [k for k in expected if k not in state_dict] if strict else []
    unexpected = [k for k in state_dict if k not in expected] if strict else []
    if not (wrong or missing or unexpected):
        return
    parts = [f"{label} {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''} ({len(keys)})"
             for label, keys in (("shape mismatches:", wrong), ("missing:", missing), ("unexpected:", unexpected))
             if keys]
    raise InvalidParameterError(
        "model", f"a model of the architecture {source} was saved from",
        f"<{type(model).__name__}; {'; '.join(parts)}>",
        "Fix: build the model with the class and arguments it had when it was saved, then load into it.",
    )
