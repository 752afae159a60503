"""``prunekit oneshot`` on the command line: a zoo GPT and a Hugging Face folder, char tokens."""

from __future__ import annotations

import json

import pytest
import torch

import prunekit
from prunekit.cli import main
from prunekit.cli.oneshot import sample_windows

TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n" * 40)


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "input.txt"
    path.write_text(TEXT)
    return path


def test_oneshot_cli_prunes_a_zoo_gpt_reports_perplexity_and_saves_sparse(text_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # one line per bar, whatever the terminal
    vocab = len(set(TEXT))
    args = json.dumps({"n_layer": 2, "n_embd": 32, "n_head": 4, "vocab_size": vocab, "block_size": 64})
    code = main(["oneshot", "gpt_tiny", "--model-args", args, "--text", str(text_file), "--tokenizer", "char",
                 "--method", "sparsegpt", "--structure", "2:4", "--samples", "4", "--seq-len", "32",
                 "--perplexity", "--window", "32", "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()
    out = captured.out
    assert code == 0
    assert "none in any layer" in out
    bar = next(line for line in captured.err.splitlines() if "pruning blocks: sparsegpt" in line)
    assert "2/2" in bar  # the progress bar on stderr, at its total
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["perplexity_pruned"] > 1 and report["perplexity_dense"] > 1
    assert report["result"]["structure"] == "2:4"
    state = prunekit.load_sparse(tmp_path / "out" / "model.safetensors")
    q = state["blocks.0.attn.q_proj.weight"]
    assert ((q != 0).reshape(-1, 4).sum(1) <= 2).all()


def test_oneshot_cli_on_a_hugging_face_folder_saves_with_save_pretrained(text_file, tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    transformers.LlamaForCausalLM(cfg).save_pretrained(tmp_path / "hf")
    code = main(["oneshot", str(tmp_path / "hf"), "--text", str(text_file), "--tokenizer", "char", "--owl",
                 "--sparsity", "0.6", "--samples", "4", "--seq-len", "32", "--out", str(tmp_path / "pruned")])
    assert code == 0
    assert "measuring outliers (OWL)" in capsys.readouterr().err
    loaded = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "pruned")
    report = prunekit.sparsity_report(loaded, include="model.layers.*")
    assert report.sparsity == pytest.approx(0.6, abs=0.01)


def test_oneshot_cli_errors_are_reported(text_file, capsys):
    code = main(["oneshot", "gpt_tiny", "--model-args", '{"vocab_size": 8}', "--text", str(text_file),
                 "--tokenizer", "char", "--samples", "2", "--seq-len", "16"])
    assert code == 2
    assert "prunekit oneshot: error: --tokenizer: expected token ids below" in " ".join(capsys.readouterr().err.split())


def test_sample_windows_are_seeded_slices():
    ids = torch.arange(100)
    a = sample_windows(ids, 5, 10, seed=3)
    assert a.shape == (5, 10) and torch.equal(a, sample_windows(ids, 5, 10, seed=3))
    assert all(torch.equal(row, torch.arange(int(row[0]), int(row[0]) + 10)) for row in a)


def test_oneshot_cli_head_and_embeddings(text_file, tmp_path, capsys):
    vocab = len(set(TEXT))
    args = json.dumps({"n_layer": 1, "n_embd": 32, "n_head": 4, "vocab_size": vocab, "block_size": 64})
    code = main(["oneshot", "gpt_tiny", "--model-args", args, "--text", str(text_file), "--tokenizer", "char",
                 "--method", "wanda", "--samples", "4", "--seq-len", "32", "--head", "--embeddings",
                 "--out", str(tmp_path / "out")])
    capsys.readouterr()
    assert code == 0
    state = prunekit.load_sparse(tmp_path / "out" / "model.safetensors")
    heads = [k for k in state if k.endswith("weight") and state[k].shape[0] == vocab and state[k].dim() == 2]
    assert heads and all(float((state[k] == 0).float().mean()) == 0.5 for k in heads)  # head and embedding


def _llama_folder(path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    transformers.LlamaForCausalLM(cfg).save_pretrained(path, max_shard_size="20KB")
    return transformers


def test_oneshot_cli_streams_a_folder_with_offload_disk(text_file, tmp_path, capsys):
    transformers = _llama_folder(tmp_path / "hf")
    args = ["oneshot", str(tmp_path / "hf"), "--text", str(text_file), "--tokenizer", "char", "--offload", "disk",
            "--method", "sparsegpt", "--samples", "4", "--seq-len", "32"]
    code = main([*args, "--out", str(tmp_path / "pruned")])
    out = " ".join(capsys.readouterr().out.split())  # rich wraps at the terminal's width
    assert code == 0 and "block by block, 3 shards" in out
    files = sorted(p.name for p in (tmp_path / "pruned").iterdir())
    assert "model.safetensors.index.json" in files and "report.json" in files
    loaded = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "pruned")
    assert prunekit.sparsity_report(loaded, include="model.layers.*").sparsity == pytest.approx(0.5)
    report = json.loads((tmp_path / "pruned" / "report.json").read_text())
    assert report["result"]["method"] == "sparsegpt"
    # the whole model is never loaded: perplexity is refused, and the output folder is required
    assert main([*args, "--perplexity", "--out", str(tmp_path / "other")]) == 2
    assert "error: --perplexity:" in capsys.readouterr().err
    assert main(args) == 2
    assert "error: --out:" in capsys.readouterr().err
    assert not (tmp_path / "other").exists()


def test_oneshot_help_says_a_folder_with_offload_disk_is_streamed(capsys):
    assert main(["oneshot", "--help"]) == 0
    assert "streamed" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--sparsity", "half"], "--sparsity: expected a fraction in [0, 1), got 'half'."),
    (["--method", "wandaa"], "--method: expected a one-shot method (magnitude, sparsegpt, wanda)"),
    (["--val-fraction", "1.0"], "--val-fraction: expected a float in (0, 1), got 1.0."),
    (["--samples", "0"], "--samples: expected an int >= 1, got 0."),
    (["--model-args", "{n_layer: 2}"], "--model-args: expected a JSON object of keyword arguments"),
])
def test_oneshot_argument_errors_name_the_option(text_file, tmp_path, capsys, argv, message):
    code = main(["oneshot", "gpt_tiny", "--text", str(text_file), *argv, "--out", str(tmp_path / "out")])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and f"prunekit oneshot: error: {message}" in err
    assert not (tmp_path / "out").exists()


def test_oneshot_unknown_zoo_model_suggests_one(text_file, capsys):
    assert main(["oneshot", "gpt_tinyy", "--text", str(text_file)]) == 2
    assert "model: expected a zoo model name or a Hugging Face folder" in " ".join(capsys.readouterr().err.split())
