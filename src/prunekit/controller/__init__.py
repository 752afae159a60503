"""The controller: a schedule and training progress in, pruning events out.

See :mod:`prunekit.controller.core` for how a training loop drives it.
"""

from .core import (
    Flag,
    PruningController,
    PruningEvent,
    PruningHooks,
    StepPruner,
    flag_at,
    mask_stats,
)
from .distributed import distributed_world, sync_keep_masks, sync_tensors
from .ticket import LotteryTicket, refresh_reparam

__all__ = [
    "Flag",
    "LotteryTicket",
    "PruningController",
    "PruningEvent",
    "PruningHooks",
    "StepPruner",
    "distributed_world",
    "flag_at",
    "mask_stats",
    "refresh_reparam",
    "sync_keep_masks",
    "sync_tensors",
]
