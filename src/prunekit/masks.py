"""Realising masks on a model: torch-compatible, lean in-place, or permanent.

``reparam`` (default) is exactly the layout of ``torch.nn.utils.prune``:
``<name>_orig`` is the original Parameter object (so existing optimizers keep
working), ``<name>_mask`` a buffer of the parameter's dtype, and a forward
pre-hook that is a ``BasePruningMethod`` recomputes ``<name> = orig * mask``.
``torch.nn.utils.prune.is_pruned`` and ``remove`` work on the result, and a
second pruning wraps the hooks in a ``PruningContainer`` as torch does.

``inplace`` keeps the parameter where it is, zeroes the pruned entries in
place and stores a bool ``<name>_mask`` buffer (1 byte an entry). A global
optimizer step post-hook multiplies every masked parameter by its mask after
each ``optimizer.step()`` of any optimizer, so no update (momentum, Adam
moments, weight decay) can bring a pruned weight back; the forward pass costs
nothing extra. For ``torch.optim.SGD`` a pre-hook does the update of large
masked parameters itself with the multiplication fused in
(:mod:`prunekit.fused_sgd`), which saves most of that extra pass.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune
from torch.optim.optimizer import (
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
)

from . import native
from .errors import InvalidParameterError, check_choice
from .fused_sgd import FUSE_MIN_NUMEL, fusable_group, masked_sgd_update
from .targets import Target, find_reparam_hook, tensor_state

__all__ = [
    "MODES",
    "PrunekitMask",
    "InPlaceMask",
    "apply_masks",
    "make_permanent",
    "remove",
    "reapply_masks",
    "pruned_tensors",
    "link_consumers",
    "RefreshPruned",
]

logger = logging.getLogger(__name__)

MODES = ("reparam", "inplace")


class PrunekitMask(torch_prune.BasePruningMethod):
    """The hook prunekit installs in ``reparam`` mode.

    The mask is computed by prunekit's criteria, structures and allocation
    and stored in ``<name>_mask``; this method records what made it.
    ``PRUNING_TYPE = "global"`` because the mask covers the whole tensor.
    """

    PRUNING_TYPE = "global"

    def __init__(self, description: str = "") -> None:
        self.description = description

    def compute_mask(self, t: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        return default_mask

    def __repr__(self) -> str:
        return f"PrunekitMask({self.description!r})"


class InPlaceMask:
    """Forward pre-hook of the ``inplace`` mode: registers the parameter for
    optimizer enforcement (cheap; covers copies made by ``copy.deepcopy``)."""

    def __init__(self, name: str) -> None:
        self._tensor_name = name

    def __call__(self, module: nn.Module, inputs: Any) -> None:
        _register_lean(module, self._tensor_name)

    def __repr__(self) -> str:
        return f"InPlaceMask({self._tensor_name!r})"


class RefreshPruned:
    """Forward pre-hook on a module that reads a child's parameter without
    calling the child, as ``nn.MultiheadAttention`` reads ``out_proj.weight``.

    The child's own pruning hook would never run, so ``out_proj.weight`` would
    keep the value (and autograd graph) of the moment of pruning; this hook
    recomputes it before each forward of the parent.
    """

    def __init__(self, child: str) -> None:
        self.child = child

    def __call__(self, module: nn.Module, inputs: Any) -> None:
        child = getattr(module, self.child, None)
        if child is None:
            return
        for hook in child._forward_pre_hooks.values():
            if isinstance(hook, torch_prune.BasePruningMethod):
                hook(child, inputs)

    def __repr__(self) -> str:
        return f"RefreshPruned({self.child!r})"


#: Modules whose forward reads these children's parameters directly.
_CONSUMED_CHILDREN: tuple[tuple[type[nn.Module], str], ...] = ((nn.MultiheadAttention, "out_proj"),)


def link_consumers(model: nn.Module) -> None:
    """Keep every reader of a reparametrised tensor current (idempotent).

    * Children that their parent reads directly (``MultiheadAttention``'s
      ``out_proj``) get a :class:`RefreshPruned` pre-hook on the parent.
    * A reparametrised parameter that other modules hold too (tied weights,
      e.g. a language-model head and its input embedding) is masked in every
      holder: the holder gets the same ``<name>_orig`` Parameter, the same mask
      tensor and the same hook. One parameter is pruned everywhere it is used,
      as in the in-place mode, and ``make_permanent`` (which writes the masked
      values into the shared Parameter, as ``torch.nn.utils.prune.remove``
      does) leaves the outputs unchanged.
    """
    _mask_tied_holders(model)
    for module in model.modules():
        for kind, child_name in _CONSUMED_CHILDREN:
            if not isinstance(module, kind):
                continue
            child = getattr(module, child_name, None)
            if child is None or not any(
                isinstance(h, torch_prune.BasePruningMethod) for h in child._forward_pre_hooks.values()
            ):
                continue
            if not any(isinstance(h, RefreshPruned) and h.child == child_name for h in module._forward_pre_hooks.values()):
                module.register_forward_pre_hook(RefreshPruned(child_name))


def _mask_tied_holders(model: nn.Module) -> None:
    sources: dict[int, tuple[nn.Module, str, Any]] = {}
    for module in model.modules():
        for pname, param in module._parameters.items():
            if param is None or not pname.endswith("_orig"):
                continue
            hook = find_reparam_hook(module, pname[:-5])
            if hook is not None and pname[:-5] + "_mask" in module._buffers:
                sources.setdefault(id(param), (module, pname[:-5], hook))
    if not sources:
        return
    for qualified, holder in model.named_modules():
        for pname, param in list(holder._parameters.items()):
            key = pname[:-5] if pname.endswith("_orig") else pname
            source = sources.get(id(param))
            if source is None or source[0] is holder:
                continue
            module, name, hook = source
            if key != name:
                raise InvalidParameterError(
                    "model",
                    f"tied parameters under the same name in every module (a masked {name!r} is also "
                    f"{qualified}.{pname})",
                    f"<{type(holder).__name__}.{pname}>",
                    "Fix: prune in mode='inplace', which masks the shared tensor itself.",
                )
            if pname == name:  # a plain holder: reparametrise it like the source
                holder.register_parameter(name + "_orig", param)
                del holder._parameters[name]
                logger.info("%s.%s is tied to a pruned parameter: masked there too", qualified, name)
            for hkey, old in list(holder._forward_pre_hooks.items()):
                if isinstance(old, torch_prune.BasePruningMethod) and old._tensor_name == name:
                    del holder._forward_pre_hooks[hkey]
            holder._buffers[name + "_mask"] = module._buffers[name + "_mask"]
            holder.register_forward_pre_hook(hook)
            setattr(holder, name, hook.apply_mask(holder))


# -- in-place enforcement --------------------------------------------------------

_LEAN: dict[int, tuple[weakref.ref, weakref.ref, str]] = {}
_HOOK_HANDLES: list[Any] = []
#: Per optimizer (by id) during one ``step()``: the (parameter, gradient) pairs
#: the pre-hook already updated and masked, hidden from ``step()`` itself.
_FUSED: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}


def _register_lean(module: nn.Module, name: str) -> None:
    param = module._parameters.get(name)
    if param is None:
        return
    key = id(param)
    entry = _LEAN.get(key)
    if entry is not None and entry[0]() is param and entry[1]() is module:
        return
    _LEAN[key] = (weakref.ref(param, lambda _r, k=key: _LEAN.pop(k, None)), weakref.ref(module), name)
    _ensure_optimizer_hook()


def _unregister_lean(module: nn.Module, name: str) -> None:
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
    """Update and re-mask large masked parameters of ``torch.optim.SGD`` in one go.

    See :mod:`prunekit.fused_sgd`: each such parameter is updated with torch's
    own SGD arithmetic and multiplied by its mask while still in cache; its
    gradient is hidden from ``step()`` (which skips parameters without a
    gradient) and given back by :func:`_after_step`.
    """
    if not _LEAN:
        return
    taken: list[tuple[torch.Tensor, torch.Tensor]] = []
    for group in optimizer.param_groups:
        if not fusable_group(optimizer, group, args, kwargs):
            continue
        for param in group["params"]:
            grad = param.grad
            if grad is None or grad.is_sparse or param.numel() < FUSE_MIN_NUMEL:
                continue
            mask = _lean_mask(param)
            if mask is None:
                continue
            masked_sgd_update(optimizer, group, param, mask)
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
    _multiply(params, masks)


@torch.no_grad()
def _multiply(params: list[torch.Tensor], masks: list[torch.Tensor]) -> None:
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


def reapply_masks(model: nn.Module) -> None:
    """Zero the pruned entries of every in-place-masked parameter again.

    Needed only after updates that bypass ``optimizer.step()`` (manual
    ``param.data`` edits, ``load_state_dict`` of dense weights).
    """
    params, masks = [], []
    for module in model.modules():
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, InPlaceMask):
                params.append(module._parameters[hook._tensor_name])
                masks.append(module._buffers[hook._tensor_name + "_mask"])
                _register_lean(module, hook._tensor_name)
    _multiply(params, masks)


# -- applying ------------------------------------------------------------------


def _check_mask(target: Target, keep: torch.Tensor, mode: str) -> None:
    if not isinstance(keep, torch.Tensor) or tuple(keep.shape) != tuple(target.shape):
        got = tuple(keep.shape) if isinstance(keep, torch.Tensor) else type(keep).__name__
        raise InvalidParameterError(
            "mask",
            f"a tensor of shape {tuple(target.shape)} for {target.name}",
            f"<shape {got}>",
            "Fix: build the mask with the parameter's shape.",
        )
    if keep.dtype != torch.bool:
        raise InvalidParameterError("mask", "a bool tensor (True = keep)", f"<dtype {keep.dtype}>", "Fix: pass mask != 0.")
    state = target.state
    if state != "dense" and state != mode:
        raise InvalidParameterError(
            "mode",
            f"{state!r}, the mode {target.name} is already pruned in",
            mode,
            f"Fix: pass mode={state!r}, or call prunekit.make_permanent(model) first.",
        )


def apply_masks(
    targets: Sequence[Target],
    keeps: Sequence[torch.Tensor],
    mode: str = "reparam",
    description: str = "",
    copy: bool = True,
) -> None:
    """Apply bool keep masks to targets, all or nothing.

    Each new mask is combined with the current one (``old & new``). With
    ``copy=False`` the in-place mode may keep the given tensors as its mask
    buffers (the caller hands them over).
    """
    check_choice("mode", mode, MODES)
    if len(targets) != len(keeps):
        raise InvalidParameterError("masks", f"{len(targets)} masks, one per target", f"<{len(keeps)} masks>")
    for target, keep in zip(targets, keeps):
        _check_mask(target, keep, mode)

    undo: list[Callable[[], None]] = []
    try:
        for target, keep in zip(targets, keeps):
            if mode == "reparam":
                undo.append(_apply_reparam(target.module, target.param_name, keep, description))
            else:
                undo.append(_apply_inplace(target.module, target.param_name, keep, copy))
    except Exception:
        for step in reversed(undo):
            step()
        raise
    if mode == "inplace":
        with torch.no_grad():
            for target in targets:
                module, name = target.module, target.param_name
                param = module._parameters[name]
                _multiply([param], [module._buffers[name + "_mask"]])


def _apply_reparam(module: nn.Module, name: str, keep: torch.Tensor, description: str) -> Callable[[], None]:
    method = PrunekitMask(description)
    method._tensor_name = name
    old_hook = find_reparam_hook(module, name)
    if old_hook is None:
        orig = module._parameters[name]
        mask = keep.to(dtype=orig.dtype, device=orig.device)
        module.register_parameter(name + "_orig", orig)
        del module._parameters[name]
        module.register_buffer(name + "_mask", mask)
        handle = module.register_forward_pre_hook(method)

        def undo() -> None:
            handle.remove()
            if name in module.__dict__:
                delattr(module, name)
            del module._buffers[name + "_mask"]
            del module._parameters[name + "_orig"]
            module.register_parameter(name, orig)

        setattr(module, name, method.apply_mask(module))
        return undo

    old_mask = module._buffers[name + "_mask"]
    old_key = next(k for k, h in module._forward_pre_hooks.items() if h is old_hook)
    if isinstance(old_hook, torch_prune.PruningContainer):
        container = old_hook
        old_methods = container._pruning_methods
        container.add_pruning_method(method)
    else:
        container = torch_prune.PruningContainer(old_hook)
        container.add_pruning_method(method)
        old_methods = None
    new_mask = old_mask * keep.to(dtype=old_mask.dtype, device=old_mask.device)
    del module._forward_pre_hooks[old_key]
    handle = module.register_forward_pre_hook(container)
    module.register_buffer(name + "_mask", new_mask)

    def undo_update() -> None:
        handle.remove()
        module._forward_pre_hooks[old_key] = old_hook
        if old_methods is not None:
            container._pruning_methods = old_methods
        module.register_buffer(name + "_mask", old_mask)
        setattr(module, name, old_hook.apply_mask(module))

    setattr(module, name, container.apply_mask(module))
    return undo_update


def _apply_inplace(module: nn.Module, name: str, keep: torch.Tensor, copy: bool = True) -> Callable[[], None]:
    param = module._parameters[name]
    keep = keep.to(device=param.device)
    old = module._buffers.get(name + "_mask")
    if old is None:
        module.register_buffer(name + "_mask", keep.clone() if copy else keep)
        handle = module.register_forward_pre_hook(InPlaceMask(name))
        _register_lean(module, name)

        def undo() -> None:
            handle.remove()
            del module._buffers[name + "_mask"]
            _unregister_lean(module, name)

        return undo
    module.register_buffer(name + "_mask", old & keep)
    _register_lean(module, name)

    def undo_update() -> None:
        module.register_buffer(name + "_mask", old)

    return undo_update


# -- removing ------------------------------------------------------------------


def pruned_tensors(model: nn.Module) -> list[tuple[str, nn.Module, str, str]]:
    """``(qualified name, module, param name, state)`` of every masked tensor."""
    out = []
    for module_name, module in model.named_modules():
        names = []
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, torch_prune.BasePruningMethod) or isinstance(hook, InPlaceMask):
                names.append(hook._tensor_name)
        for name in names:
            qualified = f"{module_name}.{name}" if module_name else name
            out.append((qualified, module, name, tensor_state(module, name)))
    return out


def remove(module: nn.Module, name: str) -> nn.Module:
    """Make the pruning of ``module.<name>`` permanent (either mode)."""
    state = tensor_state(module, name)
    if state == "reparam":
        return torch_prune.remove(module, name)
    if state == "inplace":
        _multiply([module._parameters[name]], [module._buffers[name + "_mask"]])
        for key, hook in list(module._forward_pre_hooks.items()):
            if isinstance(hook, InPlaceMask) and hook._tensor_name == name:
                del module._forward_pre_hooks[key]
        _unregister_lean(module, name)
        del module._buffers[name + "_mask"]
        return module
    raise InvalidParameterError(
        "name",
        f"a pruned parameter of {type(module).__name__}",
        name,
        "Fix: only masked tensors can be made permanent; this one has no mask.",
    )


def make_permanent(model: nn.Module) -> nn.Module:
    """Fold every mask into its parameter and drop the masks and hooks.

    Works for prunekit's both modes and for ``torch.nn.utils.prune``. The
    outputs of the model are unchanged; pruned entries are exact zeros.
    """
    for _qualified, module, name, _state in pruned_tensors(model):
        remove(module, name)
    for module in model.modules():
        for key, hook in list(module._forward_pre_hooks.items()):
            if isinstance(hook, RefreshPruned):
                del module._forward_pre_hooks[key]
    return model
