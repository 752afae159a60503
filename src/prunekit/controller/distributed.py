"""Keep every process of a ``torch.distributed`` job on rank 0's masks and values.

Criteria can differ between ranks (random scores, per-rank data), so a
distributed job prunes with rank 0's keep masks everywhere; lottery-ticket
resets broadcast rank 0's values. Without a process group every function here
returns at once.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["distributed_world", "sync_keep_masks", "sync_tensors"]


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
