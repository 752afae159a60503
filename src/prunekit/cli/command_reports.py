"""``report.md``, ``report.html`` and a plot beside the ``report.json`` of ``prunekit prune``
(with and without ``--shrink``), ``prunekit sparse`` and ``prunekit oneshot``.

Each command's summary is built once as rows (header, rows, which columns are numeric)
and rendered twice: as the terminal table (:func:`rich_table`) and as the report's table
(:class:`prunekit.measure.report.Table`), so the files say what the terminal said. The
files are written by the writer every report shares,
:func:`prunekit.measure.report.write_document`; ``report.json`` is the command's own
JSON text, unchanged.

Plots (``plots/*.png``, matplotlib's Agg renderer):

* prune and oneshot: the sparsity of each tensor (:func:`prunekit.measure.plots.plot_layer_sparsity`);
* prune --shrink: shrunk / dense for parameters, MACs, file bytes and latency;
* sparse: each layer's speedup, dense time / chosen kernel's time (1 = dense kept).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich import box
from rich.table import Table as RichTable

from ..measure import plots as P
from ..measure.report import Heading, Image, Para, Table, write_document
from ..measure.sparsity import SparsityReport

__all__ = ["PLOTS", "Rows", "files_lines", "rich_table", "shrink_rows", "sparse_rows", "sparsity_rows",
           "write_oneshot_report", "write_prune_report", "write_shrink_report", "write_sparse_report"]

#: header, rows of cells, which columns are numeric (right-aligned)
Rows = tuple[list[str], list[list[str]], list[bool]]

PLOTS = {"sparsity": "plots/sparsity_per_tensor.png", "shrink": "plots/shrunk_vs_dense.png",
         "sparse": "plots/speedup_per_layer.png"}


def rich_table(rows: Rows, title: str, caption: str | None = None, total_rows: int = 0) -> RichTable:
    """``rows`` as the terminal's table; the last ``total_rows`` rows below a rule."""
    header, body, numeric = rows
    table = RichTable(title=title, title_justify="left", caption=caption, caption_justify="left",
                      box=box.HEAVY_HEAD)
    for name, is_number in zip(header, numeric):
        table.add_column(name, justify="right" if is_number else "left", overflow="fold")
    for i, row in enumerate(body):
        if total_rows and i == len(body) - total_rows:
            table.add_section()
        table.add_row(*row)
    return table


def files_lines(written: Mapping[str, Path]) -> list[str]:
    """``wrote json: DIR/report.json``, one line per file a report wrote (``plot`` for each plot)."""
    return [f"wrote {kind if kind in ('json', 'markdown', 'html') else 'plot'}: {path}" for kind, path in written.items()]


def _write(out: str | os.PathLike[str], json_text: str, title: str, blocks: list[Any],
           plots: Mapping[str, Any]) -> dict[str, Path]:
    """The shared writer, with the ``report.json`` first in the returned order."""
    written = write_document(out, json_text, title, blocks, plots)
    return {"json": written["json"], "markdown": written["markdown"], "html": written["html"],
            **{k: v for k, v in written.items() if k not in ("json", "markdown", "html")}}


def sparsity_rows(report: SparsityReport) -> Rows:
    """Per-tensor sparsity, then the targets' total and the whole model (the last two rows)."""
    rows = [[r.name, "×".join(map(str, r.shape)), f"{r.params:,}", f"{r.nonzero:,}", f"{100 * r.sparsity:.2f}%",
             r.state] for r in report.rows]
    rows.append(["total", "", f"{report.params:,}", f"{report.nonzero:,}", f"{100 * report.sparsity:.2f}%", ""])
    rows.append(["model (all parameters)", "", f"{report.model_params:,}", f"{report.model_nonzero:,}",
                 f"{100 * report.model_sparsity:.2f}%", ""])
    return (["tensor", "shape", "params", "non-zero", "sparsity", "state"], rows,
            [False, False, True, True, True, False])


