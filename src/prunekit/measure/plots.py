"""PNG plots of pruning results, from plain data (dicts and lists), written atomically.

* :func:`plot_layer_sparsity`: sparsity per layer, one bar series per run;
* :func:`plot_metric_vs_sparsity`: the task metric against sparsity, one line
  per method, the dense model as a horizontal reference;
* :func:`plot_relative_measures`: parameters, non-zeros, effective MACs,
  compressed bytes and latency of each run relative to the dense model;
* :func:`plot_sensitivity_curves`: metric against sparsity of each layer
  pruned alone (see :func:`prunekit.measure.sensitivity_analysis`).

Every function returns the path written. Figures are built with
``matplotlib.figure.Figure`` and the Agg renderer directly, never pyplot: no
window opens, no global state changes, and plotting from several threads is safe.
"""

from __future__ import annotations

import logging
import math
import numbers
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import InvalidParameterError
from ..io import atomic_write

__all__ = [
    "RELATIVE_MEASURES",
    "plot_layer_sparsity",
    "plot_metric_vs_sparsity",
    "plot_ratio_bars",
    "plot_relative_measures",
    "plot_sensitivity_curves",
]

logger = logging.getLogger(__name__)

#: ``(key, label)`` of the bars of :func:`plot_relative_measures`, in order.
RELATIVE_MEASURES: tuple[tuple[str, str], ...] = (
    ("params", "params"),
    ("nonzero", "non-zeros"),
    ("effective_macs", "effective MACs"),
    ("bytes_compressed", "bytes compressed"),
    ("latency_ms", "latency"),
)

_DPI = 100
_MAX_INCHES = 60.0  # 6000 px: a figure never grows beyond this


# -- checks ---------------------------------------------------------------------------


def _check_path(path: Any) -> Path:
    if not isinstance(path, (str, os.PathLike)) or str(path) == "":
        raise InvalidParameterError(
            "path", "a file path (str or os.PathLike) for the PNG", path, "Fix: e.g. path='plots/sparsity.png'."
        )
    return Path(path)


def _number(value: Any, param: str, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidParameterError(param, "a number" + (" or None" if allow_none else ""), value)
    return float(value)


def _mapping(value: Any, param: str, expected: str, fix: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping) or not value:
        raise InvalidParameterError(param, expected, value, fix)
    for key in value:
        if not isinstance(key, str):
            raise InvalidParameterError(param, expected + " with string keys", key, fix)
    return value


def _points(value: Any, param: str) -> list[tuple[float, float]]:
    expected = "a list of (sparsity, metric) pairs"
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise InvalidParameterError(param, expected, value, "Fix: e.g. [(0.0, 0.98), (0.5, 0.97)].")
    out = []
    for point in value:
        if isinstance(point, (str, bytes)) or not isinstance(point, Sequence) or len(point) != 2:
            raise InvalidParameterError(param, expected, point, "Fix: e.g. [(0.0, 0.98), (0.5, 0.97)].")
        x = _number(point[0], param)
        y = _number(point[1], param, allow_none=True)
        if y is None or not math.isfinite(y) or not math.isfinite(x):
            continue  # not measured, or diverged: left out of the line
        out.append((x, y))
    return sorted(out)


def _check_text(value: Any, param: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise InvalidParameterError(param, "None or a string", value)
    return value


def _check_direction(higher_is_better: Any) -> None:
    if higher_is_better is not None and not isinstance(higher_is_better, bool):
        raise InvalidParameterError("higher_is_better", "None, True or False", higher_is_better)


# -- drawing -----------------------------------------------------------------------


def _text(value: Any) -> str:
    """A label shown as written: ``$`` would start matplotlib's math mode, and a
    legend hides labels that start with ``_``."""
    text = str(value).replace("$", r"\$")
    return " " + text if text.startswith("_") else text


def _metric_label(metric_name: str, percent: bool, higher_is_better: bool | None) -> str:
    """The y-axis label of a metric: ``(%)`` when shown in percent, and its direction when known."""
    label = metric_name + (" (%)" if percent else "")
    if higher_is_better is not None:
        label += " — higher is better" if higher_is_better else " — lower is better"
    return label


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    width = min(max(width, 4.0), _MAX_INCHES)
    height = min(max(height, 3.0), _MAX_INCHES)
    return Figure(figsize=(width, height), dpi=_DPI, layout="constrained")


def _save(fig: Any, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)  # the Agg canvas, whatever pyplot's backend is

    def write(tmp: str) -> None:
        fig.savefig(tmp, format="png", dpi=_DPI, metadata={"Software": "prunekit"})
        os.chmod(tmp, 0o644)  # temporary files are created 0600; a plot is meant to be shared

    atomic_write(path, write)
    logger.info("wrote %s", path)
    return path


def _colors(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _legend(ax: Any, count: int, *, outside: bool = False) -> None:
    if outside:  # bars fill the axes: the legend goes to the right of them
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False,
                  ncols=max(1, math.ceil(count / 30)))
    elif count <= 12:
        ax.legend(fontsize="small", loc="best")
    else:
        ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1.0),
                  ncols=max(1, math.ceil(count / 30)), frameon=False)


