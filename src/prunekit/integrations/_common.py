"""Pieces shared by the training-framework integrations (no framework imports here).

* :func:`sync_keep_masks` / :func:`sync_tensors`: make every process of a
  ``torch.distributed`` job hold rank 0's masks / values.
* :class:`LotteryTicket`: remember the targets' values at the start of
  training and reset the unpruned ones to them (or to fresh samples).
* :func:`mask_stats`, :func:`amount_to_sparsity`: bookkeeping.
"""

from __future__ import annotations

import copy
import logging
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ..allocation import check_sparsity
from ..errors import InvalidParameterError
from ..masks import make_permanent
from ..structures import Element, Structure
from ..targets import Target, find_reparam_hook

__all__ = [
    "distributed_world",
    "sync_keep_masks",
    "sync_tensors",
    "refresh_reparam",
    "LotteryTicket",
    "mask_stats",
    "amount_counts",
    "check_amount",
    "flag_at",
]

logger = logging.getLogger(__name__)


# -- torch.distributed ---------------------------------------------------------


def distributed_world() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, ``(0, 1)`` without one."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def sync_keep_masks(keeps: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Rank 0's keep masks on every rank (bool tensors; a no-op without a process group).

    Sent as uint8 (gloo has no bool), all in one flat tensor, so one
    collective per pruning step whatever the number of targets.
    """
    _rank, world = distributed_world()
    if world == 1 or not keeps:
        return list(keeps)
    device = keeps[0].device
    flat = torch.cat([k.reshape(-1).to(device=device, dtype=torch.uint8) for k in keeps])
    torch.distributed.broadcast(flat, src=0)
    out, offset = [], 0
    for k in keeps:
        n = k.numel()
        out.append(flat[offset : offset + n].view(k.shape).to(device=k.device, dtype=torch.bool))
        offset += n
    return out


@torch.no_grad()
def sync_tensors(tensors: Sequence[torch.Tensor]) -> None:
    """Overwrite ``tensors`` in place with rank 0's values (no-op without a process group)."""
    _rank, world = distributed_world()
    if world == 1:
        return
    for t in tensors:
        torch.distributed.broadcast(t.data, src=0)


def refresh_reparam(target: Target) -> None:
    """Recompute ``module.<name> = orig * mask`` now (the forward hook does it anyway)."""
    hook = find_reparam_hook(target.module, target.param_name)
    if hook is not None:
        setattr(target.module, target.param_name, hook.apply_mask(target.module))


# -- lottery ticket ------------------------------------------------------------


class LotteryTicket:
    """Values of the targets at the start of training, and the reset to them.

    Frankle & Carbin 2019, step 4: the weights that survive pruning go back
    to their initial values (``resample=True``: to a fresh draw of the
    layer's initialiser, ``reset_parameters``); pruned weights stay zero.
    """

    def __init__(self, targets: Sequence[Target]) -> None:
        self.initial = {t.name: t.original.detach().clone() for t in targets}

    @torch.no_grad()
    def reset(self, targets: Sequence[Target], resample: bool = False) -> None:
        values = dict(self.initial)
        if resample:
            values.update(self._resampled(targets))
        for t in targets:
            value = values.get(t.name)
            if value is None:
                continue
            original = t.original
            original.copy_(value.to(device=original.device, dtype=original.dtype))
            if t.state == "inplace":
                original.mul_(t.keep_mask().to(original.dtype))
        sync_tensors([t.original for t in targets])
        for t in targets:
            refresh_reparam(t)
        logger.info("lottery ticket: reset %d tensors to their %s values", len(targets),
                    "resampled" if resample else "initial")

    @staticmethod
    def _resampled(targets: Sequence[Target]) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        done: dict[int, nn.Module] = {}
        for t in targets:
            fresh = done.get(id(t.module))
            if fresh is None:
                if not callable(getattr(t.module, "reset_parameters", None)):
                    logger.info("lottery ticket: %s has no reset_parameters(); using its initial values", t.name)
                    continue
                fresh = make_permanent(_copy_module(t.module))
                fresh.reset_parameters()
                done[id(t.module)] = fresh
            value = getattr(fresh, t.param_name, None)
            if isinstance(value, torch.Tensor):
                out[t.name] = value.detach()
        return out