def _sparsity_blocks(report: SparsityReport, label: str) -> tuple[list[Any], dict[str, Any]]:
    header, rows, numeric = sparsity_rows(report)
    blocks: list[Any] = [Heading(2, "Sparsity per tensor", "sparsity"), Table(header, rows, numeric, total=True),
                         Para("sparsity: share of the tensor's entries that are zero; total: the pruned tensors "
                              "together; model: every parameter.")]
    per_tensor = {r.name: r.sparsity for r in report.rows}
    if not per_tensor:
        return blocks, {}
    blocks.append(Image(PLOTS["sparsity"], "sparsity of each tensor"))
    return blocks, {PLOTS["sparsity"]: lambda p: P.plot_layer_sparsity({label: per_tensor}, p,
                                                                      title="Sparsity per tensor")}


def write_prune_report(out: str | os.PathLike[str], report: SparsityReport, json_text: str,
                       title: str) -> dict[str, Path]:
    """``prunekit prune``'s files: the sparsity table, the file sizes and the per-tensor bars."""
    extras = report.extras
    blocks, plots = _sparsity_blocks(report, "pruned")
    if "sparse_bytes" in extras:
        size = (f"Saved with save_sparse: {extras['sparse_bytes']:,} bytes, "
                f"{extras['sparse_bytes'] / extras['dense_bytes']:.3f}× the {extras['dense_bytes']:,} bytes of the "
                "dense fp32 state dict.")
    else:
        size = (f"Saved as plain dense safetensors: {extras['plain_dense_bytes']:,} bytes (zeros in place; the "
                f"dense fp32 state dict is {extras['dense_bytes']:,} bytes).")
    return _write(out, json_text, title, [Heading(1, title), Para(size), *blocks], plots)


def write_oneshot_report(out: str | os.PathLike[str], summary: Mapping[str, Any], report: SparsityReport,
                         json_text: str, title: str) -> dict[str, Path]:
    """``prunekit oneshot``'s files: perplexity before and after (where measured), then the sparsity table."""
    result = summary["result"]
    blocks: list[Any] = [Heading(1, title), Para(
        f"{result['method']} {result['structure']} at sparsity {result['sparsity']:g} in {result['seconds']:.1f} s, "
        f"calibrated on {summary['calibration'][0]} windows of {summary['calibration'][1]} tokens from "
        f"{summary['text']}.")]
    if "perplexity_dense" in summary:
        dense, pruned = summary["perplexity_dense"], summary["perplexity_pruned"]
        blocks += [Heading(2, "Perplexity", "perplexity"),
                   Table(["model", "perplexity", "pruned / dense"],
                         [["dense", f"{dense:.4f}", "1.000"], ["pruned", f"{pruned:.4f}", f"{pruned / dense:.3f}"]],
                         [False, True, True]),
                   Para("On the held-out end of the text (lower is better).")]
    sparsity, plots = _sparsity_blocks(report, f"{result['method']} {result['structure']}")
    return _write(out, json_text, title, blocks + sparsity, plots)


# -- prune --shrink: dense against shrunk --------------------------------------------------------

_SHRINK_MEASURES = (("parameters", "params", "{:,}"), ("MACs", "macs", "{:,}"), ("file bytes", "bytes", "{:,}"),
                    ("latency ms", "latency_ms", "{:.3f}"))


def _ratio(a: float, b: float) -> float:
    return b / a if a else float("nan")


def shrink_rows(dense: Mapping[str, Any], shrunk: Mapping[str, Any]) -> Rows:
    """Parameters, MACs, file bytes and latency of ``dense`` and ``shrunk``, their ratio, then the speedup."""
    rows = [[label, fmt.format(dense[key]), fmt.format(shrunk[key]), f"{_ratio(dense[key], shrunk[key]):.3f}"]
            for label, key, fmt in _SHRINK_MEASURES]
    rows.append(["speedup", "", f"{dense['latency_ms'] / shrunk['latency_ms']:.2f}×", ""])
    return ["", "dense", "shrunk", "shrunk / dense"], rows, [False, True, True, True]


def shrink_caption(shrunk: Mapping[str, Any]) -> str:
    """What the shrink table's figures are."""
    return (f"MACs: Conv/Linear/attention at batch 1 (norms not counted); latency: median of the repeats at "
            f"batch 1, {shrunk['threads']} threads; dense bytes: its state dict as safetensors")


