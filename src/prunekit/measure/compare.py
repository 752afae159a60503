"""Side-by-side measurements of a dense model and its pruned version.

:func:`compare` measures both models the same way (one row each) and the
ratio ``pruned / dense`` of every figure:

* ``params``, ``nonzero``: :func:`~prunekit.measure.count_parameters`;
* ``dense_macs``, ``effective_macs``: :func:`~prunekit.measure.count_macs`
  on ``example_input`` (effective = zeros of weights skipped);
* ``bytes_dense``, ``bytes_compressed``: :func:`~prunekit.measure.model_size`;
* ``latency_ms`` (median, with p10/p90): :func:`~prunekit.measure.measure_latency`;
* ``accuracy``/``loss`` (``metric="accuracy"``) or ``perplexity``/``loss``
  (``metric="perplexity"``) when a ``loader`` is given.

A ratio is None where either value is missing or the dense value is 0.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, fields
from typing import Any

from torch import nn

from ..errors import InvalidParameterError, check_choice
from ._results import dump_json, table_lines
from .accuracy import evaluate_accuracy, evaluate_perplexity
from .latency import _check_int, measure_latency
from .macs import count_macs, prepare_input
from .params import _check_model, count_parameters
from .size import model_size

__all__ = ["ModelMeasures", "Comparison", "compare"]

logger = logging.getLogger(__name__)

METRICS = ("accuracy", "perplexity")

#: Figures whose ratio pruned/dense is reported.
RATIO_FIELDS = (
    "params",
    "nonzero",
    "dense_macs",
    "effective_macs",
    "bytes_dense",
    "bytes_compressed",
    "latency_ms",
    "accuracy",
    "perplexity",
    "loss",
)


@dataclass
class ModelMeasures:
    """Every figure of one model (None where not measured)."""

    name: str
    params: int
    nonzero: int
    dense_macs: int
    effective_macs: int
    bytes_dense: int | None = None
    bytes_compressed: int | None = None
    latency_ms: float | None = None
    latency_p10_ms: float | None = None
    latency_p90_ms: float | None = None
    accuracy: float | None = None
    perplexity: float | None = None
    loss: float | None = None

    @property
    def sparsity(self) -> float:
        """``1 - nonzero / params``."""
        return 1.0 - self.nonzero / self.params if self.params else 0.0

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["sparsity"] = self.sparsity
        return out


@dataclass
class Comparison:
    """One row per model (``rows[0]`` dense, ``rows[1]`` pruned) and the ratios pruned/dense."""

    rows: list[ModelMeasures]
    ratios: dict[str, float | None]
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def dense(self) -> ModelMeasures:
        return self.rows[0]

    @property
    def pruned(self) -> ModelMeasures:
        return self.rows[1]

    @property
    def speedup(self) -> float | None:
        """``dense latency / pruned latency`` (None without latency)."""
        ratio = self.ratios.get("latency_ms")
        return 1.0 / ratio if ratio else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "models": [r.to_dict() for r in self.rows],
            "ratios": dict(self.ratios),
            "speedup": self.speedup,
            "settings": dict(self.settings),
        }

    def to_json(self, path: str | os.PathLike[str] | None = None, indent: int = 2) -> str:
        """The comparison as JSON; written atomically to ``path`` when given."""
        return dump_json(self.to_dict(), path, indent)

    def table(self) -> str:
        """Plain text: one line per figure, one column per model, then the ratio."""
        header = ("", *(r.name for r in self.rows), "ratio")
        lines = []
        for name in ("params", "nonzero", "sparsity", *RATIO_FIELDS[2:]):
            values = [getattr(r, name) for r in self.rows]
            if all(v is None for v in values):
                continue
            ratio = self.ratios.get(name)
            lines.append((name, *(_fmt(name, v) for v in values), "" if ratio is None else f"{ratio:.3f}"))
        return "\n".join(line.rstrip() for line in table_lines(header, lines))

    def __str__(self) -> str:
        return self.table()


def _fmt(name: str, value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    if name == "sparsity":
        return f"{100 * value:.2f}%"
    if name == "accuracy":
        return f"{value:.4f}"
    return f"{value:.3f}"


def _measure(
    name: str,
    model: nn.Module,
    example_input: Any,
    loader: Any,
    metric: str,
    latency: bool,
    size: bool,
    latency_kwargs: dict[str, Any],
    device: str,
) -> ModelMeasures:
    counts = count_parameters(model)
    macs = count_macs(model, example_input)
    row = ModelMeasures(name, counts.params, counts.nonzero, macs.dense_macs, macs.effective_macs)
    if size:
        sizes = model_size(model)
        row.bytes_dense, row.bytes_compressed = sizes.dense_bytes, sizes.compressed_bytes
    if latency:
        timing = measure_latency(model, example_input, **latency_kwargs)
        row.latency_ms, row.latency_p10_ms, row.latency_p90_ms = timing.median_ms, timing.p10_ms, timing.p90_ms
    if loader is not None:
        if metric == "accuracy":
            result = evaluate_accuracy(model, loader, device)
            row.accuracy, row.loss = result.accuracy, result.loss
        else:
            lm = evaluate_perplexity(model, loader, device)
            row.perplexity, row.loss = lm.perplexity, lm.loss
    return row


def compare(
    dense: nn.Module,
    pruned: nn.Module,
    example_input: Any,
    *,
    loader: Any = None,
    metric: str = "accuracy",
    latency: bool = True,
    size: bool = True,
    warmup: int = 10,
    repeats: int = 50,
    threads: int | None = None,
    device: str = "cpu",
    names: tuple[str, str] = ("dense", "pruned"),
) -> Comparison:
    """Measure ``dense`` and ``pruned`` alike and report ``ratio = pruned / dense``.

    Args:
        dense, pruned: two distinct models (prune a ``copy.deepcopy``).
        example_input: input for MAC counting and latency (tensor, tuple or dict).
        loader: ``(inputs, targets)`` batches; when given, ``metric`` is evaluated.
        metric: ``"accuracy"`` (top-1 and cross-entropy) or ``"perplexity"``.
        latency: time both models (``warmup``, ``repeats``, ``threads`` as in
            :func:`~prunekit.measure.measure_latency`).
        size: measure bytes dense and compressed.
        device: where the loader is evaluated.
        names: labels of the two rows.

    Returns:
        :class:`Comparison`; ``ratios[f] = pruned.f / dense.f`` for each of
        :data:`RATIO_FIELDS` (None where missing or divided by 0).
    """
    _check_model(dense, "dense")
    _check_model(pruned, "pruned")
    if dense is pruned:
        raise InvalidParameterError(
            "pruned", "a different model object than dense", "<the same object as dense>",
            "Fix: prune a copy: pruned = prunekit.prune(copy.deepcopy(dense), 0.5).",
        )
    metric = check_choice("metric", metric, METRICS)
    for flag, value in (("latency", latency), ("size", size)):
        if not isinstance(value, bool):
            raise InvalidParameterError(flag, "True or False", value)
    if (
        not isinstance(names, (tuple, list))
        or len(names) != 2
        or not all(isinstance(n, str) for n in names)
        or names[0] == names[1]
    ):
        raise InvalidParameterError("names", "two distinct strings", names, "Fix: e.g. names=('dense', 'pruned').")
    prepare_input(dense, example_input)  # validates example_input before any work
    if latency:
        _check_int("warmup", warmup, 0, "Fix: e.g. warmup=10.")
        _check_int("repeats", repeats, 1, "Fix: e.g. repeats=50.")
        if threads is not None:
            _check_int("threads", threads, 1, "Fix: None, or a positive thread count.")
    latency_kwargs = {"warmup": warmup, "repeats": repeats, "threads": threads}
    rows = [
        _measure(name, model, example_input, loader, metric, latency, size, latency_kwargs, device)
        for name, model in zip(names, (dense, pruned))
    ]
    ratios: dict[str, float | None] = {}
    for name in RATIO_FIELDS:
        a, b = getattr(rows[0], name), getattr(rows[1], name)
        ratios[name] = None if a is None or b is None or a == 0 else b / a
    settings = {"metric": metric if loader is not None else None, "latency": latency, "size": size,
                "warmup": warmup, "repeats": repeats, "threads": threads, "device": device}
    comparison = Comparison(rows, ratios, settings)
    logger.info("compared %s and %s: effective MACs ratio %s, compressed size ratio %s",
                names[0], names[1], ratios["effective_macs"], ratios["bytes_compressed"])
    return comparison
