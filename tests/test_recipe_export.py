"""A recipe's ``export: {onnx: true, dense: true}``: every run also written as ONNX (checked in
onnxruntime) and as plain dense safetensors; resumed runs keep them; refused where it cannot be met."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import prunekit
from prunekit.errors import InvalidParameterError
from prunekit.recipes import parse_recipe
from prunekit.runner import Runner

RECIPE = """\
title: exports
model: {name: lenet_300_100}
data: {name: mnist_embedded, limit_train: 32, limit_test: 16, batch_size: 16, kwargs: {normalize: mnist}}
train: {epochs: 1, lr: 0.05}
runs:
  - name: half
    prune: {sparsity: 0.5}
finetune: {epochs: 1, lr: 0.01}
export: {checkpoint: true, permanent: false, onnx: true, dense: true}
"""


def test_each_run_is_also_written_as_onnx_and_plain_dense(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    out = tmp_path / "out"
    runner = Runner(parse_recipe(RECIPE, source="r.yaml", base_dir="."), out)
    result = runner.run()
    entry = next(e for e in result["runs"] if e["name"] == "half")
    onnx_file, dense_file = out / "checkpoints" / "half.onnx", out / "checkpoints" / "half.dense.safetensors"
    assert onnx_file.is_file() and dense_file.is_file()
    assert entry["exports"] == {"onnx": "checkpoints/half.onnx", "dense": "checkpoints/half.dense.safetensors"}
    masked = prunekit.create_model("lenet_300_100").eval()
    prunekit.load_pruned_state_dict(masked, prunekit.load_sparse(out / "checkpoints" / "half.safetensors"))
    plain = prunekit.create_model("lenet_300_100").eval()
    plain.load_state_dict(load_file(str(dense_file)))
    x = prunekit.zoo.example_input("lenet_300_100", 1)
    with torch.no_grad():
        assert torch.equal(plain(x), masked(x))
        expected = masked(x).numpy()
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    before = onnx_file.read_bytes()
    again = Runner(parse_recipe(RECIPE, source="r.yaml", base_dir="."), out)
    again.run()
    assert "half" in again.skipped and onnx_file.read_bytes() == before  # resumed, not recomputed
    onnx_file.unlink()
    third = Runner(parse_recipe(RECIPE, source="r.yaml", base_dir="."), out)
    third.run()
    assert "half" in third.computed and onnx_file.is_file()  # a missing export is made again


def test_dense_is_refused_for_a_run_that_shrinks():
    text = RECIPE.replace("    prune: {sparsity: 0.5}", "    shrink: {sparsity: 0.5}")
    with pytest.raises(InvalidParameterError, match="dense"):
        parse_recipe(text, source="r.yaml", base_dir=".")


def test_recipes_without_the_new_keys_keep_their_fingerprint():
    plain = RECIPE.replace(", onnx: true, dense: true", "")
    off = RECIPE.replace("onnx: true, dense: true", "onnx: false, dense: false")
    a = parse_recipe(plain, source="r.yaml", base_dir=".")
    b = parse_recipe(off, source="r.yaml", base_dir=".")
    assert a.fingerprint() == b.fingerprint()
    assert "onnx" not in a.to_dict()["export"]
    assert parse_recipe(RECIPE, source="r.yaml", base_dir=".").to_dict()["export"]["onnx"] is True
