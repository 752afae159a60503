"""Carry an optimizer across surgery: slice its state, swap its parameters."""

from __future__ import annotations

import logging

import torch

from .slicing import SurgeryRecord

__all__ = ["carry_optimizer"]

logger = logging.getLogger(__name__)


@torch.no_grad()
def carry_optimizer(optimizer: torch.optim.Optimizer, record: SurgeryRecord) -> int:
    """Make ``optimizer`` work on the sliced parameters of ``record``.

    Each replaced Parameter is swapped for its slice in ``param_groups``, and
    every state tensor of the parameter's shape (SGD ``momentum_buffer``, Adam
    ``exp_avg``/``exp_avg_sq``, ...) is sliced the same way, so training goes on
    with the kept channels' history instead of a reset. Scalars (``step``) are
    kept. Returns the number of swaps applied (a tensor sliced along two dims counts twice).
    """
    swapped = 0
    for swap in record.swaps:
        old = swap.old()
        if old is None:
            continue
        found = False
        for group in optimizer.param_groups:
            params = group["params"]
            for i, p in enumerate(params):
                if p is old:
                    params[i] = swap.new
                    found = True
        if not found:
            continue
        swapped += 1
        state = optimizer.state.pop(old, None)
        if state is None:
            continue
        new_state = {}
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and value.shape == old.shape:
                value = value.index_select(swap.dim, swap.keep.to(value.device)).clone()
            new_state[key] = value
        optimizer.state[swap.new] = new_state
    logger.info("optimizer: %d parameters swapped for their slices", swapped)
    return swapped
