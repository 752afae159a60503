"""Resumable runs that fail or die (`prunekit run`, `prunekit lottery`): failed starts leave no
fingerprint, one run per folder, damaged files are recomputed, temporary files are removed,
write errors keep what was written, a finished run is reported from read-only media."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from prunekit import rundir
from prunekit.cli import main
from prunekit.errors import InvalidParameterError
from prunekit.lottery import LotteryRun
from prunekit.recipes import parse_recipe
from prunekit.rundir import RunLock
from prunekit.runner import Runner
from prunekit.runner import core as runner_core

from conftest import classification_splits
from conftest import small_lottery_config as lottery_config
from conftest import tiny_mlp

SMALL = """\
title: small
model: {name: lenet_300_100}
data: {name: mnist_embedded, limit_train: 64, limit_test: 32, batch_size: 32, kwargs: {normalize: mnist}}
train: {epochs: 1, lr: 0.05}
runs:
  - name: a
    prune: {sparsity: 0.5}
  - name: b
    prune: {sparsity: 0.8}
finetune: {epochs: 1, lr: 0.01}
"""


def recipe(text: str = SMALL):
    return parse_recipe(text, source="small.yaml", base_dir=".")


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def err(capsys) -> str:
    return " ".join(capsys.readouterr().err.split())


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("hard") / "out"
    runner = Runner(recipe(), out)
    report = runner.run()
    return out, report


@pytest.fixture
def run_copy(finished_run, tmp_path):
    out, report = finished_run
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    return copy, report


# -- a failed start leaves no state ---------------------------------------------------------------


def test_run_failing_dense_stage_leaves_no_fingerprint(tmp_path, monkeypatch):
    out = tmp_path / "out"

    def broken(*args, **kwargs):
        raise RuntimeError("the training broke")

    monkeypatch.setattr(Runner, "_fit", broken)
    with pytest.raises(RuntimeError):
        Runner(recipe(), out).run()
    assert not (out / "state" / "recipe.json").exists() and not (out / "recipe.yaml").exists()
    monkeypatch.undo()
    # the corrected (here: another) recipe runs in the same folder
    corrected = Runner(recipe(SMALL.replace("sparsity: 0.8", "sparsity: 0.7")), out)
    corrected.run()
    assert corrected.computed == ["dense", "a", "b"]


def test_run_missing_weights_file_fails_before_writing(tmp_path):
    text = SMALL.replace("model: {name: lenet_300_100}", "model: {name: lenet_300_100, weights: nowhere.pt}")
    with pytest.raises(InvalidParameterError) as info:
        Runner(recipe(text), tmp_path / "out").run()
    assert info.value.param.endswith("model.weights") and "nowhere.pt" in str(info.value)
    assert not (tmp_path / "out").exists()


def test_lottery_failing_first_level_leaves_no_run_json(tmp_path):
    data = classification_splits()
    out = tmp_path / "lt"
    with pytest.raises(InvalidParameterError) as info:  # batch larger than the training split
        LotteryRun(lottery_config(batch_size=1000), out, model_fn=tiny_mlp, **data).run()
    assert info.value.param == "batch_size"
    assert not (out / "run.json").exists() and not (out / "init.safetensors").exists()
    run = LotteryRun(lottery_config(levels=1), out, model_fn=tiny_mlp, **data)
    run.run()
    assert (1, None) in run.computed


def test_lottery_unknown_model_writes_nothing(tmp_path):
    def unknown():
        raise InvalidParameterError("model", "a registered model", "nonet")

    with pytest.raises(InvalidParameterError):
        LotteryRun(lottery_config(), tmp_path / "lt", model_fn=unknown, **classification_splits()).run()
    assert not (tmp_path / "lt").exists()


LOTTERY_ARGS = ["lenet_300_100", "--data", "mnist_embedded", "--levels", "1", "--steps", "4", "--eval-every", "2",
                "--batch-size", "50"]


def test_lottery_restart_discards_the_other_config(tmp_path, capsys):
    argv = ["lottery", *LOTTERY_ARGS, "--out", str(tmp_path / "lt")]
    assert main(argv) == 0
    assert main([*argv, "--rate", "0.5"]) == 2
    capsys.readouterr()
    assert main([*argv, "--rate", "0.5", "--restart"]) == 0
    assert "(2 trained, 0 reused)" in " ".join(capsys.readouterr().out.split())
    assert json.loads((tmp_path / "lt" / "run.json").read_text())["config"]["rate"] == 0.5


# -- one folder, one run -----------------------------------------------------------------------------


def test_second_run_on_a_locked_folder_is_refused(run_copy, tmp_path, capsys):
    out, _ = run_copy
    path = tmp_path / "r.yaml"
    path.write_text(SMALL)
    before = snapshot(out)
    with RunLock(out, "--out"):  # another run holds the folder
        assert main(["run", str(path), "--out", str(out)]) == 2
        assert "--out: expected a folder no other prunekit run is using" in err(capsys)
        assert main(["run", str(path), "--out", str(out), "--restart"]) == 2
        assert "in use by another run" in err(capsys)
        assert main(["lottery", *LOTTERY_ARGS, "--out", str(out)]) == 2
        assert "--out: expected a folder no other prunekit run is using" in err(capsys)
        assert main(["lottery", *LOTTERY_ARGS, "--out", str(out), "--restart"]) == 2
        assert "in use by another run" in err(capsys)
    after = snapshot(out)
    assert {k: v for k, v in after.items() if k != rundir.LOCK_NAME} == \
        {k: v for k, v in before.items() if k != rundir.LOCK_NAME}


def test_lock_held_by_another_process_refuses_and_names_it(tmp_path):
    folder = tmp_path / "x"
    folder.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time\n"
         "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, f'{os.getpid()}\\n'.encode())\n"
         "print('held', flush=True); time.sleep(60)", str(folder / rundir.LOCK_NAME)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(InvalidParameterError) as info:
            RunLock(folder, "--out").acquire()
        assert f"process {holder.pid}" in str(info.value)
    finally:
        holder.kill()
        holder.wait()
    with RunLock(folder, "--out"):  # released when its holder dies
        pass


def test_lock_is_released_after_a_run_and_after_an_error(tmp_path):
    lock = RunLock(tmp_path / "x", "out_dir")
    with pytest.raises(RuntimeError):
        with lock:
            with pytest.raises(InvalidParameterError):
                RunLock(tmp_path / "x", "out_dir").acquire()
            raise RuntimeError
    with RunLock(tmp_path / "x", "out_dir"):
        pass


# -- resume checks the bytes ---------------------------------------------------------------------------


def test_damaged_checkpoint_is_recomputed_not_reused(run_copy, caplog):
    out, report = run_copy
    ckpt = out / "checkpoints" / "a.safetensors"
    ckpt.write_bytes(b"garbage" * 100)
    caplog.set_level(logging.WARNING, logger="prunekit.rundir")
    runner = Runner(recipe(), out)
    again = runner.run()
    assert runner.computed == ["a"] and runner.skipped == ["dense", "b"]
    assert any("a.safetensors changed since it was written" in r.getMessage() for r in caplog.records)
    assert again["runs"][0]["measures"]["metric"] == report["runs"][0]["measures"]["metric"]
    assert ckpt.read_bytes()[:8] != b"garbageg"


def test_forged_metrics_are_recomputed_not_reported(run_copy):
    out, report = run_copy
    path = out / "state" / "run-b.json"
    forged = json.loads(path.read_text())
    forged["entry"]["measures"]["metric"] = 0.999
    path.write_text(json.dumps(forged))
    runner = Runner(recipe(), out)
    again = runner.run()
    assert runner.computed == ["b"]
    assert again["runs"][1]["measures"]["metric"] == report["runs"][1]["measures"]["metric"] != 0.999


def test_damaged_state_files_are_recomputed_without_traceback(run_copy):
    out, report = run_copy
    (out / "state" / "dense.safetensors").write_bytes(b"\x00" * 64)  # a SafetensorError to load
    (out / "state" / "dense.json").write_text("{}")  # no keys
    runner = Runner(recipe(), out)
    again = runner.run()
    assert "dense" in runner.computed
    assert again["dense"]["metric"] == report["dense"]["metric"]


def test_damaged_manifest_means_recompute_not_trust(run_copy, caplog):
    out, _ = run_copy
    (out / "state" / "manifest.json").write_text("not json")
    caplog.set_level(logging.WARNING, logger="prunekit.rundir")
    runner = Runner(recipe(), out)
    runner.run()
    assert runner.computed == ["dense", "a", "b"]
    assert any("ignoring damaged" in r.getMessage() for r in caplog.records)


def test_lottery_damaged_level_is_recomputed_bit_exact(tmp_path, caplog):
    data = classification_splits()
    out = tmp_path / "lt"
    first = LotteryRun(lottery_config(levels=2), out, model_fn=tiny_mlp, **data)
    done = first.run()
    (out / "level_001" / "model.safetensors").write_bytes(b"junk")
    metrics = json.loads((out / "level_002" / "metrics.json").read_text())
    metrics["accuracy"] = 1.0
    (out / "level_002" / "metrics.json").write_text(json.dumps(metrics))
    caplog.set_level(logging.WARNING, logger="prunekit.rundir")
    run = LotteryRun(lottery_config(levels=2), out, model_fn=tiny_mlp, **data)
    again = run.run()
    assert run.computed == [(1, None), (2, None)] and run.skipped == [(0, None)]
    for old, new in zip(done, again):
        assert {k: v for k, v in old.items() if k != "seconds"} == {k: v for k, v in new.items() if k != "seconds"}


# -- temporary files of a kill ------------------------------------------------------------------------------


def test_temporary_files_of_a_kill_are_removed(run_copy, tmp_path):
    out, _ = run_copy
    left = [out / "state" / ".dense.safetensors.k3j2h1xx.tmp", out / "checkpoints" / ".a.safetensors.abc_12z.tmp"]
    for path in left:
        path.write_bytes(b"partial")
    mine = out / "notes.tmp"
    mine.write_text("the user's")
    Runner(recipe(), out).run()
    assert not any(p.exists() for p in left) and mine.exists()


def test_lottery_temporary_files_are_removed(tmp_path):
    data = classification_splits()
    out = tmp_path / "lt"
    LotteryRun(lottery_config(levels=1), out, model_fn=tiny_mlp, **data).run()
    left = out / "level_001" / ".model.safetensors.x1y2z3ab.tmp"
    left.write_bytes(b"partial")
    LotteryRun(lottery_config(levels=1), out, model_fn=tiny_mlp, **data).run()
    assert not left.exists()


# -- full disk, read-only media ----------------------------------------------------------------------------------


def test_full_disk_is_a_clear_error_and_keeps_earlier_files(run_copy, tmp_path, monkeypatch, capsys):
    out, _ = run_copy
    (out / "state" / "run-b.json").unlink()  # run b must be computed again
    before = snapshot(out)

    def full(path, write):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(rundir, "atomic_write", full)
    monkeypatch.setattr(rundir, "atomic_write_text", lambda path, text: full(path, None))
    with pytest.raises(InvalidParameterError) as info:
        Runner(recipe(), out).run()
    assert info.value.param == "--out" and "no space left" in str(info.value) and "Fix:" in str(info.value)
    after = snapshot(out)
    for name, data in before.items():  # nothing written before is lost or changed
        if name not in ("checkpoints/b.safetensors",):  # save_sparse writes itself; b is recomputed
            assert after.get(name) == data, name
    path = tmp_path / "r.yaml"
    path.write_text(SMALL)
    assert main(["run", str(path), "--out", str(out)]) == 2
    assert "--out: expected a writable folder with free space" in err(capsys)


def test_finished_run_is_reported_from_read_only_media(run_copy, monkeypatch):
    out, report = run_copy
    before = snapshot(out)

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(rundir, "_open_lock_file", read_only)
    monkeypatch.setattr(rundir, "atomic_write", read_only)
    monkeypatch.setattr(rundir, "atomic_write_text", read_only)
    monkeypatch.setattr(runner_core, "atomic_write_text", read_only)
    monkeypatch.setattr(runner_core, "write_report_files", read_only)
    runner = Runner(recipe(), out)
    again = runner.run()
    assert runner.computed == [] and runner.skipped == ["dense", "a", "b"]
    assert [r["measures"]["metric"] for r in again["runs"]] == [r["measures"]["metric"] for r in report["runs"]]
    assert any("read-only" in w for w in runner.warnings)
    assert runner.files["json"] == out / "report.json"
    assert snapshot(out) == before


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="chmod does not stop root")
def test_read_only_folder_with_chmod(run_copy):
    out, _ = run_copy
    folders = [out, *[p for p in out.rglob("*") if p.is_dir()]]
    for folder in folders:
        folder.chmod(0o555)
    try:
        runner = Runner(recipe(), out)
        runner.run()
        assert runner.computed == []
    finally:
        for folder in folders:
            folder.chmod(0o755)


def test_damaged_fingerprint_file_is_a_clear_error(run_copy, tmp_path, capsys):
    out, _ = run_copy
    (out / "state" / "recipe.json").write_bytes(b"\x00\xff not json")
    path = tmp_path / "r.yaml"
    path.write_text(SMALL)
    assert main(["run", str(path), "--out", str(out)]) == 2
    text = err(capsys)
    assert "--out: expected a folder whose state/recipe.json is readable" in text and "--restart" in text


def test_lottery_damaged_run_json_is_a_clear_error(tmp_path):
    data = classification_splits()
    out = tmp_path / "lt"
    LotteryRun(lottery_config(levels=0), out, model_fn=tiny_mlp, **data).run()
    (out / "run.json").write_bytes(b"{not json \xff")
    with pytest.raises(InvalidParameterError) as info:
        LotteryRun(lottery_config(levels=0), out, model_fn=tiny_mlp, **data).run()
    assert info.value.param == "out_dir" and "run.json" in str(info.value)
    LotteryRun(lottery_config(levels=0), out, model_fn=tiny_mlp, restart=True, **data).run()
    assert json.loads((out / "run.json").read_text())["fingerprint"] == lottery_config(levels=0).fingerprint()
