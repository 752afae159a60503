"""Bad input on the command line: each case exits with status 2 and one error line
``prunekit <command>: error: <option>: expected ..., got .... Fix: ...`` naming the
option, never a traceback, and writes nothing."""

from __future__ import annotations

import logging
import re

import pytest
import torch

from prunekit.cli import main

# 80 distinct characters, more than gpt_tiny's 65-token vocabulary
WIDE = "".join(chr(c) for c in range(0x100, 0x150))
TEXT = "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer.\n" * 40


@pytest.fixture()
def files(tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    (tmp_path / "text.txt").write_text(TEXT)
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "wide.txt").write_text(WIDE * 20)
    torch.save(torch.nn.Linear(3, 2).state_dict(), tmp_path / "other.pt")
    (tmp_path / "latin1.txt").write_bytes(TEXT.encode() + "caf\u00e9".encode("latin-1") * 20)
    return tmp_path


def _errors(err: str) -> list[str]:
    return [line for line in err.splitlines() if re.match(r"^prunekit \w+: error: ", line)]


def _check(capsys, argv, option, words, out_path):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = _errors(err)
    assert len(lines) == 1, err
    line = " ".join(lines[0].split())  # rich or argparse may wrap; the words matter
    assert line.split(": error: ", 1)[1].startswith(f"{option}: expected "), line
    assert " got " in line and "Fix: " in line, line
    for word in words:
        assert word in line, line
    return out_path


PRUNE = ["prune", "lenet5", "--sparsity", "0.5"]
HEADS = ["prune", "gpt_tiny", "--structure", "head", "--sparsity", "0.5", "--shrink", "--criterion", "gradient"]
ONESHOT = ["oneshot", "gpt_tiny", "--samples", "2", "--seq-len", "16"]

# (id, arguments after the command with {tmp} for the folder, the option named, words of the line)
CASES = [
    ("sparsity-not-a-number", PRUNE[:2] + ["--sparsity", "abc"], "--sparsity", ["'abc'"]),
    ("override-sparsity-not-a-number", PRUNE + ["--override", "fc1=abc"], "--override", ["--override 'fc1=0.5'"]),
    ("override-invalid-regex", PRUNE + ["--override", "re:[=0.5"], "--override", ["regular expression"]),
    ("include-invalid-regex", PRUNE + ["--include", "re:["], "--include", ["regular expression"]),
    ("exclude-invalid-regex", PRUNE + ["--exclude", "re:(conv"], "--exclude", ["regular expression"]),
    ("prune-seed-too-large", PRUNE + ["--seed", str(2**70)], "--seed", ["9223372036854775807"]),
    ("prune-seed-negative", PRUNE + ["--seed", "-1"], "--seed", ["-1"]),
    ("prune-out-is-a-file", PRUNE + ["--out", "{tmp}/a_file"], "--out", ["is a file"]),
    ("weights-of-another-architecture", PRUNE + ["--weights", "{tmp}/other.pt"], "--weights",
     ["checkpoint of lenet5", "unexpected, e.g. bias"]),
    ("weights-not-a-checkpoint", PRUNE + ["--weights", "{tmp}/text.txt"], "--weights", ["state-dict file"]),
    ("oneshot-weights-of-another-architecture", ONESHOT + ["--text", "{tmp}/text.txt", "--weights", "{tmp}/other.pt"],
     "--weights", ["checkpoint of gpt_tiny"]),
    ("selection-matches-nothing", PRUNE + ["--include", "nomatch*"], "--include", ["nomatch*"]),
    ("prune-samples-zero", HEADS + ["--text", "{tmp}/text.txt", "--samples", "0"], "--samples", ["got 0"]),
    ("model-args-not-json", ONESHOT + ["--text", "{tmp}/text.txt", "--model-args", "not json"], "--model-args",
     ["JSON"]),
    ("model-args-not-an-object", ONESHOT + ["--text", "{tmp}/text.txt", "--model-args", "[1]"], "--model-args",
     ["JSON object"]),
    ("model-args-unknown-key", ONESHOT + ["--text", "{tmp}/text.txt", "--model-args", '{"n_layers": 1}'],
     "--model-args", ["n_layers", "Did you mean 'n_layer'?"]),
    ("device-not-a-device", ONESHOT + ["--text", "{tmp}/text.txt", "--device", "banana"], "--device", ["'banana'"]),
    ("oneshot-seed-too-large", ONESHOT + ["--text", "{tmp}/text.txt", "--seed", str(2**64)], "--seed",
     ["9223372036854775807"]),
    ("oneshot-out-is-a-file", ONESHOT + ["--text", "{tmp}/text.txt", "--out", "{tmp}/a_file"], "--out",
     ["is a file"]),
    ("oneshot-offload-dir-is-a-file", ONESHOT + ["--text", "{tmp}/text.txt", "--offload", "disk", "--offload-dir",
                                                 "{tmp}/a_file"], "--offload-dir", ["is a file"]),
    ("oneshot-text-not-utf8", ONESHOT + ["--text", "{tmp}/latin1.txt"], "--text", ["UTF-8"]),
    ("prune-text-not-utf8", HEADS + ["--text", "{tmp}/latin1.txt", "--samples", "2"], "--text", ["UTF-8"]),
    ("oneshot-samples-zero", ONESHOT + ["--text", "{tmp}/text.txt", "--samples", "0"], "--samples", ["got 0"]),
    ("oneshot-empty-text", ONESHOT + ["--text", "{tmp}/empty.txt"], "--text", ["0 tokens"]),
    ("token-ids-outside-vocabulary", ONESHOT + ["--text", "{tmp}/wide.txt"], "--tokenizer", ["vocabulary of 65"]),
    ("byte-ids-outside-vocabulary", ONESHOT + ["--text", "{tmp}/text.txt", "--tokenizer", "bytes"], "--tokenizer",
     ["vocabulary of 65"]),
]


