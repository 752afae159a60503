"""Applying, re-applying and removing masks through the registered realisations."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..errors import InvalidParameterError
from ..targets import Target, tensor_state
from .realisation import (
    Realisation,
    Undo,
    create_realisation,
    realisation_of,
    realisations,
)
from .reparam import unlink_consumers
from .transaction import all_or_nothing

__all__ = [
    "apply_masks", "check_shared_tensors", "check_unique_targets", "duplicate_targets", "make_permanent",
    "pruned_tensors", "reapply_masks", "remove",
]


def duplicate_targets(targets: Sequence[Target], *, tied: bool = True) -> list[tuple[Target, Target]]:
    """``(later, first)`` pairs of targets that name a tensor an earlier target names already
    (the same module and parameter twice, or with ``tied`` a tied parameter under another module)."""
    first: dict[object, Target] = {}
    out = []
    for target in targets:
        key: object = (id(target.module), target.param_name)
        if tied and _has_tensor(target):
            key = id(target.original)
        if key in first:
            out.append((target, first[key]))
        else:
            first[key] = target
    return out


def _has_tensor(target: Target) -> bool:
    try:
        target.original
    except (AttributeError, KeyError):
        return False
    return True


def check_unique_targets(targets: Sequence[Target], *, tied: bool = True) -> None:
    """Refuse targets that name one tensor twice (see :func:`duplicate_targets`); with
    ``tied=False`` only the same module and parameter twice (tied holders may each be listed)."""
    pairs = duplicate_targets(targets, tied=tied)
    if pairs:
        listed = ", ".join(f"{later.name} (= {first.name})" for later, first in pairs[:5])
        raise InvalidParameterError(
            "targets", "each tensor once", f"<{len(pairs)} repeated: {listed}>",
            "Fix: drop the repeated targets (prunekit.prune and Pruner drop them for you, with a warning).",
        )


def check_shared_tensors(model: nn.Module, targets: Sequence[Target], mode: str) -> None:
    """Refuse, before anything is masked, a target whose tensor another module of ``model``
    holds under a different name when ``mode`` reparametrises (a mask and hook are bound to one
    name, so the other holder could not be masked consistently)."""
    realisation = create_realisation(mode)
    if realisation.layout != "reparam":
        return
    wanted = {id(t.original): t for t in targets if _has_tensor(t)}
    for qualified, holder in model.named_modules():
        for pname, param in holder._parameters.items():
            target = wanted.get(id(param)) if param is not None else None
            if target is None or holder is target.module:
                continue
            key = pname[:-5] if pname.endswith("_orig") else pname
            if key != target.param_name:
                where = f"{qualified}.{pname}" if qualified else pname
                raise InvalidParameterError(
                    "targets", f"tensors held under one name ({target.name} is also {where})",
                    f"<mode={realisation.name!r} on a tensor tied under two names>",
                    "Fix: prune in mode='inplace' (masks the shared tensor itself), or exclude "
                    f"{target.name} (exclude={target.name!r}).",
                )


def _mode_of(target: Target) -> str:
    """The realisation masking ``target``, else its layout (``"dense"`` when unmasked)."""
    owner = realisation_of(target.module, target.param_name)
    return owner.name if owner is not None else target.state


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
    state = _mode_of(target)
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
    """Apply bool keep masks to targets with the realisation ``mode``, all or nothing.

    ``mode`` is a registered realisation (:func:`prunekit.list_realisations`:
    ``"reparam"``, ``"inplace"``, ``"permanent"`` and those users register).
    Each new mask is combined with the current one (``old & new``). With
    ``copy=False`` the realisation may keep the given tensors as its mask
    buffers (the caller hands them over).
    """
    realisation = create_realisation(mode)
    if len(targets) != len(keeps):
        raise InvalidParameterError("masks", f"{len(targets)} masks, one per target", f"<{len(keeps)} masks>")
    for target, keep in zip(targets, keeps):
        _check_mask(target, keep, realisation.name)
    check_unique_targets(targets, tied=False)  # tied holders (restored checkpoints) are linked afterwards

    undo: list[Undo] = []
    try:
        for target, keep in zip(targets, keeps):
            undo.append(realisation.apply(target.module, target.param_name, keep.clone() if copy else keep, description))
        for target in targets:
            _check_layout(realisation, target)
    except Exception:
        for step in reversed(undo):
            step()
        raise
    with torch.no_grad():
        for target, keep in zip(targets, keeps):
            realisation.commit(target.module, target.param_name, keep)


def _check_layout(realisation: Realisation, target: Target) -> None:
    layout = tensor_state(target.module, target.param_name)
    if layout != realisation.layout:
        raise InvalidParameterError(
            "mode",
            f"a realisation that leaves {target.name} in its declared layout {realisation.layout!r}",
            f"<{realisation.name!r}, which left it {layout!r}>",
            f"Fix: make {type(realisation).__name__}.apply produce the {realisation.layout!r} layout "
            "(see prunekit.masks.realisation), or declare the layout it produces.",
        )


def pruned_tensors(model: nn.Module) -> list[tuple[str, nn.Module, str, str]]:
    """``(qualified name, module, param name, layout)`` of every masked tensor."""
    probes = realisations()
    out = []
    for module_name, module in model.named_modules():
        names: list[str] = []
        for realisation in probes:
            names.extend(n for n in realisation.masked(module) if n not in names)
        for name in names:
            qualified = f"{module_name}.{name}" if module_name else name
            out.append((qualified, module, name, tensor_state(module, name)))
    return out


def remove(module: nn.Module, name: str) -> nn.Module:
    """Make the pruning of ``module.<name>`` permanent (any realisation, and ``torch.nn.utils.prune``)."""
    owner = realisation_of(module, name)
    if owner is None:
        raise InvalidParameterError(
            "name",
            f"a pruned parameter of {type(module).__name__}",
            name,
            "Fix: only masked tensors can be made permanent; this one has no mask.",
        )
    owner.remove(module, name)
    return module


def reapply_masks(model: nn.Module) -> None:
    """Zero the pruned entries of every masked parameter again.

    Needed only after updates that bypass ``optimizer.step()`` (manual
    ``param.data`` edits, ``load_state_dict`` of dense weights) in a
    realisation that keeps zeros in the parameter itself (``inplace``).
    """
    for _qualified, module, name, _layout in pruned_tensors(model):
        owner = realisation_of(module, name)
        if owner is not None:
            owner.reapply(module, name)


def make_permanent(model: nn.Module) -> nn.Module:
    """Fold every mask into its parameter and drop the masks and hooks.

    Works for every realisation and for ``torch.nn.utils.prune``. The
    outputs of the model are unchanged; pruned entries are exact zeros.
    All or nothing: if one tensor cannot be made permanent, none is.
    """
    with all_or_nothing(model):
        for _qualified, module, name, _layout in pruned_tensors(model):
            remove(module, name)
        unlink_consumers(model)
    return model
