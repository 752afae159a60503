"""The validated recipe: frozen dataclasses, one per section and one per stage kind.

A :class:`Recipe` holds the model, the data, the dense training (``train``),
the fine-tuning every run gets (``finetune``), evaluation and export
settings, and its concrete runs (:class:`RunSpec`, a list in a recipe
expanded into one run per value). A run applies its stages in a fixed order:

1. ``shrink``  -- physical channel removal (:func:`prunekit.structural_prune`);
2. ``heads``   -- physical removal of attention heads (:func:`prunekit.prune_heads`);
3. ``neurons`` -- physical removal of transformer MLP neurons (:func:`prunekit.prune_mlp_neurons`);
4. ``prune``   -- masks (:class:`prunekit.Pruner`, one-shot or on a schedule during fine-tuning),
   or ``oneshot`` -- layer-wise one-shot masks from calibration data (:func:`prunekit.oneshot_prune`);

then fine-tunes (the optimizer is built after the stages, for the model as it
is then, smaller or not), makes the masks permanent if asked and exports.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "METRICS",
    "STAGE_ORDER",
    "ModelSpec",
    "DataSpec",
    "TrainSpec",
    "StageData",
    "PrunerSpec",
    "ShrinkSpec",
    "HeadsSpec",
    "NeuronsSpec",
    "OneShotSpec",
    "LatencySpec",
    "EvaluateSpec",
    "ExportSpec",
    "RunSpec",
    "Recipe",
]

METRICS = {"accuracy": True, "perplexity": False, "loss": False}  # name -> higher is better

#: The stage keys of a run, in the order a run applies them.
STAGE_ORDER = ("shrink", "heads", "neurons", "prune", "oneshot")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    weights: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DataSpec:
    name: str
    path: str | None = None
    batch_size: int = 64
    eval_batch_size: int = 256
    limit_train: int | None = None
    limit_test: int | None = None
    train_split: str = "train"
    eval_split: str = "test"
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainSpec:
    epochs: int = 1
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_schedule: str = "none"
    max_steps: int | None = None

    def steps(self, batches_per_epoch: int) -> int:
        """Training steps this spec takes over a loader of ``batches_per_epoch`` batches."""
        total = batches_per_epoch * self.epochs
        return total if self.max_steps is None else min(total, self.max_steps)


@dataclass(frozen=True)
class StageData:
    """Data a stage reads (calibration, data-driven scores): the first ``samples``
    items of ``split`` of the data set ``name`` (None: the recipe's data set),
    in batches of ``batch_size``."""

    name: str | None = None
    path: str | None = None
    split: str = "train"
    samples: int = 128
    batch_size: int = 8
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PrunerSpec:
    """The ``prune`` stage: masks from a criterion at a structure (``mode`` reparam or inplace)."""

    name: str
    criterion: str = "magnitude"
    structure: str = "element"
    scope: str = "local"
    sparsity: tuple[float | None, ...] = (None,)
    include: tuple[str, ...] | None = None
    exclude: tuple[str, ...] | None = None
    types: tuple[str, ...] | None = None
    params: tuple[str, ...] = ("weight",)
    overrides: dict[str, float] = field(default_factory=dict)
    normalize: str = "none"
    mode: str = "inplace"
    min_keep: int = 1
    schedule: dict[str, Any] | None = None  # None: one-shot before fine-tuning
    line: int = 0  # where the pruner starts in the recipe (for errors found at run time)


@dataclass(frozen=True)
class ShrinkSpec:
    """The ``shrink`` stage: channels physically removed; exactly one of ``sparsity``
    (fraction of each group's channels), ``macs_target`` or ``latency_target``
    (after / before)."""

    sparsity: float | None = None
    macs_target: float | None = None
    latency_target: float | None = None
    criterion: str = "l1"
    scope: str = "local"
    normalize: str | None = None
    max_layer_ratio: float | None = None
    round_to: int | None = None
    steps: int = 1
    exclude: tuple[str, ...] = ()
    allocation: str = "ranking"
    approximate: bool = False
    data: StageData | None = None


@dataclass(frozen=True)
class HeadsSpec:
    """The ``heads`` stage: this fraction of attention heads physically removed."""

    sparsity: float = 0.25
    criterion: str = "magnitude"
    scope: str = "local"
    gqa: str = "query"
    round_to: int | None = None
    uniform: bool = False
    data: StageData | None = None


@dataclass(frozen=True)
class NeuronsSpec:
    """The ``neurons`` stage: this fraction of transformer MLP neurons physically removed."""

    sparsity: float = 0.25
    criterion: str = "magnitude"
    round_to: int | None = None
    uniform: bool = False
    data: StageData | None = None


@dataclass(frozen=True)
class OneShotSpec:
    """The ``oneshot`` stage: layer-wise one-shot masks (Wanda, SparseGPT, N:M, OWL) from calibration data."""

    method: str = "wanda"
    sparsity: float | None = None
    structure: str = "element"
    owl: bool = False
    owl_lambda: float = 0.08
    owl_m: float = 5.0
    sequential: bool = False
    include: tuple[str, ...] | None = None
    exclude: tuple[str, ...] | None = None
    mode: str = "inplace"
    blocksize: int = 128
    percdamp: float = 0.01
    data: StageData = field(default_factory=StageData)


@dataclass(frozen=True)
class LatencySpec:
    """``sparse``: also time each masked run after :func:`prunekit.to_sparse` (sparse kernels
    where they beat dense at this batch and thread count)."""

    batch_size: int = 1
    repeats: int = 30
    warmup: int = 5
    threads: int | None = None
    sparse: bool = False


@dataclass(frozen=True)
class EvaluateSpec:
    metric: str = "accuracy"
    latency: LatencySpec | None = field(default_factory=LatencySpec)

    @property
    def higher_is_better(self) -> bool:
        return METRICS[self.metric]


@dataclass(frozen=True)
class ExportSpec:
    """``checkpoint``: save every run's model (shrunk ones with :func:`prunekit.save_shrunk`,
    masked ones with :func:`prunekit.save_sparse`); ``permanent``: masks folded in first;
    ``onnx``: also export it to ONNX, checked in onnxruntime (:func:`prunekit.export_onnx`);
    ``dense``: also save a masked run as plain dense safetensors (:func:`prunekit.save_dense`);
    ``sparse``: also save a masked run converted by :func:`prunekit.to_sparse` (sparse kernels where
    they beat dense), loadable with :func:`prunekit.execution.load_sparse_model`."""

    checkpoint: bool = True
    permanent: bool = True
    onnx: bool = False
    dense: bool = False
    sparse: bool = False

    @property
    def sparse_checkpoint(self) -> bool:  # the key's former name
        return self.checkpoint


@dataclass(frozen=True)
class RunSpec:
    """One concrete run: its stages (None where absent), in :data:`STAGE_ORDER`.

    ``sparsity`` is the ``prune`` stage's level (None: fixed by its structure,
    e.g. 2:4, or no prune stage); ``source``, ``path`` (``runs[0]``) and
    ``line`` place it in the recipe; ``lines`` maps a stage key path
    (``"shrink.macs_target"``) to its line.
    """

    name: str
    source: str = "<recipe>"
    path: str = "runs[0]"
    line: int = 1
    pruner: PrunerSpec | None = None
    sparsity: float | None = None
    shrink: ShrinkSpec | None = None
    heads: HeadsSpec | None = None
    neurons: NeuronsSpec | None = None
    oneshot: OneShotSpec | None = None
    lines: dict[str, int] = field(default_factory=dict, compare=False)

    def stages(self) -> list[str]:
        """The keys of the stages this run applies, in order."""
        present = {"shrink": self.shrink, "heads": self.heads, "neurons": self.neurons,
                   "prune": self.pruner, "oneshot": self.oneshot}
        return [k for k in STAGE_ORDER if present[k] is not None]

    @property
    def shrinks(self) -> bool:
        """Whether the run removes units physically (its model gets smaller)."""
        return any(s is not None for s in (self.shrink, self.heads, self.neurons))

    @property
    def masks(self) -> bool:
        return self.pruner is not None or self.oneshot is not None

    @property
    def where(self) -> str:
        """The run as errors name it: ``recipe.yaml line 12, runs[0]``."""
        return f"{self.source} line {self.line}, {self.path}"

    def param(self, key: str) -> str:
        """``key`` of this run (``"shrink.macs_target"``) as errors name it, with the
        line of the nearest key given: ``recipe.yaml line 14, runs[2].shrink.macs_target``."""
        parts = key.split(".")
        line = self.line
        for n in range(len(parts), 0, -1):
            if ".".join(parts[:n]) in self.lines:
                line = self.lines[".".join(parts[:n])]
                break
        if self.path.startswith("pruners") and key.startswith("prune"):  # the older form: no stage key
            key = key[len("prune"):].lstrip(".")
        return f"{self.source} line {line}, {self.path}" + (f".{key}" if key else "")

    def realisation(self) -> str:
        """``"shrunk"``, ``"masks"`` or ``"shrunk+masks"``."""
        return "+".join(x for x, on in (("shrunk", self.shrinks), ("masks", self.masks)) if on)

    def method(self) -> dict[str, Any]:
        """The report's description of the run: the main stage's criterion, structure,
        scope and mode, the realisation, and every stage's settings."""
        stages = {k: _plain(getattr(self, "pruner" if k == "prune" else k)) for k in self.stages()}
        if "prune" in stages:
            stages["prune"].pop("name", None)
            stages["prune"].pop("line", None)
            stages["prune"]["sparsity"] = self.sparsity
        p, o = self.pruner, self.oneshot
        if p is not None:
            head = {"criterion": p.criterion, "structure": p.structure, "scope": p.scope, "mode": p.mode,
                    "schedule": dict(p.schedule) if p.schedule else {"name": "oneshot"}}
        elif o is not None:
            head = {"criterion": o.method + ("+owl" if o.owl else ""), "structure": o.structure,
                    "scope": "layer", "mode": o.mode, "schedule": {"name": "oneshot"}}
        elif self.shrink is not None:
            s = self.shrink
            head = {"criterion": s.criterion, "structure": "channel", "scope": s.scope, "mode": "shrunk",
                    "schedule": {"name": "oneshot"}}
        else:
            unit = self.heads or self.neurons
            head = {"criterion": unit.criterion, "structure": "head" if self.heads else "neuron",  # type: ignore[union-attr]
                    "scope": getattr(unit, "scope", "local"), "mode": "shrunk", "schedule": {"name": "oneshot"}}
        return {**head, "realisation": self.realisation(), "stages": stages}


