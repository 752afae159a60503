"""A plain training loop for users without a framework, with pruning on a schedule.

``fit`` trains with SGD (momentum, Nesterov), Adam or AdamW, an optional
cosine or step learning-rate schedule, and prunes at the events of a
:class:`~prunekit.controller.PruningController` (a pruner on a schedule),
which it calls at the start of every epoch and before every step.
Pruned weights stay zero through every optimizer step: in ``reparam`` mode
the mask multiplies ``weight_orig`` in the forward pass, in ``inplace`` mode
prunekit's optimizer hook re-applies the mask after each step.

The library logs; it never prints. ``progress=True`` draws a progress bar,
a callable receives a :class:`prunekit.progress.ProgressEvent` after every
step (stage ``"fit"``, see :mod:`prunekit.progress`).
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
from .controller import PruningController, PruningHooks, StepPruner
from .deprecation import renamed_value
from .errors import InvalidParameterError, check_choice
from .validation import checked_keywords
from .losses import classification_loss
from .progress import LegacyEvent, ProgressArg, ProgressCallback, check_progress, progress_reporter
from .measure.accuracy import AccuracyResult, PerplexityResult, evaluate_accuracy, evaluate_perplexity
from .schedules import Schedule

__all__ = ["TrainProgress", "FitResult", "fit", "evaluate", "make_optimizer", "classification_loss"]

logger = logging.getLogger(__name__)

OPTIMIZERS = ("sgd", "adam", "adamw")
LR_SCHEDULES = ("none", "cosine", "step")


class TrainProgress(LegacyEvent):
    """What :func:`fit` reports after every step: a :class:`~prunekit.progress.ProgressEvent`
    of stage ``"fit"`` (``done`` = steps taken, ``total`` = steps planned, ``None`` when
    ``data`` has no length and no ``max_steps`` is given; ``figures``: ``loss``, ``lr``,
    ``epoch``, and ``sparsity`` once the model is pruned; ``detail``: ``"epoch e/E"``).

    Deprecated: its old attributes ``epoch``, ``step``, ``total_steps``, ``loss``, ``lr``,
    ``sparsity`` still answer for one release and warn with the new form.
    """

    _new_forms = {"epoch": "figures['epoch']", "step": "done", "total_steps": "total",
                  "loss": "figures['loss']", "lr": "figures['lr']", "sparsity": "figures.get('sparsity')"}

    def __init__(self, epoch: int, step: int, total_steps: int, loss: float, lr: float,
                 sparsity: float | None = None, *, epochs: int | None = None, parent: str | None = None,
                 detail: str | None = None) -> None:
        figures = {"loss": float(loss), "lr": float(lr), "epoch": int(epoch)}
        if sparsity is not None:
            figures["sparsity"] = float(sparsity)
        if detail is None:
            detail = f"epoch {epoch + 1}" + (f"/{epochs}" if epochs is not None else "")
        super().__init__("fit", int(step), int(total_steps) if total_steps else None, figures, detail, parent)
        self._keep_legacy(epoch=epoch, step=step, total_steps=total_steps, loss=loss, lr=lr, sparsity=sparsity)


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


@checked_keywords
def fit(
    model: nn.Module,
    data: Iterable[Any] | None = None,
    *,
    epochs: int = 1,
    optimizer: str | torch.optim.Optimizer = "sgd",
    lr: float = 0.1,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    lr_schedule: str = "none",
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = classification_loss,
    controller: PruningHooks | None = None,
    pruner: StepPruner | None = None,
    schedule: Schedule | None = None,
    max_steps: int | None = None,
    device: str | torch.device = "cpu",
    progress: ProgressArg = None,
    loader: Iterable[Any] | None = None,
) -> FitResult:
    """Train ``model`` on ``data`` (an iterable of ``(inputs, targets)`` batches).

    Pruning: ``controller`` (a :class:`~prunekit.controller.PruningController`,
    or anything with its :class:`~prunekit.controller.PruningHooks`) is told
    ``on_epoch_begin(epoch)`` at the start of every epoch and
    ``on_step_begin(step, epoch)`` before every step (``step`` = optimizer
    steps done), and prunes at its schedule's events. ``pruner`` and
    ``schedule`` together are short for
    ``controller=PruningController(pruner, schedule)``.

    Learning rate: ``"cosine"`` anneals to 0 over all steps, ``"step"`` divides
    it by 10 at 50% and 75% of the steps (the CIFAR ResNet recipe of He et al. 2016).

    Progress: ``progress=True`` draws a bar on stderr; a callable receives a
    :class:`~prunekit.progress.ProgressEvent` (stage ``"fit"``, ``done`` steps
    of ``total``, ``figures`` ``loss``/``lr``/``epoch``/``sparsity``) after
    every step; by default events are only logged at DEBUG. A callback written
    for the old :class:`TrainProgress` attributes keeps working (deprecated).

    ``loader`` is the deprecated name of ``data``.
    """
    data = renamed_value(loader, "loader", "data", "prunekit.fit", new_value=data)
    if data is None:
        raise InvalidParameterError("data", "an iterable of (inputs, targets) batches", None,
                                    "Fix: fit(model, loader) with a DataLoader or a list of batches.")
    if isinstance(epochs, bool) or not isinstance(epochs, numbers.Integral) or epochs < 0:
        raise InvalidParameterError("epochs", "a non-negative int", epochs)
    check_progress(progress)
    controller = _controller(controller, pruner, schedule)
    lr_schedule = check_choice("lr_schedule", lr_schedule, LR_SCHEDULES)
    dev = torch.device(device)
    model.to(dev)
    opt = optimizer if isinstance(optimizer, torch.optim.Optimizer) else make_optimizer(
        model, optimizer, lr=lr, momentum=momentum, weight_decay=weight_decay
    )
    try:
        per_epoch = len(data)  # type: ignore[arg-type]
    except TypeError:
        per_epoch = max_steps or 0
    total = per_epoch * epochs if max_steps is None else min(max_steps, per_epoch * epochs or max_steps)
    base_lrs = [g["lr"] for g in opt.param_groups]
    result = FitResult()
    if controller is not None:
        controller.begin()

    def level_now() -> float | None:
        if controller is None or not controller.events:
            return None
        level = controller.events[-1].level
        return controller.events[-1].sparsity if level is None or isinstance(level, int) else float(level)

    known = max_steps is not None or per_epoch > 0 or epochs == 0
    with progress_reporter(progress) as report:
        step = _train(model, data, epochs, opt, base_lrs, lr_schedule, total, known, max_steps, loss_fn, dev,
                      controller, level_now, result, report)
    result.steps = step
    if controller is not None:
        result.pruning_events = [(e.t, e.sparsity if e.level is None else e.level) for e in controller.events]
    return result


def _train(model: nn.Module, data: Iterable[Any], epochs: int, opt: torch.optim.Optimizer, base_lrs: list[float],
           lr_schedule: str, total: int, known: bool, max_steps: int | None,
           loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], dev: torch.device,
           controller: PruningHooks | None, level_now: Callable[[], float | None], result: FitResult,
           report: ProgressCallback) -> int:
    """The loop of :func:`fit`; returns the steps taken. Reports a :class:`TrainProgress` after every step
    (and, when the number of steps was not known, once more at the end with ``total`` = steps taken)."""
    sparsity: float | None = None
    last: TrainProgress | None = None
    step = 0
    model.train()
    for epoch in range(epochs):
        if controller is not None:
            controller.on_epoch_begin(epoch)
            sparsity = level_now()
        running, seen = 0.0, 0
        for index, batch in enumerate(data):
            if max_steps is not None and step >= max_steps:
                break
            if controller is not None:
                controller.on_step_begin(step, epoch)
                sparsity = level_now()
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
            last = TrainProgress(epoch, step, total if known else 0, value, opt.param_groups[0]["lr"], sparsity,
                                 epochs=epochs)
            report(last)
        result.epoch_losses.append(running / max(seen, 1))
        logger.info("epoch %d: loss %.4f", epoch, result.epoch_losses[-1])
        if max_steps is not None and step >= max_steps:
            break
    if last is not None and last.total != step:  # fewer steps than planned, or none planned: end at done == total
        legacy = last._legacy  # type: ignore[attr-defined]
        report(TrainProgress(legacy["epoch"], step, step, legacy["loss"], legacy["lr"], legacy["sparsity"],
                             epochs=epochs))
    return step


def _controller(controller: PruningHooks | None, pruner: StepPruner | None,
                schedule: Schedule | None) -> PruningHooks | None:
    if controller is not None:
        if pruner is not None or schedule is not None:
            raise InvalidParameterError(
                "controller", "given alone (it holds the pruner and the schedule)", "<controller and pruner/schedule>",
                "Fix: pass controller=PruningController(pruner, schedule), or pruner= and schedule= without it.",
            )
        if not isinstance(controller, PruningHooks):
            raise InvalidParameterError(
                "controller", "a PruningController (begin, on_epoch_begin, on_step_begin, events)",
                type(controller).__name__, "Fix: controller=prunekit.controller.PruningController(pruner, schedule).",
            )
        return controller
    if (pruner is None) != (schedule is None):
        raise InvalidParameterError(
            "schedule", "given together with pruner (or neither)",
            f"<pruner={'set' if pruner else None}, schedule={'set' if schedule else None}>",
            "Fix: pass both pruner=Pruner(model, ...) and schedule=create_schedule(...).",
        )
    return None if pruner is None else PruningController(pruner, schedule)


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
    data: Iterable[Any] | None = None,
    *,
    metric: str = "accuracy",
    device: str | torch.device = "cpu",
    loader: Iterable[Any] | None = None,
) -> AccuracyResult | PerplexityResult:
    """Evaluate ``model`` on ``data`` (``loader`` is its deprecated name): ``metric="accuracy"`` (top-1 and mean
    cross-entropy, :func:`prunekit.measure.evaluate_accuracy`) or
    ``"perplexity"`` (exp of the mean token cross-entropy,
    :func:`prunekit.measure.evaluate_perplexity`)."""
    data = renamed_value(loader, "loader", "data", "prunekit.evaluate", new_value=data)
    if data is None:
        raise InvalidParameterError("data", "an iterable of (inputs, targets) batches", None,
                                    "Fix: evaluate(model, loader).")
    metric = check_choice("metric", metric, ("accuracy", "perplexity"))
    if metric == "accuracy":
        return evaluate_accuracy(model, data, device)
    return evaluate_perplexity(model, data, device)
