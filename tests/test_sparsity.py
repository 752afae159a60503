"""sparsity_report: rows, totals, to_dict / to_json / table, every tensor state."""

from __future__ import annotations

import json

import pytest
import torch

import prunekit
from conftest import make_tiny


def test_report_rows_and_states(tiny):
    prunekit.prune(tiny, 0.5, include="fc1")
    prunekit.prune(tiny, 0.25, include="fc2", mode="inplace")
    with torch.no_grad():
        tiny.conv.weight[0].zero_()  # plain zeros
    report = prunekit.sparsity_report(tiny)
    rows = {r.name: r for r in report.rows}
    assert list(rows) == ["conv.weight", "fc1.weight", "fc2.weight"]
    assert rows["conv.weight"].state == "dense" and rows["conv.weight"].zeros == 72
    assert rows["fc1.weight"].state == "reparam" and rows["fc1.weight"].sparsity == 0.5
    assert rows["fc2.weight"].state == "inplace" and rows["fc2.weight"].zeros == 32
    assert rows["fc1.weight"].shape == (16, 128) and rows["fc1.weight"].params == 2048
    assert rows["fc1.weight"].nonzero == 1024
    assert report.params == 576 + 2048 + 128
    assert report.nonzero == report.params - (72 + 1024 + 32)
    assert report.sparsity == pytest.approx((72 + 1024 + 32) / report.params)
    assert report.model_params == sum(p.numel() for p in tiny.parameters())
    with pytest.raises(KeyError):
        report["nope"]


def test_report_to_dict_json_table(tiny, tmp_path):
    prunekit.prune(tiny, 0.3, scope="global")
    report = prunekit.sparsity_report(tiny)
    data = report.to_dict()
    assert [t["name"] for t in data["tensors"]] == [r.name for r in report.rows]
    first = data["tensors"][0]
    assert set(first) >= {"name", "shape", "params", "nonzero", "sparsity", "state", "zeros"}
    assert isinstance(first["shape"], list)
    assert data["total"]["sparsity"] == pytest.approx(report.sparsity)
    assert report.params - report.nonzero == round(0.3 * report.params)
    text = report.to_json(tmp_path / "r.json")
    assert json.loads(text) == data == json.loads((tmp_path / "r.json").read_text())
    table = report.table()
    assert "fc1.weight" in table and "16×128" in table and "reparam" in table
    assert f"{100 * report.sparsity:.2f}%" in table.splitlines()[-2]
    assert str(report) == table


def test_report_after_make_permanent_counts_zeros(tiny):
    prunekit.prune(tiny, 0.6)
    before = prunekit.sparsity_report(tiny)
    prunekit.make_permanent(tiny)
    after = prunekit.sparsity_report(tiny)
    assert [r.state for r in after.rows] == ["dense"] * 3
    assert [r.nonzero for r in after.rows] == [r.nonzero for r in before.rows]
    assert after.sparsity == before.sparsity


def test_report_selection_arguments():
    model = make_tiny(0)
    prunekit.prune(model, 0.5, params="bias", include="fc2")
    report = prunekit.sparsity_report(model, params=("weight", "bias"))
    assert "fc2.bias" in [r.name for r in report.rows] and "fc1.bias" in [r.name for r in report.rows]
    only = prunekit.sparsity_report(model, include="fc1")
    # masked tensors are always listed, plus the selection
    assert [r.name for r in only.rows] == ["fc1.weight", "fc2.bias"]
