"""The command line: run, demo, report and list; errors exit with code 2 and go to stderr."""

from __future__ import annotations

import json

import pytest

from prunekit.cli import main, quick_recipe
from prunekit.recipes import example_recipe_path, load_recipe

RECIPE = """\
title: cli tiny
model: {name: lenet_300_100}
data: {name: mnist_embedded, limit_train: 96, limit_test: 64, batch_size: 32}
train: {epochs: 1}
pruners:
  - name: magnitude-global
    scope: global
    sparsity: [0.5, 0.9]
finetune: {epochs: 1}
evaluate: {latency: {repeats: 2, warmup: 0}}
"""


@pytest.fixture
def recipe_file(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(RECIPE)
    return path


def test_run_writes_report_and_resumes(recipe_file, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", str(recipe_file), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "magnitude-global-0.9" in text and "wall time" in text
    assert "speed:densems/therun's" in "".join(text.split())  # the size-and-speed table and its caption, however rich wraps
    report = json.loads((out / "report.json").read_text())
    assert [r["name"] for r in report["runs"]] == ["magnitude-global-0.5", "magnitude-global-0.9"]
    assert (out / "checkpoints" / "magnitude-global-0.9.safetensors").is_file()
    mtime = (out / "state" / "dense.json").stat().st_mtime_ns
    assert main(["run", str(recipe_file), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "finished before, reused" in captured.err and "3 reused" in captured.out
    assert (out / "state" / "dense.json").stat().st_mtime_ns == mtime


def test_run_changed_recipe_exit_2_then_restart(recipe_file, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", str(recipe_file), "--out", str(out)]) == 0
    recipe_file.write_text(RECIPE.replace("[0.5, 0.9]", "[0.5, 0.8]"))
    capsys.readouterr()
    assert main(["run", str(recipe_file), "--out", str(out)]) == 2
    text = capsys.readouterr().err
    assert "prunekit run: error:" in text and "--restart" in text
    assert main(["run", str(recipe_file), "--out", str(out), "--restart"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert [r["sparsity"] for r in report["runs"]] == [0.5, 0.8]


def test_run_bad_recipe_exit_2_with_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(RECIPE.replace("sparsity: [0.5, 0.9]", "sparsity: 1.5"))
    assert main(["run", str(bad), "--out", str(tmp_path / "out")]) == 2
    text = " ".join(capsys.readouterr().err.split())
    assert "bad.yaml line 8, pruners[0].sparsity: expected a fraction in [0, 1] or None, got 1.5." in text
    assert not (tmp_path / "out").exists()
    typo = tmp_path / "typo.yaml"
    typo.write_text(RECIPE.replace("scope: global", "scop: global"))
    assert main(["run", str(typo), "--out", str(tmp_path / "out")]) == 2
    assert "Did you mean 'scope'?" in " ".join(capsys.readouterr().err.split())
    assert main(["run", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "out")]) == 2
    assert "an existing YAML file" in capsys.readouterr().err


def test_run_requires_out(recipe_file, capsys):
    assert main(["run", str(recipe_file)]) == 2
    assert "the following arguments are required: --out" in capsys.readouterr().err


def test_quick_recipe_is_the_demo_made_small():
    demo = load_recipe(example_recipe_path("demo"))
    quick = quick_recipe(demo)
    assert [r.name for r in quick.runs()] == [r.name for r in demo.runs()]
    assert quick.data.limit_train and quick.train.epochs == 1 and quick.fingerprint() != demo.fingerprint()


def test_demo_quick(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "magnitude-2of4" in text and "l2-filters" in text and "random-local-0.9" in text
    report = json.loads((out / "report.json").read_text())
    assert len(report["runs"]) == len(load_recipe(example_recipe_path("demo")).runs())
    assert {r["method"]["structure"] for r in report["runs"]} == {"element", "2:4", "channel"}
    assert (out / "recipe.yaml").is_file()


def test_existing_commands_still_work(tmp_path, capsys):
    assert main(["list", "models", "lenet*"]) == 0
    assert capsys.readouterr().out.split() == ["lenet5", "lenet_300_100"]
    out = tmp_path / "p"
    assert main(["prune", "lenet_300_100", "--sparsity", "0.5", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["report", str(out / "model.safetensors"), "--json", str(tmp_path / "r.json")]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["total"]["sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert main(["report", str(tmp_path / "nothing.safetensors")]) == 2
    assert "checkpoint: expected an existing file" in " ".join(capsys.readouterr().err.split())


@pytest.mark.parametrize("kind, expected", [("datasets", "mnist_embedded"), ("schedules", "agp"), ("models", "resnet20")])
def test_list_every_registry(kind, expected, capsys):
    assert main(["list", kind]) == 0
    assert expected in capsys.readouterr().out.split()
