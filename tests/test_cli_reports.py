"""``prunekit prune`` (masks, ``--shrink`` of channels and of heads), ``prunekit sparse`` and
``prunekit oneshot`` write ``report.md`` and ``report.html`` beside ``report.json``, with the
figures of their summary table and a plot, and name every file they wrote."""

from __future__ import annotations

import json
import re

import pytest

from prunekit.cli import main
from prunekit.measure.report.markdown import _md  # Markdown escapes _ and friends

TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n" * 40)


def _text(captured: str) -> str:
    return " ".join(captured.split())  # whatever the terminal's width


def _run(capsys, argv: list[str]) -> str:
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return _text(captured.out)


def _check_files(out, text: str, figures: list[str]) -> None:
    """The three reports exist and are named on stdout; md and html hold ``figures``; every plot
    the html shows exists and is named on stdout too."""
    for kind, name in (("json", "report.json"), ("markdown", "report.md"), ("html", "report.html")):
        assert (out / name).is_file()
        assert f"wrote {kind}: {out / name}" in text
    markdown, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    for figure in figures:
        assert _md(figure) in markdown, figure
        assert figure in page, figure
    images = re.findall(r'<img src="([^"]+)"', page)
    assert images, "the html shows no plot"
    for src in images:
        assert (out / src).is_file() and (out / src).stat().st_size > 1000
        assert f"wrote plot: {out / src}" in text
        assert f"]({src})" in markdown


@pytest.mark.parametrize("fmt", ["compressed", "dense"])
def test_prune_writes_the_sparsity_table_as_markdown_and_html(tmp_path, capsys, fmt):
    out = tmp_path / "p"
    text = _run(capsys, ["prune", "lenet5", "--sparsity", "0.75", "--scope", "global", "--format", fmt,
                         "--out", str(out)])
    report = json.loads((out / "report.json").read_text())
    assert set(report) == {"tensors", "total", "model", "extras"}  # the JSON is as before
    figures = [f"{100 * report['total']['sparsity']:.2f}%", f"{report['total']['nonzero']:,}",
               f"{report['model']['params']:,}"]
    for tensor in report["tensors"]:
        figures += [tensor["name"], f"{100 * tensor['sparsity']:.2f}%"]
    key = "sparse_bytes" if fmt == "compressed" else "plain_dense_bytes"
    figures.append(f"{report['extras'][key]:,}")
    _check_files(out, text, figures)


def test_prune_shrink_writes_dense_against_shrunk(tmp_path, capsys):
    out = tmp_path / "s"
    text = _run(capsys, ["prune", "lenet5", "--sparsity", "0.5", "--structure", "channel", "--shrink",
                         "--out", str(out), "--latency-repeats", "2", "--latency-warmup", "0"])
    report = json.loads((out / "report.json").read_text())
    figures = [f"{report['speedup']:.2f}×"]
    for key, fmt in (("params", "{:,}"), ("macs", "{:,}"), ("bytes", "{:,}"), ("latency_ms", "{:.3f}")):
        figures += [fmt.format(report["dense"][key]), fmt.format(report["shrunk"][key]),
                    f"{report['shrunk'][key] / report['dense'][key]:.3f}"]
    figures.append("load_shrunk")  # the load-back line
    _check_files(out, text, figures)
    assert report["shrunk"]["params"] < report["dense"]["params"]
    assert f"load it back with: {report['load']}" in text


def test_prune_shrink_heads_says_what_was_removed(tmp_path, capsys):
    out = tmp_path / "h"
    text = _run(capsys, ["prune", "gpt_tiny", "--structure", "head", "--sparsity", "0.5", "--shrink",
                         "--out", str(out), "--latency-repeats", "2", "--latency-warmup", "0"])
    report = json.loads((out / "report.json").read_text())
    before, after = report["prune_heads"]["before"], report["prune_heads"]["after"]
    figures = [f"{report['dense']['params']:,}", f"{report['shrunk']['params']:,}", "attention heads per layer"]
    figures += [f"{name} {before[name]} → {after[name]}" for name in before]
    _check_files(out, text, figures)


def test_sparse_writes_the_per_layer_choices_and_the_speedup(tmp_path, capsys):
    masked = tmp_path / "masked"
    _run(capsys, ["prune", "lenet5", "--sparsity", "0.9", "--scope", "global", "--out", str(masked)])
    out = tmp_path / "sp"
    text = _run(capsys, ["sparse", "lenet5", "--weights", str(masked / "model.safetensors"), "--out", str(out),
                         "--kernel", "csr", "--threads", "1", "--min-speedup", "0.001", "--repeats", "2",
                         "--model-repeats", "2"])
    report = json.loads((out / "report.json").read_text())
    assert "layers" in report and "saved_max_abs_error" in report  # the JSON is as before
    figures = [f"speedup {report['speedup']:.2f}x", f"{len(report['layers'])}/{len(report['layers'])} layers sparse"]
    for layer in report["layers"]:
        figures += [layer["name"], f"{100 * layer['sparsity']:.1f}%", f"{layer['speedup']:.2f}x", layer["choice"]]
    _check_files(out, text, figures)


def test_oneshot_writes_perplexity_before_and_after_and_the_sparsity(tmp_path, capsys):
    text_file = tmp_path / "input.txt"
    text_file.write_text(TEXT)
    args = json.dumps({"n_layer": 2, "n_embd": 32, "n_head": 4, "vocab_size": len(set(TEXT)), "block_size": 64})
    out = tmp_path / "out"
    text = _run(capsys, ["oneshot", "gpt_tiny", "--model-args", args, "--text", str(text_file), "--tokenizer",
                         "char", "--method", "wanda", "--samples", "4", "--seq-len", "32", "--perplexity",
                         "--window", "32", "--out", str(out)])
    summary = json.loads((out / "report.json").read_text())
    assert set(summary) == {"model", "text", "calibration", "perplexity_dense", "result", "perplexity_pruned"}
    total = summary["result"]["report"]["total"]
    figures = [f"{summary['perplexity_dense']:.4f}", f"{summary['perplexity_pruned']:.4f}",
               f"{summary['perplexity_pruned'] / summary['perplexity_dense']:.3f}",
               f"{100 * total['sparsity']:.2f}%", f"{total['nonzero']:,}"]
    figures += [t["name"] for t in summary["result"]["report"]["tensors"]]
    _check_files(out, text, figures)
