"""Pruning at initialisation: one driver for SNIP, GraSP, SynFlow, magnitude and random.

``prune_at_init(model, sparsity, method, ...)`` masks an untrained network
before training, in one shot or in ``rounds`` rounds on the exponential
schedule of Tanaka et al. 2020 (SynFlow): the sparsity after round ``k`` of
``n`` is ``1 − (1 − s)^(k/n)``, the density shrinking by the same factor each
round, so the last round lands on ``s`` exactly. Each round rescores the
network as masked so far. SynFlow is iterative by default (100 rounds, as in
the paper); the other methods are one-shot by default, as published.

Only the masks change: weights, BN statistics, modes and ``.grad`` are left
as they were (the criteria restore them, see :mod:`prunekit.scores.gradients`).
"""

from __future__ import annotations

import logging
import numbers
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from .allocation import check_sparsity
from .controller import PruningController
from .scores import Criterion, SynFlow, as_criterion
from .scores.gradients import as_batches, input_flow, input_shape_of
from .deprecation import renamed_argument
from .errors import InvalidParameterError
from .validation import checked_keywords
from .progress import ProgressArg, ProgressEvent, check_progress, progress_reporter
from .pruner import Pruner
from .schedules import Iterative

__all__ = ["PruneAtInitResult", "default_rounds", "exponential_levels", "is_collapsed", "prune_at_init"]

logger = logging.getLogger(__name__)

#: Rounds used when ``rounds`` is not given: iterative SynFlow as in the paper.
DEFAULT_ROUNDS = {"synflow": 100}


@dataclass
class PruneAtInitResult:
    """What :func:`prune_at_init` did: the sparsity after each round, the time it took,
    and the input-dependent synaptic flow ``R(1) − R(0)`` of the masked network
    (:func:`~prunekit.scores.gradients.input_flow`; 0 = a layer collapsed)."""

    method: str
    sparsity: float
    levels: list[float] = field(default_factory=list)
    seconds: float = 0.0
    flow: float | None = None

    @property
    def collapsed(self) -> bool | None:
        return None if self.flow is None else self.flow == 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "collapsed": self.collapsed}


def exponential_levels(sparsity: float, rounds: int) -> list[float]:
    """Sparsity after each of ``rounds`` rounds: ``1 − (1 − s)^(k/n)``, the last exactly ``s``."""
    levels = [level for _, level in Iterative(final=sparsity, steps=rounds, spacing="geometric").events()]
    levels[-1] = float(sparsity)
    return levels


def default_rounds(method: str | Criterion | Callable[..., Any]) -> int:
    """100 for SynFlow, 1 (one-shot) for every other method."""
    name = method if isinstance(method, str) else getattr(method, "name", "")
    return DEFAULT_ROUNDS.get(str(name).split(":")[0], 1)


def is_collapsed(model: nn.Module, input_shape: Sequence[int]) -> bool:
    """True when no path joins the input to the output any more (layer collapse:
    the input-dependent synaptic flow :func:`~prunekit.scores.gradients.input_flow` is 0)."""
    return input_flow(model, input_shape) == 0.0


