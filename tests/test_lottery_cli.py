"""`prunekit lottery`: a tiny IMP run on the packaged MNIST subset, then resumed."""

from __future__ import annotations

import json

from prunekit.cli import main


def test_lottery_command_runs_and_resumes(tmp_path, capsys):
    out = tmp_path / "lt"
    argv = ["lottery", "lenet_300_100", "--data", "mnist_embedded", "--out", str(out), "--levels", "1",
            "--steps", "6", "--eval-every", "3", "--batch-size", "50", "--control", "reinit"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "level   1 reinit" in captured.err and "(3 trained, 0 reused)" in captured.out
    metrics = json.loads((out / "level_001" / "metrics.json").read_text())
    assert abs(metrics["layers_remaining"]["fc1.weight"] - 0.8) < 1e-3
    assert abs(metrics["layers_remaining"]["fc3.weight"] - 0.9) < 1e-2  # output layer at rate / 2
    assert main(argv) == 0
    assert "(0 trained, 3 reused)" in capsys.readouterr().out
    assert main(argv + ["--rate", "0.5"]) == 2  # another config in the same directory is refused
    assert "changed: rate: 0.2 -> 0.5>" in " ".join(capsys.readouterr().err.split())


def test_lottery_argument_errors_name_the_option(tmp_path, capsys):
    base = ["lottery", "lenet_300_100", "--data", "mnist_embedded", "--out", str(tmp_path / "lt")]
    assert main([*base, "--rate", "1.5"]) == 2
    assert "--rate: expected a float in (0, 1), got 1.5." in capsys.readouterr().err
    assert main([*base, "--reset", "rewnd"]) == 2
    assert "Did you mean 'rewind'?" in capsys.readouterr().err
    assert main(["lottery", "lenet_300_100", "--data", "mnist_embeded", "--out", str(tmp_path / "lt")]) == 2
    assert "--data: expected a data set among" in capsys.readouterr().err
    assert not (tmp_path / "lt").exists()