def _copy_module(module: nn.Module) -> nn.Module:
    """``copy.deepcopy`` that also works on a reparametrised module after a forward pass.

    The forward hook leaves ``module.<name> = orig * mask``, a non-leaf tensor
    that deepcopy refuses; it is dropped for the copy (and recomputed from
    orig and mask there), and put back on the original.
    """
    computed = {k: v for k, v in vars(module).items() if isinstance(v, torch.Tensor) and v.grad_fn is not None}
    for k in computed:
        delattr(module, k)
    try:
        clone = copy.deepcopy(module)
    finally:
        for k, v in computed.items():
            setattr(module, k, v)
    for k in computed:
        hook = find_reparam_hook(clone, k)
        if hook is not None:
            setattr(clone, k, hook.apply_mask(clone))
    return clone


# -- bookkeeping ---------------------------------------------------------------


def mask_stats(targets: Sequence[Target]) -> list[tuple[int, int]]:
    """``(pruned entries, entries)`` of each target, from its mask."""
    out = []
    for t in targets:
        keep = t.keep_mask()
        out.append((0 if keep is None else int((~keep).sum()), t.numel))
    return out


def check_amount(value: Any, param: str = "amount") -> float | int:
    """Validate a Lightning/torch ``amount``: a float in [0, 1] (of what remains) or an int count."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidParameterError(
            param,
            "a float in [0, 1] (fraction of the remaining weights pruned now), an int count, "
            "or a function epoch -> one of those",
            value,
            "Fix: e.g. amount=0.2.",
        )
    return check_sparsity(value, param)


def _dead_units(target: Target, structure: Structure) -> int:
    keep = target.keep_mask()
    return 0 if keep is None else int((~structure.unit_alive(keep, target)).sum())


def amount_counts(
    targets: Sequence[Target], structure: Structure, amount: float | int, scope: str
) -> list[int] | int | float:
    """Translate torch's relative ``amount`` into prunekit's absolute sparsity.

    torch prunes ``round(amount × remaining)`` more units (an int amount:
    ``amount`` more). prunekit asks for the total pruned afterwards, so the
    request is ``dead + round(amount × (units − dead))`` units: the same
    numbers torch uses, i.e. new_total = old_total + amount·(1 − old_total).
    Returns one count per target (local), one count (global, single-entry
    units) or a fraction of the parameters (global with larger units, and the
    ``lamp``/``erk`` allocations, which take the overall fraction).
    """
    amount = check_amount(amount)

    def more(remaining: int, where: str) -> int:
        if isinstance(amount, int):
            if amount > remaining:
                raise InvalidParameterError(
                    "amount", f"at most {remaining} (the units still unpruned in {where})", amount,
                    "Fix: lower the amount, or pass a float fraction of what remains.",
                )
            return amount
        return round(amount * remaining)

    if scope == "local":
        out = []
        for t in targets:
            units, dead = structure.num_units(t), _dead_units(t, structure)
            out.append(dead + more(units - dead, t.name))
        return out
    if scope != "global" and isinstance(amount, int):
        raise InvalidParameterError(
            "amount", f"a float fraction of what remains with scope={scope!r}", amount,
            "Fix: pass amount as a float (e.g. 0.2), or use scope='global' for a count.",
        )
    if scope == "global" and (isinstance(structure, Element) or isinstance(amount, int)):
        units = sum(structure.num_units(t) for t in targets)
        dead = sum(_dead_units(t, structure) for t in targets)
        return dead + more(units - dead, "all global targets")
    total = sum(t.numel for t in targets)
    old = sum(z for z, _n in mask_stats(targets)) / total
    return min(1.0, old + amount * (1.0 - old))


def flag_at(value: bool | Callable[[int], Any], epoch: int) -> bool:
    """A bool, or a function of the epoch returning one."""
    return bool(value(epoch)) if callable(value) else bool(value)
