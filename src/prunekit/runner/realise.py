"""Applying a run's stages to a model: masks, channel shrinking, heads, neurons, one-shot.

:func:`apply_stages` runs the stages of a :class:`~prunekit.recipes.RunSpec`
in order (shrink, heads, neurons, then prune or oneshot) on ``model`` and
returns the pruner and schedule that fine-tuning must carry on (a ``prune``
stage with a schedule prunes during fine-tuning). The runner calls it once
per run on a fresh, untrained model before anything is trained (a dry run:
every name, pattern and target is checked by the functions that will use
it), then for real. An error of a library call is re-addressed to the recipe
key it came from: ``recipe.yaml line 14, runs[2].shrink.macs_target: ...``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from .. import oneshot_prune, prune_heads, prune_mlp_neurons, structural_prune
from ..errors import InvalidParameterError
from ..pruner import Pruner
from ..recipes import Recipe, RunSpec, StageData
from ..recipes.stages import STAGE_KEYS
from ..schedules import Schedule, create_schedule
from ..structures import create_structure
from ..surgery import LatencyTable

__all__ = ["StageOutcome", "apply_stages", "make_pruner", "make_schedule"]

#: Library argument name -> recipe key, per stage (the rest keep their names).
_KEYS: dict[str, dict[str, str]] = {
    "shrink": {"loss_fn": "criterion", "criterion_options": "criterion"},
    "heads": {"importance": "criterion", "heads_to_prune": "sparsity"},
    "neurons": {"importance": "criterion", "neurons_to_prune": "sparsity"},
    "oneshot": {"batch_size": "data", "owl_lambda": "owl_lambda"},
    "prune": {},
}

DataFor = Callable[[StageData, str], list[Any]]


@dataclass
class StageOutcome:
    """What the stages left for fine-tuning: the mask pruner (None without one)
    and its schedule (None: it pruned once already), plus a summary per stage."""

    pruner: Pruner | None
    schedule: Schedule | None
    summary: dict[str, Any]


@contextlib.contextmanager
def _at(run: RunSpec, stage: str) -> Iterator[None]:
    try:
        yield
    except InvalidParameterError as exc:
        key = _KEYS[stage].get(exc.param, exc.param)
        if key not in STAGE_KEYS[stage]:  # e.g. "group criterion", "score": the recipe key named in it
            words = str(exc.param).replace("_", " ").split()
            key = next((k for k in STAGE_KEYS[stage] if k in words), _KEYS[stage].get(words[-1] if words else ""))
        path = f"{stage}.{key}" if key in STAGE_KEYS[stage] else stage
        raise InvalidParameterError(run.param(path), exc.expected, exc.got, exc.fix) from None


def make_pruner(model: nn.Module, run: RunSpec) -> Pruner:
    """The mask pruner of the run's ``prune`` stage."""
    p = run.pruner
    assert p is not None  # the caller checks run.pruner
    with _at(run, "prune"):
        return Pruner(model, criterion=p.criterion, structure=p.structure, scope=p.scope,
                      include=list(p.include) if p.include else None,
                      exclude=list(p.exclude) if p.exclude else None,
                      types=list(p.types) if p.types else None, params=list(p.params),
                      overrides=p.overrides or None, normalize=p.normalize, min_keep=p.min_keep, mode=p.mode)


def make_schedule(run: RunSpec) -> Schedule | None:
    """The ``prune`` stage's schedule (None: one-shot before fine-tuning)."""
    spec = run.pruner.schedule if run.pruner is not None else None
    if spec is None or run.pruner is None:
        return None
    final = run.sparsity
    if final is None:  # N:M: its structure fixes the level
        final = create_structure(run.pruner.structure).fixed_sparsity
    return create_schedule(spec["name"], final=final, **{k: v for k, v in spec.items() if k != "name"})


