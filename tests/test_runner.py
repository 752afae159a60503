"""The recipe runner: a tiny run end to end, the report schema, resume, changed recipes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

import prunekit
from prunekit import InvalidParameterError
from prunekit.recipes import parse_recipe
from prunekit.runner import MEASURE_KEYS, Runner, run_recipe, write_report_files

TINY = """\
title: tiny
model: {name: lenet_300_100}
data: {name: mnist_embedded, limit_train: 128, limit_test: 64, batch_size: 32, kwargs: {normalize: mnist}}
train: {epochs: 1, lr: 0.05}
runs:
  - name: mag
    prune: {scope: global, sparsity: [0.5, 0.9]}
  - name: nm
    prune:
      structure: "2:4"
  - name: agp
    prune:
      sparsity: 0.8
      schedule: {name: agp, start: 0, end: 1}
finetune: {epochs: 2, lr: 0.01}
evaluate: {latency: {repeats: 2, warmup: 0, threads: 1}}
"""
RUNS = ["mag-0.5", "mag-0.9", "nm", "agp"]


def recipe(text: str = TINY, base: Path | None = None):
    return parse_recipe(text, source="tiny.yaml", base_dir=base or ".")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "out"
    events = []
    runner = Runner(recipe(), out, progress=events.append)
    report = runner.run()
    return out, report, runner, events


def test_report_schema(finished):
    out, report, runner, _ = finished
    assert set(report) == {"title", "created", "model", "metric", "data", "training", "dense", "dense_budget",
                           "runs", "environment"}
    assert report["title"] == "tiny"
    assert report["model"] == {"name": "lenet_300_100", "params": 266610}
    assert report["metric"] == {"name": "accuracy", "higher_is_better": True}
    assert set(report["dense"]) == set(MEASURE_KEYS)
    assert set(report["environment"]) == {"torch", "threads", "platform", "prunekit", "latency_threads",
                                          "latency_repeats", "latency_warmup", "latency_method"}
    assert report["environment"]["latency_method"].startswith("interleaved")
    assert report["data"]["train_samples"] == 128 and report["data"]["test_samples"] == 64
    # fair budgets by construction: the dense reference and every run saw the same training steps
    assert report["dense_budget"] == {"pretrain_steps": 4, "finetune_steps": 8, "steps": 12}
    assert [r["name"] for r in report["runs"]] == RUNS
    for run in report["runs"]:
        assert set(run) == {"name", "method", "sparsity", "measures", "layers", "history", "budget", "stages",
                            "checkpoint"}
        assert set(run["method"]) == {"criterion", "structure", "scope", "mode", "schedule", "realisation", "stages"}
        assert run["method"]["realisation"] == "masks" and run["checkpoint"]["format"] == "sparse"
        assert run["budget"] == report["dense_budget"]
        assert set(run["measures"]) == set(MEASURE_KEYS)
        assert isinstance(run["sparsity"], float)
        for layer in run["layers"]:
            assert set(layer) == {"name", "shape", "params", "nonzero", "sparsity"}
        assert run["history"]["epoch_losses"] and len(run["history"]["epoch_losses"]) == 2
        m = run["measures"]
        assert m["params"] == report["dense"]["params"]
        assert m["nonzero"] < report["dense"]["nonzero"]
        assert m["effective_macs"] < m["macs"] == report["dense"]["macs"]
        assert m["bytes_compressed"] < report["dense"]["bytes_compressed"]
        assert m["latency_batch"] == 1 and m["latency_ms"] > 0
        assert 0.0 <= m["metric"] <= 1.0
    by_name = {r["name"]: r for r in report["runs"]}
    assert by_name["mag-0.9"]["sparsity"] == 0.9
    weights = [l for l in by_name["mag-0.9"]["layers"]]
    assert sum(l["params"] - l["nonzero"] for l in weights) == pytest.approx(0.9 * sum(l["params"] for l in weights), abs=2)
    assert by_name["nm"]["method"]["structure"] == "2:4" and by_name["nm"]["sparsity"] == pytest.approx(0.5)
    assert by_name["agp"]["method"]["schedule"]["name"] == "agp"
    assert all(l["sparsity"] == pytest.approx(0.8, abs=1e-3) for l in by_name["agp"]["layers"])
    # the file on disk is the same report
    assert json.loads((out / "report.json").read_text()) == report
    assert runner.files["json"] == out / "report.json"


def test_outputs_and_checkpoints(finished):
    out, report, runner, events = finished
    assert (out / "recipe.yaml").is_file() and (out / "state" / "recipe.json").is_file()
    assert (out / "state" / "dense.safetensors").is_file()
    for name in RUNS:
        assert (out / "state" / f"run-{name}.json").is_file()
        ckpt = out / "checkpoints" / f"{name}.safetensors"
        model = prunekit.create_model("lenet_300_100")
        prunekit.load_sparse(ckpt, model)
        nonzero = sum(int((p != 0).sum()) for p in model.parameters())
        assert nonzero == next(r for r in report["runs"] if r["name"] == name)["measures"]["nonzero"]
    assert runner.computed == ["dense", *RUNS] and runner.skipped == []
    statuses = {(e.stage, e.status) for e in events}
    assert ("dense", "start") in statuses and ("agp", "done") in statuses
    assert any(e.status == "step" and e.total > 0 for e in events)
    # the normalised recipe written beside the results runs as it is
    assert parse_recipe((out / "recipe.yaml").read_text()).fingerprint() == recipe().fingerprint()


def test_resume_skips_finished_stages(finished, tmp_path, caplog):
    finished_out, report, _, _ = finished
    out = tmp_path / "out"  # a copy: the module's finished run stays as it was for the other tests
    shutil.copytree(finished_out, out, copy_function=shutil.copy2)
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "state").iterdir()}
    mtimes.update({p: p.stat().st_mtime_ns for p in (out / "checkpoints").iterdir()})
    # lose one run's result, as if killed before it finished
    (out / "state" / "run-nm.json").unlink()
    caplog.set_level("INFO", logger="prunekit.runner")
    runner = Runner(recipe(), out)
    again = runner.run()
    assert runner.computed == ["nm"]
    assert runner.skipped == ["dense", "mag-0.5", "mag-0.9", "agp"]
    assert sum("skipped (finished before" in r.getMessage() for r in caplog.records) == 4
    for path, mtime in mtimes.items():
        if "nm" not in path.name and path.name not in ("recipe.json", "manifest.json"):
            assert path.stat().st_mtime_ns == mtime, f"{path.name} was rewritten"
    assert [r["name"] for r in again["runs"]] == RUNS
    assert {k: v for k, v in again["dense"].items() if k != "latency_ms"} == \
        {k: v for k, v in report["dense"].items() if k != "latency_ms"}
    def untimed(entry):  # latency is timed again, all models together, each time the report is made
        return {**entry, "measures": {k: v for k, v in entry["measures"].items() if k != "latency_ms"}}

    for old, new in zip(report["runs"], again["runs"]):
        if old["name"] != "nm":
            assert untimed(old) == untimed(new)
    # same seeds: the recomputed run gives the same numbers (latency aside)
    old_nm = next(r for r in report["runs"] if r["name"] == "nm")["measures"]
    new_nm = next(r for r in again["runs"] if r["name"] == "nm")["measures"]
    assert {k: v for k, v in old_nm.items() if k != "latency_ms"} == {k: v for k, v in new_nm.items() if k != "latency_ms"}


def test_changed_recipe_detected_then_restart(tmp_path):
    small = TINY.replace("sparsity: [0.5, 0.9]", "sparsity: 0.5").split("  - name: nm")[0] + \
        "finetune: {epochs: 1}\nevaluate: {latency: null}\n"
    out = tmp_path / "out"
    run_recipe(recipe(small), out)
    changed = small.replace("sparsity: 0.5", "sparsity: 0.6")
    with pytest.raises(InvalidParameterError) as info:
        run_recipe(recipe(changed), out)
    message = str(info.value)
    assert message.startswith("--out: expected a folder holding results of this recipe")
    assert "new --out" in message and "--restart" in message
    report = run_recipe(recipe(changed), out, restart=True)
    assert report["runs"][0]["sparsity"] == 0.6 and report["runs"][0]["measures"]["latency_ms"] is None
    assert [p.name for p in (out / "state").glob("run-*.json")] == ["run-mag.json"]


def test_weights_given_skip_training(finished, tmp_path):
    out, report, _, _ = finished
    text = TINY.replace("train: {epochs: 1, lr: 0.05}\n", "").replace(
        "model: {name: lenet_300_100}", f"model: {{name: lenet_300_100, weights: {out / 'state' / 'dense.safetensors'}}}")
    text = text.split("  - name: nm")[0].replace("[0.5, 0.9]", "0.5") + "finetune: {epochs: 0}\n"
    events = []
    again = Runner(recipe(text), tmp_path / "w", progress=events.append)
    result = again.run()
    assert not any(e.stage == "dense" and e.status == "step" for e in events)
    assert result["dense_budget"] == {"pretrain_steps": 0, "finetune_steps": 0, "steps": 0}
    assert result["training"]["pretrain"] is None and result["training"]["weights"].endswith("dense.safetensors")
    model = prunekit.create_model("lenet_300_100")
    model.load_state_dict(load_file(str(out / "state" / "dense.safetensors")))
    from prunekit.runner.measures import load_datasets, measure
    assert result["dense"]["metric"] == measure(recipe(text), model, load_datasets(recipe(text))[1])["metric"]
    assert result["runs"][0]["history"]["epoch_losses"] == []


def test_pruner_errors_fail_before_training(tmp_path):
    text = TINY.replace("lenet_300_100", "lenet5").replace('      structure: "2:4"\n',
                                                           '      structure: "2:4"\n      include: conv1\n')
    with pytest.raises(InvalidParameterError) as info:
        run_recipe(recipe(text), tmp_path / "out")
    assert "tiny.yaml line 10, runs[1].prune.structure" in str(info.value)
    assert not (tmp_path / "out").exists()  # a failed check leaves nothing behind
    assert not (tmp_path / "out" / "state" / "dense.json").exists()
    text = TINY.replace("scope: global,", "scope: global, include: nothing*,")
    with pytest.raises(InvalidParameterError, match=r"tiny.yaml line 7, runs\[0\].prune: expected a selection"):
        run_recipe(recipe(text), tmp_path / "out2")


def test_failing_report_renderer_is_reported_and_keeps_the_json(tmp_path):
    files, warnings = write_report_files({"title": "x"}, tmp_path)  # not a valid report: the renderer refuses
    assert files == {"json": tmp_path / "report.json"}
    assert warnings and "write_report failed" in warnings[0]
    assert json.loads((tmp_path / "report.json").read_text()) == {"title": "x"}


SCRIPT = """
import sys, time
from prunekit.recipes import load_recipe
from prunekit.runner import run_recipe
def slow(event):
    if event.status == "step" and event.index >= 2:
        time.sleep(0.2)