# -- plots ------------------------------------------------------------------------------


def plot_layer_sparsity(
    runs: Mapping[str, Mapping[str, float]],
    path: str | os.PathLike[str],
    *,
    title: str | None = "Sparsity per layer",
) -> Path:
    """Horizontal bars: the sparsity of every layer, one series per run.

    Args:
        runs: ``{run name: {layer name: sparsity in [0, 1]}}``; layers appear
            in the order first met.
        path: the PNG to write.
    """
    fix = "Fix: e.g. {'magnitude 50%': {'fc1.weight': 0.5, 'fc2.weight': 0.5}}."
    runs = _mapping(runs, "runs", "a non-empty mapping {run name: {layer: sparsity}}", fix)
    path = _check_path(path)
    title = _check_text(title, "title")
    layers: list[str] = []
    values: dict[str, dict[str, float]] = {}
    for run, per_layer in runs.items():
        per_layer = _mapping(per_layer, f"runs[{run!r}]", "a non-empty mapping {layer: sparsity}", fix)
        values[run] = {}
        for layer, value in per_layer.items():
            number = _number(value, f"runs[{run!r}][{layer!r}]")
            if not 0.0 <= number <= 1.0:
                raise InvalidParameterError(f"runs[{run!r}][{layer!r}]", "a sparsity in [0, 1]", value)
            values[run][layer] = number
            if layer not in layers:
                layers.append(layer)
    n, r = len(layers), len(values)
    fig = _figure(10.0, 1.5 + 0.22 * n * max(1.0, 0.55 * r))
    ax = fig.add_subplot()
    height = 0.8 / r
    for j, (run, color) in enumerate(zip(values, _colors(r))):
        ys = [i - 0.4 + height * (j + 0.5) for i in range(n)]
        xs = [100.0 * values[run].get(layer, math.nan) for layer in layers]
        ax.barh(ys, xs, height=height * 0.95, color=color, label=_text(run))
    ax.set_yticks(range(n), [_text(layer) for layer in layers], fontsize="small" if n <= 30 else "x-small")
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("sparsity (% of the layer's entries that are zero)")
    ax.grid(axis="x", alpha=0.3)
    _legend(ax, r, outside=True)
    if title:
        ax.set_title(_text(title))
    return _save(fig, path)


