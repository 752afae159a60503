"""Adam and AdamW updates of in-place-masked parameters with the re-masking fused in.

The lean (``inplace``) mode keeps pruned weights at zero by multiplying every
masked parameter by its mask after each optimizer step. For
``torch.optim.Adam`` and ``torch.optim.AdamW`` (Kingma & Ba 2015; Loshchilov &
Hutter 2019), when :mod:`prunekit.native`'s kernels are loaded, the step
pre-hook of :mod:`prunekit.masks.inplace` updates each large masked parameter
itself in one compiled pass (``masked_adam_``), with the mask folded into the
last line::

    p ← p − lr/(1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + ε)  where mask,  0  elsewhere

and hides its gradient from ``step()``. The state (``step``, ``exp_avg``,
``exp_avg_sq``, ``max_exp_avg_sq``) lives in ``optimizer.state[param]`` under
torch's names and is created as torch creates it, so ``state_dict()`` and
``load_state_dict()`` carry on unchanged, and the weights and state equal those
of ``step()`` followed by the mask multiplication up to rounding.

Taken only where that holds: exactly ``Adam`` or ``AdamW`` (not a subclass), no
closure, no gradient scaler, no ``fused``/``capturable``/``differentiable``
group, float ``lr``, ``betas`` and ``weight_decay``, a dense float32/float64
contiguous CPU parameter of at least ``FUSE_MIN_NUMEL`` entries. Everything
else keeps the generic post-step pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.optim.optimizer import _get_scalar_dtype

from .. import native
from ..fused_sgd import plain_step

__all__ = ["fusable_adam_group", "masked_adam_update"]

_ADAMS = (torch.optim.Adam, torch.optim.AdamW)


def fusable_adam_group(optimizer: torch.optim.Optimizer, group: dict[str, Any], args: Sequence[Any],
                       kwargs: dict[str, Any]) -> bool:
    """True when the group's masked parameters can be updated by :func:`masked_adam_update`."""
    if type(optimizer) not in _ADAMS or not plain_step(optimizer, args, kwargs):
        return False
    if group.get("fused") or group.get("capturable") or group.get("differentiable"):
        return False
    scalars = (group["lr"], *group["betas"], group["weight_decay"], group["eps"])
    return not any(isinstance(value, torch.Tensor) for value in scalars)


def _decoupled(optimizer: torch.optim.Optimizer, group: dict[str, Any]) -> bool:
    return bool(group.get("decoupled_weight_decay", type(optimizer) is torch.optim.AdamW))


@torch.no_grad()
def masked_adam_update(optimizer: torch.optim.Optimizer, group: dict[str, Any], param: torch.Tensor,
                       mask: torch.Tensor) -> bool:
    """One Adam/AdamW step of ``param`` (its ``.grad``) that leaves pruned entries at zero.

    Needs the compiled kernels (:func:`prunekit.native.kernels`); returns
    False, changing nothing, where they are not loaded or do not fit the
    tensors (the caller then leaves the parameter to ``step()`` and the
    post-step mask pass). Pruned entries are zero before the step (the
    invariant of the in-place mode) and are written as ``(…)·0``, so they stay
    exactly zero whatever the update.
    """
    compiled = native.kernels()
    if compiled is None:
        return False
    state = optimizer.state[param]
    amsgrad = bool(group["amsgrad"])
    if len(state) == 0:
        if not native.usable(param, param.grad, mask):
            return False
        # as torch.optim.Adam creates its state (non-capturable: the step count on the CPU)
        state["step"] = torch.tensor(0.0, dtype=_get_scalar_dtype())
        state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        if amsgrad:
            state["max_exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
    step = state.get("step")
    exp_avg, exp_avg_sq = state.get("exp_avg"), state.get("exp_avg_sq")
    max_sq = state.get("max_exp_avg_sq") if amsgrad else None
    if (not isinstance(step, torch.Tensor) or step.device.type != "cpu" or exp_avg is None or exp_avg_sq is None
            or (amsgrad and max_sq is None)):
        return False
    if not native.usable(param, param.grad, mask, exp_avg, exp_avg_sq, max_sq):
        return False
    beta1, beta2 = group["betas"]
    step += 1
    t = step.item()
    bias_correction1 = 1 - beta1**t
    bias_correction2 = 1 - beta2**t
    step_size = (group["lr"] / bias_correction1) * -1
    compiled.masked_adam_(
        param, param.grad, mask, exp_avg, exp_avg_sq, max_sq,
        float(group["lr"]), float(beta1), float(beta2), float(group["eps"]), float(group["weight_decay"]),
        _decoupled(optimizer, group), bool(group["maximize"]), float(step_size), float(bias_correction2**0.5),
    )
    return True
