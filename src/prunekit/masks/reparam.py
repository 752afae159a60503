"""The ``reparam`` realisation: exactly the layout of ``torch.nn.utils.prune``.

``<name>_orig`` is the original Parameter object (so existing optimizers keep
working), ``<name>_mask`` a buffer of the parameter's dtype, and a forward
pre-hook that is a ``BasePruningMethod`` recomputes ``<name> = orig * mask``.
``torch.nn.utils.prune.is_pruned`` and ``remove`` work on the result, and a
second pruning wraps the hooks in a ``PruningContainer`` as torch does.
Tensors pruned by ``torch.nn.utils.prune`` itself count as ``reparam`` too.

Readers that bypass the pruned module's forward (a parent reading a child's
parameter, tied weights) are kept current by :func:`link_consumers`.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from ..errors import InvalidParameterError
from ..targets import find_reparam_hook
from .realisation import Realisation, Undo, register_realisation

__all__ = ["PrunekitMask", "RefreshPruned", "Reparam", "link_consumers", "unlink_consumers"]

logger = logging.getLogger(__name__)


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


@register_realisation("reparam")
class Reparam(Realisation):
    """``<name>_orig`` × ``<name>_mask`` recomputed before each forward (torch-compatible)."""

    layout = "reparam"

    def masked(self, module: nn.Module) -> list[str]:
        return [
            hook._tensor_name
            for hook in module._forward_pre_hooks.values()
            if isinstance(hook, torch_prune.BasePruningMethod) and hook._tensor_name + "_orig" in module._parameters
        ]

    def apply(self, module: nn.Module, name: str, keep: torch.Tensor, description: str) -> Undo:
        method = PrunekitMask(description)
        method._tensor_name = name
        old_hook = find_reparam_hook(module, name)
        if old_hook is None:
            return _first(module, name, keep, method)
        return _again(module, name, keep, method, old_hook)

    def remove(self, module: nn.Module, name: str) -> None:
        torch_prune.remove(module, name)


def _first(module: nn.Module, name: str, keep: torch.Tensor, method: PrunekitMask) -> Undo:
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


def _again(
    module: nn.Module, name: str, keep: torch.Tensor, method: PrunekitMask, old_hook: torch_prune.BasePruningMethod
) -> Undo:
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


# -- readers that bypass the pruned module ------------------------------------------


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


def unlink_consumers(model: nn.Module) -> None:
    """Drop the :class:`RefreshPruned` hooks (once nothing is reparametrised)."""
    for module in model.modules():
        for key, hook in list(module._forward_pre_hooks.items()):
            if isinstance(hook, RefreshPruned):
                del module._forward_pre_hooks[key]


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