def _plain(spec: Any) -> dict[str, Any]:
    d = asdict(spec)
    for key, value in d.items():
        if isinstance(value, tuple):
            d[key] = list(value) or None
    return d


@dataclass(frozen=True)
class Recipe:
    model: ModelSpec
    data: DataSpec
    entries: tuple[RunSpec, ...]
    train: TrainSpec | None = None
    finetune: TrainSpec = field(default_factory=lambda: TrainSpec(epochs=0, lr=0.01))
    evaluate: EvaluateSpec = field(default_factory=EvaluateSpec)
    export: ExportSpec = field(default_factory=ExportSpec)
    title: str | None = None
    seed: int = 0
    source: str = "<recipe>"
    base_dir: str = "."

    def runs(self) -> list[RunSpec]:
        """Every run in order (lists in the recipe expanded, one run per value)."""
        return list(self.entries)

    @property
    def pruners(self) -> tuple[PrunerSpec, ...]:
        """The ``prune`` stages of the runs (one per run that has one)."""
        return tuple(r.pruner for r in self.entries if r.pruner is not None)

    def resolve_path(self, path: str | None) -> str | None:
        """``path`` relative to the recipe's folder (absolute paths and None unchanged)."""
        if path is None:
            return None
        p = Path(os.path.expanduser(path))
        return str(p if p.is_absolute() else Path(self.base_dir) / p)

    def to_dict(self) -> dict[str, Any]:
        """The recipe in its full, normalised form (every default filled in, one run per entry)."""
        runs = []
        for run in self.entries:
            item: dict[str, Any] = {"name": run.name}
            for key, stage in run.method()["stages"].items():
                item[key] = stage
            runs.append(item)
        export = {"checkpoint": self.export.checkpoint, "permanent": self.export.permanent}
        export.update({k: True for k in ("onnx", "dense", "sparse") if getattr(self.export, k)})  # absent when off
        return {
            "title": self.title,
            "seed": self.seed,
            "model": asdict(self.model),
            "data": asdict(self.data),
            "train": None if self.train is None else asdict(self.train),
            "runs": runs,
            "finetune": asdict(self.finetune),
            "evaluate": _evaluate_dict(self.evaluate),
            "export": export,
        }

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)

    def fingerprint(self) -> str:
        """sha256 of the normalised recipe, with paths resolved (what the results depend on)."""
        d = self.to_dict()
        d["model"]["weights"] = self.resolve_path(self.model.weights)
        d["data"]["path"] = self.resolve_path(self.data.path)
        d.pop("title")
        text = json.dumps(d, sort_keys=True, default=str)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _evaluate_dict(evaluate: EvaluateSpec) -> dict[str, Any]:
    """``asdict(evaluate)`` without ``latency.sparse`` when it is off (so recipes written before it
    keep their fingerprints)."""
    out = asdict(evaluate)
    if out.get("latency") is not None and not out["latency"].get("sparse"):
        out["latency"].pop("sparse", None)
    return out

