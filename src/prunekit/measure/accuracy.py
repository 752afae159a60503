"""Task metrics: top-1 accuracy with cross-entropy, and perplexity of language models.

Both functions take ``data``: any iterable of ``(inputs, targets)`` batches
(a ``torch.utils.data.DataLoader`` or a plain list; ``loader=`` is its
deprecated name). ``inputs`` is a tensor
(``model(inputs)``), a tuple/list (``model(*inputs)``) or a dict
(``model(**inputs)``). The model's output is the logits tensor, or the first
element of a tuple, or the ``.logits`` attribute (Hugging Face outputs).

Formulas (``n`` = number of counted targets, positions whose target equals
``ignore_index`` are left out)::

    accuracy   = Σ [argmax(logits) == target] / n
    loss       = Σ CE(logits, target) / n                (natural log, nats)
    perplexity = exp(Σ_tokens CE / n_tokens)

Runs in eval mode under ``torch.no_grad``; each module's ``training`` flag is
restored. The model is moved to ``device`` (and stays there).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..batches import forward_logits as _forward
from ..batches import split_batch as _split
from ..batches import to_device as _to
from ..deprecation import renamed_value
from ..errors import InvalidParameterError
from .macs import eval_mode
from .params import _check_model

__all__ = ["AccuracyResult", "PerplexityResult", "evaluate_accuracy", "evaluate_perplexity"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AccuracyResult:
    """Top-1 accuracy and mean cross-entropy over ``samples`` targets."""

    accuracy: float
    loss: float
    samples: int
    batches: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PerplexityResult:
    """Perplexity ``exp(loss)`` with ``loss`` the mean cross-entropy per token."""

    perplexity: float
    loss: float
    tokens: int
    batches: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_data(data: Any) -> Iterable[Any]:
    if isinstance(data, (torch.Tensor, str, bytes, Mapping)) or not isinstance(data, Iterable):
        raise InvalidParameterError(
            "data", "an iterable of (inputs, targets) batches (a DataLoader or a list)",
            f"<{type(data).__name__}>", "Fix: e.g. data=[(x, y)] or a torch.utils.data.DataLoader.",
        )
    return data


def _device(device: str | torch.device) -> torch.device:
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InvalidParameterError("device", "a torch device such as 'cpu' or 'cuda:0'", device) from exc


def evaluate_accuracy(
    model: nn.Module, data: Iterable[Any] | None = None, device: str | torch.device = "cpu", *,
    ignore_index: int = -100, loader: Iterable[Any] | None = None,
) -> AccuracyResult:
    """Top-1 accuracy and mean cross-entropy of ``model`` over the batches of ``data``.

    Logits of shape ``(B, C)`` with targets ``(B,)``, or more generally
    ``(..., C)`` with targets ``(...)`` (each position counts as one sample).
    ``accuracy = correct / n``, ``loss = Σ CE / n`` over the ``n`` targets
    that are not ``ignore_index``. ``loader`` is the deprecated name of ``data``.

    Raises:
        InvalidParameterError: for a non-module model, ``data`` that is not an
            iterable of ``(inputs, targets)``, empty ``data``, or logits and
            targets of mismatched shapes.
    """
    data = renamed_value(loader, "loader", "data", "prunekit.measure.evaluate_accuracy", new_value=data)
    total_loss, correct, count, batches = _run(model, data, device, ignore_index, lm=False)
    result = AccuracyResult(correct / count, total_loss / count, count, batches)
    logger.info("accuracy %.4f, loss %.4f over %d samples", result.accuracy, result.loss, count)
    return result


def evaluate_perplexity(
    model: nn.Module, data: Iterable[Any] | None = None, device: str | torch.device = "cpu", *,
    ignore_index: int = -100, loader: Iterable[Any] | None = None,
) -> PerplexityResult:
    """Perplexity of a language model: ``exp(Σ CE / tokens)``.

    The model maps inputs ``x`` to logits ``(B, T, V)``; targets ``y`` are
    ``(B, T)`` token ids, already shifted (``y[:, t]`` is the token after
    ``x[:, t]``); positions with ``ignore_index`` are not counted. ``data``
    are ``(x, y)`` batches as for :func:`evaluate_accuracy`; ``loader`` is its
    deprecated name.

    Raises:
        InvalidParameterError: as :func:`evaluate_accuracy`, and for logits
            that are not 3-D.
    """
    data = renamed_value(loader, "loader", "data", "prunekit.measure.evaluate_perplexity", new_value=data)
    total_loss, _correct, count, batches = _run(model, data, device, ignore_index, lm=True)
    loss = total_loss / count
    result = PerplexityResult(math.exp(loss) if loss < 700 else float("inf"), loss, count, batches)
    logger.info("perplexity %.4f (loss %.4f) over %d tokens", result.perplexity, loss, count)
    return result


def _run(
    model: nn.Module, data: Iterable[Any] | None, device: str | torch.device, ignore_index: int, lm: bool
) -> tuple[float, int, int, int]:
    _check_model(model)
    data = _check_data(data)
    dev = _device(device)
    model.to(dev)
    total_loss = 0.0
    correct = count = batches = 0
    with eval_mode(model), torch.no_grad():
        for index, batch in enumerate(data):
            inputs, targets = _split(batch, index)
            inputs, targets = _to(inputs, dev), targets.to(dev)
            logits = _forward(model, inputs)
            if lm and (logits.dim() != 3 or targets.shape != logits.shape[:2]):
                raise InvalidParameterError(
                    "model", "logits of shape (B, T, V) for targets of shape (B, T)",
                    f"<logits {tuple(logits.shape)}, targets {tuple(targets.shape)} in batch {index}>",
                    "Fix: return per-token logits; for classifiers use evaluate_accuracy.",
                )
            if logits.dim() < 1 or targets.shape != logits.shape[:-1]:
                raise InvalidParameterError(
                    "data", "targets whose shape is the logits' shape without the class dimension",
                    f"<logits {tuple(logits.shape)}, targets {tuple(targets.shape)} in batch {index}>",
                    "Fix: targets of class indices, e.g. shape (B,) for logits (B, C).",
                )
            flat_logits = logits.reshape(-1, logits.shape[-1]).float()
            flat_targets = targets.reshape(-1).long()
            keep = flat_targets != ignore_index
            total_loss += float(
                F.cross_entropy(flat_logits, flat_targets, reduction="sum", ignore_index=ignore_index)
            )
            correct += int(((flat_logits.argmax(-1) == flat_targets) & keep).sum())
            count += int(keep.sum())
            batches += 1
    if count == 0:
        raise InvalidParameterError(
            "data", "at least one batch with a counted target", "<no targets>",
            "Fix: pass non-empty data (targets equal to ignore_index are not counted).",
        )
    return total_loss, correct, count, batches
