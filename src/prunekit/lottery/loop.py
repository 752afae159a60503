"""One training segment of an IMP level: iterations ``start..stop`` on a global clock.

Lottery-ticket experiments talk in iterations since θ₀: weight rewinding
trains from θ_k for iterations ``k..T``, LR rewinding replays the learning
rate of iterations ``k..T``. A segment therefore knows its global start, draws
its batches from a data order fixed by a seed and the global iteration (epoch
``e`` is a permutation seeded by ``(seed, e)``), sets the learning rate of
each global iteration itself, and evaluates on the validation and test sets
every ``eval_every`` global iterations. Training goes through
:func:`prunekit.fit` with a ready optimizer and ``lr_schedule="none"``.

Early stopping (Frankle & Carbin 2019): the early-stop iteration is the
evaluated iteration of minimum validation loss; the ticket's accuracy there
is reported next to its accuracy at the end.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset, default_collate

from ..errors import InvalidParameterError
from ..measure.accuracy import evaluate_accuracy
from ..progress import ProgressCallback, ProgressEvent
from ..training import TrainProgress, _set_lr, fit, make_optimizer
from .config import LotteryConfig

__all__ = [
    "Evaluator",
    "Segment",
    "SegmentResult",
    "StepBatches",
    "as_tensors",
    "derive_seed",
    "lr_at",
    "train_segment",
]

logger = logging.getLogger(__name__)

EVAL_BATCH = 1000


def derive_seed(seed: int, *parts: object) -> int:
    """A seed of its own for each level, control and data order: ``crc32("seed/part/…")``."""
    return zlib.crc32("/".join(str(p) for p in (seed, *parts)).encode()) % (2**31)


def as_tensors(dataset: Dataset | tuple[torch.Tensor, torch.Tensor], param: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(inputs, targets)`` of a whole data set in memory (IMP reads it thousands of times).

    A data set's ``transform`` is applied once, when it is read in (random
    augmentation is therefore frozen; augment inside the model if needed)."""
    if isinstance(dataset, tuple) and len(dataset) == 2 and all(isinstance(t, torch.Tensor) for t in dataset):
        x, y = dataset
    else:
        tensors = getattr(dataset, "tensors", None)
        if getattr(dataset, "transform", None) is not None:  # tensors() would skip the transform
            tensors = None
        if callable(tensors):
            x, y = tensors()
        elif isinstance(tensors, tuple) and len(tensors) == 2:
            x, y = tensors
        else:
            try:
                x, y = default_collate([dataset[i] for i in range(len(dataset))])  # type: ignore[arg-type]
            except (TypeError, ValueError) as exc:
                raise InvalidParameterError(
                    param, "a data set of (input tensor, label) items or an (inputs, targets) tuple",
                    f"<{type(dataset).__name__}>", f"Fix: pass a TensorDataset ({exc}).") from None
    if len(x) != len(y) or len(x) == 0:
        raise InvalidParameterError(param, "as many targets as inputs, at least one", f"<{len(x)} inputs, {len(y)} targets>")
    return x, y