def write_shrink_report(out: str | os.PathLike[str], report: Mapping[str, Any], json_text: str,
                        removed: Sequence[str] = ()) -> dict[str, Path]:
    """``prunekit prune --shrink``'s files: dense against shrunk, what was removed, the ratio bars."""
    dense, shrunk = report["dense"], report["shrunk"]
    header, rows, numeric = shrink_rows(dense, shrunk)
    title = f"{report['model']}: dense vs shrunk"
    blocks: list[Any] = [Heading(1, title), Para(
        f"Model {report['model']} ({report['weights'] or 'initial weights'}), example input "
        f"{'×'.join(map(str, report['input_shape']))}; latency over {report['latency']['repeats']} repeats after "
        f"{report['latency']['warmup']} warm-up runs."), Table(header, rows, numeric, total=True),
        Para(shrink_caption(shrunk) + "."), *(Para(line) for line in removed),
        Para(f"Load it back with: {report['load']}", note=True), Image(PLOTS["shrink"], "shrunk / dense")]
    labels = [label for label, _, _ in _SHRINK_MEASURES]
    ratios = [_ratio(dense[key], shrunk[key]) for _, key, _ in _SHRINK_MEASURES]
    plots = {PLOTS["shrink"]: lambda p: P.plot_ratio_bars(
        labels, ratios, p, xlabel="shrunk / dense (dashed line: dense = 1; lower is smaller or faster)", title=title)}
    return _write(out, json_text, title, blocks, plots)


# -- sparse: the per-layer choices ---------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def sparse_rows(layers: Sequence[Mapping[str, Any]]) -> Rows:
    """One row per layer of :meth:`prunekit.execution.SparseConversion.to_dict`'s ``layers``."""
    header = ["layer", "shape", "sparsity", "rows", "dense ms", "kernels ms", "choice", "speedup", "reason"]
    rows = [[layer["name"], "x".join(map(str, layer["shape"])), f"{100 * layer['sparsity']:.1f}%", str(layer["rows"]),
             _ms(layer["dense_ms"]), ", ".join(f"{k} {ms:.3f}" for k, ms in layer["kernel_ms"].items()) or "-",
             layer["choice"], "-" if layer["speedup"] is None else f"{layer['speedup']:.2f}x", layer["reason"]]
            for layer in layers]
    return header, rows, [name in ("sparsity", "rows", "dense ms", "speedup") for name in header]


def end_to_end_line(report: Mapping[str, Any]) -> str:
    """The end-to-end timing of a sparse conversion in one sentence."""
    layers = report["layers"]
    converted = sum(layer["choice"] != "dense" for layer in layers)
    if report["speedup"] is not None:
        return (f"end to end: dense {report['dense_ms']:.3f} ms, sparse {report['sparse_ms']:.3f} ms, speedup "
                f"{report['speedup']:.2f}x; {converted}/{len(layers)} layers sparse")
    why = "--model-repeats 0" if converted else "no layer sparse: nothing beat dense"
    return f"end to end: not timed ({why}); {converted}/{len(layers)} layers sparse"


def write_sparse_report(out: str | os.PathLike[str], report: Mapping[str, Any], json_text: str,
                        title: str) -> dict[str, Path]:
    """``prunekit sparse``'s files: the per-layer choices, the end-to-end line, the speedup bars."""
    header, rows, numeric = sparse_rows(report["layers"])
    blocks: list[Any] = [Heading(1, title), Para(end_to_end_line(report) + f", at {report['threads']} thread(s)."),
                         Table(header, rows, numeric),
                         Para("speedup: the layer's dense time over the chosen kernel's time (1.00x: dense kept); "
                              "times are medians in milliseconds at the example input's shape.")]
    timed = [layer for layer in report["layers"] if layer["speedup"] is not None]
    plots: dict[str, Any] = {}
    if timed:
        blocks.append(Image(PLOTS["sparse"], "speedup of each layer"))
        plots[PLOTS["sparse"]] = lambda p: P.plot_ratio_bars(
            [layer["name"] for layer in timed], [layer["speedup"] for layer in timed], p,
            xlabel="dense ms / chosen ms (dashed line: 1 = no gain)", title="Speedup per layer")
    return _write(out, json_text, title, blocks, plots)
