"""``export_onnx`` of masked and shrunk models, checked in onnxruntime; ``onnx_latency``; the missing-extra error."""

from __future__ import annotations

import copy
import importlib

import numpy as np
import pytest
import torch
from torch import nn

import prunekit
from prunekit.errors import InvalidParameterError
from prunekit.export import MissingDependencyError, OnnxExportError, export_onnx, onnx_latency
from prunekit.export import onnx as onnx_module

from conftest import make_tiny

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


def _run(path, x: torch.Tensor) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


@pytest.mark.parametrize("mode", ["reparam", "inplace"])
def test_a_masked_model_exports_its_effective_weights_and_stays_masked(tmp_path, tiny_input, mode):
    model = make_tiny(0)
    prunekit.prune(model, 0.7, mode=mode)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    hooks = {name: dict(m._forward_pre_hooks) for name, m in model.named_modules()}
    result = export_onnx(model, tiny_input, tmp_path / "m.onnx")
    with torch.no_grad():
        expected = model.eval()(tiny_input).numpy()
    np.testing.assert_allclose(_run(result.path, tiny_input), expected, rtol=1e-4, atol=1e-5)
    assert result.max_abs_error <= 1e-4
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(str(result.path)).graph.initializer}
    fc1 = weights["fc1.weight"]
    assert np.array_equal(fc1 == 0, ~before["fc1.weight_mask"].bool().numpy())  # zeros in place, only there
    # the model is left as it was: masks, hooks, values, training mode
    assert sorted(model.state_dict()) == sorted(before)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert {name: dict(m._forward_pre_hooks) for name, m in model.named_modules()} == hooks


def test_a_shrunk_model_exports_smaller_with_a_dynamic_batch_and_is_timed_in_onnxruntime(tmp_path):
    torch.manual_seed(0)
    dense = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)).eval()
    x = torch.randn(2, 64)
    shrunk = copy.deepcopy(dense)
    prunekit.structural_prune(shrunk, x, sparsity=0.75)
    assert shrunk[0].out_features < 256
    a = export_onnx(dense, x, tmp_path / "dense.onnx")
    b = export_onnx(shrunk, x, tmp_path / "shrunk.onnx", dynamic_batch=True)
    assert b.bytes < a.bytes / 2
    x5 = torch.randn(5, 64)  # the batch dimension is dynamic
    with torch.no_grad():
        np.testing.assert_allclose(_run(b.path, x5), shrunk(x5).numpy(), rtol=1e-4, atol=1e-5)
    times = onnx_latency({"dense": a.path, "shrunk": b.path}, x, threads=1, repeats=5, warmup=1)
    assert list(times) == ["dense", "shrunk"] and all(t > 0 for t in times.values())


class _DriftingModel(nn.Module):
    """Gives another output on every call: what the exporter traces differs from the reference."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.fc(x) * self.calls


def test_outputs_that_differ_raise_and_leave_no_file(tmp_path):
    with pytest.raises(OnnxExportError, match="differs from the model"):
        export_onnx(_DriftingModel(), torch.randn(2, 4), tmp_path / "bad.onnx")
    assert list(tmp_path.iterdir()) == []


def test_without_onnxruntime_the_error_names_the_extra(tmp_path, monkeypatch):
    real = importlib.import_module

    def fake(name, *args):
        if name == "onnxruntime":
            raise ImportError("No module named 'onnxruntime'")
        return real(name, *args)

    monkeypatch.setattr(onnx_module.importlib, "import_module", fake)
    with pytest.raises(MissingDependencyError, match=r"not installed: onnxruntime.*prunekit\[onnx\]"):
        export_onnx(make_tiny(0), torch.randn(1, 8, 4, 4), tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments_name_the_parameter(tmp_path):
    model = make_tiny(0)
    x = torch.randn(1, 8, 4, 4)
    for kwargs, param in (({"opset": 3}, "opset"), ({"rtol": -1.0}, "rtol"), ({"atol": "x"}, "atol")):
        with pytest.raises(InvalidParameterError, match=param):
            export_onnx(model, x, tmp_path / "m.onnx", **kwargs)
    with pytest.raises(InvalidParameterError, match="example_inputs"):
        export_onnx(model, 3, tmp_path / "m.onnx")
    with pytest.raises(InvalidParameterError, match="models"):
        onnx_latency({"dense": tmp_path / "missing.onnx"}, x)


def test_a_language_model_with_heads_and_mlp_neurons_removed_exports(tmp_path):
    torch.manual_seed(0)
    model = prunekit.create_model("gpt_tiny").eval()
    prunekit.prune_heads(model, sparsity=0.5)
    prunekit.prune_mlp_neurons(model, sparsity=0.5)
    tokens = prunekit.zoo.example_input("gpt_tiny", 1, shape=(1, 16))
    result = export_onnx(model, tokens, tmp_path / "gpt.onnx")
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: tokens.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, model(tokens).numpy(), rtol=1e-4, atol=1e-4)
