"""Physical removal of group channels (:func:`prune_groups`), and the matching
masked model (:func:`mask_groups`) whose outputs the smaller model reproduces."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ..errors import InvalidParameterError, did_you_mean
from ..targets import find_reparam_hook, tensor_state
from ..coupling.groups import Group
from .history import add_history
from .optim import carry_optimizer
from .slicing import SurgeryRecord, touched_modules, update_module_attributes

__all__ = ["prune_groups", "mask_groups", "removed_positions"]

logger = logging.getLogger(__name__)

_STATISTICS = ("running_mean", "running_var")


def _check_keep(keep: Mapping[str, torch.Tensor], groups: Sequence[Group]) -> dict[str, torch.Tensor]:
    if not isinstance(keep, Mapping):
        raise InvalidParameterError("keep", "a mapping of group name to kept channel ids", f"<{type(keep).__name__}>")
    by_name = {g.name: g for g in groups}
    if len(by_name) != len(groups):
        raise InvalidParameterError("groups", "groups with distinct names", [g.name for g in groups])
    checked: dict[str, torch.Tensor] = {}
    for name, ids in keep.items():
        group = by_name.get(name)
        if group is None:
            raise InvalidParameterError(
                "keep", "names of the given groups", name, ("Fix: use Group.name." + did_you_mean(str(name), by_name)).strip()
            )
        if not isinstance(ids, torch.Tensor):
            ids = torch.as_tensor(ids)
        if ids.dim() != 1 or ids.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
            raise InvalidParameterError(f"keep[{name!r}]", "a 1-d integer tensor of channel ids", f"<{ids.dtype} {tuple(ids.shape)}>")
        ids = ids.to(torch.long)
        if ids.numel() == 0 or int(ids.min()) < 0 or int(ids.max()) >= group.size or bool((ids[1:] <= ids[:-1]).any()):
            raise InvalidParameterError(
                f"keep[{name!r}]",
                f"sorted unique channel ids in [0, {group.size}), at least one",
                f"<{ids.numel()} ids>" if ids.numel() else "<no ids>",
                "Fix: sort the ids and keep at least one channel (torch.sort(ids).values).",
            )
        if group.multiple > 1 and ids.numel() % group.multiple:
            raise InvalidParameterError(f"keep[{name!r}]", f"a multiple of {group.multiple} channels", ids.numel())
        checked[name] = ids
    return checked


def _check_slices(model: nn.Module, groups: Sequence[Group], used: set[str], same: bool = True) -> None:
    """The groups were found on ``model`` (``same``: the very modules; else a copy
    with the same names) and its tensors still have the sizes they had then."""
    modules = dict(model.named_modules())
    for group in groups:
        if group.name not in used:
            continue
        for s in group.slices:
            module = modules.get(s.name)
            if module is None or (same and module is not s.module):
                raise InvalidParameterError(
                    "groups", f"groups found on this model ({s.name} is not the same module)", group.name,
                    "Fix: call find_groups(model, ...) on this model.",
                )
            extent = _extent(module, s.tensor, s.dim)
            if s.extent >= 0 and extent != s.extent:
                raise InvalidParameterError(
                    "groups", f"groups found on the model as it is now ({s.name}.{s.tensor} dim {s.dim} has {extent}, not {s.extent})",
                    group.name, "Fix: find the groups again after each removal.",
                )


def removed_positions(keep: Mapping[str, torch.Tensor], groups: Sequence[Group]) -> dict[tuple[str, str, int], set[int]]:
    """``(module name, tensor, dim) -> positions removed`` over all groups."""
    removed: dict[tuple[str, str, int], set[int]] = defaultdict(set)
    for group in groups:
        ids = keep.get(group.name)
        if ids is None:
            continue
        gone = torch.ones(group.size, dtype=torch.bool)
        gone[ids] = False
        drop = gone.nonzero().reshape(-1)
        if drop.numel() == 0:
            continue
        for s in group.slices:
            removed[(s.name, s.tensor, s.dim)].update(s.index[drop].reshape(-1).tolist())
    return removed


def prune_groups(
    model: nn.Module,
    keep: Mapping[str, torch.Tensor],
    groups: Sequence[Group],
    *,
    optimizer: torch.optim.Optimizer | None = None,
) -> SurgeryRecord:
    """Remove every channel of each group in ``keep`` that is not listed there.

    ``keep[group.name]`` is a sorted LongTensor of channel ids ``0..size-1`` to
    keep; groups not in ``keep`` are untouched. All input is checked before
    anything changes. Works on plain modules and on masked ones (reparam and
    in-place: parameter and mask are both sliced). With ``optimizer``, its
    state (momentum, Adam moments) is sliced along and its parameter
    references swapped (:func:`prunekit.surgery.carry_optimizer`). The model
    keeps the history of removals so :func:`prunekit.surgery.save_shrunk` can
    rebuild it. Returns the :class:`SurgeryRecord`.
    """
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise InvalidParameterError(
            "optimizer", "a torch.optim.Optimizer or None", f"<{type(optimizer).__name__}>",
            "Fix: pass the optimizer that trains the model (its state is sliced along), or leave it out.",
        )
    checked = _check_keep(keep, groups)
    _check_slices(model, groups, set(checked))
    removed = removed_positions(checked, groups)
    record = SurgeryRecord()
    modules = dict(model.named_modules())
    for (name, tensor, dim), gone in removed.items():
        module = modules[name]
        extent = _extent(module, tensor, dim)
        kept = torch.tensor(sorted(set(range(extent)) - gone), dtype=torch.long)
        record.slice(model, name, tensor, dim, kept)
    for module in touched_modules(model, record):
        update_module_attributes(module)
    record.kept = {name: ids.tolist() for name, ids in checked.items()}
    add_history(model, record)
    if optimizer is not None:
        carry_optimizer(optimizer, record)
    logger.info("removed channels from %d groups (%d tensors sliced)", sum(1 for _ in checked), len(removed))
    return record


def _extent(module: nn.Module, tensor: str, dim: int) -> int:
    if tensor + "_orig" in module._parameters:
        return module._parameters[tensor + "_orig"].shape[dim]
    found = module._parameters.get(tensor)
    return (found if found is not None else module._buffers[tensor]).shape[dim]


@torch.no_grad()
def mask_groups(model: nn.Module, keep: Mapping[str, torch.Tensor], groups: Sequence[Group]) -> None:
    """Zero, in place, every slice of the channels not kept: producer rows and
    biases, per-channel weights and biases of BatchNorm/GroupNorm/LayerNorm/
    PReLU, embedding columns and consumer input columns (running statistics
    are left alone). The removed channels then contribute nothing to any kept
    output, so :func:`prune_groups` with the same ``keep`` gives the same outputs
    (exactly up to float rounding), except for ``Group.approximate`` groups.

    ``model`` may be a copy (``copy.deepcopy``) of the model the groups were found on."""
    checked = _check_keep(keep, groups)
    _check_slices(model, groups, set(checked), same=False)
    modules = dict(model.named_modules())
    for (name, tensor, dim), gone in removed_positions(checked, groups).items():
        if tensor in _STATISTICS:
            continue
        module = modules[name]
        positions = torch.tensor(sorted(gone), dtype=torch.long)
        state = tensor_state(module, tensor)
        value = module._parameters[tensor + "_orig"] if state == "reparam" else getattr(module, tensor)
        value.index_fill_(dim, positions.to(value.device), 0)
        if state == "reparam":
            setattr(module, tensor, find_reparam_hook(module, tensor).apply_mask(module))
