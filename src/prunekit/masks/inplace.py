"""The ``inplace`` realisation: lean zeros, a bool mask and an optimizer hook.

The parameter stays where it is, its pruned entries are zeroed in place and a
bool ``<name>_mask`` buffer (1 byte an entry) records the mask. A global
optimizer step post-hook multiplies every masked parameter by its mask after
each ``optimizer.step()`` of any optimizer, so no update (momentum, Adam
moments, weight decay) can bring a pruned weight back; the forward pass costs
nothing extra. For ``torch.optim.SGD`` (:mod:`prunekit.fused_sgd`) and, with
:mod:`prunekit.native`'s kernels loaded, ``Adam``/``AdamW``
(:mod:`prunekit.masks.fused_adam`), a pre-hook does the update of large masked
parameters itself with the multiplication fused in, which saves that extra pass.
"""

from __future__ import annotations

import logging
import weakref
from typing import Any

import torch
from torch import nn
from torch.optim.optimizer import (
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
)

from .. import native
from ..fused_sgd import FUSE_MIN_NUMEL, fusable_group, masked_sgd_update
from .fused_adam import fusable_adam_group, masked_adam_update
from .realisation import Realisation, Undo, register_realisation

__all__ = ["InPlace", "InPlaceMask", "multiply", "track_inplace", "untrack_inplace"]

logger = logging.getLogger(__name__)


class InPlaceMask:
    """Forward pre-hook of the ``inplace`` mode: registers the parameter for
    optimizer enforcement (cheap; covers copies made by ``copy.deepcopy``)."""

    def __init__(self, name: str) -> None:
        self._tensor_name = name

    def __call__(self, module: nn.Module, inputs: Any) -> None:
        track_inplace(module, self._tensor_name)

    def __repr__(self) -> str:
        return f"InPlaceMask({self._tensor_name!r})"


@register_realisation("inplace")
class InPlace(Realisation):
    """Zeros in place, a bool ``<name>_mask``, and every optimizer step re-masked."""

    layout = "inplace"

    def masked(self, module: nn.Module) -> list[str]:
        return [
            hook._tensor_name
            for hook in module._forward_pre_hooks.values()
            if isinstance(hook, InPlaceMask)
            and hook._tensor_name in module._parameters
            and hook._tensor_name + "_mask" in module._buffers
        ]

    def apply(self, module: nn.Module, name: str, keep: torch.Tensor, description: str) -> Undo:
        param = module._parameters[name]
        keep = keep.to(device=param.device)
        old = module._buffers.get(name + "_mask")
        if old is None:
            module.register_buffer(name + "_mask", keep)
            handle = module.register_forward_pre_hook(InPlaceMask(name))
            track_inplace(module, name)

            def undo() -> None:
                handle.remove()
                del module._buffers[name + "_mask"]
                untrack_inplace(module, name)

            return undo
        module.register_buffer(name + "_mask", old & keep)
        track_inplace(module, name)

        def undo_update() -> None:
            module.register_buffer(name + "_mask", old)

        return undo_update

    def commit(self, module: nn.Module, name: str, keep: torch.Tensor) -> None:
        multiply([module._parameters[name]], [module._buffers[name + "_mask"]])

    def remove(self, module: nn.Module, name: str) -> None:
        multiply([module._parameters[name]], [module._buffers[name + "_mask"]])
        for key, hook in list(module._forward_pre_hooks.items()):
            if isinstance(hook, InPlaceMask) and hook._tensor_name == name:
                del module._forward_pre_hooks[key]
        untrack_inplace(module, name)
        del module._buffers[name + "_mask"]

    def reapply(self, module: nn.Module, name: str) -> None:
        track_inplace(module, name)
        multiply([module._parameters[name]], [module._buffers[name + "_mask"]])


# -- enforcement at every optimizer step ------------------------------------------

_LEAN: dict[int, tuple[weakref.ref, weakref.ref, str]] = {}
_HOOK_HANDLES: list[Any] = []
#: Per optimizer (by id) during one ``step()``: the (parameter, gradient) pairs
#: the pre-hook already updated and masked, hidden from ``step()`` itself.
_FUSED: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}


