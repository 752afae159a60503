"""The report's schema: :func:`validate_report` names the first missing or malformed key."""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ...errors import InvalidParameterError

__all__ = ["METRIC_NAMES", "MEASURE_KINDS", "validate_report"]

METRIC_NAMES = ("accuracy", "perplexity", "loss")

MEASURE_KINDS: tuple[tuple[str, str], ...] = (
    ("params", "count"),
    ("nonzero", "count"),
    ("macs", "count"),
    ("effective_macs", "count"),
    ("bytes_dense", "count"),
    ("bytes_compressed", "count"),
    ("latency_ms", "number|null"),
    ("latency_batch", "count|null"),
    ("metric", "number|null"),
    ("loss", "number|null"),
)

_EXPECTED = {
    "str": "a string",
    "count": "a non-negative int",
    "count|null": "a positive int or null",
    "number": "a number",
    "number|null": "a number or null",
    "bool": "true or false",
    "list": "a list",
    "dict": "a mapping (JSON object)",
}


def _where(parent: str, key: str | int) -> str:
    return f"{parent}[{key!r}]"


def _check_value(value: Any, kind: str, where: str) -> None:
    ok: bool
    if kind == "str":
        ok = isinstance(value, str)
    elif kind in ("count", "count|null"):
        if value is None and kind == "count|null":
            return
        least = 1 if kind == "count|null" else 0
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= least
    elif kind in ("number", "number|null"):
        if value is None and kind == "number|null":
            return
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    elif kind == "bool":
        ok = isinstance(value, bool)
    elif kind == "list":
        ok = isinstance(value, (list, tuple))
    elif kind == "dict":
        ok = isinstance(value, Mapping)
    else:  # pragma: no cover - internal
        raise AssertionError(kind)
    if not ok:
        raise InvalidParameterError(
            where, _EXPECTED[kind], value, "Fix: see the schema in the docstring of prunekit.measure.report."
        )


def _require(obj: Mapping[str, Any], key: str, kind: str, parent: str) -> Any:
    where = _where(parent, key)
    if key not in obj:
        raise InvalidParameterError(
            where,
            f"a key {key!r} ({_EXPECTED[kind]})",
            "<missing>",
            f"Fix: add {key!r} to {parent}; see the schema in the docstring of prunekit.measure.report.",
        )
    value = obj[key]
    _check_value(value, kind, where)
    return value


def _check_measures(measures: Any, where: str) -> None:
    _check_value(measures, "dict", where)
    for key, kind in MEASURE_KINDS:
        _require(measures, key, kind, where)


def _check_curves(curves: Any, where: str) -> None:
    _check_value(curves, "dict", where)
    for layer, points in curves.items():
        spot = _where(where, layer)
        if not isinstance(layer, str):
            raise InvalidParameterError(where, "layer names as keys (strings)", layer)
        _check_value(points, "list", spot)
        for i, point in enumerate(points):
            if not isinstance(point, (list, tuple)) or len(point) != 2:
                raise InvalidParameterError(_where(spot, i), "a [sparsity, metric] pair", point)
            _check_value(point[0], "number", _where(spot, i))
            _check_value(point[1], "number|null", _where(spot, i))


def validate_report(report: Any) -> None:
    """Check ``report`` against the schema; raise InvalidParameterError naming the bad key."""
    root = "report"
    _check_value(report, "dict", root)
    _require(report, "title", "str", root)
    created = _require(report, "created", "str", root)
    try:
        datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidParameterError(
            _where(root, "created"), "an ISO 8601 time such as '2024-05-01T12:00:00+00:00'", created,
            "Fix: datetime.now(timezone.utc).isoformat(timespec='seconds').",
        ) from None
    model = _require(report, "model", "dict", root)
    _require(model, "name", "str", _where(root, "model"))
    _require(model, "params", "count", _where(root, "model"))
    metric = _require(report, "metric", "dict", root)
    name = _require(metric, "name", "str", _where(root, "metric"))
    if name not in METRIC_NAMES:
        raise InvalidParameterError(
            _where(_where(root, "metric"), "name"), "one of " + ", ".join(repr(m) for m in METRIC_NAMES), name
        )
    _require(metric, "higher_is_better", "bool", _where(root, "metric"))
    _check_measures(_require(report, "dense", "dict", root), _where(root, "dense"))
    runs = _require(report, "runs", "list", root)
    seen: set[str] = set()
    for i, run in enumerate(runs):
        where = f"{root}['runs'][{i}]"
        _check_value(run, "dict", where)
        run_name = _require(run, "name", "str", where)
        if run_name in seen:
            raise InvalidParameterError(
                _where(where, "name"), "a name no other run has", run_name, "Fix: give every run its own name."
            )
        seen.add(run_name)
        method = _require(run, "method", "dict", where)
        for key in ("criterion", "structure", "scope", "mode"):
            _require(method, key, "str", _where(where, "method"))
        sparsity = _require(run, "sparsity", "number", where)
        if not 0.0 <= float(sparsity) <= 1.0:
            raise InvalidParameterError(_where(where, "sparsity"), "a fraction in [0, 1]", sparsity)
        _check_measures(_require(run, "measures", "dict", where), _where(where, "measures"))
        layers = _require(run, "layers", "list", where)
        for j, layer in enumerate(layers):
            spot = f"{where}['layers'][{j}]"
            _check_value(layer, "dict", spot)
            _require(layer, "name", "str", spot)
            shape = _require(layer, "shape", "list", spot)
            for k, dim in enumerate(shape):
                _check_value(dim, "count", f"{spot}['shape'][{k}]")
            _require(layer, "params", "count", spot)
            _require(layer, "nonzero", "count", spot)
            _require(layer, "sparsity", "number", spot)
        if run.get("budget") is not None:
            _check_value(run["budget"], "dict", _where(where, "budget"))
            _require(run["budget"], "steps", "count", _where(where, "budget"))
        if "history" in run and run["history"] is not None:
            history = run["history"]
            _check_value(history, "dict", _where(where, "history"))
            if "epoch_losses" in history:
                losses = _require(history, "epoch_losses", "list", _where(where, "history"))
                for k, value in enumerate(losses):
                    _check_value(value, "number", f"{where}['history']['epoch_losses'][{k}]")
    for key in ("data", "training", "dense_budget"):
        if report.get(key) is not None:
            _check_value(report[key], "dict", _where(root, key))
    sensitivity = report.get("sensitivity")
    if sensitivity is not None:
        where = _where(root, "sensitivity")
        _check_value(sensitivity, "dict", where)
        _require(sensitivity, "baseline", "number", where)
        _check_curves(_require(sensitivity, "curves", "dict", where), _where(where, "curves"))
    environment = report.get("environment")
    if environment is not None:
        _check_value(environment, "dict", _where(root, "environment"))
        if "threads" in environment and environment["threads"] is not None:
            _check_value(environment["threads"], "count", _where(_where(root, "environment"), "threads"))

