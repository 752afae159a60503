"""``prunekit prune gpt_tiny --structure head|neuron --shrink``: attention heads and MLP neurons
removed from the command line; the file loads back with the printed line and gives the shrunk
model's outputs; the table shows the measured figures; errors name the option."""

from __future__ import annotations

import json
import os
import random

import pytest
import torch

import prunekit
from prunekit.cli import main


def _text(captured: str) -> str:
    return " ".join(captured.split())  # rich wraps at the terminal's width


def _run(tmp_path, capsys, *argv):
    out = tmp_path / "shrunk"
    code = main(["prune", "gpt_tiny", *argv, "--shrink", "--out", str(out), "--latency-repeats", "2",
                 "--latency-warmup", "0"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return out, json.loads((out / "report.json").read_text()), _text(captured.out)


def _ids(batch=2):
    return torch.randint(0, 65, (batch, 128), generator=torch.Generator().manual_seed(7))


def _corpus(tmp_path):
    rng = random.Random(0)
    words = ["to", "be", "or", "not", "that", "is", "the", "question"]
    path = tmp_path / "input.txt"
    path.write_text(" ".join(rng.choice(words) for _ in range(600)), encoding="utf-8")
    return path


def test_heads_removed_saved_and_loaded_back_with_the_printed_line(tmp_path, capsys):
    out, report, text = _run(tmp_path, capsys, "--structure", "head", "--sparsity", "0.5")
    path = out / "model.safetensors"
    line = report["load"]
    assert line in text and line == f"prunekit.load_shrunk(prunekit.create_model('gpt_tiny'), {str(path)!r})"
    loaded = eval(line, {"prunekit": prunekit}).eval()
    assert [b.attn.n_head for b in loaded.blocks] == [2, 2, 2, 2]
    assert [b.attn.q_proj.out_features for b in loaded.blocks] == [64, 64, 64, 64]
    # the same surgery from Python on the model the command built (seeded with --seed 0)
    torch.manual_seed(0)
    expected = prunekit.create_model("gpt_tiny").eval()
    prunekit.prune_heads(expected, sparsity=0.5, importance="magnitude")
    x = _ids()
    with torch.no_grad():
        assert torch.equal(loaded(x), expected(x))
    assert report["prune_heads"]["before"] == {f"blocks.{i}.attn": 4 for i in range(4)}
    assert report["prune_heads"]["after"] == {f"blocks.{i}.attn": 2 for i in range(4)}
    assert report["input_shape"] == [1, 128]
    assert report["shrunk"]["params"] == prunekit.measure.count_parameters(loaded).params
    assert report["shrunk"]["bytes"] == os.path.getsize(path)
    assert report["shrunk"]["macs"] < report["dense"]["macs"]
    for key in ("params", "macs", "bytes"):
        assert f"{report['dense'][key]:,}" in text and f"{report['shrunk'][key]:,}" in text
    assert f"{report['speedup']:.2f}×" in text
    assert "blocks.3.attn 4 → 2" in text


def test_neurons_removed_by_l2_with_weights(tmp_path, capsys):
    torch.manual_seed(3)
    dense = prunekit.create_model("gpt_tiny")
    weights = tmp_path / "dense.safetensors"
    prunekit.save_sparse(dense, weights)
    out, report, _ = _run(tmp_path, capsys, "--weights", str(weights), "--structure", "neuron", "--sparsity", "0.25",
                          "--criterion", "l2")
    loaded = prunekit.load_shrunk(prunekit.create_model("gpt_tiny"), out / "model.safetensors").eval()
    assert [b.mlp.fc.out_features for b in loaded.blocks] == [384] * 4
    assert [b.mlp.proj.in_features for b in loaded.blocks] == [384] * 4
    prunekit.prune_mlp_neurons(dense, sparsity=0.25, importance="l2")
    x = _ids()
    with torch.no_grad():
        assert torch.equal(loaded(x), dense.eval()(x))
    assert report["prune_mlp_neurons"]["criterion"] == "l2"


def test_neurons_rounded_to_a_multiple(tmp_path, capsys):
    out, report, _ = _run(tmp_path, capsys, "--structure", "neuron", "--sparsity", "0.3", "--round-to", "8")
    loaded = prunekit.load_shrunk(prunekit.create_model("gpt_tiny"), out / "model.safetensors")
    assert [b.mlp.fc.out_features for b in loaded.blocks] == [360] * 4  # 512 - 154 = 358, rounded to 360
    assert report["prune_mlp_neurons"]["round_to"] == 8


def test_gradient_criterion_reads_the_text(tmp_path, capsys):
    corpus = _corpus(tmp_path)
    out, report, _ = _run(tmp_path, capsys, "--structure", "neuron", "--sparsity", "0.5", "--criterion", "gradient",
                          "--text", str(corpus), "--samples", "4")
    assert report["prune_mlp_neurons"]["data"] == {"text": str(corpus), "windows": 4, "length": 129}
    loaded = prunekit.load_shrunk(prunekit.create_model("gpt_tiny"), out / "model.safetensors")
    assert [b.mlp.fc.out_features for b in loaded.blocks] == [256] * 4


@pytest.mark.parametrize("argv, message", [
    (["--structure", "head", "--sparsity", "0.5", "--criterion", "gradient"],
     ("--criterion: expected a head score that needs no data (l2, magnitude) unless --text FILE gives data, "
      "got 'gradient'. Fix: add --text FILE")),
    (["--structure", "neuron", "--sparsity", "0.5", "--criterion", "hrank"], "--criterion: expected a neuron score"),
    (["--structure", "head"], "--sparsity: expected the fraction of attention heads to remove"),
    (["--structure", "head", "--sparsity", "1.0"], "--sparsity: expected a fraction in [0, 1) of attention heads"),
    (["--structure", "head", "--macs-target", "0.5"], "--macs-target: expected no --macs-target with --structure head"),
    (["--structure", "neuron", "--sparsity", "0.5", "--round-to", "0"], "--round-to: expected"),
    (["--structure", "head", "--sparsity", "0.5", "--round-to", "x"], "--round-to: expected"),
    (["--structure", "neuron", "--sparsity", "0.5", "--scope", "global"],
     "--scope: expected local with --structure neuron --shrink"),
])
def test_errors_name_the_option_and_write_nothing(tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    assert main(["prune", "gpt_tiny", *argv, "--shrink", "--out", str(out)]) == 2
    err = _text(capsys.readouterr().err)
    assert "prunekit prune: error: " in err and message in err
    assert not (out / "model.safetensors").exists()


def test_text_errors(tmp_path, capsys):
    short = tmp_path / "short.txt"
    short.write_text("to be or not", encoding="utf-8")
    argv = ["prune", "gpt_tiny", "--structure", "head", "--sparsity", "0.5", "--criterion", "gradient", "--shrink",
            "--out", str(tmp_path / "o")]
    assert main([*argv, "--text", str(short)]) == 2
    assert "--text: expected a text of more than 129 characters" in _text(capsys.readouterr().err)
    wide = tmp_path / "wide.txt"
    wide.write_text("".join(chr(0x400 + i) for i in range(100)) * 3, encoding="utf-8")
    assert main([*argv, "--text", str(wide)]) == 2
    assert "--text: expected a text of at most 65 distinct characters" in _text(capsys.readouterr().err)
    assert main(["prune", "lenet5", "--structure", "head", "--sparsity", "0.5", "--shrink", "--out",
                 str(tmp_path / "l")]) == 2
    assert "--structure: expected head for a model with attention layers" in _text(capsys.readouterr().err)
    assert main(["prune", "gpt_tiny", "--sparsity", "0.5", "--text", str(short), "--out", str(tmp_path / "m")]) == 2
    assert "--text: expected no --text without --shrink" in _text(capsys.readouterr().err)
    assert main(["prune", "gpt_tiny", "--structure", "channel", "--sparsity", "0.5", "--text", str(short), "--shrink",
                 "--out", str(tmp_path / "c")]) == 2
    assert "--text: expected no --text without --structure head or neuron" in _text(capsys.readouterr().err)
    corpus = _corpus(tmp_path)
    assert main(["prune", "gpt_tiny", "--structure", "head", "--sparsity", "0.5", "--text", str(corpus), "--shrink",
                 "--out", str(tmp_path / "n")]) == 2
    assert "--text: expected no --text with --criterion magnitude" in _text(capsys.readouterr().err)
    assert not any((tmp_path / d).exists() for d in ("o", "l", "m", "c", "n"))
