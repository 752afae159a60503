"""Experiments that prune or score a model, then measure it: zero-cost proxies (:mod:`.proxies`)."""

from .proxies import PROXIES, rankdata, score_sum, spearman, zero_cost_proxies

__all__ = ["PROXIES", "rankdata", "score_sum", "spearman", "zero_cost_proxies"]
