"""Batches of ``(inputs, targets)``: moving them, splitting them, running a model on them.

``inputs`` may be a tensor (``model(inputs)``), a tuple or list
(``model(*inputs)``) or a dict (``model(**inputs)``); the model's output is
the logits tensor, the first element of a tuple, or ``.logits`` (Hugging Face).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .errors import InvalidParameterError

__all__ = ["to_device", "split_batch", "forward_logits"]


def to_device(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, (tuple, list)):
        return type(value)(to_device(v, device) for v in value)
    if isinstance(value, Mapping):
        return {k: to_device(v, device) for k, v in value.items()}
    return value


def split_batch(batch: Any, index: int) -> tuple[Any, torch.Tensor]:
    if not isinstance(batch, (tuple, list)) or len(batch) != 2 or not isinstance(batch[1], torch.Tensor):
        raise InvalidParameterError(
            "data", "batches of the form (inputs, targets) with targets a tensor",
            f"<batch {index}: {type(batch).__name__}"
            + (f" of length {len(batch)}>" if isinstance(batch, (tuple, list)) else ">"),
            "Fix: make data yield (x, y) pairs (a DataLoader or a list of them).",
        )
    return batch[0], batch[1]


def forward_logits(model: nn.Module, inputs: Any) -> torch.Tensor:
    if isinstance(inputs, Mapping):
        out = model(**inputs)
    elif isinstance(inputs, (tuple, list)):
        out = model(*inputs)
    else:
        out = model(inputs)
    if isinstance(out, torch.Tensor):
        return out
    logits = getattr(out, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise InvalidParameterError(
        "model", "a model returning logits (a tensor, a tuple starting with one, or .logits)",
        f"<{type(out).__name__}>",
    )
