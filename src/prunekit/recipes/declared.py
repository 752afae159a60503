"""The schema of each recipe stage, derived from the declared parameters of the function it calls.

A stage's keys are the declared parameters (:mod:`prunekit.params`) of the
function that realises it, under the same names, plus the recipe's own keys
(:data:`RECIPE_ONLY`, declared here as :class:`~prunekit.validation.Param`
too):

==========  ===================================  ==================================
stage       declarations                         recipe-only keys
==========  ===================================  ==================================
prune       ``PRUNE_PARAMS`` (Pruner)            ``schedule`` (and ``name`` in the
                                                 older ``pruners:`` list)
shrink      ``STRUCTURAL_PARAMS``                ``data``
heads       ``HEADS_PARAMS`` (prune_heads)       ``data``
neurons     ``NEURONS_PARAMS``                   ``data``
oneshot     ``ONESHOT_PARAMS`` (oneshot_prune)   ``data``
==========  ===================================  ==================================

Where the recipe differs from the function, it says so here and nowhere else:
:data:`RENAMED` (the recipe's ``criterion`` is ``importance`` of
``prune_heads`` / ``prune_mlp_neurons``), :data:`RECIPE_DEFAULTS` (a recipe
keeps masks ``inplace`` where the functions default otherwise; ``shrink``'s
criterion is written ``l1``, the alias of ``magnitude``) and
:data:`NARROWED` (a ``prune`` level is a fraction: counts of units are for
the Python and command-line calls; a heads or neurons criterion is a score's
name, not ``{layer: scores}``). Each value is checked by the declaration's
constraint; a refusal keeps the declaration's expected text and fix, addressed
to the recipe key: ``recipe.yaml line 12, runs[2].shrink.macs_target:
expected a float in (0, 1], got 1.5. Fix: e.g. macs_target: 0.5.``
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from ..errors import InvalidParameterError
from ..params import (
    HEAD_SCORE,
    HEADS_PARAMS,
    NEURON_SCORE,
    NEURONS_PARAMS,
    ONESHOT_PARAMS,
    PRUNE_PARAMS,
    SPARSITY,
    STRUCTURAL_PARAMS,
)
from ..validation import REQUIRED, AnyOf, InstanceOf, Param, Strings, declare, schema
from .reader import Section

__all__ = ["DECLARED", "NARROWED", "PRUNER_NAME", "RECIPE_DEFAULTS", "RECIPE_ONLY", "RENAMED", "STAGE_PARAMS", "check",
           "levels", "recipe_error", "stage_keys", "stage_schema"]

#: The declarations each stage's function is checked by.
DECLARED: dict[str, dict[str, Param]] = {
    # torch's relative ``amount`` serves Python callers moving from torch; a recipe states absolute levels
    "prune": {name: param for name, param in PRUNE_PARAMS.items() if name != "amount"},
    "shrink": STRUCTURAL_PARAMS,
    "heads": HEADS_PARAMS,
    "neurons": NEURONS_PARAMS,
    "oneshot": ONESHOT_PARAMS,
}

#: Recipe key -> the function's keyword, where they differ.
RENAMED: dict[str, dict[str, str]] = {
    "heads": {"criterion": "importance"},
    "neurons": {"criterion": "importance"},
}

#: A recipe's defaults where they differ from the function's.
RECIPE_DEFAULTS: dict[str, dict[str, Any]] = {
    "prune": {"mode": "inplace"},
    "shrink": {"criterion": "l1"},
    "oneshot": {"mode": "inplace"},
}

#: Constraints a recipe narrows: a ``prune`` level is a fraction (no counts of units); a heads or
#: neurons criterion is a registered score's name (no ``{layer: scores}`` tensors in YAML).
NARROWED: dict[str, dict[str, Any]] = {
    "prune": {"sparsity": AnyOf(SPARSITY, None)},
    "heads": {"criterion": HEAD_SCORE},
    "neurons": {"criterion": NEURON_SCORE},
}

_DATA = Param("data", AnyOf(InstanceOf(Mapping, "a mapping {name, path, split, samples, batch_size, kwargs}"), None),
              None, "the data the stage reads (calibration, data-driven scores); default the recipe's data set")

#: The recipe's own keys of each stage (read by the stage readers themselves).
RECIPE_ONLY: dict[str, dict[str, Param]] = {
    "prune": declare(Param("schedule", AnyOf(Strings("a schedule name"),
                                             InstanceOf(Mapping, "a mapping {name, start, end, ...}"), None),
                           None, "when to prune during fine-tuning (default: once, before)")),
    "shrink": declare(_DATA),
    "heads": declare(_DATA),
    "neurons": declare(_DATA),
    "oneshot": declare(dataclasses.replace(_DATA, help="the calibration set")),
}

#: The name of a run in the older ``pruners:`` list.
PRUNER_NAME = Param("name", AnyOf(Strings("a run name"), None), None, "the run's name (it names files)")


def _recipe_param(kind: str, key: str, param: Param) -> Param:
    changes: dict[str, Any] = {}
    if key in NARROWED.get(kind, {}):
        changes["constraint"] = NARROWED[kind][key]
    if key in RECIPE_DEFAULTS.get(kind, {}):
        changes["default"] = RECIPE_DEFAULTS[kind][key]
    return dataclasses.replace(param, **changes) if changes else param


def _stage_params(kind: str) -> dict[str, Param]:
    to_recipe = {python: key for key, python in RENAMED.get(kind, {}).items()}
    return {to_recipe.get(name, name): _recipe_param(kind, to_recipe.get(name, name), p)
            for name, p in DECLARED[kind].items()}


#: Recipe key -> declared parameter (as the recipe reads it), per stage.
STAGE_PARAMS: dict[str, dict[str, Param]] = {kind: _stage_params(kind) for kind in DECLARED}


def stage_keys(kind: str) -> list[str]:
    """The keys a ``kind`` stage accepts: its declared parameters, then the recipe's own."""
    return [*STAGE_PARAMS[kind], *RECIPE_ONLY[kind]]


