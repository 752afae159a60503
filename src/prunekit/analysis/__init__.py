"""Experiments that prune or score a model, then measure it: zero-cost proxies (:mod:`.proxies`)."""

from .proxies import PROXIES, rankdata, spearman, zero_cost_proxies

__all__ = ["PROXIES", "rankdata", "spearman", "zero_cost_proxies"]