@checked_keywords
def prune_at_init(
    model: nn.Module,
    sparsity: float,
    method: str | Criterion | Callable[..., Any] = "synflow",
    *,
    data: Any = None,
    rounds: int | None = None,
    scope: str = "global",
    input_shape: Sequence[int] | None = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    progress: ProgressArg = None,
    **pruner_kwargs: Any,
) -> PruneAtInitResult:
    """Mask ``model`` (untrained) to ``sparsity`` with ``method`` before training.

    Args:
        sparsity: fraction of the targeted weights pruned at the end, in [0, 1).
        method: ``"snip"``, ``"grasp"`` (``"grasp:<T>"`` for another temperature),
            ``"synflow"``, ``"magnitude"``, ``"random"``, any registered criterion
            or a :class:`~prunekit.Criterion`.
        data: one ``(inputs, targets)`` batch or a list of them, for the
            criteria that need data (SNIP, GraSP); the scores use the mean
            loss. ``batches`` is its deprecated name.
        rounds: pruning rounds on the exponential schedule; default 100 for
            SynFlow and 1 (one-shot) otherwise.
        scope: ``"global"`` (one ranking over all targets, as in the papers) or ``"local"``.
        input_shape: one input's shape for SynFlow and for the collapse check,
            e.g. ``(3, 32, 32)``; taken from ``data`` when omitted.
        loss_fn: ``loss_fn(logits, targets)``, mean cross-entropy by default.
        progress: ``True`` for a progress bar on stderr, or a callable receiving a
            :class:`~prunekit.progress.ProgressEvent` (stage ``"prune-at-init"``,
            ``done`` rounds of ``total`` = ``rounds``, figures ``sparsity``) before
            the first and after each round; by default nothing is printed.
        pruner_kwargs: passed to :class:`~prunekit.Pruner` (``structure``,
            ``types``, ``include``, ``exclude``, ``min_keep``, ``mode`` ...).

    Returns a :class:`PruneAtInitResult`; the model is masked in place.

    Example::

        prunekit.prune_at_init(model, 0.98, "synflow", input_shape=(3, 32, 32))
        prunekit.prune_at_init(model, 0.9, "snip", data=[(x, y)])
    """
    # -- every check before anything is changed
    data = renamed_argument(pruner_kwargs, "batches", "data", "prunekit.prune_at_init", new_value=data)
    check_progress(progress)
    sparsity = check_sparsity(sparsity)
    if isinstance(sparsity, int) or not sparsity < 1.0:
        raise InvalidParameterError(
            "sparsity", "a float in [0, 1) (fraction of the targeted weights pruned)", sparsity,
            "Fix: e.g. 0.98; an exponential schedule cannot reach 1.",
        )
    if rounds is None:
        rounds = default_rounds(method)
    if isinstance(rounds, bool) or not isinstance(rounds, numbers.Integral) or rounds < 1:
        raise InvalidParameterError("rounds", "an int >= 1", rounds, "Fix: 1 for one-shot, e.g. 100 for SynFlow.")
    criterion = as_criterion(method)
    data = as_batches(data, "data") if data is not None else None
    if "data" in criterion.requires and data is None:
        raise InvalidParameterError(
            "data", f"training batches for {criterion!r}", None,
            "Fix: pass data=[(x, y)] (a batch or a few of the training data).",
        )
    if input_shape is None and data is not None and isinstance(data[0][0], torch.Tensor):
        input_shape = input_shape_of(data)
    if isinstance(criterion, SynFlow) and input_shape is None and criterion.input_shape is None:
        raise InvalidParameterError(
            "input_shape", "the shape of one input, e.g. (3, 32, 32)", None,
            "Fix: SynFlow needs no data, only input_shape=...",
        )
    pruner = Pruner(model, criterion=criterion, scope=scope, **pruner_kwargs)
    context: dict[str, Any] = {"data": data, "loss_fn": loss_fn}
    if input_shape is not None:
        context["input_shape"] = tuple(input_shape)

    levels = exponential_levels(float(sparsity), int(rounds))
    controller = PruningController(pruner, context=context)
    start = time.perf_counter()
    with progress_reporter(progress) as tell:
        tell(ProgressEvent("prune-at-init", 0, len(levels), {"sparsity": 0.0}, "starting"))
        for k, level in enumerate(levels):
            controller.event(k, level, unit="step")
            logger.debug("round %d/%d: sparsity %.6f", k + 1, len(levels), level)
            tell(ProgressEvent("prune-at-init", k + 1, len(levels), {"sparsity": float(level)}, f"round {k + 1}"))
    seconds = time.perf_counter() - start
    result = PruneAtInitResult(repr(criterion), float(sparsity), levels, seconds)
    if input_shape is not None:
        result.flow = input_flow(model, input_shape)
        if result.flow == 0.0:
            logger.warning("%s at sparsity %.4f disconnected the network (layer collapse)", criterion, sparsity)
    logger.info("pruned at init with %r to %.4f in %d rounds (%.2f s)", criterion, sparsity, rounds, seconds)
    return result