class StepBatches:
    """Batches of global iterations ``start..stop-1`` in a seeded order.

    Iteration ``i`` is batch ``i mod E`` of epoch ``i div E`` (``E`` = full
    batches per epoch; the last partial batch is dropped), and epoch ``e``
    visits the samples in ``randperm(n, generator=seed(seed, e))`` order. So
    the batch of an iteration does not depend on where a segment starts.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int, start: int, stop: int) -> None:
        if len(x) < batch_size:
            raise InvalidParameterError("batch_size", f"at most the training set's size ({len(x)})", batch_size)
        self.x, self.y, self.batch_size, self.seed = x, y, batch_size, seed
        self.start, self.stop = start, stop
        self.per_epoch = len(x) // batch_size

    def __len__(self) -> int:
        return self.stop - self.start

    def order(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(derive_seed(self.seed, "epoch", epoch))
        return torch.randperm(len(self.x), generator=generator)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch, perm = -1, torch.empty(0, dtype=torch.long)
        for i in range(self.start, self.stop):
            if i // self.per_epoch != epoch:
                epoch = i // self.per_epoch
                perm = self.order(epoch)
            offset = (i % self.per_epoch) * self.batch_size
            index = perm[offset: offset + self.batch_size]
            yield self.x[index], self.y[index]


@dataclass
class Segment:
    """What to train: global iterations ``start..stop``, the LR rule, the data order."""

    start: int
    stop: int
    data_seed: int
    init_seed: int
    constant_lr: float | None = None  # fine-tuning: this LR throughout instead of the schedule


@dataclass
class SegmentResult:
    """Evaluations along a segment and the early-stop summary."""

    curve: list[dict[str, float]] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0
    lr_first: float | None = None
    lr_last: float | None = None

    def summary(self) -> dict[str, Any]:
        """Final and early-stop metrics: ``early_stop_iteration`` = argmin of ``val_loss``."""
        last = self.curve[-1]
        best = min(self.curve, key=lambda p: (p["val_loss"], p["iteration"]))
        return {
            "accuracy": last["test_accuracy"], "loss": last["test_loss"],
            "early_stop_iteration": int(best["iteration"]),
            "early_stop_accuracy": best["test_accuracy"], "early_stop_val_loss": best["val_loss"],
            "steps": self.steps, "seconds": self.seconds, "lr_first": self.lr_first, "lr_last": self.lr_last,
            "curve": self.curve,
        }


def _batches(x: torch.Tensor, y: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x[i: i + EVAL_BATCH], y[i: i + EVAL_BATCH]) for i in range(0, len(x), EVAL_BATCH)]


class Evaluator:
    """Validation and test sets as ready batches; ``val`` None uses the test set (logged)."""

    def __init__(self, test: tuple[torch.Tensor, torch.Tensor], val: tuple[torch.Tensor, torch.Tensor] | None) -> None:
        self.test = _batches(*test)
        if val is None:
            logger.warning("no validation set: the early-stop iteration is chosen on the test loss")
        self.val = self.test if val is None else _batches(*val)

    def __call__(self, model: nn.Module, iteration: int) -> dict[str, float]:
        test = evaluate_accuracy(model, self.test)
        val = test if self.val is self.test else evaluate_accuracy(model, self.val)
        return {"iteration": iteration, "val_loss": val.loss, "val_accuracy": val.accuracy,
                "test_loss": test.loss, "test_accuracy": test.accuracy}


def lr_at(config: LotteryConfig, iteration: int) -> float:
    """The learning rate of global ``iteration`` under ``config.lr_schedule`` over T iterations
    (the same rule as :func:`prunekit.fit`)."""
    probe = SimpleNamespace(param_groups=[{"lr": config.lr}])
    _set_lr(probe, [config.lr], config.lr_schedule, iteration, config.train_steps)  # type: ignore[arg-type]
    return float(probe.param_groups[0]["lr"])


def train_segment(
    model: nn.Module,
    config: LotteryConfig,
    train: tuple[torch.Tensor, torch.Tensor],
    evaluator: Evaluator,
    segment: Segment,
    *,
    capture: Sequence[int] = (),
    on_capture: Callable[[int, nn.Module], None] | None = None,
    callback: Callable[[TrainProgress], None] | None = None,
    report: ProgressCallback | None = None,
    detail: str = "",
) -> SegmentResult:
    """Train ``model`` (masked or dense) over ``segment`` with a fresh optimizer.

    ``on_capture(i, model)`` runs when the global iteration count reaches each
    ``i`` in ``capture`` (θ_k for rewinding). ``report`` receives every step's
    :class:`~prunekit.progress.ProgressEvent` of stage ``"fit"`` (parent
    ``"lottery"``, ``done`` the iterations of this segment so far of ``total``
    = its length, ``detail``) and ``callback`` (deprecated) the old
    :class:`~prunekit.training.TrainProgress` with ``step`` the global
    iteration count; an exception either raises stops training, as a kill would.
    """
    begin = time.perf_counter()
    torch.manual_seed(segment.init_seed)
    result = SegmentResult()
    points = {segment.start, segment.stop}
    points.update(range((segment.start // config.eval_every + 1) * config.eval_every, segment.stop, config.eval_every))

    def lr(i: int) -> float:
        return segment.constant_lr if segment.constant_lr is not None else lr_at(config, i)

    def reached(i: int) -> None:
        if i in capture and on_capture is not None:
            on_capture(i, model)
        if i in points:
            result.curve.append(evaluator(model, i))

    optimizer = make_optimizer(model, config.optimizer, lr=lr(segment.start), momentum=config.momentum,
                               weight_decay=config.weight_decay)
    reached(segment.start)

    length = segment.stop - segment.start

    def progress(p: ProgressEvent) -> None:
        i = segment.start + p.done
        step_lr, loss = p.figures["lr"], p.figures["loss"]
        if result.lr_first is None:
            result.lr_first = step_lr
        result.lr_last = step_lr
        for group in optimizer.param_groups:
            group["lr"] = lr(i)
        reached(i)
        epoch, sparsity = int(p.figures["epoch"]), p.figures.get("sparsity")
        if report is not None:
            report(TrainProgress(epoch, p.done, length, loss, step_lr, sparsity, parent="lottery", detail=detail))
        if callback is not None:
            callback(TrainProgress(epoch, i, segment.stop, loss, step_lr, sparsity))

    batches = StepBatches(*train, config.batch_size, segment.data_seed, segment.start, segment.stop)
    fitted = fit(model, batches, epochs=1, optimizer=optimizer, lr_schedule="none", progress=progress)
    result.steps = fitted.steps
    result.seconds = time.perf_counter() - begin
    return result
