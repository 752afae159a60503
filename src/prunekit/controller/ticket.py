"""The lottery-ticket reset of a training run (Frankle & Carbin 2019, step 4).

:class:`LotteryTicket` remembers the targets' values when training starts;
:meth:`LotteryTicket.reset` puts the weights that survived pruning back to
them (``resample=True``: to a fresh draw of each layer's initialiser,
``reset_parameters``); pruned weights stay zero. Under ``torch.distributed``
the reset values are rank 0's.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence

import torch
from torch import nn

from ..masks import make_permanent
from ..targets import Target, find_reparam_hook
from .distributed import sync_tensors

__all__ = ["LotteryTicket", "refresh_reparam"]

logger = logging.getLogger(__name__)


def refresh_reparam(target: Target) -> None:
    """Recompute ``module.<name> = orig * mask`` now (the forward hook does it anyway)."""
    hook = find_reparam_hook(target.module, target.param_name)
    if hook is not None:
        setattr(target.module, target.param_name, hook.apply_mask(target.module))


class LotteryTicket:
    """Values of the targets at the start of training, and the reset to them."""

    def __init__(self, targets: Sequence[Target]) -> None:
        self.initial = {t.name: t.original.detach().clone() for t in targets}

    @torch.no_grad()
    def reset(self, targets: Sequence[Target], resample: bool = False) -> None:
        """Survivors back to their initial (or resampled) values; pruned entries stay zero."""
        values = dict(self.initial)
        if resample:
            values.update(_resampled(targets))
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
