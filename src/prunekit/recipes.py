"""YAML recipes: *what* to prune (pruners) separated from *when* (schedules).

A recipe names a model, a data set, optional dense training, one or more
pruners (each one run -- or one run per sparsity when ``sparsity`` is a list --
compared side by side, every run starting from the same dense weights),
fine-tuning, evaluation and export::

    title: LeNet-5 on the embedded MNIST subset     # optional
    seed: 0                                           # optional
    model: {name: lenet5, weights: null, kwargs: {}}
    data: {name: mnist_embedded, path: null, batch_size: 64, eval_batch_size: 256,
           limit_train: null, limit_test: null, kwargs: {normalize: mnist}}
    train: {epochs: 3, optimizer: sgd, lr: 0.05, momentum: 0.9, weight_decay: 0.0, lr_schedule: none}
    pruners:
      - name: magnitude-global
        criterion: magnitude          # prunekit.list_scores(unit_space="element")
        structure: element            # element, 2:4, block:4x4, kernel, channel, ...
        scope: global                 # local | global
        sparsity: [0.5, 0.8, 0.9]     # a float in [0, 1] or a list (one run each); null for N:M
        include: null                 # globs of tensors to prune (str or list)
        exclude: null
        types: null                   # module class names, or 'all'
        params: weight
        overrides: {}                 # {pattern: sparsity}, pruned locally
        normalize: none
        mode: inplace                 # inplace | reparam
        min_keep: 1
        schedule: {name: agp, start: 0, end: 2, frequency: 1, unit: epoch}   # optional; default one-shot
    finetune: {epochs: 2, optimizer: sgd, lr: 0.01}
    evaluate: {metric: accuracy, latency: {batch_size: 1, repeats: 30, warmup: 5, threads: null}}
    export: {sparse_checkpoint: true, permanent: true}

:func:`load_recipe` reads a file (``yaml.safe_load`` semantics, the node tree
composed with ``yaml.compose`` so every key keeps its line) and returns a
validated :class:`Recipe`. Every mistake raises
:class:`~prunekit.errors.InvalidParameterError` naming the file, the line and
the key: ``recipe.yaml line 12, pruners[0].sparsity: expected a float in
[0, 1], got 1.5. Fix: ...``. Relative paths (``model.weights``,
``data.path``) are relative to the recipe's folder.
"""

from __future__ import annotations

import hashlib
import json
import numbers
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .errors import InvalidParameterError, did_you_mean

__all__ = [
    "ModelSpec",
    "DataSpec",
    "TrainSpec",
    "PrunerSpec",
    "LatencySpec",
    "EvaluateSpec",
    "ExportSpec",
    "RunSpec",
    "Recipe",
    "load_recipe",
    "parse_recipe",
    "example_recipe_path",
    "list_example_recipes",
]

METRICS = {"accuracy": True, "perplexity": False, "loss": False}  # name -> higher is better
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


# -- specs ---------------------------------------------------------------------------


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


@dataclass(frozen=True)
class PrunerSpec:
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
class LatencySpec:
    batch_size: int = 1
    repeats: int = 30
    warmup: int = 5
    threads: int | None = None


@dataclass(frozen=True)
class EvaluateSpec:
    metric: str = "accuracy"
    latency: LatencySpec | None = field(default_factory=LatencySpec)

    @property
    def higher_is_better(self) -> bool:
        return METRICS[self.metric]


@dataclass(frozen=True)
class ExportSpec:
    sparse_checkpoint: bool = True
    permanent: bool = True


@dataclass(frozen=True)
class RunSpec:
    """One run: a pruner at one sparsity (``sparsity`` None: fixed by the structure, e.g. 2:4)."""

    name: str
    pruner: PrunerSpec
    sparsity: float | None
    where: str  # "recipe.yaml line 12, pruners[0]" for errors found at run time

    def method(self) -> dict[str, Any]:
        p = self.pruner
        return {
            "criterion": p.criterion,
            "structure": p.structure,
            "scope": p.scope,
            "mode": p.mode,
            "schedule": dict(p.schedule) if p.schedule else {"name": "oneshot"},
        }


