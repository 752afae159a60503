"""Deprecated module: channel-group allocation moved to :mod:`prunekit.allocation`
(:mod:`prunekit.allocation.groups` and :mod:`prunekit.allocation.latency_greedy`)."""

from __future__ import annotations

from ..deprecation import moved_names

__getattr__ = moved_names(
    "prunekit.surgery.allocate",
    {
        "SCOPES": "prunekit.allocation:GROUP_SCOPES",
        "check_ratio": "prunekit.allocation:check_ratio",
        "keep_counts": "prunekit.allocation:keep_counts",
        "select_channels": "prunekit.allocation:select_channels",
        "allocate": "prunekit.allocation:allocate_channels",
        "LatencyAllocation": "prunekit.allocation:LatencyAllocation",
        "latency_keep_counts": "prunekit.allocation:latency_keep_counts",
    },
)