run_recipe(load_recipe(sys.argv[1]), sys.argv[2], progress=slow)
"""


@pytest.mark.slow
def test_resume_after_sigkill(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(path), str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    first = out / "state" / "run-mag-0.5.json"
    deadline = time.time() + 240
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert first.exists(), proc.communicate()[0].decode()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "report.json").exists()
    assert not list((out / "state").glob(".*.tmp"))  # no half-written files
    mtime = first.stat().st_mtime_ns
    runner = Runner(path, out)
    report = runner.run()
    assert runner.skipped[:2] == ["dense", "mag-0.5"]
    assert "dense" not in runner.computed and "mag-0.5" not in runner.computed
    assert first.stat().st_mtime_ns == mtime
    assert [r["name"] for r in report["runs"]] == RUNS
    assert json.loads((out / "report.json").read_text())["runs"][-1]["name"] == "agp"


def test_interleaved_latency_times_models_in_turn():
    import torch

    from prunekit.runner.latency import interleaved_latency

    class Slow(torch.nn.Module):
        def forward(self, x):
            time.sleep(0.002)
            return x

    fast, slow = torch.nn.Linear(4, 4), Slow()
    fast.train()
    threads = torch.get_num_threads()
    timed = interleaved_latency({"fast": fast, "slow": slow}, torch.zeros(1, 4), warmup=1, repeats=5, threads=1)
    assert set(timed) == {"fast", "slow"}
    assert timed["slow"] >= 2.0 > timed["fast"] > 0.0
    assert fast.training and torch.get_num_threads() == threads
