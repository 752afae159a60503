"""From YAML text to a validated :class:`~prunekit.recipes.specs.Recipe`.

Runs are listed under ``runs:``; each has a ``name`` and one or more stages
(``shrink``, ``heads``, ``neurons``, and one of ``prune`` / ``oneshot``).
One key of one stage may hold a list (``sparsity: [0.5, 0.9]``): the entry
becomes one run per value, named ``<name>-<value>``. The older ``pruners:``
list (each item a ``prune`` stage with its ``name``) is still read, with a
FutureWarning.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..data import DATASETS
from ..deprecation import warn_once
from ..errors import InvalidParameterError, did_you_mean
from ..training import LR_SCHEDULES, OPTIMIZERS
from ..zoo import MODELS
from .reader import Doc, Section, fmt_path, type_name
from .specs import (
    METRICS,
    STAGE_ORDER,
    DataSpec,
    EvaluateSpec,
    ExportSpec,
    LatencySpec,
    ModelSpec,
    Recipe,
    RunSpec,
    TrainSpec,
)
from .stages import (
    check_name,
    read_heads,
    read_neurons,
    read_oneshot,
    read_prune,
    read_shrink,
    registered,
)
from .yaml_load import load_yaml

__all__ = ["parse_recipe", "load_recipe", "list_example_recipes", "example_recipe_path"]

_TOP = ["title", "seed", "model", "data", "train", "runs", "pruners", "finetune", "evaluate", "export"]
_MODEL = ["name", "weights", "kwargs"]
_DATA = ["name", "path", "batch_size", "eval_batch_size", "limit_train", "limit_test", "train_split",
         "eval_split", "kwargs"]
_TRAIN = ["epochs", "optimizer", "lr", "momentum", "weight_decay", "lr_schedule", "max_steps"]
_RUN = ["name", *STAGE_ORDER]
_EVALUATE = ["metric", "latency"]
_LATENCY = ["batch_size", "repeats", "warmup", "threads", "sparse"]
_EXPORT = ["checkpoint", "sparse_checkpoint", "permanent", "onnx", "dense", "sparse"]


def _train(doc: Doc, path: tuple[Any, ...], value: Any, defaults: TrainSpec) -> TrainSpec:
    sec = Section(doc, path, value, _TRAIN, what="training settings")
    return TrainSpec(
        epochs=sec.integer("epochs", defaults.epochs, 0),
        optimizer=sec.choice("optimizer", defaults.optimizer, list(OPTIMIZERS)),
        lr=sec.real("lr", defaults.lr, positive=True),
        momentum=sec.real("momentum", defaults.momentum),
        weight_decay=sec.real("weight_decay", defaults.weight_decay),
        lr_schedule=sec.choice("lr_schedule", defaults.lr_schedule, list(LR_SCHEDULES)),
        max_steps=sec.integer("max_steps", None, 1, nullable=True),
    )


def _lines(doc: Doc, path: tuple[Any, ...]) -> dict[str, int]:
    """Line of every key below ``path``, by dotted key (``"shrink.macs_target"``)."""
    out = {}
    for key, line in doc.lines.items():
        if len(key) > len(path) and key[: len(path)] == path and all(isinstance(k, str) for k in key[len(path):]):
            out[".".join(key[len(path):])] = line
    return out


def _legacy_runs(doc: Doc, items: list[Any], finetune: TrainSpec) -> list[RunSpec]:
    runs = []
    for index, value in enumerate(items):
        path = ("pruners", index)
        pruner = read_prune(doc, path, value, finetune)
        check_name(doc, path + ("name",), pruner.name)
        lines = {f"prune.{k}": v for k, v in _lines(doc, path).items()}
        for level in pruner.sparsity:
            name = pruner.name if len(pruner.sparsity) == 1 else f"{pruner.name}-{level:g}"
            runs.append(RunSpec(name, doc.source, fmt_path(path), doc.line(path), pruner=pruner, sparsity=level,
                                lines=lines))
    return runs


def _entry_runs(doc: Doc, index: int, value: Any, finetune: TrainSpec) -> list[RunSpec]:
    path = ("runs", index)
    sec = Section(doc, path, value, _RUN, what="a run")
    stages = [k for k in STAGE_ORDER if sec.has(k)]
    if not stages:
        raise sec.fail(None, f"at least one stage ({', '.join(STAGE_ORDER)})", "none",
                       "Fix: e.g. 'prune: {criterion: magnitude, sparsity: 0.9}' or 'shrink: {macs_target: 0.5}'.")
    if "prune" in stages and "oneshot" in stages:
        raise sec.fail("oneshot", "one masking stage per run (prune or oneshot)", "both",
                       "Fix: make them two runs.")
    variants: dict[str, list[tuple[Any, Any]]] = {}
    for key in stages:
        at = sec.at(key)
        if key == "prune":
            spec = read_prune(doc, at, sec.raw(key), finetune, name=str(sec.raw("name", "")))
            variants[key] = [(v, spec) for v in spec.sparsity]
        elif key == "shrink":
            variants[key] = read_shrink(doc, at, sec.raw(key))
        elif key == "heads":
            variants[key] = read_heads(doc, at, sec.raw(key))
        elif key == "neurons":
            variants[key] = read_neurons(doc, at, sec.raw(key))
        else:
            variants[key] = read_oneshot(doc, at, sec.raw(key), finetune)
    swept = [k for k, v in variants.items() if len(v) > 1]
    if len(swept) > 1:
        raise sec.fail(swept[1], "a list in one stage of a run at most", f"lists in {' and '.join(swept)}",
                       "Fix: split the entry into several runs.")
    default_name = "-".join(stages)
    name = check_name(doc, sec.at("name"), sec.raw("name", default_name))
    lines = _lines(doc, path)
    out = []
    count = len(variants[swept[0]]) if swept else 1
    for i in range(count):
        chosen = {k: v[i if k in swept else 0] for k, v in variants.items()}
        label = chosen[swept[0]][0] if swept else None
        stage = {k: spec for k, (_, spec) in chosen.items()}
        out.append(RunSpec(
            name if label is None else f"{name}-{label:g}", doc.source, fmt_path(path), doc.line(path),
            pruner=stage.get("prune"), sparsity=chosen["prune"][0] if "prune" in chosen else None,
            shrink=stage.get("shrink"), heads=stage.get("heads"), neurons=stage.get("neurons"),
            oneshot=stage.get("oneshot"), lines=lines,
        ))
    return out


def _yaml(text: str, source: str) -> tuple[Any, Any]:
    try:
        return load_yaml(text, source)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(exc, "problem", None) or str(exc)
        raise InvalidParameterError(f"{source} line {line}", "valid YAML", f"<{problem}>",
                                    "Fix: check the indentation and the quoting on that line.") from None


def parse_recipe(text: str, source: str = "<recipe>", base_dir: str | os.PathLike[str] = ".") -> Recipe:
    """Validate recipe YAML ``text``; ``source`` names it in errors."""
    doc = Doc(source)
    node, data = _yaml(text, source)
    if node is None:
        raise InvalidParameterError(source, "a recipe (a YAML mapping)", "<an empty file>",
                                    "Fix: start from prunekit/recipe_examples/demo.yaml.")
    doc.index(node, ())
    top = Section(doc, (), data, _TOP, what="the recipe")

    msec = Section(doc, ("model",), top.required("model"), _MODEL, what="the model")
    model_name = msec.string("name", required=True)
    registered(msec, "name", model_name, MODELS, "model", "list_models")
    model = ModelSpec(model_name, msec.string("weights"), msec.mapping("kwargs"))

    dsec = Section(doc, ("data",), top.required("data"), _DATA, what="the data")
    data_name = dsec.string("name", required=True)
    registered(dsec, "name", data_name, DATASETS, "dataset", "list_datasets")
    data_spec = DataSpec(
        name=data_name, path=dsec.string("path"),
        batch_size=dsec.integer("batch_size", 64, 1), eval_batch_size=dsec.integer("eval_batch_size", 256, 1),
        limit_train=dsec.integer("limit_train", None, 1, nullable=True),
        limit_test=dsec.integer("limit_test", None, 1, nullable=True),
        train_split=dsec.string("train_split", "train", nullable=False),
        eval_split=dsec.string("eval_split", "test", nullable=False),
        kwargs=dsec.mapping("kwargs"),
    )

    train = None
    if top.raw("train") is not None:
        train = _train(doc, ("train",), top.raw("train"), TrainSpec(epochs=1, lr=0.05))
    elif model.weights is None:
        raise top.fail(None, "a 'train' section when model.weights is null", "neither",
                       "Fix: add 'train: {epochs: 3, lr: 0.05}' or give model.weights.")
    finetune = _train(doc, ("finetune",), top.raw("finetune"), TrainSpec(epochs=0, lr=0.01))

    if top.has("runs") and top.has("pruners"):
        raise top.fail("pruners", "'runs' or the older 'pruners', not both", "both", "Fix: move the pruners into runs.")
    key = "pruners" if top.has("pruners") else "runs"
    items = top.required(key)
    if not isinstance(items, list) or not items:
        example = "'- criterion: ...'" if key == "pruners" else "'- name: ...' with a stage"
        raise top.fail(key, f"a non-empty list of {key} ({example} items)", type_name(items))
    if key == "pruners":
        warn_once("the recipe key 'pruners'", "'runs:' entries with a 'prune:' stage "
                  "(see prunekit/recipe_examples/demo.yaml)", stacklevel=4)
        runs = _legacy_runs(doc, items, finetune)
    else:
        runs = [run for i, item in enumerate(items) for run in _entry_runs(doc, i, item, finetune)]

    evaluate = _evaluate(doc, top.raw("evaluate"))
    xsec = Section(doc, ("export",), top.raw("export"), _EXPORT, what="export settings")
    if xsec.has("checkpoint") and xsec.has("sparse_checkpoint"):
        raise xsec.fail("sparse_checkpoint", "'checkpoint' only (sparse_checkpoint is its former name)", "both",
                        "Fix: remove sparse_checkpoint.")
    if xsec.has("sparse_checkpoint"):
        warn_once("the recipe key 'export.sparse_checkpoint'", "'export.checkpoint'", stacklevel=4)
    checkpoint = xsec.boolean("sparse_checkpoint" if xsec.has("sparse_checkpoint") else "checkpoint", True)
    export = ExportSpec(checkpoint, xsec.boolean("permanent", True), onnx=xsec.boolean("onnx", False),
                        dense=xsec.boolean("dense", False), sparse=xsec.boolean("sparse", False))
    shrinking = next((run.name for run in runs if run.shrinks), None)
    if export.dense and shrinking is not None:
        raise xsec.fail("dense", f"false when a run shrinks the model (run {shrinking!r}: its tensors no longer fit "
                        "a fresh model, so a plain dense file could not be loaded into one)", True,
                        "Fix: remove 'dense: true' (the shrunk checkpoint and 'onnx: true' serve such runs).")
    if export.sparse and shrinking is not None:
        raise xsec.fail("sparse", f"false when a run shrinks the model (run {shrinking!r}: its tensors no longer fit "
                        "a fresh model, which load_sparse_model loads into)", True,
                        "Fix: remove 'sparse: true' (the shrunk checkpoint serves such runs).")
    if evaluate.latency is not None and evaluate.latency.sparse and not checkpoint:
        raise xsec.fail("checkpoint", "true with evaluate.latency.sparse (the models are converted and timed from "
                        "their checkpoints after all stages)", False,
                        "Fix: remove 'checkpoint: false', or 'sparse: true' from evaluate.latency.")

    recipe = Recipe(model=model, data=data_spec, entries=tuple(runs), train=train, finetune=finetune,
                    evaluate=evaluate, export=export, title=top.string("title", None),
                    seed=top.integer("seed", 0, 0), source=source, base_dir=os.fspath(base_dir))
    seen: dict[str, str] = {}
    for run in runs:
        if run.name in seen:
            raise InvalidParameterError(f"{run.param('name') if key == 'runs' else run.where + '.name'}",
                                        "a run name used once", run.name,
                                        f"Fix: give {run.path} its own 'name:' ({seen[run.name]} has it too).")
        seen[run.name] = run.path
    return recipe


def _evaluate(doc: Doc, value: Any) -> EvaluateSpec:
    esec = Section(doc, ("evaluate",), value, _EVALUATE, what="evaluation settings")
    metric = esec.choice("metric", "accuracy", list(METRICS))
    latency: LatencySpec | None = LatencySpec()
    if esec.has("latency"):
        lat_raw = esec.raw("latency")
        if lat_raw is None or lat_raw is False:
            latency = None
        else:
            lsec = Section(doc, ("evaluate", "latency"), lat_raw, _LATENCY, what="latency settings")
            latency = LatencySpec(
                batch_size=lsec.integer("batch_size", 1, 1), repeats=lsec.integer("repeats", 30, 1),
                warmup=lsec.integer("warmup", 5, 0), threads=lsec.integer("threads", None, 1, nullable=True),
                sparse=lsec.boolean("sparse", False),
            )
    return EvaluateSpec(metric, latency)


def load_recipe(path: str | os.PathLike[str]) -> Recipe:
    """Read and validate the recipe file at ``path``."""
    p = Path(path)
    if not p.is_file():
        raise InvalidParameterError("recipe", "an existing YAML file", os.fspath(path),
                                    "Fix: check the path (see prunekit/recipe_examples/demo.yaml for an example).")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidParameterError("recipe", "a readable UTF-8 text file", os.fspath(path), f"Fix: {exc}.") from None
    return parse_recipe(text, source=p.name, base_dir=p.resolve().parent)


def list_example_recipes() -> list[str]:
    """Names of the recipes packaged in ``prunekit/recipe_examples``."""
    folder = resources.files("prunekit").joinpath("recipe_examples")
    return sorted(f.name[:-5] for f in folder.iterdir() if f.name.endswith(".yaml"))


def example_recipe_path(name: str = "demo") -> Path:
    """The path of a packaged example recipe (``demo`` by default)."""
    ref = resources.files("prunekit").joinpath("recipe_examples", f"{name}.yaml")
    if not ref.is_file():
        names = list_example_recipes()
        raise InvalidParameterError("recipe", f"a packaged example ({', '.join(names)})", name,
                                    ("Fix: pick one of them." + did_you_mean(name, names)).strip())
    return Path(str(ref))
