"""prunekit.to_sparse and SparseLinear: same outputs as dense, the report, all or nothing, save/load."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import prunekit
from prunekit.errors import CheckpointError, InvalidParameterError, PrunekitError
from prunekit.execution import SparseLinear, load_sparse_model, save_sparse_model, to_sparse
from prunekit.execution import convert, native_kernel
from prunekit.native import missing_requirements


@pytest.fixture(scope="module")
def built():
    """The compiled kernel, built once per test session (cached by torch)."""
    missing = missing_requirements()
    if missing:
        pytest.skip("cannot build prunekit.execution's kernel here: missing " + "; ".join(missing))
    return native_kernel.kernel()


class Block(nn.Module):
    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.up = nn.Linear(width, 2 * width)
        self.down = nn.Linear(2 * width, width, bias=False)
        self.head = nn.Linear(width, 3)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.down(torch.relu(self.up(x))) + x
        return {"logits": self.head(h), "hidden": h}


def _pruned(mode: str = "reparam", sparsity: float = 0.8, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = Block().eval()
    prunekit.prune(model, sparsity, mode=mode)
    return model


def _fast(**kwargs):
    return dict(dict(repeats=2, warmup=0, model_repeats=2, threads=1), **kwargs)


@pytest.mark.parametrize("mode", ["reparam", "inplace", "permanent"])
def test_outputs_equal_dense_and_every_layer_is_reported(built, mode):
    model = _pruned(mode)
    x = torch.randn(2, 64)
    want = model(x)
    # min_speedup tiny: every kernel that runs replaces its layer, so the sparse paths are exercised
    result = to_sparse(model, x, **_fast(min_speedup=1e-9))
    got = model(x)
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-4, atol=1e-5)
    assert [layer.name for layer in result.layers] == ["up", "down", "head"]
    assert all(isinstance(getattr(model, name), SparseLinear) for name in result.converted)
    assert result.converted == ["up", "down", "head"]
    up = result.layers[0]
    assert up.shape == (128, 64) and up.rows == 2 and up.sparsity == pytest.approx(0.8, abs=0.01)
    assert set(up.kernel_ms) >= {"prunekit", "csr"} and up.dense_ms > 0
    assert result.speedup is not None and result.max_abs_error < 1e-4
    assert "end to end" in result.table() and "up" in result.table()


def test_nothing_wins_by_a_huge_margin_so_every_layer_stays_dense(built):
    model = _pruned()
    x = torch.randn(1, 64)
    result = to_sparse(model, x, **_fast(min_speedup=1e9))
    assert [layer.choice for layer in result.layers] == ["dense"] * 3
    assert all(layer.reason.startswith("no kernel faster than dense by more than 1e+09x") for layer in result.layers)
    assert all(type(m) is nn.Linear for m in (model.up, model.down, model.head))
    assert result.converted == [] and result.speedup is None


def test_layers_not_called_or_without_zeros_stay_dense(built):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 16))
    unused = nn.Linear(16, 16)
    model.add_module("unused", unused)
    model.forward = lambda x: model[2](model[1](model[0](x)))  # the unused Linear is never called
    prunekit.prune(model[0], 0.5)
    result = to_sparse(model, torch.randn(1, 16), **_fast(min_speedup=1e-9))
    reasons = {layer.name: layer.reason for layer in result.layers}
    assert reasons["unused"] == "not called by example_inputs"
    assert reasons["2"] == "no zero weights"
    assert [layer.name for layer in result.layers if layer.choice != "dense"] == ["0"]


def test_bfloat16_model_uses_the_compiled_kernel_only(built):
    model = _pruned("permanent").to(torch.bfloat16)
    x = torch.randn(1, 64, dtype=torch.bfloat16)
    want = model(x)["logits"]
    result = to_sparse(model, x, **_fast(min_speedup=1e-9))
    assert {layer.choice for layer in result.layers} == {"prunekit"}
    assert "csr: torch has no CPU CSR product for bfloat16" in result.layers[0].reason
    torch.testing.assert_close(model(x)["logits"], want, rtol=2e-2, atol=2e-2)


def test_a_failure_leaves_the_model_unchanged(built, monkeypatch):
    model = _pruned()
    before = {k: v.clone() for k, v in model.state_dict().items()}

    def broken(*_args):
        raise PrunekitError("outputs differ")

    monkeypatch.setattr(convert, "check_close", broken)
    with pytest.raises(PrunekitError, match="outputs differ"):
        to_sparse(model, torch.randn(1, 64), **_fast(min_speedup=1e-9))
    assert all(type(m) is nn.Linear for m in (model.up, model.down, model.head))
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("kwargs, message", [
    (dict(kernels="fast"), "kernels: expected 'auto' or a non-empty sequence of 'prunekit', 'csr', 'bsr', got 'fast'"),
    (dict(kernels=()), "kernels: expected 'auto' or a non-empty sequence"),
    (dict(min_speedup=0), "min_speedup: expected a number > 0, got 0"),
    (dict(threads=0), "threads: expected an int >= 1, got 0"),
    (dict(repeats=0), "repeats: expected an int >= 1, got 0"),
])
def test_bad_arguments_name_the_parameter_and_change_nothing(built, kwargs, message):
    model = _pruned()
    with pytest.raises(InvalidParameterError, match=message) as info:
        to_sparse(model, torch.randn(1, 64), **kwargs)
    assert "Fix:" in str(info.value)
    assert type(model.up) is nn.Linear
    # the fix in the message works
    to_sparse(model, torch.randn(1, 64), **_fast())


def test_model_without_linear_and_missing_inputs_are_refused(built):
    with pytest.raises(InvalidParameterError, match=r"model: expected a model with nn.Linear \(or 1x1 nn.Conv2d\) layers"):
        to_sparse(nn.Sequential(nn.ReLU()), torch.randn(1, 4))
    with pytest.raises(InvalidParameterError, match="example_inputs: expected a tensor"):
        to_sparse(_pruned(), None)


def test_no_compiler_refuses_the_named_kernel_and_auto_falls_back_to_torch(monkeypatch):
    monkeypatch.setattr(native_kernel, "_MODULE", None)
    monkeypatch.setattr(native_kernel, "missing_requirements", lambda: ["a C++ compiler ('c++' is not on PATH)"])
    model = _pruned()
    with pytest.raises(prunekit.native.NativeBuildError, match="missing a C\\+\\+ compiler"):
        to_sparse(model, torch.randn(1, 64), kernels=("prunekit",))
    assert type(model.up) is nn.Linear
    result = to_sparse(model, torch.randn(1, 64), **_fast(min_speedup=1e-9))
    assert all("prunekit" not in layer.kernel_ms for layer in result.layers)
    # a SparseLinear with the compiled kernel's layout computes with torch ops here
    torch.manual_seed(0)
    w = torch.randn(5, 9) * (torch.rand(5, 9) > 0.5)
    layer = SparseLinear.from_dense(w, torch.randn(5))
    x = torch.randn(2, 9)
    torch.testing.assert_close(layer(x), torch.nn.functional.linear(x, w, layer.bias))


@pytest.mark.parametrize("kernel", ["prunekit", "csr", "bsr"])
def test_sparse_linear_kernels_equal_dense(built, kernel):
    torch.manual_seed(1)
    w = torch.randn(32, 64)
    w.view(8, 4, 16, 4)[torch.rand(8, 1, 16, 1).expand(8, 4, 16, 4) < 0.7] = 0  # 4x4 blocks for BSR
    dense = nn.Linear(64, 32)
    dense.weight.data = w
    layer = SparseLinear.from_dense(dense, kernel=kernel, blocksize=4 if kernel == "bsr" else 0)
    x = torch.randn(3, 5, 64)
    torch.testing.assert_close(layer(x), dense(x), rtol=1e-5, atol=1e-5)
    assert torch.equal(layer.to_dense(), w)
    assert f"kernel='{kernel}'" in repr(layer)


def test_save_and_load_without_pruning_again(built, tmp_path):
    model = _pruned()
    x = torch.randn(1, 64)
    to_sparse(model, x, **_fast(min_speedup=1e-9, kernels=("prunekit", "csr")))
    want = model(x)
    path = tmp_path / "model.safetensors"
    save_sparse_model(model, path)
    torch.manual_seed(123)
    fresh = Block().eval()
    load_sparse_model(fresh, path)
    assert [type(m).__name__ for m in (fresh.up, fresh.down, fresh.head)] == ["SparseLinear"] * 3
    assert [m.kernel for m in (fresh.up, fresh.down, fresh.head)] == [m.kernel for m in (model.up, model.down, model.head)]
    for key in want:
        torch.testing.assert_close(fresh(x)[key], want[key], rtol=0, atol=0)


def test_load_refuses_another_architecture_and_other_files(built, tmp_path):
    model = _pruned()
    to_sparse(model, torch.randn(1, 64), **_fast(min_speedup=1e-9))
    path = tmp_path / "model.safetensors"
    save_sparse_model(model, path)
    other = nn.Sequential(nn.Linear(3, 3))
    with pytest.raises(InvalidParameterError, match="model: expected a model with a Linear"):
        load_sparse_model(other, path)
    assert type(other[0]) is nn.Linear
    plain = tmp_path / "plain.safetensors"
    prunekit.save_sparse(_pruned(), plain)
    with pytest.raises(CheckpointError, match="was not written by save_sparse_model"):
        load_sparse_model(Block(), plain)


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pw = nn.Conv2d(32, 48, 1)
        self.spatial = nn.Conv2d(48, 48, 3, padding=1)  # not a matrix product: stays as it is
        self.fc = nn.Linear(48, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.spatial(torch.relu(self.pw(x))).mean((2, 3)))


def test_one_by_one_convolutions_are_converted_and_saved(built, tmp_path):
    torch.manual_seed(0)
    model = ConvNet().eval()
    prunekit.prune(model, 0.8)
    x = torch.randn(2, 32, 5, 3)
    want = model(x)
    result = to_sparse(model, x, **_fast(min_speedup=1e-9))
    assert [(layer.name, layer.kind, layer.shape, layer.rows) for layer in result.layers] == [
        ("pw", "conv1x1", (48, 32), 30), ("fc", "linear", (5, 48), 2)]
    assert type(model.pw).__name__ == "SparseConv1x1" and type(model.spatial) is nn.Conv2d
    torch.testing.assert_close(model(x), want, rtol=1e-4, atol=1e-5)
    path = tmp_path / "conv.safetensors"
    save_sparse_model(model, path)
    fresh = load_sparse_model(ConvNet().eval(), path)
    assert type(fresh.pw).__name__ == "SparseConv1x1"
    torch.testing.assert_close(fresh(x), model(x), rtol=0, atol=0)


def test_sparse_linear_refuses_to_be_trained(built):
    layer = SparseLinear.from_dense(torch.eye(4))
    x = torch.randn(2, 4, requires_grad=True)
    y = layer(x)  # a forward works (e.g. behind trainable dense layers) ...
    torch.testing.assert_close(y, x.detach())
    with pytest.raises(PrunekitError, match="computes inference only"):
        y.sum().backward()  # ... a backward pass through it is refused, never silently wrong


@pytest.mark.parametrize("edit, problem", [
    (lambda sd: sd["row_ptr"].__setitem__(-1, 10**6), "row_ptr does not match"),
    (lambda sd: sd["mask"].__setitem__((0, 0), -1), "row_ptr does not match"),
    (lambda sd: sd.__setitem__("values", sd["values"][:-1]), "padding entries"),
])
def test_an_inconsistent_compressed_weight_is_refused_on_load(built, edit, problem):
    """The kernel trusts the offsets, so a state dict whose offsets contradict its mask never reaches it."""
    torch.manual_seed(0)
    w = torch.randn(6, 20) * (torch.rand(6, 20) > 0.5)
    w[0, :16] = 0  # an empty first chunk: setting all its bits adds 16 values
    source = SparseLinear.from_dense(w)
    state = {k: v.clone() for k, v in source.state_dict().items()}
    edit(state)
    target = SparseLinear(20, 6)
    with pytest.raises(CheckpointError, match=problem):
        target.load_state_dict(state)


def test_torch_prune_layout_is_read_through_its_mask(built):
    torch.manual_seed(0)
    model = Block().eval()
    torch.nn.utils.prune.l1_unstructured(model.up, "weight", amount=0.7)
    x = torch.randn(1, 64)
    want = model(x)["logits"]
    result = to_sparse(model, x, **_fast(min_speedup=1e-9, kernels=("prunekit",)))
    assert result.layers[0].sparsity == pytest.approx(0.7, abs=0.01)
    torch.testing.assert_close(model(x)["logits"], want, rtol=1e-4, atol=1e-5)


def test_hugging_face_model_with_keyword_inputs(built):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=16)
    model = transformers.BertModel(config).eval()
    prunekit.prune(model, 0.8, include="encoder.*", mode="permanent")
    inputs = {"input_ids": torch.randint(0, 50, (1, 8))}
    want = model(**inputs).last_hidden_state
    result = to_sparse(model, inputs, **_fast(min_speedup=1e-9))
    assert len(result.converted) == 12  # 6 Linears a layer; the unpruned pooler stays dense
    torch.testing.assert_close(model(**inputs).last_hidden_state, want, rtol=1e-4, atol=1e-4)