@dataclass(frozen=True)
class Recipe:
    model: ModelSpec
    data: DataSpec
    pruners: tuple[PrunerSpec, ...]
    train: TrainSpec | None = None
    finetune: TrainSpec = field(default_factory=lambda: TrainSpec(epochs=0, lr=0.01))
    evaluate: EvaluateSpec = field(default_factory=EvaluateSpec)
    export: ExportSpec = field(default_factory=ExportSpec)
    title: str | None = None
    seed: int = 0
    source: str = "<recipe>"
    base_dir: str = "."

    def runs(self) -> list[RunSpec]:
        """Every run in order: pruners × their sparsities."""
        out = []
        for index, pruner in enumerate(self.pruners):
            for value in pruner.sparsity:
                name = pruner.name if len(pruner.sparsity) == 1 else f"{pruner.name}-{value:g}"
                out.append(RunSpec(name, pruner, value, f"{self.source} line {pruner.line}, pruners[{index}]"))
        return out

    def resolve_path(self, path: str | None) -> str | None:
        """``path`` relative to the recipe's folder (absolute paths and None unchanged)."""
        if path is None:
            return None
        p = Path(os.path.expanduser(path))
        return str(p if p.is_absolute() else Path(self.base_dir) / p)

    def to_dict(self) -> dict[str, Any]:
        """The recipe in its full, normalised form (every default filled in)."""
        def pruner(p: PrunerSpec) -> dict[str, Any]:
            d = asdict(p)
            d.pop("line")
            values = list(p.sparsity)
            d["sparsity"] = values[0] if len(values) == 1 else values
            for key in ("include", "exclude", "types", "params"):
                if d[key] is not None:
                    d[key] = list(d[key])
            return d

        return {
            "title": self.title,
            "seed": self.seed,
            "model": asdict(self.model),
            "data": asdict(self.data),
            "train": None if self.train is None else asdict(self.train),
            "pruners": [pruner(p) for p in self.pruners],
            "finetune": asdict(self.finetune),
            "evaluate": asdict(self.evaluate),
            "export": asdict(self.export),
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


# -- reading: nodes with lines --------------------------------------------------------


class _Doc:
    """The composed node tree: line of every key / item, by path."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.lines: dict[tuple[Any, ...], int] = {}
        self.scalars: dict[tuple[Any, ...], str] = {}  # source text of scalars (2:4 reads as 124 in YAML 1.1)

    def index(self, node: yaml.Node, path: tuple[Any, ...]) -> None:
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.ScalarNode):
            self.scalars[path] = node.value
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, value_node in node.value:
                key = key_node.value
                line = key_node.start_mark.line + 1
                if key_node.tag == "tag:yaml.org,2002:merge":
                    raise self.error(path + (key,), line, "no YAML merge keys ('<<')", key,
                                     "Fix: write the keys out.")
                if key in seen:
                    raise self.error(path + (key,), line, f"each key once (also on line {seen[key]})", key,
                                     "Fix: remove one of the two.")
                seen[key] = line
                self.lines[path + (key,)] = line
                self.index(value_node, path + (key,))
                self.lines[path + (key,)] = line
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self.lines[path + (i,)] = item.start_mark.line + 1
                self.index(item, path + (i,))
                self.lines[path + (i,)] = item.start_mark.line + 1

    def line(self, path: tuple[Any, ...]) -> int:
        while path and path not in self.lines:
            path = path[:-1]
        return self.lines.get(path, 1)

    def where(self, path: tuple[Any, ...], line: int | None = None) -> str:
        return f"{self.source} line {line or self.line(path)}, {_fmt_path(path) or '(top level)'}"

    def error(self, path: tuple[Any, ...], line: int | None, expected: str, got: Any, fix: str | None = None
              ) -> InvalidParameterError:
        return InvalidParameterError(self.where(path, line), expected, got, fix)


def _fmt_path(path: tuple[Any, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


# -- validation --------------------------------------------------------------------------


class _Section:
    """Reads one mapping of the recipe, checking types and unknown keys."""

    def __init__(self, doc: _Doc, path: tuple[Any, ...], value: Any, allowed: list[str], *, what: str) -> None:
        self.doc, self.path, self.allowed = doc, path, allowed
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise doc.error(path, None, f"a mapping ({what}) with keys {', '.join(allowed)}",
                            _type_name(value), "Fix: write it as 'key: value' lines indented under it.")
        self.value = dict(value)
        for key in self.value:
            if not isinstance(key, str) or key not in allowed:
                raise doc.error(path + (key,), None, f"one of the keys {', '.join(allowed)}", key,
                                ("Fix: remove or rename the key." + did_you_mean(str(key), allowed)).strip())

    def at(self, key: str) -> tuple[Any, ...]:
        return self.path + (key,)

    def has(self, key: str) -> bool:
        return key in self.value

    def raw(self, key: str, default: Any = None) -> Any:
        return self.value.get(key, default)

    def fail(self, key: str | None, expected: str, got: Any, fix: str | None = None) -> InvalidParameterError:
        return self.doc.error(self.path if key is None else self.at(key), None, expected, got, fix)

    def required(self, key: str) -> Any:
        if key not in self.value or self.value[key] is None:
            raise self.doc.error(self.path, None, f"a value for '{key}'", "nothing",
                                 f"Fix: add '{key}: ...' under {_fmt_path(self.path) or 'the top level'}.")
        return self.value[key]

    def string(self, key: str, default: Any = None, *, required: bool = False, nullable: bool = True) -> Any:
        value = self.required(key) if required else self.raw(key, default)
        if value is None and nullable and not required:
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, "a non-empty string", value, "Fix: quote it if needed, e.g. '2:4'.")
        return value

    def choice(self, key: str, default: str, choices: list[str]) -> str:
        value = self.raw(key, default)
        if value not in choices:
            raise self.fail(key, "one of " + ", ".join(repr(c) for c in choices), value,
                            ("Fix: pick one of the listed values." + did_you_mean(str(value), choices)).strip())
        return value

    def integer(self, key: str, default: Any, minimum: int, *, nullable: bool = False) -> Any:
        value = self.raw(key, default)
        if value is None and nullable:
            return None
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
            raise self.fail(key, f"an int >= {minimum}" + (" or null" if nullable else ""), value,
                            f"Fix: e.g. {key}: {max(minimum, 1)}.")
        return int(value)

    def real(self, key: str, default: Any, *, minimum: float = 0.0, positive: bool = False) -> float:
        value = self.raw(key, default)
        bad = isinstance(value, bool) or not isinstance(value, numbers.Real) or value != value
        if not bad:
            bad = value <= minimum if positive else value < minimum
        if bad:
            expected = f"a float > {minimum:g}" if positive else f"a float >= {minimum:g}"
            raise self.fail(key, expected, value, f"Fix: e.g. {key}: {default if default else 0.01}.")
        return float(value)

    def boolean(self, key: str, default: bool) -> bool:
        value = self.raw(key, default)
        if not isinstance(value, bool):
            raise self.fail(key, "true or false", value)
        return value

    def mapping(self, key: str) -> dict[str, Any]:
        value = self.raw(key, None)
        if value is None:
            return {}
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise self.fail(key, "a mapping of names to values", _type_name(value), "Fix: e.g. kwargs: {num_classes: 10}.")
        return dict(value)

    def strings(self, key: str, default: Any = None) -> tuple[str, ...] | None:
        value = self.raw(key, default)
        if value is None:
            return None
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not items or not all(isinstance(v, str) and v for v in items):
            raise self.fail(key, "a string or a list of strings", value, f"Fix: e.g. {key}: ['fc*', 'conv2']")
        return tuple(items)


def _type_name(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "<a list>"
    if isinstance(value, Mapping):
        return "<a mapping>"
    return value


def _sparsity(sec: _Section, key: str, value: Any, path: tuple[Any, ...]) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value != value or not 0.0 <= value <= 1.0:
        raise sec.doc.error(path, None, "a float in [0, 1]", value,
                            "Fix: the fraction of the weights pruned afterwards, e.g. 0.9 for 90%.")
    return float(value)


_TOP = ["title", "seed", "model", "data", "train", "pruners", "finetune", "evaluate", "export"]
_MODEL = ["name", "weights", "kwargs"]
_DATA = ["name", "path", "batch_size", "eval_batch_size", "limit_train", "limit_test", "train_split",
         "eval_split", "kwargs"]
_TRAIN = ["epochs", "optimizer", "lr", "momentum", "weight_decay", "lr_schedule", "max_steps"]
_PRUNER = ["name", "criterion", "structure", "scope", "sparsity", "include", "exclude", "types", "params",
           "overrides", "normalize", "mode", "min_keep", "schedule"]
_SCHEDULE = ["name", "start", "end", "frequency", "unit", "initial", "steps", "spacing"]
_EVALUATE = ["metric", "latency"]
_LATENCY = ["batch_size", "repeats", "warmup", "threads"]
_EXPORT = ["sparse_checkpoint", "permanent"]


def _registered(sec: _Section, key: str, name: str, registry: Any, kind: str, lister: str) -> None:
    if name not in registry:
        choices = registry.names()
        raise sec.fail(key, f"a registered {kind} name", name,
                       (f"Fix: see prunekit.{lister}() ({', '.join(choices)})."
                        + did_you_mean(name, choices + sorted(registry._aliases))).strip())


def _train(doc: _Doc, path: tuple[Any, ...], value: Any, defaults: TrainSpec) -> TrainSpec:
    from .training import LR_SCHEDULES, OPTIMIZERS

    sec = _Section(doc, path, value, _TRAIN, what="training settings")
    return TrainSpec(
        epochs=sec.integer("epochs", defaults.epochs, 0),
        optimizer=sec.choice("optimizer", defaults.optimizer, list(OPTIMIZERS)),
        lr=sec.real("lr", defaults.lr, positive=True),
        momentum=sec.real("momentum", defaults.momentum),
        weight_decay=sec.real("weight_decay", defaults.weight_decay),
        lr_schedule=sec.choice("lr_schedule", defaults.lr_schedule, list(LR_SCHEDULES)),
        max_steps=sec.integer("max_steps", None, 1, nullable=True),
    )


def _rewrap(doc: _Doc, path: tuple[Any, ...], exc: InvalidParameterError) -> InvalidParameterError:
    return InvalidParameterError(doc.where(path), exc.expected, exc.got, exc.fix)


def _pruner(doc: _Doc, index: int, value: Any, finetune: TrainSpec) -> PrunerSpec:
    from .allocation import NORMALIZERS, SCOPES
    from .scores import as_criterion
    from .masks import MODES
    from .schedules import SCHEDULES, create_schedule
    from .structures import create_structure

    path = ("pruners", index)
    sec = _Section(doc, path, value, _PRUNER, what="a pruner")
    criterion = sec.string("criterion", "magnitude", nullable=False)
    try:
        as_criterion(criterion)
    except InvalidParameterError as exc:
        raise _rewrap(doc, sec.at("criterion"), exc) from None
    text = doc.scalars.get(sec.at("structure"), "")
    if isinstance(sec.raw("structure"), int) and re.fullmatch(r"\s*\d+\s*:\s*\d+\s*", text):
        sec.value["structure"] = text.strip()  # YAML 1.1 reads an unquoted 2:4 as the sexagesimal int 124
    structure_spec = sec.string("structure", "element", nullable=False)
    try:
        structure = create_structure(structure_spec)
    except InvalidParameterError as exc:
        raise _rewrap(doc, sec.at("structure"), exc) from None
    scope = sec.choice("scope", "local", list(SCOPES))
    fixed = structure.fixed_sparsity
    raw = sec.raw("sparsity", None)
    if raw is None:
        if fixed is None:
            raise sec.fail("sparsity" if sec.has("sparsity") else None, "a sparsity (a float in [0, 1] or a list)",
                           "nothing", f"Fix: add 'sparsity: 0.9' to pruners[{index}].")
        values: tuple[float | None, ...] = (None,)
    elif isinstance(raw, list):
        if not raw:
            raise sec.fail("sparsity", "a float in [0, 1] or a non-empty list of them", "<an empty list>")
        values = tuple(_sparsity(sec, "sparsity", v, sec.at("sparsity") + (i,)) for i, v in enumerate(raw))
        if len(set(values)) != len(values):
            raise sec.fail("sparsity", "distinct sparsities", raw, "Fix: list each level once.")
    else:
        values = (_sparsity(sec, "sparsity", raw, sec.at("sparsity")),)
    if fixed is not None:
        if any(v is not None and abs(v - fixed) > 1e-9 for v in values) or len(values) > 1:
            raise sec.fail("sparsity", f"null or {fixed:g}, which {structure.spec()} fixes", raw,
                           "Fix: leave sparsity out for N:M structures.")
        if scope != "local":
            raise sec.fail("scope", f"'local' for {structure.spec()} (every group is pruned on its own)", scope,
                           "Fix: scope: local.")
        values = (None,)
    overrides = sec.mapping("overrides")
    for pattern, level in overrides.items():
        _sparsity(sec, "overrides", level, sec.at("overrides") + (pattern,))
    normalize = sec.choice("normalize", "none", list(NORMALIZERS))
    mode = sec.choice("mode", "inplace", list(MODES))
    min_keep = sec.integer("min_keep", 1, 0)
    default_name = f"{criterion}-{structure.spec()}-{scope}".replace(":", "_")
    name = sec.string("name", default_name, nullable=False)
    if not _NAME.match(name):
        raise sec.fail("name", "a name of letters, digits and . _ + - (it names files)", name,
                       "Fix: e.g. name: magnitude-global.")

    schedule: dict[str, Any] | None = None
    sched_raw = sec.raw("schedule", None)
    if isinstance(sched_raw, str):
        sched_raw = {"name": sched_raw}
    if sched_raw is not None:
        spath = sec.at("schedule")
        ssec = _Section(doc, spath, sched_raw, _SCHEDULE, what="a schedule")
        sname = ssec.string("name", None, required=True)
        if sname not in SCHEDULES:
            known = SCHEDULES.names() + sorted(SCHEDULES._aliases)
            raise ssec.fail("name", f"a registered schedule ({', '.join(SCHEDULES.names())})", sname,
                            ("Fix: use one of them." + did_you_mean(sname, known)).strip())
        schedule = {"name": SCHEDULES.resolve(sname), **{k: v for k, v in ssec.value.items() if k != "name"}}
        if fixed is not None and schedule["name"] != "oneshot":
            raise ssec.fail("name", f"'oneshot' for {structure.spec()} (its sparsity is fixed)", sname,
                            "Fix: remove the schedule.")
        for level in values:
            kwargs = {k: v for k, v in schedule.items() if k != "name"}
            try:
                sched = create_schedule(schedule["name"], final=fixed if level is None else level, **kwargs)
            except InvalidParameterError as exc:
                key = exc.param if exc.param in ssec.value else None
                raise _rewrap(doc, spath + ((key,) if key else ()), exc) from None
            except TypeError as exc:
                raise ssec.fail(None, f"the arguments of the {schedule['name']!r} schedule", sorted(kwargs),
                                f"Fix: check the keys ({exc}).") from None
            if sched.unit == "epoch" and sched.end >= finetune.epochs:
                key = "end" if ssec.has("end") else ("steps" if ssec.has("steps") else None)
                raise ssec.fail(key, f"pruning events within the {finetune.epochs} fine-tuning epochs "
                                f"(last event < finetune.epochs)", sched.end,
                                f"Fix: set finetune.epochs to at least {sched.end + 1}, or end the schedule earlier.")
    return PrunerSpec(
        name=name, criterion=criterion, structure=structure_spec, scope=scope, sparsity=values,
        include=sec.strings("include"), exclude=sec.strings("exclude"), types=sec.strings("types"),
        params=sec.strings("params", "weight") or ("weight",), overrides={k: float(v) for k, v in overrides.items()},
        normalize=normalize, mode=mode, min_keep=min_keep, schedule=schedule, line=doc.line(path),
    )


def parse_recipe(text: str, source: str = "<recipe>", base_dir: str | os.PathLike[str] = ".") -> Recipe:
    """Validate recipe YAML ``text``; ``source`` names it in errors."""
    from .data import DATASETS
    from .zoo import MODELS

    doc = _Doc(source)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(exc, "problem", None) or str(exc)
        raise InvalidParameterError(f"{source} line {line}", "valid YAML", f"<{problem}>",
                                    "Fix: check the indentation and the quoting on that line.") from None
    if node is None:
        raise InvalidParameterError(source, "a recipe (a YAML mapping)", "<an empty file>",
                                    "Fix: start from prunekit/recipe_examples/demo.yaml.")
    doc.index(node, ())
    top = _Section(doc, (), data, _TOP, what="the recipe")

    msec = _Section(doc, ("model",), top.required("model"), _MODEL, what="the model")
    model_name = msec.string("name", required=True)
    _registered(msec, "name", model_name, MODELS, "model", "list_models")
    model = ModelSpec(model_name, msec.string("weights"), msec.mapping("kwargs"))

    dsec = _Section(doc, ("data",), top.required("data"), _DATA, what="the data")
    data_name = dsec.string("name", required=True)
    _registered(dsec, "name", data_name, DATASETS, "dataset", "list_datasets")
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

    pruners_raw = top.required("pruners")
    if not isinstance(pruners_raw, list) or not pruners_raw:
        raise top.fail("pruners", "a non-empty list of pruners ('- criterion: ...' items)", _type_name(pruners_raw))
    pruners = tuple(_pruner(doc, i, p, finetune) for i, p in enumerate(pruners_raw))

    esec = _Section(doc, ("evaluate",), top.raw("evaluate"), _EVALUATE, what="evaluation settings")
    metric = esec.choice("metric", "accuracy", list(METRICS))
    latency: LatencySpec | None = LatencySpec()
    if esec.has("latency"):
        lat_raw = esec.raw("latency")
        if lat_raw is None or lat_raw is False:
            latency = None
        else:
            lsec = _Section(doc, ("evaluate", "latency"), lat_raw, _LATENCY, what="latency settings")
            latency = LatencySpec(
                batch_size=lsec.integer("batch_size", 1, 1), repeats=lsec.integer("repeats", 30, 1),
                warmup=lsec.integer("warmup", 5, 0), threads=lsec.integer("threads", None, 1, nullable=True),
            )
    xsec = _Section(doc, ("export",), top.raw("export"), _EXPORT, what="export settings")
    export = ExportSpec(xsec.boolean("sparse_checkpoint", True), xsec.boolean("permanent", True))

    title = top.string("title", None)
    seed = top.integer("seed", 0, 0)
    recipe = Recipe(model=model, data=data_spec, pruners=pruners, train=train, finetune=finetune,
                    evaluate=EvaluateSpec(metric, latency), export=export, title=title, seed=seed,
                    source=source, base_dir=os.fspath(base_dir))
    seen: dict[str, int] = {}
    for run in recipe.runs():
        index = recipe.pruners.index(run.pruner)
        if run.name in seen:
            raise doc.error(("pruners", index, "name"), None, "a run name used once", run.name,
                            f"Fix: give pruners[{index}] its own 'name:' (pruners[{seen[run.name]}] has it too).")
        seen[run.name] = index
    return recipe


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