def plot_metric_vs_sparsity(
    series: Mapping[str, Sequence[tuple[float, float | None]]],
    path: str | os.PathLike[str],
    *,
    dense: float | None = None,
    metric_name: str = "accuracy",
    higher_is_better: bool | None = None,
    title: str | None = None,
) -> Path:
    """Lines: the metric against sparsity, one per method; the dense model dashed.

    Args:
        series: ``{method label: [(sparsity in [0, 1], metric), …]}``; points
            with a None or non-finite metric are left out.
        dense: the dense model's metric, drawn as a horizontal reference.
        metric_name: the y-axis label (``"accuracy"`` is shown in %).
        higher_is_better: noted in the axis label when given.
    """
    fix = "Fix: e.g. {'magnitude element global': [(0.5, 0.97), (0.9, 0.91)]}."
    series = _mapping(series, "series", "a non-empty mapping {method: [(sparsity, metric), …]}", fix)
    path = _check_path(path)
    title = _check_text(title, "title")
    metric_name = _check_text(metric_name, "metric_name") or "metric"
    dense_value = _number(dense, "dense", allow_none=True)
    _check_direction(higher_is_better)
    lines = {label: _points(points, f"series[{label!r}]") for label, points in series.items()}
    percent = metric_name == "accuracy"
    scale = 100.0 if percent else 1.0
    fig = _figure(8.0, 5.0)
    ax = fig.add_subplot()
    all_y = []
    for (label, points), color in zip(lines.items(), _colors(len(lines))):
        xs = [100.0 * x for x, _ in points]
        ys = [scale * y for _, y in points]
        all_y += ys
        ax.plot(xs, ys, marker="o", color=color, label=_text(label))
    if dense_value is not None and math.isfinite(dense_value):
        ax.axhline(scale * dense_value, color="0.35", linestyle="--", linewidth=1.2, label="dense")
        all_y.append(scale * dense_value)
    if metric_name == "perplexity" and all_y and min(all_y) > 0 and max(all_y) / min(all_y) > 20:
        ax.set_yscale("log")
    ax.set_xlabel("sparsity (%)")
    ax.set_ylabel(_text(_metric_label(metric_name, percent, higher_is_better)))
    ax.grid(alpha=0.3)
    _legend(ax, len(lines) + (dense_value is not None))
    ax.set_title(_text(title or f"{metric_name} against sparsity"))
    return _save(fig, path)


def plot_relative_measures(
    dense: Mapping[str, Any],
    runs: Mapping[str, Mapping[str, Any]],
    path: str | os.PathLike[str],
    *,
    title: str | None = "Relative to the dense model (dense = 1)",
) -> Path:
    """Bars: each run's measures divided by the dense model's, one panel per measure.

    Args:
        dense: the dense model's measures, with the keys of
            :data:`RELATIVE_MEASURES` (``params``, ``nonzero``,
            ``effective_macs``, ``bytes_compressed``, ``latency_ms``); a None
            or missing value leaves that group's bars out.
        runs: ``{run name: measures}`` with the same keys.

    The ratio is ``run[key] / dense[key]`` (below 1 = smaller or faster).
    """
    fix = "Fix: pass the 'measures' dicts, e.g. {'params': 1000, 'nonzero': 500, ...}."
    dense = _mapping(dense, "dense", "a mapping of measures", fix)
    runs = _mapping(runs, "runs", "a non-empty mapping {run name: measures}", fix)
    path = _check_path(path)
    title = _check_text(title, "title")
    ratios: dict[str, list[float | None]] = {}
    for run, measures in runs.items():
        measures = _mapping(measures, f"runs[{run!r}]", "a mapping of measures", fix)
        row: list[float | None] = []
        for key, _label in RELATIVE_MEASURES:
            a = _number(dense.get(key), f"dense[{key!r}]", allow_none=True)
            b = _number(measures.get(key), f"runs[{run!r}][{key!r}]", allow_none=True)
            ok = a is not None and b is not None and a > 0 and math.isfinite(a) and math.isfinite(b)
            row.append(b / a if ok else None)
        ratios[run] = row
    groups, r = len(RELATIVE_MEASURES), len(ratios)
    # small multiples: one panel per measure, one horizontal bar per run, run names once on the left;
    # the text keeps its size however many runs there are
    names = [_text(run) for run in ratios]
    label_inches = min(3.5, 0.6 + 0.075 * max(len(n) for n in names))
    fig = _figure(label_inches + 2.1 * groups, 1.3 + 0.28 * r)
    axes = fig.subplots(1, groups, sharey=True, squeeze=False)[0]
    colors = _colors(r)
    for g, (ax, (_key, label)) in enumerate(zip(axes, RELATIVE_MEASURES)):
        values = [row[g] for row in ratios.values()]
        top = max([v for v in values if v is not None] + [1.0])
        ys = list(range(r))
        ax.barh(ys, [0.0 if v is None else v for v in values], color=colors, height=0.7)
        for y, v in zip(ys, values):
            text = "n/a" if v is None else f"{v:.2f}"
            ax.text((0 if v is None else v) + 0.02 * top, y, text, va="center", ha="left", fontsize="small")
        ax.axvline(1.0, color="0.35", linestyle="--", linewidth=1.0)
        ax.set_xlim(0, top * 1.35)
        ax.set_title(label, fontsize="medium")
        ax.grid(axis="x", alpha=0.3)
        ax.tick_params(axis="x", labelsize="small")
    axes[0].set_yticks(range(r), names)
    axes[0].invert_yaxis()  # the first run on top, as in the tables
    fig.supxlabel("run / dense model (dashed line: dense = 1; lower is smaller or faster)", fontsize="small")
    if title:
        fig.suptitle(_text(title))
    return _save(fig, path)


