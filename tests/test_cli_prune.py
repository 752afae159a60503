"""``prunekit prune`` with masks and ``prunekit list scores``: what the command wrote, and the
errors it gives (exit 2, one line on stderr naming the option)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import prunekit
from prunekit.cli import main
from prunekit.masks import pruned_tensors
from prunekit.scores import SCORES


def _text(captured: str) -> str:
    return " ".join(captured.split())  # rich wraps at the terminal's width


def _weights(model_name: str, path) -> dict[str, torch.Tensor]:
    """The effective (masked) weights of the checkpoint at ``path``, loaded into a fresh ``model_name``."""
    model = prunekit.create_model(model_name)
    prunekit.load_pruned_state_dict(model, prunekit.load_sparse(path))
    return {name: getattr(module, tensor).detach() for name, module, tensor, _ in pruned_tensors(model)}


def _error(capsys) -> str:
    captured = capsys.readouterr()
    return _text(captured.err)


def test_prune_sparsity_saves_a_checkpoint_at_that_sparsity(tmp_path, capsys):
    out = tmp_path / "p"
    assert main(["prune", "lenet5", "--sparsity", "0.75", "--scope", "global", "--out", str(out)]) == 0
    text = _text(capsys.readouterr().out)
    state = prunekit.load_sparse(out / "model.safetensors")
    report = prunekit.sparsity_report_from_state_dict(state)
    assert report.sparsity == pytest.approx(0.75, abs=1e-5)
    assert f"{report.nonzero:,}" in text and "75.00%" in text
    saved = json.loads((out / "report.json").read_text())
    assert saved["total"]["sparsity"] == pytest.approx(0.75, abs=1e-5)


def test_prune_count_prunes_that_many_channels_per_tensor(tmp_path, capsys):
    out = tmp_path / "p"
    assert main(["prune", "lenet5", "--count", "2", "--structure", "channel", "--include", "conv*",
                 "--out", str(out)]) == 0
    capsys.readouterr()
    state = _weights("lenet5", out / "model.safetensors")
    assert sorted(state) == ["conv1.weight", "conv2.weight"]  # only the included tensors
    for name in ("conv1.weight", "conv2.weight"):
        rows = state[name].flatten(1)
        assert int((rows.abs().sum(1) == 0).sum()) == 2


def test_prune_amount_is_relative_to_what_the_weights_left_unpruned(tmp_path, capsys):
    first, second = tmp_path / "half", tmp_path / "more"
    assert main(["prune", "lenet5", "--sparsity", "0.5", "--out", str(first)]) == 0
    assert main(["prune", "lenet5", "--weights", str(first / "model.safetensors"), "--amount", "0.5",
                 "--out", str(second)]) == 0
    text = _text(capsys.readouterr().out)
    assert "lenet5 pruned by amount=0.5 of what remained" in text
    before, after = _weights("lenet5", first / "model.safetensors"), _weights("lenet5", second / "model.safetensors")
    assert sorted(after) == sorted(before) and len(after) == 4
    for name, weight in after.items():
        zero = weight == 0
        # torch's amount: half of the half still unpruned, so three quarters zero; the old zeros stay zero
        assert int(zero.sum()) == weight.numel() // 2 + round(0.5 * (weight.numel() - weight.numel() // 2)), name
        assert bool(zero[before[name] == 0].all()), name
    # from dense weights the relative amount is the absolute level
    assert main(["prune", "lenet5", "--amount", "0.3", "--out", str(tmp_path / "dense")]) == 0
    capsys.readouterr()
    for name, weight in _weights("lenet5", tmp_path / "dense" / "model.safetensors").items():
        assert int((weight == 0).sum()) == round(0.3 * weight.numel()), name


def test_prune_amount_counts_channels_still_unpruned(tmp_path, capsys):
    first, second = tmp_path / "half", tmp_path / "more"
    assert main(["prune", "lenet5", "--structure", "channel", "--sparsity", "0.5", "--out", str(first)]) == 0
    assert main(["prune", "lenet5", "--structure", "channel", "--weights", str(first / "model.safetensors"),
                 "--amount", "0.5", "--out", str(second)]) == 0
    capsys.readouterr()
    before, after = _weights("lenet5", first / "model.safetensors"), _weights("lenet5", second / "model.safetensors")
    for name, weight in after.items():
        rows = weight.flatten(1)
        zero_rows = rows.abs().sum(1) == 0
        unpruned = rows.shape[0] - rows.shape[0] // 2
        # ln_structured's count: the old zero channels plus half of the channels still unpruned
        assert int(zero_rows.sum()) == rows.shape[0] // 2 + round(0.5 * unpruned), name
        assert bool(zero_rows[before[name].flatten(1).abs().sum(1) == 0].all()), name


def test_prune_nm_needs_no_sparsity(tmp_path, capsys):
    assert main(["prune", "lenet_300_100", "--structure", "2:4", "--out", str(tmp_path / "p")]) == 0
    capsys.readouterr()
    w = _weights("lenet_300_100", tmp_path / "p" / "model.safetensors")["fc1.weight"]
    assert bool(((w != 0).reshape(-1, 4).sum(1) == 2).all())


def test_prune_override_and_params(tmp_path, capsys):
    out = tmp_path / "p"
    assert main(["prune", "lenet_300_100", "--sparsity", "0.5", "--override", "fc3.*=0.2", "--params", "weight",
                 "--params", "bias", "--out", str(out)]) == 0
    capsys.readouterr()
    state = _weights("lenet_300_100", out / "model.safetensors")
    assert float((state["fc1.weight"] == 0).float().mean()) == pytest.approx(0.5, abs=1e-3)
    assert float((state["fc3.weight"] == 0).float().mean()) == pytest.approx(0.2, abs=1e-3)
    assert float((state["fc1.bias"] == 0).float().mean()) == pytest.approx(0.5, abs=1e-2)


@pytest.mark.parametrize("argv, message", [
    (["lenet5", "--sparsity", "half"], ("--sparsity: expected a fraction in [0, 1], got 'half'. Fix: e.g. "
                                       "--sparsity 0.5.")),
    (["lenet5", "--sparsity", "1"], ("--sparsity: expected a fraction in [0, 1] written with a decimal point, got "
                                    "'1'. Fix: for 100% write 1.0; to prune a number of units per tensor use "
                                    "--count 1.")),
    (["lenet5", "--sparsity", "1.5"], "--sparsity: expected a fraction in [0, 1], got 1.5."),
    (["lenet5", "--count", "-1"], "--count: expected an int >= 0, got -1."),
    (["lenet5", "--count", "0.5"], "--count: expected an int >= 0, got '0.5'."),
    (["lenet5", "--sparsity", "0.5", "--count", "2"], ("--count: expected one of --sparsity, --count and --amount, "
                                                      "not --sparsity and --count")),
    (["lenet5", "--sparsity", "0.5", "--criterion", "magnitud"], ("--criterion: expected a registered criterion "
                                                                 "name")),
    (["lenet5", "--sparsity", "0.5", "--criterion", "magnitud"], "Did you mean 'magnitude'?"),
    (["lenet5", "--sparsity", "0.5", "--structure", "chanel"], "Did you mean 'channel'?"),
    (["lenet5", "--sparsity", "0.5", "--scope", "globl"], ("--scope: expected a scope among local, global, lamp, erk, "
                                                          "got 'globl'. Fix: pick one of the listed values. Did you "
                                                          "mean 'global'?")),
    (["lenet5", "--sparsity", "0.5", "--mode", "in-place"], "Did you mean 'inplace'?"),
    (["lenett", "--sparsity", "0.5"], "model: expected a model among"),
    (["lenett", "--sparsity", "0.5"], "(see `prunekit list models`). Did you mean 'lenet5'?"),
    (["lenet5", "--sparsity", "0.5", "--weights", "missing.safetensors"], ("--weights: expected an existing file, "
                                                                          "got 'missing.safetensors'.")),
    (["lenet5", "--sparsity", "0.5", "--override", "fc*=1"], ("--override: expected a fraction in [0, 1] written "
                                                             "with a decimal point, got '1'.")),
    (["lenet5", "--sparsity", "0.5", "--override", "0.5"], "--override: expected PATTERN=SPARSITY"),
    (["lenet5"], ("--sparsity: expected a fraction, --count or --amount for --structure element, got None. Fix: add "
                  "--sparsity")),
    (["lenet5", "--amount", "1.5"], "--amount: expected a fraction in [0, 1], got 1.5. Fix: e.g. --amount 0.2."),
    (["lenet5", "--amount", "1"], "--amount: expected a fraction in [0, 1] written with a decimal point, got '1'."),
    (["lenet5", "--amount", "-0.1"], "--amount: expected a fraction in [0, 1], got -0.1."),
    (["lenet5", "--amount", "0.5", "--sparsity", "0.5"], ("--amount: expected one of --sparsity, --count and "
                                                          "--amount, not --sparsity and --amount, got 0.5. Fix: drop "
                                                          "one")),
    (["lenet5", "--amount", "0.5", "--count", "2"], "--amount: expected one of --sparsity, --count and --amount"),
    (["lenet5", "--amount", "0.5", "--structure", "2:4"], ("--amount: expected no level with structure '2:4' "
                                                           "(it fixes the sparsity itself)")),
    (["lenet5", "--amount", "0.5", "--override", "fc1.*=0.2"], ("--override: expected no --override with --amount "
                                                                 "(an override is an absolute level), got "
                                                                 "'fc1.*=0.2'. Fix: give --sparsity")),
    (["lenet5", "--amount", "0.5", "--shrink", "--structure", "channel"], "--amount: expected no --amount with "
                                                                          "--shrink"),
    (["lenet5", "--count", "3", "--scope", "erk"], "error: --sparsity: expected a float in [0, 1] for --scope 'erk'"),
])
def test_prune_errors_name_the_option_exit_2_and_write_nothing(tmp_path, capsys, argv, message):
    out = tmp_path / "p"
    assert main(["prune", *argv, "--out", str(out)]) == 2
    err = _error(capsys)
    assert "prunekit prune: error: " in err and message in err
    assert "Traceback" not in err
    assert not out.exists()


def test_list_scores_shows_every_registered_score(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # one table row per line, whatever the terminal
    def tiny_score(*args, **kwargs):
        """Tiny test score: the absolute weight."""

    SCORES.register("tiny_test_score", tiny_score, unit_spaces=("element", "channel"), needs="nothing",
                    aliases=("tts",))
    SCORES.register("tiny_test_score", tiny_score, unit_spaces=("head",), needs="gradients")
    try:
        assert main(["list", "scores"]) == 0
        out = capsys.readouterr().out
        assert f"{len(SCORES)} registered scores" in out
        row = [cell.strip() for cell in next(line for line in out.splitlines() if "tiny_test_score" in line).split("│")]
        assert row[1:6] == ["tiny_test_score", "tts", "element, channel, head",
                            "element: nothing, channel: nothing, head: gradients",
                            "Tiny test score: the absolute weight."]
        assert main(["list", "scores", "tiny*", "--unit-space", "head"]) == 0
        assert "1 registered scores for the head unit space" in _text(capsys.readouterr().out)
        assert main(["list", "scores", "tiny*", "--unit-space", "group"]) == 0
        assert "tiny_test_score" not in capsys.readouterr().out
    finally:
        SCORES.unregister("tiny_test_score")
    assert main(["list", "scores", "--unit-space", "grup"]) == 2
    assert "--unit-space: expected a unit space among" in _error(capsys)


def test_list_other_kinds_and_errors(capsys):
    assert main(["list", "structures"]) == 0
    assert capsys.readouterr().out.split() == prunekit.list_structures()
    assert main(["list", "criteria", "mag*"]) == 0
    assert capsys.readouterr().out.split() == prunekit.list_criteria("mag*")
    assert main(["list", "model"]) == 2
    assert "Did you mean 'models'?" in _error(capsys)
    assert main(["list", "models", "--unit-space", "group"]) == 2
    assert "--unit-space: expected no --unit-space with `list models`" in _error(capsys)


def test_a_model_registered_at_run_time_is_accepted(tmp_path, capsys):
    prunekit.zoo.MODELS.register("tiny_cli_mlp", lambda: torch.nn.Sequential(torch.nn.Linear(4, 3)))
    try:
        assert main(["prune", "tiny_cli_mlp", "--sparsity", "0.5", "--out", str(tmp_path / "p")]) == 0
    finally:
        prunekit.zoo.MODELS.unregister("tiny_cli_mlp")
    capsys.readouterr()
    state = prunekit.load_sparse(tmp_path / "p" / "model.safetensors")
    assert int((state["0.weight_mask"] == 0).sum()) == 6


def test_python_m_prunekit_exits_2_with_one_error_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(prunekit.__file__).parents[1])}
    done = subprocess.run([sys.executable, "-m", "prunekit", "prune", "lenet5", "--sparsity", "half", "--out",
                           str(tmp_path / "p")], check=False, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines()[-1] == ("prunekit prune: error: --sparsity: expected a fraction in [0, 1], "
                                            "got 'half'. Fix: e.g. --sparsity 0.5.")
    assert not (tmp_path / "p").exists()
