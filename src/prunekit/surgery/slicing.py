"""Low-level surgery: keep some indices of one tensor of one module, and fix
the module's shape attributes afterwards.

``keep_slices`` replaces ``module.<tensor_name>`` by
``tensor.index_select(dim, keep)``. A Parameter stays a Parameter (a new
object with the same ``requires_grad``; its ``.grad`` is sliced too), a
buffer stays a buffer. Pruned tensors are understood in both prunekit modes
(see :mod:`prunekit.masks`): ``reparam`` (``<name>_orig`` and ``<name>_mask``
are both sliced and ``<name>`` is recomputed) and ``inplace`` (the parameter
and its bool mask are sliced, the optimizer enforcement is moved to the new
parameter).

Every slice can be kept as plain data (:class:`Removal`) in a
:class:`SurgeryRecord`, which replays on a fresh model of the original class
(:func:`replay`) and serialises to JSON; :mod:`prunekit.surgery.save` uses it.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..coupling.handlers import handler_for
from ..errors import InvalidParameterError
from ..masks import track_inplace, untrack_inplace
from ..targets import find_reparam_hook, tensor_state

__all__ = [
    "keep_slices",
    "update_module_attributes",
    "Removal",
    "ParamSwap",
    "SurgeryRecord",
    "replay",
    "touched_modules",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ParamSwap:
    """A Parameter replaced by a slice of itself (for carrying optimizer state)."""

    old: weakref.ref
    new: nn.Parameter
    dim: int
    keep: torch.Tensor


def _check_keep(module: nn.Module, tensor_name: str, tensor: torch.Tensor, dim: int, keep: torch.Tensor) -> torch.Tensor:
    if not isinstance(keep, torch.Tensor) or keep.dim() != 1 or keep.dtype not in (torch.int64, torch.int32):
        got = f"<{type(keep).__name__}>" if not isinstance(keep, torch.Tensor) else f"<tensor {keep.dtype} {tuple(keep.shape)}>"
        raise InvalidParameterError("keep", "a 1-d integer tensor of indices to keep", got, "Fix: pass torch.tensor([...], dtype=torch.long).")
    if not -tensor.dim() <= dim < tensor.dim():
        raise InvalidParameterError("dim", f"a dim of {tensor_name} (shape {tuple(tensor.shape)})", dim)
    size = tensor.shape[dim]
    keep = keep.to(torch.long)
    if keep.numel() == 0 or int(keep.min()) < 0 or int(keep.max()) >= size or bool((keep[1:] <= keep[:-1]).any()):
        raise InvalidParameterError(
            "keep",
            f"sorted unique indices in [0, {size}) (at least one) for {type(module).__name__}.{tensor_name} dim {dim}",
            f"<{keep.numel()} indices, range {int(keep.min()) if keep.numel() else '-'}..{int(keep.max()) if keep.numel() else '-'}>",
            "Fix: keep at least one index, sorted, without repeats.",
        )
    return keep


def _logical(module: nn.Module, tensor_name: str) -> torch.Tensor:
    state = tensor_state(module, tensor_name)
    if state == "reparam":
        return module._parameters[tensor_name + "_orig"]
    if tensor_name in module._parameters and module._parameters[tensor_name] is not None:
        return module._parameters[tensor_name]
    if tensor_name in module._buffers and module._buffers[tensor_name] is not None:
        return module._buffers[tensor_name]
    raise InvalidParameterError(
        "tensor_name",
        f"a parameter or buffer of {type(module).__name__}",
        tensor_name,
        "Fix: name one of " + ", ".join(repr(n) for n, _ in module.named_parameters(recurse=False)) + ".",
    )


def _sliced_param(old: nn.Parameter, dim: int, keep: torch.Tensor) -> nn.Parameter:
    with torch.no_grad():
        # index_select copies: the new parameter never shares storage with the old one
        new = nn.Parameter(old.detach().index_select(dim, keep.to(old.device)), requires_grad=old.requires_grad)
    if old.grad is not None:
        new.grad = old.grad.detach().index_select(dim, keep.to(old.device))
    return new


def _swap_param(module: nn.Module, key: str, dim: int, keep: torch.Tensor) -> ParamSwap:
    old = module._parameters[key]
    new = _sliced_param(old, dim, keep)
    module._parameters[key] = new
    return ParamSwap(weakref.ref(old), new, dim % old.dim(), keep.clone())


def _slice_buffer(module: nn.Module, key: str, dim: int, keep: torch.Tensor) -> None:
    old = module._buffers[key]
    module._buffers[key] = old.index_select(dim, keep.to(old.device))


def keep_slices(module: nn.Module, tensor_name: str, dim: int, keep: torch.Tensor) -> ParamSwap | None:
    """Keep only the indices ``keep`` of ``module.<tensor_name>`` along ``dim``.

    ``keep`` is a sorted 1-d LongTensor without repeats. Returns the
    :class:`ParamSwap` when a Parameter object was replaced (``None`` for a
    buffer), so optimizer state can follow (:func:`prunekit.surgery.carry_optimizer`).
    Call :func:`update_module_attributes` once the module's tensors are all sliced.
    """
    tensor = _logical(module, tensor_name)
    keep = _check_keep(module, tensor_name, tensor, dim, keep)
    state = tensor_state(module, tensor_name)
    if state == "reparam":
        swap = _swap_param(module, tensor_name + "_orig", dim, keep)
        _slice_buffer(module, tensor_name + "_mask", dim, keep)
        hook = find_reparam_hook(module, tensor_name)
        setattr(module, tensor_name, hook.apply_mask(module))
        return swap
    if state == "inplace":
        untrack_inplace(module, tensor_name)
        swap = _swap_param(module, tensor_name, dim, keep)
        _slice_buffer(module, tensor_name + "_mask", dim, keep)
        track_inplace(module, tensor_name)
        return swap
    if tensor_name in module._parameters:
        return _swap_param(module, tensor_name, dim, keep)
    _slice_buffer(module, tensor_name, dim, keep)
    return None


def _shape(module: nn.Module, name: str) -> tuple[int, ...] | None:
    try:
        return tuple(_logical(module, name).shape)
    except InvalidParameterError:
        return None


def update_module_attributes(module: nn.Module) -> None:
    """Re-derive a module's shape attributes from its (sliced) tensors: the
    ``update_attributes`` of its layer handler (:mod:`prunekit.coupling.handlers`;
    Linear in/out_features, ConvNd channels and groups, norms, Embedding,
    PReLU, Hugging Face Conv1D ...). A module without one is left as is.
    Idempotent.
    """
    handler = handler_for(module)
    if handler is not None and handler.update_attributes is not None:
        handler.update_attributes(module)


# -- record and replay --------------------------------------------------------------


@dataclass(frozen=True)
class Removal:
    """One slice as plain data: ``model.<module>.<tensor>`` keeps ``keep`` along ``dim``."""

    module: str
    tensor: str
    dim: int
    keep: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {"module": self.module, "tensor": self.tensor, "dim": self.dim, "keep": list(self.keep)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Removal:
        return cls(str(data["module"]), str(data["tensor"]), int(data["dim"]), tuple(int(i) for i in data["keep"]))


@dataclass
class SurgeryRecord:
    """What a surgery did: the slices in order, plus (not serialised) the
    Parameter swaps that optimizer state must follow, and per group the kept channels."""

    removals: list[Removal] = field(default_factory=list)
    swaps: list[ParamSwap] = field(default_factory=list, repr=False)
    kept: dict[str, list[int]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def slice(self, model: nn.Module, module_name: str, tensor: str, dim: int, keep: torch.Tensor) -> None:
        """Slice ``model.<module_name>.<tensor>`` and record it (see :func:`keep_slices`)."""
        module = model.get_submodule(module_name)
        swap = keep_slices(module, tensor, dim, keep)
        self.removals.append(Removal(module_name, tensor, int(dim), tuple(keep.to(torch.long).tolist())))
        if swap is not None:
            self.swaps.append(swap)
            _share(model, swap)

    def extend(self, other: SurgeryRecord) -> None:
        self.removals.extend(other.removals)
        self.swaps.extend(other.swaps)
        self.kept.update(other.kept)
        self.extra.update(other.extra)

    def modules(self) -> list[str]:
        return list(dict.fromkeys(r.module for r in self.removals))

    def to_json(self) -> dict[str, Any]:
        return {"removals": [r.to_json() for r in self.removals], "kept": self.kept, "extra": self.extra}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SurgeryRecord:
        return cls(
            removals=[Removal.from_json(r) for r in data.get("removals", [])],
            kept={str(k): [int(i) for i in v] for k, v in data.get("kept", {}).items()},
            extra=dict(data.get("extra", {})),
        )


def _share(model: nn.Module, swap: ParamSwap) -> None:
    """Other modules that held the replaced Parameter (tied weights) get the new one."""
    old = swap.old()
    if old is None:
        return
    for module in model.modules():
        for key, param in module._parameters.items():
            if param is old:
                module._parameters[key] = swap.new


def replay(model: nn.Module, removals: Iterable[Removal]) -> SurgeryRecord:
    """Apply recorded removals to a freshly built model of the original class.

    All module names and shapes are checked before anything is sliced.
    """
    removals = list(removals)
    names = dict(model.named_modules())
    shapes: dict[tuple[str, str], list[int]] = {}
    for r in removals:
        if r.module not in names:
            raise InvalidParameterError("record", f"module names of {type(model).__name__}", r.module, "Fix: load into a model of the class the record was made on.")
        key = (r.module, r.tensor)
        if key not in shapes:
            shape = _shape(names[r.module], r.tensor)
            if shape is None:
                raise InvalidParameterError("record", f"a tensor of {r.module}", r.tensor)
            shapes[key] = list(shape)
        shape = shapes[key]
        if not 0 <= r.dim < len(shape) or not r.keep or max(r.keep) >= shape[r.dim]:
            raise InvalidParameterError("record", f"indices within {r.module}.{r.tensor} of shape {tuple(shape)}", f"<dim {r.dim}, max index {max(r.keep, default=-1)}>")
        shape[r.dim] = len(r.keep)
    record = SurgeryRecord()
    for r in removals:
        record.slice(model, r.module, r.tensor, r.dim, torch.tensor(r.keep, dtype=torch.long))
    for module in touched_modules(model, record):
        update_module_attributes(module)
    return record


def touched_modules(model: nn.Module, record: SurgeryRecord) -> list[nn.Module]:
    """The modules ``record`` sliced, and those holding a parameter it replaced (tied)."""
    names = dict(model.named_modules())
    found = {id(names[n]): names[n] for n in record.modules() if n in names}
    new = {id(s.new) for s in record.swaps}
    for module in model.modules():
        if any(id(p) in new for p in module._parameters.values() if p is not None):
            found.setdefault(id(module), module)
    return list(found.values())
