"""The protocol of Han et al. 2015 run with prunekit: dense training, then prune, retrain, repeat.

Han, Pool, Tran & Dally, "Learning both Weights and Connections for Efficient
Neural Networks" (NeurIPS 2015): train the dense network to convergence, then
alternately remove the weights of smallest magnitude and retrain the survivors
(the removed weights stay zero), at a lower learning rate than the original.

Per-layer rates (``schedule="table2"``): the paper's Table 2 gives the density
``d_l`` (fraction of weights kept) of each layer at 12× compression. Along the
curve every layer keeps ``d_l ** a``, the one exponent ``a >= 0`` that gives the
requested compression (``a = 0``: dense; ``a ≈ 1``: Table 2; ``a > 1``: beyond),
so the layers keep the paper's order of sensitivity at every point. The
alternative ``schedule="global"`` ranks all weights together (one global
magnitude threshold) at each point.

Compression = total weights of the pruned layers / weights left (biases are not
pruned and not counted, as the paper's per-layer weight counts).

The pruning is prunekit's own: a :class:`prunekit.Pruner` (magnitude criterion,
``mode="inplace"``: the masks stay on the model and prunekit's optimizer hook
re-applies them after every step of the retraining) and :func:`prunekit.fit`.
Each (model, seed, operating point) is cached as a file, written atomically,
keyed by the hash of everything that produced it (the chain of earlier points
included), so a killed run continues where it stopped and a changed setting
reruns only the points it affects.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from prunekit import Pruner, create_model, evaluate, fit, load_pruned_state_dict
from prunekit.files import atomic_write

#: Han et al. 2015: dense error, the 12× anchor (compression, error %), Table 2's kept fraction per layer.
PAPER: dict[str, dict[str, Any]] = {
    "lenet_300_100": {"dense_error": 1.64, "anchor": (12.0, 1.59),
                      "table2_density": {"fc1": 0.08, "fc2": 0.09, "fc3": 0.26}},
    "lenet5": {"dense_error": 0.80, "anchor": (12.0, 0.77),
               "table2_density": {"conv1": 0.66, "conv2": 0.12, "fc1": 0.08, "fc2": 0.19}},
}
MODELS = tuple(PAPER)
SCHEDULES = ("table2", "global")


@dataclass(frozen=True)
class Protocol:
    """Training settings of one model: SGD with momentum, cosine learning rate (to 0) per stage.

    ``retrain_epochs[k]`` epochs at ``retrain_lr`` follow the pruning step to ``compressions[k]``.
    """

    dense_epochs: int
    lr: float
    retrain_lr: float
    compressions: tuple[float, ...]
    retrain_epochs: tuple[float, ...]
    batch_size: int = 128
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "table2"

    def __post_init__(self) -> None:
        if len(self.compressions) != len(self.retrain_epochs):
            raise ValueError("one retraining length per operating point")
        if list(self.compressions) != sorted(set(self.compressions)) or self.compressions[0] <= 1:
            raise ValueError("compressions must increase, from above 1")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}")


@dataclass
class StageResult:
    """One cached stage: the dense model (index 0) or operating point ``index``."""

    index: int
    error: float
    compression: float
    layer_density: dict[str, float]
    exponent: float | None
    epochs: float
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


# -- per-layer densities ------------------------------------------------------------------


def table2_densities(sizes: Mapping[str, int], table2: Mapping[str, float],
                     compression: float) -> tuple[dict[str, float], float]:
    """Kept fraction per layer ``d_l ** a`` and the exponent ``a`` with
    ``Σ n_l d_l**a = Σ n_l / compression`` (bisection; the left side falls as ``a`` grows)."""
    total = sum(sizes.values())
    wanted = total / compression

    def kept(a: float) -> float:
        return sum(n * table2[name] ** a for name, n in sizes.items())

    lo, hi = 0.0, 1.0
    while kept(hi) > wanted:
        hi *= 2
        if hi > 1e3:
            raise ValueError(f"compression {compression} is out of reach")
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if kept(mid) > wanted else (lo, mid)
    a = (lo + hi) / 2
    return {name: table2[name] ** a for name in sizes}, a


def layer_sizes(model: torch.nn.Module, layers: Sequence[str]) -> dict[str, int]:
    """Number of weights of each named layer."""
    modules = dict(model.named_modules())
    return {name: modules[name].weight.numel() for name in layers}


def mask_counts(model: torch.nn.Module, layers: Sequence[str]) -> dict[str, tuple[int, int]]:
    """(kept, total) weights per layer, read from the masks prunekit keeps on the model
    (a layer without a mask counts its nonzero weights)."""
    modules = dict(model.named_modules())
    out = {}
    for name in layers:
        module = modules[name]
        mask = getattr(module, "weight_mask", None)
        weight = module.weight
        kept = int(mask.count_nonzero()) if mask is not None else int(weight.count_nonzero())
        out[name] = (kept, weight.numel())
    return out


def compression_of(counts: Mapping[str, tuple[int, int]]) -> float:
    """Total weights / kept weights."""
    kept = sum(k for k, _ in counts.values())
    total = sum(n for _, n in counts.values())
    return total / kept


# -- data -----------------------------------------------------------------------------------


class ShuffledBatches:
    """``(x, y)`` batches of preloaded tensors in a fresh order every pass, from a seeded generator."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int) -> None:
        self.x, self.y, self.batch_size = x, y, batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(len(self.x), generator=self.generator)
        for start in range(0, len(order), self.batch_size):
            index = order[start:start + self.batch_size]
            yield self.x[index], self.y[index]


