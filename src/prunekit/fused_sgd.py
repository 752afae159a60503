"""SGD updates of in-place-masked parameters with the re-masking fused in.

The lean (``inplace``) mode keeps pruned weights at zero by multiplying every
masked parameter by its mask after each optimizer step (see
:mod:`prunekit.masks`). Run as a separate pass after ``optimizer.step()``,
that multiplication reads every weight again from main memory: for plain SGD
it costs about as much as the update itself.

For ``torch.optim.SGD`` this module performs the update of each masked
parameter itself, tensor by tensor, and multiplies by the mask right after the
update of that tensor, while the freshly written weights are still in the CPU
cache. The arithmetic is torch's own: each parameter goes through
``torch.optim.sgd.sgd`` (the functional form ``SGD.step`` calls) with the same
hyper-parameters and the same ``momentum_buffer`` state, so the weights and
the optimizer state equal those of ``SGD.step()`` followed by the mask
multiplication. The other parameters of the optimizer are left to its own
``step()``.

The fused path is taken only where it is exactly equivalent: a
``torch.optim.SGD`` (not a subclass, which may change ``step``), a dense
gradient, no closure, no ``fused``/``differentiable`` group, a float learning
rate, no gradient scaler state, and tensors large enough (``FUSE_MIN_NUMEL``)
that a per-tensor call pays off. Everything else keeps the generic post-step
pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.optim.sgd import sgd as functional_sgd

__all__ = ["FUSE_MIN_NUMEL", "fusable_group", "masked_sgd_update"]

#: Smallest parameter (in entries) updated by the fused path; smaller ones are
#: cheaper in torch's batched (foreach) update followed by the generic pass.
FUSE_MIN_NUMEL = 1 << 16


def fusable_group(optimizer: torch.optim.Optimizer, group: dict[str, Any], args: Sequence[Any], kwargs: dict[str, Any]) -> bool:
    """True when the group's update can be done by :func:`masked_sgd_update`."""
    if type(optimizer) is not torch.optim.SGD:
        return False
    if args or kwargs.get("closure") is not None:
        return False
    if getattr(optimizer, "grad_scale", None) is not None or getattr(optimizer, "found_inf", None) is not None:
        return False
    if group.get("fused") or group.get("differentiable"):
        return False
    return not isinstance(group["lr"], torch.Tensor) and not isinstance(group["weight_decay"], torch.Tensor)


@torch.no_grad()
def masked_sgd_update(
    optimizer: torch.optim.SGD,
    group: dict[str, Any],
    param: torch.Tensor,
    mask: torch.Tensor,
) -> None:
    """One SGD step of ``param`` (its ``.grad``) followed by ``param *= mask``.

    Same update as ``SGD.step`` (``torch.optim.sgd.sgd`` on this one tensor,
    ``momentum_buffer`` kept in ``optimizer.state[param]`` as ``SGD`` does).
    """
    state = optimizer.state[param]
    buffers: list[torch.Tensor | None] = [state.get("momentum_buffer")]
    functional_sgd(
        [param],
        [param.grad],
        buffers,
        weight_decay=group["weight_decay"],
        momentum=group["momentum"],
        lr=group["lr"],
        dampening=group["dampening"],
        nesterov=group["nesterov"],
        maximize=group["maximize"],
        has_sparse_grad=False,
        foreach=False,
    )
    if group["momentum"] != 0:
        state["momentum_buffer"] = buffers[0]
    if mask.device != param.device:
        mask = mask.to(param.device)
    param.mul_(mask.view(torch.uint8) if mask.dtype == torch.bool else mask)
