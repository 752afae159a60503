"""Reports of pruning experiments: JSON, Markdown, self-contained HTML and PNG plots.

:func:`write_report` takes one plain, JSON-able dict (what the recipe runner
produces) and writes into ``out_dir``::

    report.json      the dict itself
    report.md        results table, per-run layer tables, plots linked
    report.html      the same as one page (inline CSS, plots/*.png by relative path)
    plots/*.png      sparsity per layer, metric against sparsity, relative to
                     the dense model, sensitivity curves (when there are any)

The schema (``MEASURES`` appears for the dense model and for each run)::

    {
      "title": str,
      "created": str (ISO 8601 time),
      "model": {"name": str, "params": int},
      "metric": {"name": "accuracy" | "perplexity" | "loss", "higher_is_better": bool},
      "dense": MEASURES,
      "runs": [{"name": str,
                "method": {"criterion": str, "structure": str, "scope": str, "mode": str, ...},
                "sparsity": float, "measures": MEASURES,
                "layers": [{"name": str, "shape": [int], "params": int, "nonzero": int, "sparsity": float}],
                "history": {"epoch_losses": [float], ...}  (optional)}],
      "sensitivity": {"baseline": float, "curves": {layer: [[sparsity, metric], ...]}}  (optional),
      "environment": {"torch": str, "threads": int, "platform": str, ...}  (optional;
                      "latency_threads", "latency_repeats", "latency_warmup" are
                      quoted in the latency note when present, "latency_threads"
                      in preference to "threads")
    }
    MEASURES = {"params": int, "nonzero": int, "macs": int, "effective_macs": int,
                "bytes_dense": int, "bytes_compressed": int,
                "latency_ms": float | None, "latency_batch": int | None,
                "metric": float | None, "loss": float | None}

:func:`validate_report` checks it and raises
:class:`~prunekit.InvalidParameterError` naming the first missing or malformed
key (``report['runs'][0]['measures']['nonzero']``); nothing is written then.

Ratios in the tables and plots divide a run's figure by the dense model's same
figure, except the size ratio, which divides the run's compressed bytes by the
dense model's plain (uncompressed) bytes: how much smaller the checkpoint gets.
"""

from __future__ import annotations

import html
import json
import logging
import math
import numbers
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ..errors import InvalidParameterError
from ..io import atomic_write

__all__ = [
    "METRIC_NAMES",
    "validate_report",
    "render_markdown",
    "render_html",
    "write_report",
]

logger = logging.getLogger(__name__)

METRIC_NAMES = ("accuracy", "perplexity", "loss")

#: Latency ratios within this distance of 1 count as "no speedup".
_NO_SPEEDUP = 0.10

_MEASURES: tuple[tuple[str, str], ...] = (
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

PLOTS = {
    "sparsity_per_layer": "plots/sparsity_per_layer.png",
    "metric_vs_sparsity": "plots/metric_vs_sparsity.png",
    "relative_to_dense": "plots/relative_to_dense.png",
    "sensitivity": "plots/sensitivity.png",
}


# -- validation ------------------------------------------------------------------------


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
    for key, kind in _MEASURES:
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
        if "history" in run and run["history"] is not None:
            history = run["history"]
            _check_value(history, "dict", _where(where, "history"))
            if "epoch_losses" in history:
                losses = _require(history, "epoch_losses", "list", _where(where, "history"))
                for k, value in enumerate(losses):
                    _check_value(value, "number", f"{where}['history']['epoch_losses'][{k}]")
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


# -- formatting ----------------------------------------------------------------------------


def _int(value: int | None) -> str:
    return "—" if value is None else f"{int(value):,}"


def _bytes(value: int | None) -> str:
    if value is None:
        return "—"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.2f} {unit}"
        size /= 1024
    return f"{value} B"  # pragma: no cover