@pytest.mark.parametrize("argv, option, words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_exits_2_with_one_error_line_and_writes_nothing(files, capsys, argv, option, words):
    argv = [a.replace("{tmp}", str(files)) for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(files / "out")]
    before = sorted(p.name for p in files.iterdir())
    _check(capsys, argv, option, words, files / "out")
    assert sorted(p.name for p in files.iterdir()) == before
    assert (files / "a_file").read_text() == "not a folder"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_device_cuda_without_cuda_is_refused(files, capsys):
    _check(capsys, ONESHOT + ["--text", str(files / "text.txt"), "--device", "cuda", "--out", str(files / "out")],
           "--device", ["CUDA is not available", "--device cpu"], None)
    assert not (files / "out").exists()


def test_tokenizer_auto_on_a_folder_without_a_tokenizer(files, capsys):
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50, n_positions=32)
    transformers.GPT2LMHeadModel(config).save_pretrained(files / "hf")
    _check(capsys, ["oneshot", str(files / "hf"), "--text", str(files / "text.txt"), "--tokenizer", "auto",
                    "--samples", "2", "--seq-len", "16", "--out", str(files / "out")],
           "--tokenizer", ["without tokenizer files", "--tokenizer bytes"], None)
    assert not (files / "out").exists()


def test_prune_without_weights_warns_that_it_prunes_a_random_initialisation(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="prunekit.cli.prune"):
        assert main(["prune", "lenet5", "--sparsity", "0.5"]) == 0
    assert any("no --weights" in r.getMessage() and "random initialisation" in r.getMessage()
               for r in caplog.records if r.levelno == logging.WARNING)


def test_report_on_a_folder_names_a_file_inside_it(tmp_path, capsys):
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "model.safetensors.index.json").write_text("{}")
    (folder / "model-00001-of-00002.safetensors").write_bytes(b"")
    assert main(["report", str(folder)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "checkpoint: expected an existing file" in err
    assert f"is a folder; name one file in it, e.g. '{folder / 'model-00001-of-00002.safetensors'}'" in err
    assert "Traceback" not in err