def fixed_batches(x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(x), batch_size)]


def synthetic_mnist(train: int, test: int, seed: int = 0) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    """MNIST-shaped data with a learnable signal (each class brightens its own band of rows)."""
    g = torch.Generator().manual_seed(seed)

    def make(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, 10, (n,), generator=g)
        x = torch.randn(n, 1, 28, 28, generator=g) * 0.5
        for c in range(10):
            x[y == c, :, 2 * c + 2:2 * c + 6, :] += 1.5
        return x, y

    return make(train), make(test)


# -- stages ---------------------------------------------------------------------------------


def stage_keys(model_name: str, seed: int, protocol: Protocol, data_tag: str) -> list[str]:
    """Cache key of the dense stage and of every point: each hashes its settings and the key before it."""
    dense = {"model": model_name, "seed": seed, "data": data_tag, "dense_epochs": protocol.dense_epochs,
             "lr": protocol.lr, "batch_size": protocol.batch_size, "momentum": protocol.momentum,
             "weight_decay": protocol.weight_decay}
    keys = [_hash(dense)]
    for c, epochs in zip(protocol.compressions, protocol.retrain_epochs):
        keys.append(_hash({"previous": keys[-1], "compression": c, "epochs": epochs, "lr": protocol.retrain_lr,
                           "schedule": protocol.schedule}))
    return keys


def _hash(payload: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def stage_path(cache: Path, model_name: str, seed: int, index: int, key: str) -> Path:
    return cache / model_name / f"seed{seed}" / f"{index:02d}-{key}.pt"


def save_stage(path: Path, model: torch.nn.Module, result: StageResult) -> None:
    payload = {"state_dict": model.state_dict(), "result": asdict(result)}
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_result(path: Path) -> StageResult | None:
    if not path.is_file():
        return None
    return StageResult(**torch.load(path, map_location="cpu", weights_only=True)["result"])


def load_model(path: Path, model_name: str) -> torch.nn.Module:
    """The model of a cached stage, masks (and their mode) included."""
    model = create_model(model_name)
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    return load_pruned_state_dict(model, state, source=str(path))


def train(model: torch.nn.Module, data: ShuffledBatches, epochs: float, lr: float, protocol: Protocol) -> None:
    """``epochs`` passes over the data (a fraction stops after that share of the steps), with the
    learning rate annealed to 0 over them (cosine)."""
    if epochs:
        fit(model, data, epochs=math.ceil(epochs), max_steps=round(epochs * len(data)), optimizer="sgd", lr=lr,
            momentum=protocol.momentum, weight_decay=protocol.weight_decay, lr_schedule="cosine")


def test_error(model: torch.nn.Module, test: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Test error in %: wrong predictions / test images × 100."""
    result = evaluate(model, test)
    wrong = result.samples - round(result.accuracy * result.samples)
    return round(100.0 * wrong / result.samples, 4)


def prune_to(model: torch.nn.Module, model_name: str, compression: float,
             protocol: Protocol) -> tuple[dict[str, float], float | None]:
    """Prune ``model`` (further) to ``compression`` with prunekit's Pruner; returns the planned
    per-layer densities and the Table 2 exponent (None for the global schedule)."""
    table2 = PAPER[model_name]["table2_density"]
    layers = list(table2)
    targets = [(dict(model.named_modules())[name], "weight") for name in layers]
    if protocol.schedule == "global":
        Pruner(model, criterion="magnitude", scope="global", mode="inplace", targets=targets).step(1 - 1 / compression)
        counts = mask_counts(model, layers)
        return {name: k / n for name, (k, n) in counts.items()}, None
    densities, exponent = table2_densities(layer_sizes(model, layers), table2, compression)
    overrides = {f"{name}.weight": 1.0 - d for name, d in densities.items()}
    Pruner(model, criterion="magnitude", scope="local", mode="inplace", targets=targets,
           overrides=overrides).step(None)
    return densities, exponent


def run_stage(model: torch.nn.Module | None, model_name: str, seed: int, index: int, protocol: Protocol,
              train_xy: tuple[torch.Tensor, torch.Tensor],
              test: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.nn.Module, StageResult]:
    """Stage 0: build and train the dense model; stage k: prune ``model`` to point k and retrain it."""
    start = time.perf_counter()
    torch.manual_seed(1000 * seed + index)
    data = ShuffledBatches(*train_xy, protocol.batch_size, seed=1000 * seed + index)
    layers = list(PAPER[model_name]["table2_density"])
    if index == 0:
        model = create_model(model_name)
        train(model, data, protocol.dense_epochs, protocol.lr, protocol)
        densities, exponent, epochs = {name: 1.0 for name in layers}, 0.0, protocol.dense_epochs
    else:
        if model is None:
            raise ValueError("a pruning stage needs the model of the stage before")
        densities, exponent = prune_to(model, model_name, protocol.compressions[index - 1], protocol)
        epochs = protocol.retrain_epochs[index - 1]
        train(model, data, epochs, protocol.retrain_lr, protocol)
    counts = mask_counts(model, layers)
    result = StageResult(index=index, error=test_error(model, test), compression=compression_of(counts),
                         layer_density={name: k / n for name, (k, n) in counts.items()}, exponent=exponent,
                         epochs=epochs, seconds=round(time.perf_counter() - start, 2),
                         extra={"planned_density": densities})
    return model, result
