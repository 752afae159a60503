"""Reading the stages of a run: ``prune`` (masks), ``shrink``, ``heads``, ``neurons``, ``oneshot``.

Each reader checks the keys, types and ranges of its stage and returns its
*variants*: one spec per value when the stage's swept key (``sparsity``, or
``macs_target`` / ``latency_target`` for ``shrink``) holds a list, else one.
Names that only a model can judge (a group criterion a layer type lacks, a
pattern that matches no module) are checked by the runner's dry run on a
fresh model before anything is trained.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from ..data import DATASETS
from ..errors import InvalidParameterError, did_you_mean
from ..params import SPARSITY
from ..schedules import SCHEDULES, create_schedule
from ..structures import create_structure
from .declared import PRUNER_NAME, check, levels, recipe_error, stage_keys
from .reader import Doc, Section, rewrap, type_name
from .specs import (
    HeadsSpec,
    NeuronsSpec,
    OneShotSpec,
    PrunerSpec,
    ShrinkSpec,
    StageData,
    TrainSpec,
)

__all__ = ["PRUNER_KEYS", "STAGE_KEYS", "read_prune", "read_shrink", "read_heads", "read_neurons",
           "read_oneshot", "registered", "check_name"]

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
#: The keys of each stage: the declared parameters of its function, then the recipe's own (see :mod:`.declared`).
STAGE_KEYS = {kind: stage_keys(kind) for kind in ("prune", "shrink", "heads", "neurons", "oneshot")}
#: An item of the older ``pruners:`` list: a prune stage with its run's name.
PRUNER_KEYS = [PRUNER_NAME.name, *STAGE_KEYS["prune"]]
_SCHEDULE = ["name", "start", "end", "frequency", "unit", "initial", "steps", "spacing"]
_DATA = ["name", "path", "split", "samples", "batch_size", "kwargs"]


def registered(sec: Section, key: str, name: str, registry: Any, kind: str, lister: str) -> None:
    if name not in registry:
        choices = registry.names()
        raise sec.fail(key, f"a registered {kind} name", name,
                       (f"Fix: see prunekit.{lister}() ({', '.join(choices)})."
                        + did_you_mean(name, choices + sorted(registry._aliases))).strip())


def _names(value: Any) -> tuple[str, ...] | None:
    """A checked string or list of strings as a tuple (None for null or an empty list)."""
    if value is None:
        return None
    items = (value,) if isinstance(value, str) else tuple(value)
    return items or None


def _structure_text(doc: Doc, sec: Section, key: str = "structure") -> None:
    text = doc.scalars.get(sec.at(key), "")
    if isinstance(sec.raw(key), int) and re.fullmatch(r"\s*\d+\s*:\s*\d+\s*", text):
        sec.value[key] = text.strip()  # YAML 1.1 reads an unquoted 2:4 as the sexagesimal int 124


def _stage_data(doc: Doc, sec: Section, *, required: bool = False) -> StageData | None:
    raw = sec.raw("data", None)
    if raw is None:
        return StageData() if required else None
    dsec = Section(doc, sec.at("data"), raw, _DATA, what="the data this stage reads")
    name = dsec.string("name", None)
    if name is not None:
        registered(dsec, "name", name, DATASETS, "dataset", "list_datasets")
    return StageData(name=name, path=dsec.string("path"), split=dsec.string("split", "train", nullable=False),
                     samples=dsec.integer("samples", 128, 1), batch_size=dsec.integer("batch_size", 8, 1),
                     kwargs=dsec.mapping("kwargs"))


def read_prune(doc: Doc, path: tuple[Any, ...], value: Any, finetune: TrainSpec, name: str | None = None
               ) -> PrunerSpec:
    """The ``prune`` stage (or a legacy ``pruners`` item, which carries its ``name``)."""
    keys = PRUNER_KEYS if name is None else STAGE_KEYS["prune"]
    sec = Section(doc, path, value, keys, what="a pruner" if name is None else "a prune stage")
    criterion = check(sec, "prune", "criterion")
    _structure_text(doc, sec)
    structure_spec = check(sec, "prune", "structure")
    structure = create_structure(structure_spec)
    scope = check(sec, "prune", "scope")
    fixed = structure.fixed_sparsity
    values: tuple[float | None, ...]
    given = levels(sec, "prune", "sparsity")
    if given is None:
        if fixed is None:
            raise sec.fail("sparsity" if sec.has("sparsity") else None, "a sparsity (a float in [0, 1] or a list)",
                           "nothing", f"Fix: add 'sparsity: 0.9' to {doc.where(path).split(', ', 1)[1]}.")
        values = (None,)
    else:
        values = given
    if fixed is not None:
        if any(v is not None and abs(v - fixed) > 1e-9 for v in values) or len(values) > 1:
            raise sec.fail("sparsity", f"null or {fixed:g}, which {structure.spec()} fixes", sec.raw("sparsity"),
                           "Fix: leave sparsity out for N:M structures.")
        if scope != "local":
            raise sec.fail("scope", f"'local' for {structure.spec()} (every group is pruned on its own)", scope,
                           "Fix: scope: local.")
        values = (None,)
    overrides = dict(check(sec, "prune", "overrides") or {})
    for pattern, level in overrides.items():
        if not isinstance(pattern, str):
            raise sec.fail("overrides", "a mapping of name patterns to fractions", pattern)
        try:
            overrides[pattern] = SPARSITY.convert(level, "overrides")
        except InvalidParameterError as exc:
            raise recipe_error(sec, sec.at("overrides") + (pattern,), "overrides", exc) from None
    if name is None:
        default_name = f"{criterion}-{structure.spec()}-{scope}".replace(":", "_")
        name = sec.string("name", default_name, nullable=False)
    schedule = _schedule(doc, sec, values, fixed, structure.spec(), finetune)
    check(sec, "prune", "types")
    return PrunerSpec(
        name=name, criterion=criterion, structure=structure_spec, scope=scope, sparsity=values,
        include=_names(check(sec, "prune", "include")), exclude=_names(check(sec, "prune", "exclude")),
        types=sec.strings("types"), params=_names(check(sec, "prune", "params")) or ("weight",),
        overrides=overrides, normalize=check(sec, "prune", "normalize"), mode=check(sec, "prune", "mode"),
        min_keep=check(sec, "prune", "min_keep"), schedule=schedule, line=doc.line(path),
    )


def _schedule(doc: Doc, sec: Section, values: tuple[float | None, ...], fixed: float | None, spec: str,
              finetune: TrainSpec) -> dict[str, Any] | None:
    sched_raw = check(sec, "prune", "schedule")
    if isinstance(sched_raw, str):
        sched_raw = {"name": sched_raw}
    if sched_raw is None:
        return None
    spath = sec.at("schedule")
    ssec = Section(doc, spath, sched_raw, _SCHEDULE, what="a schedule")
    sname = ssec.string("name", None, required=True)
    if sname not in SCHEDULES:
        known = SCHEDULES.names() + sorted(SCHEDULES._aliases)
        raise ssec.fail("name", f"a registered schedule ({', '.join(SCHEDULES.names())})", sname,
                        ("Fix: use one of them." + did_you_mean(sname, known)).strip())
    schedule = {"name": SCHEDULES.resolve(sname), **{k: v for k, v in ssec.value.items() if k != "name"}}
    if fixed is not None and schedule["name"] != "oneshot":
        raise ssec.fail("name", f"'oneshot' for {spec} (its sparsity is fixed)", sname, "Fix: remove the schedule.")
    for level in values:
        kwargs = {k: v for k, v in schedule.items() if k != "name"}
        try:
            sched = create_schedule(schedule["name"], final=fixed if level is None else level, **kwargs)
        except InvalidParameterError as exc:
            key = exc.param if exc.param in ssec.value else None
            raise rewrap(doc, spath + ((key,) if key else ()), exc) from None
        except TypeError as exc:
            raise ssec.fail(None, f"the arguments of the {schedule['name']!r} schedule", sorted(kwargs),
                            f"Fix: check the keys ({exc}).") from None
        if sched.unit == "epoch" and sched.end >= finetune.epochs:
            key = "end" if ssec.has("end") else ("steps" if ssec.has("steps") else None)
            raise ssec.fail(key, f"pruning events within the {finetune.epochs} fine-tuning epochs "
                            f"(last event < finetune.epochs)", sched.end,
                            f"Fix: set finetune.epochs to at least {sched.end + 1}, or end the schedule earlier.")
    return schedule


def read_shrink(doc: Doc, path: tuple[Any, ...], value: Any) -> list[tuple[float | None, ShrinkSpec]]:
    sec = Section(doc, path, value, STAGE_KEYS["shrink"], what="a shrink stage")
    targets = {key: levels(sec, "shrink", key) for key in ("sparsity", "macs_target", "latency_target")}
    given = [k for k, v in targets.items() if v is not None]
    if len(given) != 1:
        raise sec.fail(given[1] if len(given) > 1 else None,
                       "exactly one of sparsity, macs_target and latency_target",
                       ", ".join(given) if given else "none of them",
                       "Fix: e.g. macs_target: 0.5 (keep half the MACs) or sparsity: 0.3 (remove 30% of channels).")
    allocation = check(sec, "shrink", "allocation") if sec.has("allocation") else (
        "latency" if given[0] == "latency_target" else "ranking")
    if given[0] == "latency_target" and allocation != "latency":
        raise sec.fail("allocation", "'latency' with latency_target", allocation, "Fix: allocation: latency.")
    if allocation == "latency" and given[0] == "sparsity":
        raise sec.fail("sparsity", "macs_target or latency_target with allocation: latency", "sparsity",
                       "Fix: use macs_target or allocation: ranking.")
    base = ShrinkSpec(
        criterion=check(sec, "shrink", "criterion"), scope=check(sec, "shrink", "scope"),
        normalize=check(sec, "shrink", "normalize"), max_layer_ratio=check(sec, "shrink", "max_layer_ratio"),
        round_to=check(sec, "shrink", "round_to"), steps=check(sec, "shrink", "steps"),
        exclude=_names(check(sec, "shrink", "exclude")) or (), allocation=allocation,
        approximate=check(sec, "shrink", "approximate"), data=_stage_data(doc, sec),
    )
    key = given[0]
    return [(v, replace(base, **{key: v})) for v in targets[key]]  # type: ignore[union-attr]


def read_heads(doc: Doc, path: tuple[Any, ...], value: Any) -> list[tuple[float | None, HeadsSpec]]:
    sec = Section(doc, path, value, STAGE_KEYS["heads"], what="a heads stage")
    given = levels(sec, "heads", "sparsity")
    if given is None:
        raise sec.fail(None, "a sparsity (the fraction of heads removed)", "nothing", "Fix: add 'sparsity: 0.25'.")
    base = HeadsSpec(criterion=check(sec, "heads", "criterion"), scope=check(sec, "heads", "scope"),
                     gqa=check(sec, "heads", "gqa"), round_to=check(sec, "heads", "round_to"),
                     uniform=check(sec, "heads", "uniform"),
                     data=_stage_data(doc, sec))
    return [(v, replace(base, sparsity=v)) for v in given]


def read_neurons(doc: Doc, path: tuple[Any, ...], value: Any) -> list[tuple[float | None, NeuronsSpec]]:
    sec = Section(doc, path, value, STAGE_KEYS["neurons"], what="a neurons stage")
    given = levels(sec, "neurons", "sparsity")
    if given is None:
        raise sec.fail(None, "a sparsity (the fraction of MLP neurons removed)", "nothing",
                       "Fix: add 'sparsity: 0.25'.")
    base = NeuronsSpec(criterion=check(sec, "neurons", "criterion"), round_to=check(sec, "neurons", "round_to"),
                       uniform=check(sec, "neurons", "uniform"),
                       data=_stage_data(doc, sec))
    return [(v, replace(base, sparsity=v)) for v in given]


def read_oneshot(doc: Doc, path: tuple[Any, ...], value: Any, finetune: TrainSpec
                 ) -> list[tuple[float | None, OneShotSpec]]:
    sec = Section(doc, path, value, STAGE_KEYS["oneshot"], what="a oneshot stage")
    method = check(sec, "oneshot", "method")
    _structure_text(doc, sec)
    structure = check(sec, "oneshot", "structure")
    fixed = create_structure(structure).fixed_sparsity
    given = levels(sec, "oneshot", "sparsity")
    if given is None and fixed is None:
        raise sec.fail(None, "a sparsity (a float in [0, 1) or a list) or an N:M structure", "nothing",
                       "Fix: add 'sparsity: 0.5' or 'structure: 2:4'.")
    if given is not None and fixed is not None:
        raise sec.fail("sparsity", f"nothing: {structure} fixes the sparsity", sec.raw("sparsity"),
                       "Fix: leave sparsity out for N:M structures.")
    mode = check(sec, "oneshot", "mode")
    if mode == "permanent" and finetune.epochs > 0:
        raise sec.fail("mode", "'inplace' or 'reparam' when the recipe fine-tunes (masks keep the zeros)", mode,
                       "Fix: mode: inplace, or finetune.epochs: 0.")
    base = OneShotSpec(
        method=method, structure=structure, owl=check(sec, "oneshot", "owl"),
        owl_lambda=check(sec, "oneshot", "owl_lambda"), owl_m=check(sec, "oneshot", "owl_m"),
        sequential=check(sec, "oneshot", "sequential"), include=_names(check(sec, "oneshot", "include")),
        exclude=_names(check(sec, "oneshot", "exclude")), mode=mode, blocksize=check(sec, "oneshot", "blocksize"),
        percdamp=check(sec, "oneshot", "percdamp"), data=_stage_data(doc, sec, required=True) or StageData(),
    )
    if given is None:
        return [(None, base)]
    return [(v, replace(base, sparsity=v)) for v in given]


def check_name(doc: Doc, path: tuple[Any, ...], name: Any) -> str:
    """A run name: it names files, and ``dense`` is the dense reference's."""
    if not isinstance(name, str) or not NAME.match(name):
        raise doc.error(path, None, "a name of letters, digits and . _ + - (it names files)", type_name(name),
                        "Fix: e.g. name: magnitude-global.")
    if name == "dense":
        raise doc.error(path, None, "a name other than 'dense' (the dense reference's)", name,
                        "Fix: e.g. name: pruned.")
    return name