def plot_sensitivity_curves(
    curves: Mapping[str, Sequence[tuple[float, float]]],
    path: str | os.PathLike[str],
    *,
    baseline: float | None = None,
    metric_name: str = "metric",
    higher_is_better: bool | None = None,
    title: str | None = None,
) -> Path:
    """Lines: the metric with each layer pruned alone, against that layer's sparsity.

    Args:
        curves: ``{layer: [(sparsity, metric), …]}`` (as in
            :attr:`SensitivityResult.curves`).
        baseline: the unpruned model's metric, drawn dashed.
        metric_name: the y-axis label (``"accuracy"`` is shown in %).
    """
    fix = "Fix: pass SensitivityResult.curves, e.g. {'fc1.weight': [(0.0, 0.98), (0.5, 0.95)]}."
    curves = _mapping(curves, "curves", "a non-empty mapping {layer: [(sparsity, metric), …]}", fix)
    path = _check_path(path)
    title = _check_text(title, "title")
    metric_name = _check_text(metric_name, "metric_name") or "metric"
    base = _number(baseline, "baseline", allow_none=True)
    _check_direction(higher_is_better)
    lines = {layer: _points(points, f"curves[{layer!r}]") for layer, points in curves.items()}
    n = len(lines)
    fig = _figure(9.0 + (2.5 * math.ceil(n / 30) if n > 12 else 0.0), 5.5 + max(0.0, (min(n, 30) - 12) * 0.12))
    ax = fig.add_subplot()
    styles = ["-", "--", "-.", ":"]
    scale = 100.0 if metric_name == "accuracy" else 1.0
    for i, ((layer, points), color) in enumerate(zip(lines.items(), _colors(n))):
        ax.plot([100.0 * x for x, _ in points], [scale * y for _, y in points], marker="o", markersize=3,
                linestyle=styles[(i // 20) % len(styles)], color=color, label=_text(layer))
    if base is not None and math.isfinite(base):
        ax.axhline(scale * base, color="0.2", linestyle="--", linewidth=1.4, label="unpruned")
    ax.set_xlabel("sparsity of the layer pruned alone (%)")
    ax.set_ylabel(_text(_metric_label(metric_name, scale != 1.0, higher_is_better)))
    ax.grid(alpha=0.3)
    _legend(ax, n + (base is not None))
    ax.set_title(_text(title or "Sensitivity of each layer to pruning"))
    return _save(fig, path)


def plot_ratio_bars(labels: Sequence[str], ratios: Sequence[float | None], path: str | os.PathLike[str], *,
                    xlabel: str, title: str) -> Path:
    """Horizontal bars of ratios to a reference (shrunk / dense, per-layer speedup), one per
    label with its value written beside it, and a dashed line at 1 (the reference); a
    missing or non-finite ratio is drawn as "n/a". Writes a PNG atomically; returns its path."""
    path = _check_path(path)
    n = len(labels)
    fig = _figure(9.0, min(40.0, 1.2 + 0.3 * n))
    ax = fig.add_subplot()
    finite = [v for v in ratios if v is not None and math.isfinite(v)]
    top = max(finite + [1.0])
    ax.barh(range(n), [v if v is not None and math.isfinite(v) else 0.0 for v in ratios], height=0.7,
            color="#4878a8")
    for y, v in enumerate(ratios):
        ok = v is not None and math.isfinite(v)
        ax.text((v if ok else 0.0) + 0.02 * top, y, f"{v:.2f}" if ok else "n/a", va="center", fontsize="small")
    ax.axvline(1.0, color="0.35", linestyle="--", linewidth=1.0)
    ax.set_yticks(range(n), list(labels), fontsize="small" if n <= 30 else "x-small")
    ax.invert_yaxis()
    ax.set_xlim(0, top * 1.25)
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title)
    return _save(fig, path)