def stage_schema(kind: str) -> dict[str, dict[str, Any]]:
    """The schema of a ``kind`` stage: ``key -> {expected, default, help[, choices]}``."""
    return schema({**STAGE_PARAMS[kind], **RECIPE_ONLY[kind]})


def recipe_error(sec: Section, path: tuple[Any, ...], key: str, exc: InvalidParameterError,
                 python: str | None = None) -> InvalidParameterError:
    """``exc`` (raised for the keyword ``python``) addressed to the recipe key at ``path``:
    the same expected and got, the fix written as YAML (``key: value``)."""
    fix = exc.fix
    if fix:
        for name in {key, python or key, exc.param}:
            fix = re.sub(rf"\b{re.escape(name)}=", f"{key}: ", fix)
    return InvalidParameterError(sec.doc.where(path), exc.expected, exc.got, fix)


def check(sec: Section, kind: str, key: str) -> Any:
    """The value of ``key`` in the ``kind`` stage ``sec``, checked by its declaration
    (the recipe's default when absent, not checked); a recipe-only key by its own declaration."""
    param = STAGE_PARAMS[kind][key] if key in STAGE_PARAMS[kind] else RECIPE_ONLY[kind][key]
    if not sec.has(key):
        return None if param.default is REQUIRED else param.default
    try:
        return param.check(sec.raw(key), param.name)
    except InvalidParameterError as exc:
        raise recipe_error(sec, sec.at(key), key, exc, param.name) from None


def levels(sec: Section, kind: str, key: str) -> tuple[float, ...] | None:
    """The level or the non-empty list of distinct levels (a sweep) of ``key``, each checked by
    its declaration (None when absent or null)."""
    raw = sec.raw(key, None)
    if raw is None:
        return None
    param = STAGE_PARAMS[kind][key]
    items = raw if isinstance(raw, list) else [raw]
    if not items:
        raise sec.fail(key, f"{param.constraint.describe()}, or a non-empty list of them", "<an empty list>")
    values = []
    for i, item in enumerate(items):
        path = sec.at(key) + ((i,) if isinstance(raw, list) else ())
        try:
            value = None if item is None else param.check(item, param.name)
        except InvalidParameterError as exc:
            raise recipe_error(sec, path, key, exc, param.name) from None
        if value is None:
            raise sec.doc.error(path, None, "a value (null is not a level)", "null",
                                f"Fix: remove it, or give {key} a number.")
        values.append(value)
    if len(set(values)) != len(values):
        raise sec.fail(key, "distinct values", raw, "Fix: list each level once.")
    return tuple(values)