def track_inplace(module: nn.Module, name: str) -> None:
    """Have every optimizer step re-mask ``module.<name>`` with ``module.<name>_mask`` (idempotent).

    Call it again after replacing the Parameter object (as channel surgery does).
    """
    param = module._parameters.get(name)
    if param is None:
        return
    key = id(param)
    entry = _LEAN.get(key)
    if entry is not None and entry[0]() is param and entry[1]() is module:
        return
    _LEAN[key] = (weakref.ref(param, lambda _r, k=key: _LEAN.pop(k, None)), weakref.ref(module), name)
    _ensure_optimizer_hook()


def untrack_inplace(module: nn.Module, name: str) -> None:
    """Stop re-masking ``module.<name>`` at optimizer steps."""
    param = module._parameters.get(name)
    if param is not None:
        _LEAN.pop(id(param), None)


def _ensure_optimizer_hook() -> None:
    if not _HOOK_HANDLES:
        _HOOK_HANDLES.append(register_optimizer_step_pre_hook(_before_step))
        _HOOK_HANDLES.append(register_optimizer_step_post_hook(_after_step))


def _lean_mask(param: torch.Tensor) -> torch.Tensor | None:
    """The bool mask of an in-place-masked parameter, None for other tensors."""
    entry = _LEAN.get(id(param))
    if entry is None or entry[0]() is not param:
        return None
    module = entry[1]()
    return None if module is None else module._buffers.get(entry[2] + "_mask")


def _before_step(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    """Update and re-mask large masked parameters of SGD, Adam and AdamW in one go.

    For ``torch.optim.SGD`` see :mod:`prunekit.fused_sgd` (stock ops, or the
    compiled loop when loaded); for ``Adam``/``AdamW`` see
    :mod:`prunekit.masks.fused_adam` (compiled loop only). Each parameter so
    updated is multiplied by its mask while still in cache; its gradient is
    hidden from ``step()`` (which skips parameters without a gradient) and
    given back by :func:`_after_step`. Other optimizers, and parameters these
    paths do not take, get the generic post-step pass.
    """
    if not _LEAN:
        return
    sgd = type(optimizer) is torch.optim.SGD
    taken: list[tuple[torch.Tensor, torch.Tensor]] = []
    for group in optimizer.param_groups:
        if sgd:
            if not fusable_group(optimizer, group, args, kwargs):
                continue
        elif not fusable_adam_group(optimizer, group, args, kwargs):
            continue
        for param in group["params"]:
            grad = param.grad
            if grad is None or grad.is_sparse or param.numel() < FUSE_MIN_NUMEL:
                continue
            mask = _lean_mask(param)
            if mask is None:
                continue
            if sgd:
                masked_sgd_update(optimizer, group, param, mask)
            elif not masked_adam_update(optimizer, group, param, mask):
                continue
            taken.append((param, grad))
            param.grad = None
    if taken:
        _FUSED[id(optimizer)] = taken


def _after_step(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    fused = _FUSED.pop(id(optimizer), ())
    done = set()
    for param, grad in fused:
        param.grad = grad
        done.add(id(param))
    if not _LEAN:
        return
    params, masks = [], []
    for group in optimizer.param_groups:
        for param in group["params"]:
            if id(param) in done:
                continue
            mask = _lean_mask(param)
            if mask is not None:
                params.append(param)
                masks.append(mask)
    if params:
        logger.debug("in-place masks: %s.step() then the generic mask pass over %d parameters",
                     type(optimizer).__name__, len(params))
    multiply(params, masks)


@torch.no_grad()
def multiply(params: list[torch.Tensor], masks: list[torch.Tensor]) -> None:
    """``p *= mask`` for every pair.

    A bool mask is read through a ``uint8`` view (same bytes, no copy): on
    CPU, multiplying by ``uint8`` runs vectorised and is about twice as fast
    as by ``bool`` (and faster than by a float mask, which reads 4× the bytes).
    With :mod:`prunekit.native` enabled, a compiled loop reads the mask bytes
    directly instead.
    """
    compiled = native.kernels()
    for p, m in zip(params, masks):
        if m.device != p.device:
            m = m.to(p.device)
        if compiled is not None and native.usable(p, m):
            compiled.mask_(p, m)
            continue
        p.mul_(m.view(torch.uint8) if m.dtype == torch.bool else m)
