"""Held-out perplexity of a causal LM over non-overlapping windows of a stated length.

The token stream is cut into windows of ``window`` inputs starting at
``0, window, 2·window, …`` (:class:`prunekit.data.text.TokenBlockDataset`
with stride = window; a last partial window is dropped); each window predicts
its next ``window`` tokens with no context carried over, and::

    perplexity = exp(Σ_tokens CE / n_tokens)

as :func:`prunekit.measure.evaluate_perplexity` computes it (which this reuses).
Hugging Face models are called with ``input_ids=`` and ``use_cache=False``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..data.text import TokenBlockDataset
from ..errors import InvalidParameterError
from ..measure.accuracy import PerplexityResult, evaluate_perplexity

__all__ = ["lm_perplexity", "window_batches"]


def window_batches(ids: torch.Tensor, window: int, batch_size: int = 8, hf: bool = False) -> list[tuple]:
    """``(inputs, targets)`` batches of non-overlapping windows of ``ids`` (a 1-D id tensor)."""
    if not isinstance(ids, torch.Tensor) or ids.dim() != 1 or ids.is_floating_point():
        raise InvalidParameterError("ids", "a 1-D tensor of token ids", f"<{type(ids).__name__}>")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidParameterError("batch_size", "a positive int", batch_size)
    data = TokenBlockDataset(ids, window)
    batches = []
    for start in range(0, len(data), batch_size):
        pairs = [data[i] for i in range(start, min(start + batch_size, len(data)))]
        x = torch.stack([p[0] for p in pairs])
        y = torch.stack([p[1] for p in pairs])
        batches.append(({"input_ids": x, "use_cache": False} if hf else x, y))
    return batches


def lm_perplexity(
    model: nn.Module, ids: torch.Tensor, window: int, batch_size: int = 8, device: str | torch.device = "cpu"
) -> PerplexityResult:
    """Perplexity of ``model`` on ``ids`` in non-overlapping windows of ``window`` tokens."""
    hf = hasattr(model, "config") and hasattr(model.config, "use_cache")
    return evaluate_perplexity(model, window_batches(ids, window, batch_size, hf), device)