def _summary(result: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("params_before", "params_after", "macs_before", "macs_after"):
        value = getattr(result, key, None)
        if isinstance(value, (int, float)):
            out[key] = value
    return out


def apply_stages(recipe: Recipe, model: nn.Module, run: RunSpec, example_inputs: Any, data_for: DataFor,
                 *, finetune_steps: int, dry: bool = False) -> StageOutcome:
    """Apply ``run``'s stages to ``model`` in place; ``data_for(spec, where)`` gives a stage's batches.

    ``dry``: a check on a fresh model; the ``prune`` stage's pruner is built and its
    structure checked against every target, but no masks are computed (they cannot fail then)."""
    summary: dict[str, Any] = {}
    if run.shrink is not None:
        s = run.shrink
        batches = data_for(s.data, run.param("shrink.data")) if s.data is not None else None
        table = None
        if s.latency_target is not None:
            lat = recipe.evaluate.latency
            table = LatencyTable(batch_size=lat.batch_size, threads=lat.threads) if lat is not None else LatencyTable()
        with _at(run, "shrink"):
            result = structural_prune(
                model, example_inputs, sparsity=s.sparsity, macs_target=s.macs_target, criterion=s.criterion,
                scope=s.scope, normalize=s.normalize, max_layer_ratio=s.max_layer_ratio, round_to=s.round_to,
                steps=s.steps, data=batches, exclude=s.exclude, allocation=s.allocation, approximate=s.approximate,
                latency_target=s.latency_target, latency_table=table)
        summary["shrink"] = _summary(result)
    if run.heads is not None:
        h = run.heads
        batches = data_for(h.data, run.param("heads.data")) if h.data is not None else None
        with _at(run, "heads"):
            record = prune_heads(model, sparsity=h.sparsity, importance=h.criterion, data=batches, gqa=h.gqa,
                                 scope=h.scope, round_to=h.round_to, uniform=h.uniform)
        summary["heads"] = {"removed": _removed(record)}
    if run.neurons is not None:
        n = run.neurons
        batches = data_for(n.data, run.param("neurons.data")) if n.data is not None else None
        with _at(run, "neurons"):
            record = prune_mlp_neurons(model, sparsity=n.sparsity, importance=n.criterion, data=batches,
                                       round_to=n.round_to, uniform=n.uniform)
        summary["neurons"] = {"removed": _removed(record)}
    pruner = schedule = None
    if run.pruner is not None:
        pruner = make_pruner(model, run)
        for target in pruner.targets:
            with _at(run, "prune"):
                try:
                    pruner.structure.check(target)
                except InvalidParameterError as exc:
                    raise InvalidParameterError("structure", exc.expected, exc.got, exc.fix) from None
        with _at(run, "prune"):
            schedule = make_schedule(run)
        if schedule is not None and schedule.unit == "step" and schedule.end >= finetune_steps:
            raise InvalidParameterError(
                run.param("prune.schedule.end"), f"a step < {finetune_steps} (the fine-tuning steps)", schedule.end,
                "Fix: end the schedule earlier or fine-tune longer.")
        if schedule is None and not dry:
            pruner.step(run.sparsity)
    if run.oneshot is not None:
        o = run.oneshot
        calibration = data_for(o.data, run.param("oneshot.data"))
        with _at(run, "oneshot"):
            result = oneshot_prune(
                model, calibration, method=o.method, sparsity=o.sparsity,
                structure=o.structure, owl=o.owl,
                owl_lambda=o.owl_lambda, owl_m=o.owl_m, sequential=o.sequential, batch_size=o.data.batch_size,
                include=list(o.include) if o.include else None, exclude=list(o.exclude) if o.exclude else None,
                mode=o.mode, blocksize=o.blocksize, percdamp=o.percdamp)
        summary["oneshot"] = {"calibration_tokens": result.calibration_tokens,
                              "block_sparsities": [round(float(v), 6) for v in result.block_sparsities]}
    return StageOutcome(pruner, schedule, summary)


def _removed(record: Any) -> dict[str, int]:
    kept: Mapping[str, Any] = getattr(record, "kept", {}) or {}
    return {str(k): len(v) for k, v in kept.items()}
