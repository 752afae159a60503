"""Every CLI error names the command-line option, never the Python parameter, and exits with 2."""

from __future__ import annotations

import re

import pytest

from prunekit.cli import _ALIASES, _DECLARED, main
from prunekit.cli.common import as_cli_error
from prunekit.errors import InvalidParameterError


def _error(capsys) -> str:
    """The error line (after the usage, when the parser printed one)."""
    return capsys.readouterr().err.strip().splitlines()[-1]


@pytest.mark.parametrize("command", sorted(_DECLARED))
def test_every_declared_python_name_is_worded_as_its_option(command):
    """For each option of each command: an error the library raises with the Python name (in the
    parameter, the expected form and a `name=value` fix) reads with the option throughout."""
    params = {p.name: p for table in _DECLARED[command] for p in table.values()
              if p.cli_name and p.cli_name.startswith("--")}
    assert params
    for name, param in params.items():
        exc = InvalidParameterError(name, f"a value that suits {name}", 7, f"Fix: {name}=3.")
        text = str(as_cli_error(exc, *_DECLARED[command], aliases=_ALIASES.get(command)))
        assert text == f"{param.cli_name}: expected a value that suits " + (
            param.cli_name if "_" in name else name) + f", got 7. Fix: {param.cli_name} 3.", (command, text)


def test_a_switch_set_true_in_a_fix_reads_as_the_bare_switch():
    exc = InvalidParameterError("model", "a model with channels to remove", "<Net>",
                                "Fix: approximate=True also prunes normalised channels.")
    text = str(as_cli_error(exc, *_DECLARED["prune"]))
    assert text.endswith("Fix: --approximate also prunes normalised channels.")


def test_a_name_that_is_no_option_keeps_it_but_its_text_names_options():
    exc = InvalidParameterError("config", "the run's config", "<changed: train_steps: 5 -> 6>",
                                "Fix: resume with the same config, or another out_dir.")
    assert str(as_cli_error(exc, *_DECLARED["lottery"], aliases=_ALIASES["lottery"])) == (
        "config: expected the run's config, got <changed: --steps: 5 -> 6>. Fix: resume with the same config, or "
        "another --out.")


def test_lottery_names_data_path_for_the_data_sets_folder(tmp_path, capsys):
    base = ["lottery", "lenet_300_100", "--out", str(tmp_path / "lt")]
    assert main([*base, "--data", "mnist"]) == 2  # mnist needs its folder
    text = _error(capsys)
    assert text.startswith("prunekit lottery: error: --data-path: expected a folder with the IDX files")
    assert "pass --data-path the folder" in text and not re.search(r"(?<![\w-])path[=:]", text)
    assert main([*base, "--data", "mnist", "--data-path", str(tmp_path)]) == 2  # a folder without the files
    assert _error(capsys).startswith("prunekit lottery: error: --data-path: expected one of")
    assert main([*base, "--data", "mnist_embedded", "--data-path", str(tmp_path)]) == 2  # it reads one .npz
    text = _error(capsys)
    assert text.startswith("prunekit lottery: error: --data-path: expected an .npz file at")
    assert "got <a folder>" in text and "give the .npz file inside it" in text
    assert "Traceback" not in text
    assert not (tmp_path / "lt").exists()


def test_lottery_names_steps_not_train_steps(tmp_path, capsys):
    argv = ["lottery", "lenet_300_100", "--data", "mnist_embedded", "--out", str(tmp_path / "lt"), "--steps", "5",
            "--rewind-step", "10"]
    assert main(argv) == 2
    text = _error(capsys)
    assert "--rewind-step: expected an iteration < --steps (5), got 10." in text and "train_steps" not in text


def test_report_json_and_export_out_refuse_a_folder(tmp_path, capsys):
    weights = tmp_path / "pruned"
    assert main(["prune", "lenet5", "--sparsity", "0.5", "--out", str(weights)]) == 0
    capsys.readouterr()
    assert main(["report", str(weights / "model.safetensors"), "--json", str(tmp_path)]) == 2
    text = _error(capsys)
    assert text.startswith("prunekit report: error: --json: expected a file to write (new or existing), not a folder")
    assert main(["export", "lenet5", "--weights", str(weights / "model.safetensors"), "--out", str(tmp_path)]) == 2
    text = _error(capsys)
    assert "prunekit export: error: --out: expected a file to write" in text and "model.onnx" in text


def test_prune_selection_error_words_the_selection_as_options(capsys):
    assert main(["prune", "lenet5", "--sparsity", "0.5", "--include", "nothing_matches"]) == 2
    text = _error(capsys)
    assert text.startswith("prunekit prune: error: --include: expected a selection matching")
    assert "--include ['nothing_matches']" in text and "include=" not in text and "params=" not in text