def _pct(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{100 * value:.{digits}f}%"


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b or not math.isfinite(float(a)) or not math.isfinite(float(b)):
        return None
    return float(a) / float(b)


def _times(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}×"


def _metric(value: float | None, name: str) -> str:
    if value is None:
        return "—"
    value = float(value)
    if not math.isfinite(value):
        return str(value)
    if name == "accuracy":
        return f"{100 * value:.2f}%"
    if name == "perplexity":
        return f"{value:.3f}"
    return f"{value:.4f}"


def _delta(value: float | None, dense: float | None, name: str, higher_is_better: bool) -> str:
    if value is None or dense is None:
        return "—"
    diff = float(value) - float(dense)
    if not math.isfinite(diff):
        return str(diff)
    text = f"{100 * diff:+.2f} pp" if name == "accuracy" else f"{diff:+.3f}" if name == "perplexity" else f"{diff:+.4f}"
    if text.lstrip("+-").rstrip(" p") in ("0.00", "0.000", "0.0000"):
        return text
    worse = diff < 0 if higher_is_better else diff > 0
    return text + (" (worse)" if worse else " (better)")


def _latency(ms: float | None) -> str:
    if ms is None:
        return "—"
    return f"{ms:.3f}" if ms < 10 else f"{ms:.1f}"


def _sparsity_of(measures: Mapping[str, Any]) -> float | None:
    params = measures.get("params")
    return None if not params else 1.0 - measures["nonzero"] / params


def _method_label(method: Mapping[str, Any]) -> str:
    return " · ".join(str(method[k]) for k in ("criterion", "structure", "scope", "mode"))


def _method_details(method: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={_short(v)}" for k, v in method.items())


def _short(value: Any, limit: int = 80) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=_json_default, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _json_default(value: Any) -> Any:
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, Path):
        return str(value)
    raise InvalidParameterError(
        "report", "JSON-able values (str, numbers, bools, None, lists, dicts)", f"<{type(value).__name__}>",
        "Fix: convert the value to plain Python data before writing the report.",
    )


# -- a document model shared by Markdown and HTML ---------------------------------------------


@dataclass
class _Heading:
    level: int
    text: str
    anchor: str = ""


@dataclass
class _Para:
    text: str
    note: bool = False


@dataclass
class _Bullets:
    items: list[str]


@dataclass
class _Table:
    header: list[str]
    rows: list[list[str]]
    numeric: list[bool]
    total: bool = False  # last row is a total


@dataclass
class _Image:
    src: str
    alt: str


def _document(report: Mapping[str, Any], plots: Mapping[str, str]) -> list[Any]:
    metric = report["metric"]
    mname, hib = metric["name"], metric["higher_is_better"]
    dense = report["dense"]
    runs = report["runs"]
    env = report.get("environment") or {}
    blocks: list[Any] = [_Heading(1, report["title"])]
    model = report["model"]
    blocks.append(_Para(
        f"Model {model['name']} ({model['params']:,} parameters). Created {report['created']}. "
        f"Metric: {mname} ({'higher' if hib else 'lower'} is better). "
        f"{len(runs)} pruned run{'s' if len(runs) != 1 else ''} compared with the dense model."
    ))

    # -- results table
    blocks.append(_Heading(2, "Results", "results"))
    everything = [dense, *(r["measures"] for r in runs)]
    batches = {m.get("latency_batch") for m in everything if m.get("latency_ms") is not None}
    batch_note = len(batches) > 1
    header = ["run", "method", "sparsity", mname, "Δ vs dense", "non-zeros", "effective MACs", "MACs × dense",
              "bytes compressed", "size × dense", "latency (ms)", "speedup"]
    numeric = [False, False] + [True] * 10
    rows = []
    for name, method, sparsity, m in [("dense", "—", None, dense)] + [
        (r["name"], _method_label(r["method"]), r["sparsity"], r["measures"]) for r in runs
    ]:
        is_dense = m is dense
        nz_share = _ratio(m["nonzero"], m["params"])
        latency = _latency(m.get("latency_ms"))
        if batch_note and m.get("latency_ms") is not None:
            latency += f" (batch {m.get('latency_batch')})"
        rows.append([
            name,
            method,
            _pct(_sparsity_of(m) if is_dense else sparsity),
            _metric(m.get("metric"), mname),
            "—" if is_dense else _delta(m.get("metric"), dense.get("metric"), mname, hib),
            f"{_int(m['nonzero'])} ({_pct(nz_share, 1)})",
            _int(m["effective_macs"]),
            _times(_ratio(m["effective_macs"], dense["effective_macs"])),
            _bytes(m["bytes_compressed"]),
            _times(_ratio(m["bytes_compressed"], dense["bytes_dense"])),
            latency,
            "—" if is_dense else _times(_ratio(dense.get("latency_ms"), m.get("latency_ms")), 2),
        ])
    blocks.append(_Table(header, rows, numeric))
    blocks += _notes(report, batches)

    # -- plots
    if plots:
        blocks.append(_Heading(2, "Plots", "plots"))
        captions = {
            "relative_to_dense": "Each run relative to the dense model (dense = 1; lower is smaller or faster)",
            "metric_vs_sparsity": f"{mname} against sparsity, one line per method; the dense model dashed",
            "sparsity_per_layer": "Sparsity of every layer, one bar per run",
            "sensitivity": "Sensitivity: each layer pruned alone",
        }
        for key in ("relative_to_dense", "metric_vs_sparsity", "sparsity_per_layer"):
            if key in plots:
                blocks.append(_Image(plots[key], captions[key]))

    # -- runs
    for run in runs:
        blocks.append(_Heading(2, f"Run: {run['name']}"))
        m = run["measures"]
        items = [
            f"Method: {_method_details(run['method'])}",
            f"Requested sparsity {_pct(run['sparsity'])}; whole model {_pct(_sparsity_of(m))} zeros "
            f"({m['nonzero']:,} of {m['params']:,} parameters non-zero).",
        ]
        history = run.get("history") or {}
        losses = history.get("epoch_losses") or []
        if losses:
            items.append(
                f"Fine-tuning: {len(losses)} epoch{'s' if len(losses) != 1 else ''}, loss "
                + " → ".join(f"{float(v):.4f}" for v in losses[:12])
                + (" → …" if len(losses) > 12 else "")
            )
        for key, value in history.items():
            if key != "epoch_losses":
                items.append(f"{key}: {_short(value)}")
        blocks.append(_Bullets(items))
        layers = run["layers"]
        if layers:
            rows = [[l["name"], "×".join(str(d) for d in l["shape"]), _int(l["params"]), _int(l["nonzero"]),
                     _pct(l["sparsity"])] for l in layers]
            total_params = sum(l["params"] for l in layers)
            total_nonzero = sum(l["nonzero"] for l in layers)
            rows.append(["total (these layers)", "", _int(total_params), _int(total_nonzero),
                         _pct(_ratio(total_params - total_nonzero, total_params))])
            blocks.append(_Table(["layer", "shape", "params", "non-zeros", "sparsity"], rows,
                                 [False, False, True, True, True], total=True))
        else:
            blocks.append(_Para("No per-layer figures were recorded for this run."))

    # -- sensitivity
    sens = report.get("sensitivity")
    if sens is not None:
        blocks.append(_Heading(2, "Sensitivity analysis", "sensitivity"))
        blocks.append(_Para(
            f"Each layer pruned alone to each sparsity of the ladder, the rest of the model dense; "
            f"unpruned {mname}: {_metric(sens['baseline'], mname)}. Drops of layers pruned together "
            f"usually add up to more than any single curve shows."
        ))
        ladder = sorted({float(p[0]) for points in sens["curves"].values() for p in points})
        rows = []
        for layer, points in sens["curves"].items():
            values = {float(p[0]): p[1] for p in points}
            rows.append([layer, *(_metric(values[s], mname) if s in values else "—" for s in ladder)])
        if rows:
            blocks.append(_Table(["layer", *(_pct(s, 0) for s in ladder)], rows, [False] + [True] * len(ladder)))
        if "sensitivity" in plots:
            blocks.append(_Image(plots["sensitivity"], "Sensitivity: each layer pruned alone"))

    # -- environment
    if env:
        blocks.append(_Heading(2, "Environment", "environment"))
        blocks.append(_Bullets([f"{k}: {_short(v)}" for k, v in env.items()]))
    return blocks


def _notes(report: Mapping[str, Any], batches: set[Any]) -> list[Any]:
    metric = report["metric"]
    dense = report["dense"]
    runs = report["runs"]
    env = report.get("environment") or {}
    notes = [
        "Ratios (×) divide a run's figure by the dense model's; the size ratio divides the run's compressed "
        "bytes by the dense model's plain bytes. Effective MACs count only multiply-accumulates with a "
        f"non-zero weight (the work a sparse kernel could skip); dense kernels still do all "
        f"{dense['macs']:,} MACs of the dense model.",
    ]
    if any(m.get("latency_ms") is not None for m in [dense, *(r["measures"] for r in runs)]):
        notes += _latency_notes(dense, runs, env, batches)
    else:
        notes.append("Latency was not measured.")
    if all(r["measures"].get("metric") is None for r in runs) and runs:
        notes.append(f"The runs have no {metric['name']}: it was not measured.")
    return [_Para(n, note=True) for n in notes]


_MASKED_MODES = ("reparam", "inplace")


def _latency_notes(dense: Mapping[str, Any], runs: Sequence[Mapping[str, Any]], env: Mapping[str, Any],
                   batches: set[Any]) -> list[str]:
    notes = []
    threads = env.get("latency_threads", env.get("threads"))
    if len(batches) == 1 and None not in batches:
        setup = [f"batch size {next(iter(batches))}"]
    else:
        setup = ["the batch size noted in each cell" if len(batches) > 1 else "an unrecorded batch size"]
    if isinstance(threads, int) and threads > 0:
        setup.append(f"{threads} CPU thread{'s' if threads != 1 else ''}")
    else:
        setup.append("an unrecorded number of threads")
    if env.get("platform"):
        setup.append(f"on {env['platform']}")
    if env.get("torch"):
        setup.append(f"torch {env['torch']}")
    text = "Latency: one forward pass with " + ", ".join(setup) + "."
    if env.get("latency_repeats") is not None:
        text += f" Median of {env['latency_repeats']} repeats"
        if env.get("latency_warmup") is not None:
            text += f" after {env['latency_warmup']} warm-up runs"
        text += "."
    notes.append(text + " Differences of a few percent are usually timing noise.")

    def ratio(run: Mapping[str, Any]) -> float | None:
        return _ratio(run["measures"].get("latency_ms"), dense.get("latency_ms"))

    def masked(run: Mapping[str, Any]) -> bool:
        return run["method"].get("mode") in _MASKED_MODES

    flat = [r for r in runs if ratio(r) is not None and abs(ratio(r) - 1.0) <= _NO_SPEEDUP]
    if flat:
        element = [r for r in flat if str(r["method"].get("structure", "")).startswith("element")]
        text = (
            f"No speedup for {', '.join(r['name'] for r in flat)}: latency within {int(100 * _NO_SPEEDUP)}% "
            "of the dense model. Pruned weights are zeros stored inside dense tensors, and dense CPU kernels "
            "multiply zeros like any other value."
        )
        if element:
            text += (" Unstructured (element) sparsity gives no dense-CPU speedup; it needs sparse kernels "
                     "to turn into wall time.")
        if len(element) < len(flat):
            text += (" Structured sparsity speeds up inference only once the pruned channels or blocks are "
                     "physically removed from the tensors.")
        text += " The gains here are in non-zeros, compressed size and effective MACs."
        notes.append(text)
    fast = [r for r in runs if masked(r) and ratio(r) is not None and ratio(r) < 1.0 - _NO_SPEEDUP]
    if fast:
        notes.append(
            f"Faster than the dense model by more than {int(100 * _NO_SPEEDUP)}%: "
            f"{', '.join(r['name'] for r in fast)}. Their pruned weights are masked zeros in tensors of "
            "unchanged shape, which dense CPU kernels do not skip, so the pruning itself does not explain the "
            "difference: it is most likely timing noise (few repeats, other load on the machine, warm-up "
            "order). Measure again with more warm-up runs and repeats before relying on it."
        )
    slow = [r for r in runs if ratio(r) is not None and ratio(r) > 1.0 + _NO_SPEEDUP]
    if slow:
        text = (f"Slower than the dense model by more than {int(100 * _NO_SPEEDUP)}%: "
                + ", ".join(r["name"] for r in slow) + ".")
        if any(r["method"].get("mode") == "reparam" for r in slow):
            text += (" In reparam mode every forward pass recomputes weight = orig × mask; "
                     "prunekit.make_permanent(model) removes that cost before deployment.")
        notes.append(text)
    return notes


# -- Markdown ------------------------------------------------------------------------------------

_MD_SPECIAL = re.compile(r"([\\`*_\[\]{}<>#|!~])")


def _md(text: str) -> str:
    """Escape Markdown (and inline HTML) so text shows as written."""
    return _MD_SPECIAL.sub(r"\\\1", str(text).replace("\r", " ").replace("\n", " "))


def _md_table(block: _Table) -> list[str]:
    lines = ["| " + " | ".join(_md(h) for h in block.header) + " |"]
    lines.append("|" + "|".join("---:" if n else ":---" for n in block.numeric) + "|")
    last = len(block.rows) - 1
    for i, row in enumerate(block.rows):
        cells = [_md(c) for c in row]
        if block.total and i == last:
            cells = [f"**{c}**" if c else c for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def render_markdown(report: Mapping[str, Any], plots: Mapping[str, str] | None = None) -> str:
    """The report as Markdown; ``plots`` maps plot keys to relative PNG paths to link."""
    validate_report(report)
    out: list[str] = []
    for block in _document(report, plots or {}):
        if isinstance(block, _Heading):
            out += ["#" * block.level + " " + _md(block.text), ""]
        elif isinstance(block, _Para):
            out += [("> " if block.note else "") + _md(block.text), ""]
        elif isinstance(block, _Bullets):
            out += [f"- {_md(item)}" for item in block.items] + [""]
        elif isinstance(block, _Table):
            out += _md_table(block) + [""]
        elif isinstance(block, _Image):
            out += [f"![{_md(block.alt)}]({block.src})", "", f"*{_md(block.alt)}*", ""]
    return "\n".join(out).rstrip() + "\n"


# -- HTML ----------------------------------------------------------------------------------------

_CSS = """
:root { color-scheme: light; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       color: #1f2328; background: #fff; max-width: 1400px; margin: 2rem auto; padding: 0 1.5rem; }
h1 { font-size: 1.8rem; margin-bottom: .3rem; }
h2 { font-size: 1.3rem; margin-top: 2.2rem; border-bottom: 1px solid #d0d7de; padding-bottom: .25rem; }
.scroll { overflow-x: auto; margin: .8rem 0 1.2rem; }
table { border-collapse: collapse; font-size: 13.5px; }
th, td { border: 1px solid #d0d7de; padding: .3rem .6rem; vertical-align: top; white-space: nowrap; }
th { background: #f6f8fa; text-align: left; white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr:nth-child(even) td { background: #fbfcfd; }
tr.total td { font-weight: 600; background: #f6f8fa; }
p.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: .5rem .8rem; margin: .6rem 0; }
figure { margin: 1rem 0 1.6rem; }
figure img { max-width: 100%; height: auto; border: 1px solid #d0d7de; }
figcaption { color: #57606a; font-size: 13px; }
ul { padding-left: 1.3rem; }
"""


def _h(text: Any) -> str:
    return html.escape(str(text), quote=True)


def render_html(report: Mapping[str, Any], plots: Mapping[str, str] | None = None) -> str:
    """The report as one self-contained HTML page (inline CSS, images by relative path)."""
    validate_report(report)
    body: list[str] = []
    for block in _document(report, plots or {}):
        if isinstance(block, _Heading):
            anchor = f' id="{_h(block.anchor)}"' if block.anchor else ""
            body.append(f"<h{block.level}{anchor}>{_h(block.text)}</h{block.level}>")
        elif isinstance(block, _Para):
            body.append(f'<p class="note">{_h(block.text)}</p>' if block.note else f"<p>{_h(block.text)}</p>")
        elif isinstance(block, _Bullets):
            body.append("<ul>" + "".join(f"<li>{_h(i)}</li>" for i in block.items) + "</ul>")
        elif isinstance(block, _Table):
            head = "".join(f"<th>{_h(c)}</th>" for c in block.header)
            rows = []
            last = len(block.rows) - 1
            for i, row in enumerate(block.rows):
                cells = "".join(
                    f'<td class="num">{_h(c)}</td>' if n else f"<td>{_h(c)}</td>" for c, n in zip(row, block.numeric)
                )
                cls = ' class="total"' if block.total and i == last else ""
                rows.append(f"<tr{cls}>{cells}</tr>")
            body.append(f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
                        f"<tbody>{''.join(rows)}</tbody></table></div>")
        elif isinstance(block, _Image):
            body.append(f'<figure><img src="{_h(block.src)}" alt="{_h(block.alt)}" loading="lazy">'
                        f"<figcaption>{_h(block.alt)}</figcaption></figure>")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{_h(report['title'])}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


# -- writing -----------------------------------------------------------------------------------


def _write_text(path: Path, text: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)  # temporary files are created 0600; a report is meant to be read

    atomic_write(path, write)


def _plot_jobs(report: Mapping[str, Any]) -> dict[str, Callable[[Path], Path]]:
    from . import plots as P

    metric = report["metric"]
    runs = report["runs"]
    jobs: dict[str, Callable[[Path], Path]] = {}
    layer_runs = {r["name"]: {l["name"]: float(l["sparsity"]) for l in r["layers"]} for r in runs if r["layers"]}
    if layer_runs:
        jobs["sparsity_per_layer"] = lambda p: P.plot_layer_sparsity(layer_runs, p)
    series: dict[str, list[tuple[float, float]]] = {}
    for run in runs:
        value = run["measures"].get("metric")
        if value is not None:
            series.setdefault(_method_label(run["method"]), []).append((float(run["sparsity"]), float(value)))
    if series:
        jobs["metric_vs_sparsity"] = lambda p: P.plot_metric_vs_sparsity(
            series, p, dense=report["dense"].get("metric"), metric_name=metric["name"],
            higher_is_better=metric["higher_is_better"],
        )
    if runs:
        dense = dict(report["dense"])
        dense["bytes_compressed"] = dense["bytes_dense"]  # size relative to the plain dense checkpoint
        measures = {r["name"]: r["measures"] for r in runs}
        jobs["relative_to_dense"] = lambda p: P.plot_relative_measures(dense, measures, p)
    sens = report.get("sensitivity")
    if sens is not None and sens["curves"]:
        curves = {k: [(float(s), m) for s, m in v] for k, v in sens["curves"].items()}
        jobs["sensitivity"] = lambda p: P.plot_sensitivity_curves(
            curves, p, baseline=sens["baseline"], metric_name=metric["name"],
            higher_is_better=sens.get("higher_is_better", metric["higher_is_better"]),
        )
    return jobs


def write_report(report: Mapping[str, Any], out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``report.json``, ``report.md``, ``report.html`` and ``plots/*.png`` into ``out_dir``.

    Args:
        report: the plain dict described in this module's docstring.
        out_dir: the folder (created if needed). Files already there with the
            same names are replaced, each atomically.

    Returns:
        ``{"json", "markdown", "html", and one key per plot written
        ("sparsity_per_layer", "metric_vs_sparsity", "relative_to_dense",
        "sensitivity")}: path``.

    Raises:
        InvalidParameterError: the report does not follow the schema (the
            message names the key), or ``out_dir`` is not a usable folder.
            Nothing is written then.
    """
    if not isinstance(out_dir, (str, os.PathLike)) or str(out_dir) == "":
        raise InvalidParameterError("out_dir", "a folder path (str or os.PathLike)", out_dir,
                                    "Fix: e.g. 'reports/run1'.")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InvalidParameterError("out_dir", "a folder (or a path that does not exist yet)", str(out),
                                    "Fix: pick a folder; a file of that name exists.")
    validate_report(report)
    json_text = json.dumps(report, indent=2, ensure_ascii=False, default=_json_default) + "\n"
    jobs = _plot_jobs(report)
    links = {key: PLOTS[key] for key in jobs}
    markdown = render_markdown(report, links)
    page = render_html(report, links)

    written: dict[str, Path] = {}
    for key, job in jobs.items():
        written[key] = job(out / PLOTS[key])
    _write_text(out / "report.md", markdown)
    _write_text(out / "report.html", page)
    _write_text(out / "report.json", json_text)
    written = {"json": out / "report.json", "markdown": out / "report.md", "html": out / "report.html", **written}
    logger.info("wrote report %r to %s (%d plots)", report["title"], out, len(jobs))
    return written
