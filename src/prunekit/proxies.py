"""Deprecated location: zero-cost proxies moved to :mod:`prunekit.analysis.proxies`."""

from __future__ import annotations

from .deprecation import moved_names

__getattr__ = moved_names(
    "prunekit.proxies",
    {name: f"prunekit.analysis.proxies:{name}" for name in ("PROXIES", "rankdata", "spearman", "zero_cost_proxies")},
)
