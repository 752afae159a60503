"""``evaluate.latency.sparse``: masked runs timed again after ``prunekit.to_sparse``, in the report."""

from __future__ import annotations

import re

import pytest
import torch

import prunekit
from prunekit import InvalidParameterError
from prunekit.execution import load_sparse_model
from prunekit.cli.run import _cell
from prunekit.measure.report import results_tables
from prunekit.measure.report.document import _latency_notes
from prunekit.recipes import parse_recipe
from prunekit.runner import Runner

SPARSE = """\
title: sparse
model: {name: lenet_300_100}
data: {name: mnist_embedded, limit_train: 64, limit_test: 32, batch_size: 32, kwargs: {normalize: mnist}}
train: {epochs: 1, lr: 0.05}
runs:
  - name: mag
    prune: {scope: global, sparsity: 0.9}
  - name: shrunk
    shrink: {sparsity: 0.5}
evaluate: {latency: {repeats: 3, warmup: 1, threads: 1, sparse: true}}
"""


def parse(text: str):
    return parse_recipe(text, source="sparse.yaml", base_dir=".")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    return Runner(parse(SPARSE), tmp_path_factory.mktemp("run") / "out").run()


def test_masked_runs_are_timed_after_to_sparse_and_shrunk_runs_are_not(report):
    runs = {r["name"]: r["measures"] for r in report["runs"]}
    done, considered = (int(n) for n in runs["mag"]["sparse_layers"].split("/"))
    assert considered == 3  # the three Linears of LeNet-300-100
    if done:
        assert runs["mag"]["sparse_latency_ms"] > 0
    else:
        assert runs["mag"]["sparse_latency_ms"] is None
    assert "sparse_layers" not in runs["shrunk"] and "sparse_latency_ms" not in runs["shrunk"]


def test_the_report_shows_the_sparse_column_and_a_note(report):
    header, rows, numeric = results_tables(report)[1]
    assert header[-1] == "sparse kernels" and len(numeric) == len(header)
    cells = {row[0]: row[-1] for row in rows}
    assert cells["dense"] == "—" and cells["shrunk"] == "—"
    assert re.fullmatch(r"(dense \(0/3\)|[\d.]+× \([123]/3\))", cells["mag"])
    assert any(note.startswith("Sparse kernels (prunekit.to_sparse") for note in report_notes(report))


def report_notes(report):
    batches = {m.get("latency_batch") for m in [report["dense"], *(r["measures"] for r in report["runs"])]}
    return _latency_notes(report["dense"], report["runs"], report.get("environment", {}), batches)


def test_the_terminal_shows_the_speedup_only():
    assert _cell("sparse kernels", "1.37× (1/2)") == "1.37×"
    assert _cell("sparse kernels", "dense (0/2)") == "dense"
    assert _cell("Δ vs dense", "-1.2 pp (x)") == "-1.2 pp"
    assert _cell("bytes compressed", "897.58 KiB") == "898K" and _cell("bytes compressed", "1.65 MiB") == "1.65M"
    assert _cell("bytes compressed", "12.34 KiB") == "12.3K" and _cell("bytes compressed", "512 B") == "512"


def test_sparse_needs_checkpoints_and_leaves_old_fingerprints_alone():
    with pytest.raises(InvalidParameterError, match=r"export\.checkpoint: expected true with evaluate\.latency\.sparse"):
        parse(SPARSE + "export: {checkpoint: false}\n")
    off = parse(SPARSE.replace(", sparse: true", ""))
    assert "sparse" not in off.to_dict()["evaluate"]["latency"]
    assert parse(SPARSE).to_dict()["evaluate"]["latency"]["sparse"] is True
    assert off.fingerprint() != parse(SPARSE).fingerprint()
    with pytest.raises(InvalidParameterError, match=r"evaluate\.latency\.sparse: expected true or false"):
        parse(SPARSE.replace("sparse: true", "sparse: yes please"))


EXPORT = SPARSE.replace("  - name: shrunk\n    shrink: {sparsity: 0.5}\n", "").replace(
    ", sparse: true}}", "}}") + "export: {sparse: true}\n"


def test_export_sparse_writes_a_converted_model_that_loads_into_a_fresh_one(tmp_path):
    out = tmp_path / "out"
    report = Runner(parse(EXPORT), out).run()
    entry = report["runs"][0]
    assert entry["exports"]["sparse"] == "checkpoints/mag.sparse.safetensors"
    masked = prunekit.create_model("lenet_300_100")
    prunekit.load_pruned_state_dict(masked, prunekit.load_sparse(out / entry["checkpoint"]["path"]))
    loaded = load_sparse_model(prunekit.create_model("lenet_300_100"), out / "checkpoints/mag.sparse.safetensors")
    x = torch.randn(4, 1, 28, 28)
    masked.eval(), loaded.eval()
    torch.testing.assert_close(loaded(x), masked(x), rtol=1e-4, atol=1e-5)
    # the run is reused on a second start while its file is intact
    again = Runner(parse(EXPORT), out)
    again.run()
    assert "mag" in again.skipped


def test_export_sparse_is_refused_for_shrinking_runs():
    with pytest.raises(InvalidParameterError, match=r"export\.sparse: expected false when a run shrinks the model"):
        parse(SPARSE + "export: {sparse: true}\n")
