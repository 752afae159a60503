"""``prunekit export`` (ONNX, plain dense), ``prunekit prune --format dense`` and ``prunekit sparse``:
what the commands wrote, and exit status 2 with one error line on bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import prunekit
from prunekit.cli import main
from prunekit.execution import load_sparse_model


def _text(captured: str) -> str:
    return " ".join(captured.split())  # rich wraps at the terminal's width


@pytest.fixture(scope="module")
def masked(tmp_path_factory):
    """lenet5 pruned to 90% with masks, saved by the CLI in prunekit's compressed format."""
    out = tmp_path_factory.mktemp("masked")
    assert main(["prune", "lenet5", "--sparsity", "0.9", "--out", str(out)]) == 0
    return out / "model.safetensors"


def _masked_model(path) -> torch.nn.Module:
    model = prunekit.create_model("lenet5")
    prunekit.load_pruned_state_dict(model, prunekit.load_sparse(path))
    return model.eval()


def test_prune_format_dense_writes_a_file_a_fresh_model_loads_with_plain_torch(tmp_path, masked, capsys):
    out = tmp_path / "d"
    assert main(["prune", "lenet5", "--sparsity", "0.9", "--format", "dense", "--out", str(out)]) == 0
    assert "plain dense safetensors" in _text(capsys.readouterr().out)
    state = load_file(str(out / "model.safetensors"))
    fresh = prunekit.create_model("lenet5").eval()
    assert sorted(state) == sorted(fresh.state_dict())
    fresh.load_state_dict(state)
    pruned = _masked_model(masked)  # the same command without --format dense (same seed, same masks)
    x = prunekit.zoo.example_input("lenet5", 2)
    with torch.no_grad():
        assert torch.equal(fresh(x), pruned(x))
    assert json.loads((out / "report.json").read_text())["extras"]["format"] == "dense"


def test_export_dense_of_a_masked_checkpoint(tmp_path, masked):
    out = tmp_path / "plain.safetensors"
    assert main(["export", "lenet5", "--weights", str(masked), "--format", "dense", "--out", str(out)]) == 0
    fresh = prunekit.create_model("lenet5").eval()
    fresh.load_state_dict(load_file(str(out)))
    x = prunekit.zoo.example_input("lenet5", 2)
    with torch.no_grad():
        assert torch.equal(fresh(x), _masked_model(masked)(x))


def test_export_onnx_of_a_masked_checkpoint_runs_in_onnxruntime(tmp_path, masked, capsys):
    ort = pytest.importorskip("onnxruntime")
    out = tmp_path / "m.onnx"
    assert main(["export", "lenet5", "--weights", str(masked), "--out", str(out), "--latency", "--repeats", "3",
                 "--threads", "1"]) == 0
    text = _text(capsys.readouterr().out)
    assert "masked" in text and "dense ms" in text and "speedup" in text
    x = prunekit.zoo.example_input("lenet5", 1)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, _masked_model(masked)(x).numpy(), rtol=1e-4, atol=1e-5)


def test_export_of_a_shrunk_checkpoint(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    shrunk_dir = tmp_path / "s"
    assert main(["prune", "lenet5", "--structure", "channel", "--sparsity", "0.5", "--shrink", "--out",
                 str(shrunk_dir), "--latency-repeats", "2", "--latency-warmup", "0"]) == 0
    capsys.readouterr()
    weights = next(shrunk_dir.glob("*.safetensors"))
    assert main(["export", "lenet5", "--weights", str(weights), "--out", str(tmp_path / "s.onnx")]) == 0
    assert "(shrunk)" in _text(capsys.readouterr().out)
    assert main(["export", "lenet5", "--weights", str(weights), "--format", "dense", "--out",
                 str(tmp_path / "s.safetensors")]) == 2
    assert "--format: expected onnx for a shrunk checkpoint" in _text(capsys.readouterr().err)
    assert not (tmp_path / "s.safetensors").exists()


def test_sparse_converts_saves_and_the_saved_file_gives_the_same_outputs(tmp_path, masked, capsys):
    out = tmp_path / "sp"
    assert main(["sparse", "lenet5", "--weights", str(masked), "--out", str(out), "--kernel", "csr",
                 "--threads", "1", "--min-speedup", "0.001", "--repeats", "2", "--model-repeats", "2"]) == 0
    text = _text(capsys.readouterr().out)
    assert "fc1" in text and "fc2" in text and "end to end" in text
    report = json.loads((out / "report.json").read_text())
    assert {layer["name"] for layer in report["layers"]} == {"fc1", "fc2"}
    assert all(layer["choice"] == "csr" for layer in report["layers"])  # any kernel beats 0.001x dense
    loaded = load_sparse_model(prunekit.create_model("lenet5"), out / "model.sparse.safetensors").eval()
    assert type(loaded.fc1).__name__ == "SparseLinear"
    x = prunekit.zoo.example_input("lenet5", 1)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), _masked_model(masked)(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("argv, option", [
    (["sparse", "lenet5", "--weights", "W", "--out", "O", "--threads", "0"], "--threads"),
    (["sparse", "lenet5", "--weights", "W", "--out", "O", "--kernel", "fast"], "--kernel"),
    (["sparse", "lenet5", "--weights", "W", "--out", "O", "--min-speedup", "0"], "--min-speedup"),
    (["sparse", "lenet5", "--weights", "missing.safetensors", "--out", "O"], "--weights"),
    (["export", "lenet5", "--weights", "W", "--out", "x.onnx", "--format", "tflite"], "--format"),
    (["export", "lenet5", "--weights", "W", "--out", "x.onnx", "--opset", "2"], "--opset"),
    (["export", "lenet5", "--weights", "W", "--out", "x.safetensors", "--format", "dense", "--latency"],
     "--latency"),
    (["export", "resnet20", "--weights", "W", "--out", "x.onnx"], "--weights"),
    (["prune", "lenet5", "--sparsity", "0.5", "--format", "csv"], "--format"),
])
def test_bad_values_exit_2_naming_the_option(tmp_path, masked, capsys, monkeypatch, argv, option):
    monkeypatch.chdir(tmp_path)
    argv = [str(masked) if a == "W" else a for a in argv]
    assert main(argv) == 2
    err = _text(capsys.readouterr().err)
    assert f"error: {option}:" in err
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_export_without_onnxruntime_exits_2_naming_the_extra(tmp_path, masked, capsys, monkeypatch):
    import importlib

    from prunekit.export import onnx as onnx_module

    real = importlib.import_module

    def fake(name, *args):
        if name == "onnxruntime":
            raise ImportError("No module named 'onnxruntime'")
        return real(name, *args)

    monkeypatch.setattr(onnx_module.importlib, "import_module", fake)
    assert main(["export", "lenet5", "--weights", str(masked), "--out", str(tmp_path / "m.onnx")]) == 2
    err = _text(capsys.readouterr().err)
    assert "prunekit export: error:" in err and "pip install 'prunekit[onnx]'" in err
    assert not (tmp_path / "m.onnx").exists()
