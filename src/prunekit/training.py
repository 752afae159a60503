"""A plain training loop for users without a framework, with pruning on a schedule.

``fit`` trains with SGD (momentum, Nesterov), Adam or AdamW, an optional
cosine or step learning-rate schedule, and prunes at the events of a
:class:`~prunekit.schedules.Schedule` through a :class:`~prunekit.Pruner`.
Pruned weights stay zero through every optimizer step: in ``reparam`` mode
the mask multiplies ``weight_orig`` in the forward pass, in ``inplace`` mode
prunekit's optimizer hook re-applies the mask after each step.

The library logs; it never prints. Pass ``progress`` (a callable receiving a
:class:`TrainProgress`) to drive a progress bar, as the CLI does.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from .batches import forward_logits, split_batch, to_device
from .errors import InvalidParameterError, check_choice
from .losses import classification_loss
from .measure.accuracy import AccuracyResult, PerplexityResult, evaluate_accuracy, evaluate_perplexity
from .pruner import Pruner
from .schedules import Schedule

__all__ = ["TrainProgress", "FitResult", "fit", "evaluate", "make_optimizer", "classification_loss"]

logger = logging.getLogger(__name__)

OPTIMIZERS = ("sgd", "adam", "adamw")
LR_SCHEDULES = ("none", "cosine", "step")


@dataclass
class TrainProgress:
    """What a progress callback receives after every step."""

    epoch: int
    step: int
    total_steps: int
    loss: float
    lr: float
    sparsity: float | None = None


@dataclass
class FitResult:
    """Loss per epoch, the pruning events applied, and steps taken."""

    epoch_losses: list[float] = field(default_factory=list)
    pruning_events: list[tuple[int, float]] = field(default_factory=list)
    steps: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def make_optimizer(
    model: nn.Module,
    optimizer: str = "sgd",
    *,
    lr: float = 0.1,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    nesterov: bool = False,
) -> torch.optim.Optimizer:
    """An optimizer over the model's trainable parameters (``weight_orig`` included)."""
    name = check_choice("optimizer", optimizer, OPTIMIZERS)
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not lr > 0:
        raise InvalidParameterError("lr", "a positive float", lr, "Fix: e.g. lr=0.05.")
    params = [p for p in model.parameters() if p.requires_grad]
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def fit(
    model: nn.Module,
    loader: Iterable[Any],
    *,
    epochs: int = 1,
    optimizer: str | torch.optim.Optimizer = "sgd",
    lr: float = 0.1,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    lr_schedule: str = "none",
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = classification_loss,
    pruner: Pruner | None = None,
    schedule: Schedule | None = None,
    max_steps: int | None = None,
    device: str | torch.device = "cpu",
    progress: Callable[[TrainProgress], None] | None = None,
) -> FitResult:
    """Train ``model`` on ``loader`` (an iterable of ``(inputs, targets)``).

    Pruning: with ``pruner`` and ``schedule``, ``pruner.step(s)`` runs at each
    event of the schedule, at the start of the epoch (``unit="epoch"``) or
    before the step (``unit="step"``) whose index is the event's time.

    Learning rate: ``"cosine"`` anneals to 0 over all steps, ``"step"`` divides
    it by 10 at 50% and 75% of the steps (the CIFAR ResNet recipe of He et al. 2016).
    """
    if isinstance(epochs, bool) or not isinstance(epochs, numbers.Integral) or epochs < 0:
        raise InvalidParameterError("epochs", "a non-negative int", epochs)
    if (pruner is None) != (schedule is None):
        raise InvalidParameterError(
            "schedule", "given together with pruner (or neither)",
            f"<pruner={'set' if pruner else None}, schedule={'set' if schedule else None}>",
            "Fix: pass both pruner=Pruner(model, ...) and schedule=create_schedule(...).",
        )
    lr_schedule = check_choice("lr_schedule", lr_schedule, LR_SCHEDULES)
    dev = torch.device(device)
    model.to(dev)
    opt = optimizer if isinstance(optimizer, torch.optim.Optimizer) else make_optimizer(
        model, optimizer, lr=lr, momentum=momentum, weight_decay=weight_decay
    )
    try:
        per_epoch = len(loader)  # type: ignore[arg-type]
    except TypeError:
        per_epoch = max_steps or 0
    total = per_epoch * epochs if max_steps is None else min(max_steps, per_epoch * epochs or max_steps)
    base_lrs = [g["lr"] for g in opt.param_groups]
    result = FitResult()
    sparsity: float | None = None

    def maybe_prune(t: int) -> None:
        nonlocal sparsity
        if pruner is None or schedule is None:
            return
        level = schedule.sparsity_at(t)
        if level is not None:
            pruner.step(level)
            sparsity = level
            result.pruning_events.append((t, level))
            logger.info("pruned to %.4f at %s %d", level, schedule.unit, t)

    step = 0
    model.train()
    for epoch in range(epochs):
        if schedule is not None and schedule.unit == "epoch":
            maybe_prune(epoch)
        running, seen = 0.0, 0
        for index, batch in enumerate(loader):
            if max_steps is not None and step >= max_steps:
                break
            if schedule is not None and schedule.unit == "step":
                maybe_prune(step)
            _set_lr(opt, base_lrs, lr_schedule, step, total)
            inputs, targets = split_batch(batch, index)
            inputs, targets = to_device(inputs, dev), targets.to(dev)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(forward_logits(model, inputs), targets)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise FloatingPointError(f"loss became {value} at epoch {epoch}, step {step}; lower the lr")
            loss.backward()
            opt.step()
            running += value * targets.shape[0]
            seen += targets.shape[0]
            step += 1
            if progress is not None:
                progress(TrainProgress(epoch, step, total, value, opt.param_groups[0]["lr"], sparsity))
        result.epoch_losses.append(running / max(seen, 1))
        logger.info("epoch %d: loss %.4f", epoch, result.epoch_losses[-1])
        if max_steps is not None and step >= max_steps:
            break
    result.steps = step
    return result


def _set_lr(opt: torch.optim.Optimizer, base: list[float], how: str, step: int, total: int) -> None:
    if how == "none" or total <= 0:
        return
    if how == "cosine":
        factor = 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
    else:
        factor = 0.01 if step >= 0.75 * total else 0.1 if step >= 0.5 * total else 1.0
    for group, lr in zip(opt.param_groups, base):
        group["lr"] = lr * factor


def evaluate(
    model: nn.Module,
    loader: Iterable[Any],
    *,
    metric: str = "accuracy",
    device: str | torch.device = "cpu",
) -> AccuracyResult | PerplexityResult:
    """Evaluate ``model`` on ``loader``: ``metric="accuracy"`` (top-1 and mean
    cross-entropy, :func:`prunekit.measure.evaluate_accuracy`) or
    ``"perplexity"`` (exp of the mean token cross-entropy,
    :func:`prunekit.measure.evaluate_perplexity`)."""
    metric = check_choice("metric", metric, ("accuracy", "perplexity"))
    if metric == "accuracy":
        return evaluate_accuracy(model, loader, device)
    return evaluate_perplexity(model, loader, device)
