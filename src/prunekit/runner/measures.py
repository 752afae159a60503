"""The runner's data and measures: data sets, loaders, stage data, and one measure dict per model.

Measures (``MEASURE_KEYS``): ``params``, ``nonzero`` (all parameters),
``macs``/``effective_macs`` (per sample: MACs of a batch of one; effective
skips zero weights), ``bytes_dense`` (dense safetensors) and
``bytes_compressed`` (:func:`prunekit.save_sparse`), ``latency_ms`` (median
over ``evaluate.latency.repeats`` at ``latency_batch`` inputs, on
``evaluate.latency.threads`` threads; None without latency), ``metric``
(accuracy, perplexity or loss on the evaluation split) and ``loss``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset, default_collate

from ..data import create_dataset
from ..errors import InvalidParameterError
from ..measure import (
    count_macs,
    count_parameters,
    evaluate_accuracy,
    evaluate_perplexity,
    measure_latency,
    model_size,
)
from ..recipes import Recipe, StageData

__all__ = ["MEASURE_KEYS", "load_datasets", "stage_batches", "loader", "example", "measure", "limit"]

MEASURE_KEYS = ("params", "nonzero", "macs", "effective_macs", "bytes_dense", "bytes_compressed",
                "latency_ms", "latency_batch", "metric", "loss")


def _dataset(recipe: Recipe, name: str, path: str | None, split: str, kwargs: dict[str, Any], where: str) -> Dataset:
    try:
        return create_dataset(name, path=recipe.resolve_path(path), split=split, **kwargs)
    except InvalidParameterError as exc:
        raise InvalidParameterError(f"{where}: {exc.param}", exc.expected, exc.got, exc.fix) from None
    except TypeError as exc:
        raise InvalidParameterError(f"{where}.kwargs", f"arguments that {name!r} accepts",
                                    sorted(kwargs), f"Fix: check the keys ({exc}).") from None


def load_datasets(recipe: Recipe) -> tuple[Dataset, Dataset]:
    """The training and evaluation splits, cut to ``limit_train`` / ``limit_test``."""
    spec = recipe.data
    where = f"{recipe.source}, data"
    train = _dataset(recipe, spec.name, spec.path, spec.train_split, spec.kwargs, where)
    test = _dataset(recipe, spec.name, spec.path, spec.eval_split, spec.kwargs, where)
    return limit(train, spec.limit_train), limit(test, spec.limit_test)


def stage_batches(recipe: Recipe, spec: StageData, where: str, samples: int | None = None) -> list[Any]:
    """The first ``spec.samples`` (or ``samples``) items of the stage's data, in
    ``(inputs, targets)`` batches of ``spec.batch_size``."""
    same = spec.name is None
    name = recipe.data.name if same else spec.name
    path = recipe.data.path if same and spec.path is None else spec.path
    kwargs = dict(recipe.data.kwargs) if same and not spec.kwargs else dict(spec.kwargs)
    dataset = limit(_dataset(recipe, name, path, spec.split, kwargs, where), samples or spec.samples)  # type: ignore[arg-type]
    return list(DataLoader(dataset, batch_size=spec.batch_size, shuffle=False))


def loader(recipe: Recipe, dataset: Dataset, seed: int) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=recipe.data.batch_size, shuffle=True, generator=generator)


def example(dataset: Dataset, n: int) -> Any:
    """The inputs of the first ``n`` items, as one batch."""
    n = min(n, len(dataset))  # type: ignore[arg-type]
    return default_collate([dataset[i] for i in range(n)])[0]


def measure(recipe: Recipe, model: nn.Module, test: Dataset) -> dict[str, Any]:
    """Every measure of ``MEASURE_KEYS`` for ``model`` on the evaluation split."""
    evaluate = recipe.evaluate
    model.eval()
    counts = count_parameters(model)
    macs = count_macs(model, example(test, 1))
    sizes = model_size(model)
    batches = DataLoader(test, batch_size=recipe.data.eval_batch_size, shuffle=False)
    if evaluate.metric == "perplexity":
        lm = evaluate_perplexity(model, batches)
        metric, loss = lm.perplexity, lm.loss
    else:
        acc = evaluate_accuracy(model, batches)
        metric, loss = (acc.accuracy if evaluate.metric == "accuracy" else acc.loss), acc.loss
    latency_ms = latency_batch = None
    if evaluate.latency is not None:
        lat = evaluate.latency
        timing = measure_latency(model, example(test, lat.batch_size), warmup=lat.warmup, repeats=lat.repeats,
                                 threads=lat.threads)
        latency_ms, latency_batch = timing.median_ms, timing.batch_size
    return {"params": counts.params, "nonzero": counts.nonzero, "macs": macs.dense_macs,
            "effective_macs": macs.effective_macs, "bytes_dense": sizes.dense_bytes,
            "bytes_compressed": sizes.compressed_bytes, "latency_ms": latency_ms,
            "latency_batch": latency_batch, "metric": float(metric), "loss": float(loss)}


def limit(dataset: Dataset, n_max: int | None) -> Dataset:
    """The first ``n_max`` items; array data sets become one in-memory TensorDataset (fast batches)."""
    n = len(dataset)  # type: ignore[arg-type]
    if n_max is not None:
        n = min(n, n_max)
    tensors = getattr(dataset, "tensors", None)
    if callable(tensors) and getattr(dataset, "transform", None) is None:
        x, y = tensors()
        return TensorDataset(x[:n], y[:n])
    return dataset if n == len(dataset) else Subset(dataset, range(n))  # type: ignore[arg-type]
