"""Instability analysis: linear mode connectivity of two trainings from the same start.

Frankle, Dziugaite, Roy & Carbin 2020, "Linear Mode Connectivity and the
Lottery Ticket Hypothesis": train two copies of a network from the same
weights θ_k (here the level's mask on the run's θ_k) with different data
orders (SGD noise) to θ_A and θ_B; evaluate the error along the linear path

    θ(α) = (1 − α)·θ_A + α·θ_B,   α ∈ {0, 1/(n−1), …, 1};

instability = max_α err(θ(α)) − (err(θ_A) + err(θ_B)) / 2.

A network is stable (its two trainings are linearly connected) when the
instability is about 0 (the paper uses < 2%). Masked weights are zero in both
copies and stay zero on the path. Batch normalisation: running statistics of
an interpolated network do not match its weights, so for a model with BN
layers they are recomputed on training batches at every α
(``torch.optim.swa_utils.update_bn``, momentum-free cumulative average);
models without BN are evaluated as interpolated.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..deprecation import renamed_value
from ..errors import InvalidParameterError
from ..lottery.levels import LotteryRun
from ..lottery.loop import Segment, StepBatches, derive_seed, train_segment
from ..measure._results import dump_json
from ..measure.accuracy import evaluate_accuracy
from ..measure.plots import _check_path, _figure, _save
from ..measure.size import dense_state_dict
from ..progress import ProgressArg, ProgressCallback, ProgressEvent, check_progress, nested, progress_reporter

__all__ = ["InstabilityResult", "instability_analysis", "linear_path_errors"]

logger = logging.getLogger(__name__)


@dataclass
class InstabilityResult:
    """Errors along the path and the instability (fractions, not %)."""

    alphas: list[float]
    errors: list[float]
    instability: float
    level: int | None = None
    start_iteration: int | None = None
    seeds: tuple[int, int] | None = None
    bn_recomputed: bool = False

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["seeds"] = list(self.seeds) if self.seeds is not None else None
        return out

    def to_json(self, path: str | os.PathLike[str] | None = None) -> str:
        """The result as JSON; written atomically to ``path`` when given."""
        return dump_json(self.to_dict(), path, 2)

    def plot(self, path: str | os.PathLike[str], title: str | None = None) -> Path:
        """Error (%) against α, end points marked; written atomically as PNG."""
        target = _check_path(path)
        fig = _figure(6.0, 4.0)
        ax = fig.add_subplot()
        ax.plot(self.alphas, [100 * e for e in self.errors], marker="o", label="θ(α) = (1−α)θ_A + αθ_B")
        ax.scatter([self.alphas[0], self.alphas[-1]], [100 * self.errors[0], 100 * self.errors[-1]],
                   color="black", zorder=3, label="trained copies")
        ax.set_xlabel("interpolation α")
        ax.set_ylabel("test error (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
        ax.set_title(title or f"linear path: instability {100 * self.instability:.2f} points")
        return _save(fig, target)


def _has_bn(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def linear_path_errors(
    model_a: nn.Module,
    model_b: nn.Module,
    data: Iterable[Any] | None = None,
    model_fn: Callable[[], nn.Module] | None = None,
    *,
    points: int = 11,
    bn_data: Iterable[Any] | None = None,
    loader: Iterable[Any] | None = None,
    bn_loader: Iterable[Any] | None = None,
    progress: ProgressArg = None,
) -> InstabilityResult:
    """Error of ``(1 − α)·θ_A + α·θ_B`` at ``points`` evenly spaced α in [0, 1].

    The effective (masked) weights of both models are interpolated with
    ``torch.lerp`` (exact at α = 0 and 1, and when θ_A = θ_B) into a fresh
    ``model_fn()``; integer buffers come from A; the errors are measured on
    ``data`` (evaluation batches). With BN layers the running statistics are
    recomputed on ``bn_data`` (training batches, required then).
    ``loader`` and ``bn_loader`` are the deprecated names of ``data`` and ``bn_data``.
    ``progress``: ``True`` for a progress bar on stderr, or a callable receiving a
    :class:`~prunekit.progress.ProgressEvent` (stage ``"path"``, ``done`` points of
    ``total`` = ``points``, figures ``alpha`` and ``error``); by default nothing is printed.
    """
    check_progress(progress)
    data = renamed_value(loader, "loader", "data", "linear_path_errors", new_value=data)
    bn_data = renamed_value(bn_loader, "bn_loader", "bn_data", "linear_path_errors", new_value=bn_data)
    if data is None:
        raise InvalidParameterError("data", "evaluation batches [(x, y), ...]", None,
                                    "Fix: linear_path_errors(model_a, model_b, test_batches, model_fn).")
    if not callable(model_fn):
        raise InvalidParameterError("model_fn", "a function returning a fresh model of the architecture", model_fn,
                                    "Fix: e.g. model_fn=lambda: create_model('lenet_300_100').")
    if isinstance(points, bool) or not isinstance(points, int) or points < 2:
        raise InvalidParameterError("points", "an int >= 2", points, "Fix: e.g. 11 (the paper uses 30).")
    state_a, state_b = dense_state_dict(model_a), dense_state_dict(model_b)
    if state_a.keys() != state_b.keys():
        raise InvalidParameterError("model_b", "the same architecture as model_a",
                                    f"<keys differ: {sorted(state_a.keys() ^ state_b.keys())[:4]}>")
    probe = model_fn()
    bn = _has_bn(probe)
    if bn and bn_data is None:
        raise InvalidParameterError("bn_data", "training batches to recompute BatchNorm statistics", None,
                                    "Fix: pass bn_data=[(x, y), ...] from the training set.")
    alphas = [i / (points - 1) for i in range(points)]
    with progress_reporter(progress) as tell:
        errors = _path_errors(state_a, state_b, alphas, data, model_fn, bn_data if bn else None, tell)
    instability = max(errors) - (errors[0] + errors[-1]) / 2
    return InstabilityResult(alphas, errors, instability, bn_recomputed=bn)


def _path_errors(state_a: Mapping[str, torch.Tensor], state_b: Mapping[str, torch.Tensor], alphas: Sequence[float],
                 data: Iterable[Any], model_fn: Callable[[], nn.Module], bn_data: Iterable[Any] | None,
                 tell: ProgressCallback) -> list[float]:
    """The error at each α (BN statistics recomputed on ``bn_data`` when given), reporting each point."""
    errors: list[float] = []
    tell(ProgressEvent("path", 0, len(alphas), {}, "starting"))
    for alpha in alphas:
        state = {k: torch.lerp(a, state_b[k], alpha) if a.is_floating_point() else a for k, a in state_a.items()}
        model = model_fn()
        model.load_state_dict(state)
        if bn_data is not None:
            torch.optim.swa_utils.update_bn(bn_data, model)
        errors.append(1.0 - evaluate_accuracy(model, data).accuracy)
        tell(ProgressEvent("path", len(errors), len(alphas), {"alpha": alpha, "error": errors[-1]},
                           f"alpha {alpha:.3g}"))
    return errors


def instability_analysis(
    run: LotteryRun,
    level: int,
    *,
    seeds: Sequence[int] = (0, 1),
    points: int = 11,
    bn_batches: int = 20,
    out_dir: str | os.PathLike[str] | None = None,
    plot: bool = True,
    progress: ProgressArg = None,
) -> InstabilityResult:
    """Train two copies of ``level``'s ticket from the run's θ_k (iterations k..T) with
    data orders ``seeds`` and measure the instability on the run's test set.

    Writes ``instability_<level>_<a>_<b>.json`` (and ``.png`` when ``plot``) into
    ``out_dir`` (default: the run directory's ``instability/``).

    ``progress``: ``True`` for a progress bar on stderr, or a callable receiving a
    :class:`~prunekit.progress.ProgressEvent`: stage ``"instability"`` (``done`` of
    ``total`` = 3: the two trainings, then the path), with each training's ``"fit"``
    events (``detail`` ``"copy <seed>"``) and the path's ``"path"`` events nested
    under it (``parent="instability"``); by default nothing is printed.
    """
    check_progress(progress)
    run.prepare()
    if not isinstance(seeds, Sequence) or len(seeds) != 2 or not all(
            isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise InvalidParameterError("seeds", "two int seeds (one data order per copy)", seeds,
                                    "Fix: e.g. seeds=(0, 1); equal seeds give identical copies.")
    if run.metrics(level) is None:
        raise InvalidParameterError("level", "a finished level of the run", level,
                                    "Fix: run the levels first (LotteryRun.run(until=level)).")
    config = run.config
    masks: Mapping[str, torch.Tensor] | None = run.masks(level)
    start = run.rewind_weights()
    k, T = config.rewind_step, config.train_steps
    copies = []
    with progress_reporter(progress) as tell:
        tell(ProgressEvent("instability", 0, 3, {}, f"level {level}"))

        def fit_report(event: ProgressEvent) -> None:  # train_segment's events name the lottery as parent
            tell(event.with_parent("instability"))
        for seed in seeds:
            data_seed = derive_seed(config.seed, "instability", level, "data", seed)
            model = run.build(start, masks)
            segment = Segment(k, T, data_seed, derive_seed(config.seed, "instability", level, "train", seed))
            trained = train_segment(model, config, run.train, run.evaluator, segment, report=fit_report,
                                    detail=f"copy {seed}")
            copies.append(model)
            figures = {"accuracy": float(trained.curve[-1]["test_accuracy"])} if trained.curve else {}
            tell(ProgressEvent("instability", len(copies), 3, figures, f"copy {seed}"))
        bn_data = list(StepBatches(*run.train, config.batch_size, config.seed, 0, bn_batches))
        result = linear_path_errors(copies[0], copies[1], run.evaluator.test, run.model_fn, points=points,
                                    bn_data=bn_data, progress=nested(tell, "instability"))
        tell(ProgressEvent("instability", 3, 3, {"instability": result.instability}, "path"))
    result.level, result.start_iteration, result.seeds = level, k, (int(seeds[0]), int(seeds[1]))
    where = Path(out_dir) if out_dir is not None else run.out / "instability"
    stem = f"instability_{level:03d}_{seeds[0]}_{seeds[1]}"
    result.to_json(where / f"{stem}.json")
    if plot:
        result.plot(where / f"{stem}.png", title=f"level {level}, k={k}: instability {100 * result.instability:.2f} points")
    logger.info("instability of level %d from k=%d: %.4f (errors %s)", level, k, result.instability,
                ", ".join(f"{e:.4f}" for e in result.errors))
    return result
