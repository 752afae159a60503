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
      "data": {"name": str, "train_samples": int, "test_samples": int, "train_split": str,
               "eval_split": str, "batch_size": int, ...}  (optional),
      "training": {"pretrain": BUDGET | None, "weights": str | None, "finetune": BUDGET}  (optional),
      "dense": MEASURES,
      "dense_budget": {"pretrain_steps": int, "finetune_steps": int, "steps": int}  (optional),
      "runs": [{"name": str,
                "method": {"criterion": str, "structure": str, "scope": str, "mode": str,
                           "realisation": "masks" | "shrunk" | "shrunk+masks" (optional), ...},
                "budget": {"pretrain_steps": int, "finetune_steps": int, "steps": int}  (optional),
                "sparsity": float, "measures": MEASURES,
                "layers": [{"name": str, "shape": [int], "params": int, "nonzero": int, "sparsity": float}],
                "history": {"epoch_losses": [float], ...}  (optional)}],
      "sensitivity": {"baseline": float, "curves": {layer: [[sparsity, metric], ...]}}  (optional),
      "environment": {"torch": str, "threads": int, "platform": str, ...}  (optional;
                      "latency_threads", "latency_repeats", "latency_warmup" are
                      quoted in the latency note when present, "latency_threads"
                      in preference to "threads")
    }
    BUDGET = {"steps": int, "epochs": int, "max_steps": int | None, "batch_size": int,
              "optimizer": str, "lr": float, "lr_schedule": str}
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

import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ...errors import InvalidParameterError
from ...io import atomic_write
from .. import plots as P
from .document import document, results_tables
from .fmt import _json_default, _method_label
from .document import Bullets, Heading, Image, Para, Table
from .html import render_html, render_page
from .markdown import render_blocks, render_markdown
from .schema import METRIC_NAMES, validate_report

__all__ = [
    "METRIC_NAMES",
    "PLOTS",
    "validate_report",
    "render_markdown",
    "render_html",
    "results_tables",
    "write_document",
    "write_report",
    "Heading",
    "Para",
    "Bullets",
    "Table",
    "Image",
]

logger = logging.getLogger(__name__)

PLOTS = {
    "sparsity_per_layer": "plots/sparsity_per_layer.png",
    "metric_vs_sparsity": "plots/metric_vs_sparsity.png",
    "relative_to_dense": "plots/relative_to_dense.png",
    "sensitivity": "plots/sensitivity.png",
}


def _write_text(path: Path, text: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)  # temporary files are created 0600; a report is meant to be read

    atomic_write(path, write)


def _plot_jobs(report: Mapping[str, Any]) -> dict[str, Callable[[Path], Path]]:
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
    blocks = document(report, {key: PLOTS[key] for key in jobs})
    written = write_document(out, json_text, report["title"], blocks, {PLOTS[key]: job for key, job in jobs.items()})
    logger.info("wrote report %r to %s (%d plots)", report["title"], out, len(jobs))
    return {"json": written["json"], "markdown": written["markdown"], "html": written["html"],
            **{key: written[PLOTS[key]] for key in jobs}}


def write_document(out_dir: str | os.PathLike[str], json_text: str, title: str, blocks: Sequence[Any],
                   plots: Mapping[str, Callable[[Path], Path]]) -> dict[str, Path]:
    """The writer every report shares: into ``out_dir``, the ``plots`` (``{path relative to
    out_dir: job(path) -> path}``) first, then ``report.md`` and ``report.html`` rendered from
    ``blocks`` (:class:`Heading`, :class:`Para`, :class:`Bullets`, :class:`Table`,
    :class:`Image` linking a plot by its relative path), and ``report.json`` (``json_text``)
    last; each file atomically, readable by all.

    Returns ``{"json", "markdown", "html", and each plot's relative path}: path``.
    """
    out = Path(out_dir)
    markdown, page = render_blocks(blocks), render_page(title, blocks)
    written: dict[str, Path] = {rel: job(out / rel) for rel, job in plots.items()}
    _write_text(out / "report.md", markdown)
    _write_text(out / "report.html", page)
    _write_text(out / "report.json", json_text)
    return {"json": out / "report.json", "markdown": out / "report.md", "html": out / "report.html", **written}
