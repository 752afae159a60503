"""Loss functions shared by training, gradient-based scores and calibration.

Two shapes of loss are used across prunekit, each defined once here:

- :data:`LogitLoss` ``(logits, targets) -> loss``, for ``(inputs, targets)`` batches;
- :data:`BatchLoss` ``(model, batch) -> loss``, for any batch (dicts with
  ``labels`` for Hugging Face models included).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .batches import forward_logits, split_batch
from .errors import InvalidParameterError

__all__ = ["LogitLoss", "BatchLoss", "LossFn", "classification_loss", "batch_loss"]

LogitLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
BatchLoss = Callable[[nn.Module, Any], torch.Tensor]
#: The common case, ``(logits, targets) -> loss``.
LossFn = LogitLoss


def classification_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy; logits ``(..., C)`` with targets ``(...)`` (so LMs work too)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1).long())


def batch_loss(model: nn.Module, batch: Any) -> torch.Tensor:
    """Loss of one batch: a dict is passed as keyword arguments and the output's
    ``.loss`` used (Hugging Face, with ``labels``); an ``(inputs, targets)``
    pair gives the mean cross-entropy of the logits."""
    if isinstance(batch, Mapping):
        loss = getattr(model(**batch), "loss", None)
        if not isinstance(loss, torch.Tensor):
            raise InvalidParameterError(
                "batches", "dict batches for which the model returns .loss", f"<keys {sorted(batch)}>",
                "Fix: include 'labels', or pass (inputs, targets) pairs, or pass loss_fn.",
            )
        return loss
    inputs, targets = split_batch(batch, 0)
    return classification_loss(forward_logits(model, inputs), targets)
