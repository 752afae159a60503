"""prunekit.measure: parameters, MACs, size, latency, accuracy and comparison."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import prunekit
from conftest import assert_unchanged, make_tiny, snapshot
from prunekit.measure import (
    Comparison,
    compare,
    count_macs,
    count_parameters,
    dense_state_dict,
    evaluate_accuracy,
    evaluate_perplexity,
    measure_latency,
    model_size,
)

MODES = ["reparam", "inplace"]


def linear_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


# -- parameters --------------------------------------------------------------------


@pytest.mark.parametrize("state", ["reparam", "inplace", "permanent"])
def test_count_parameters_in_every_state(state):
    model = make_tiny(0)
    dense = count_parameters(model)
    assert dense.params == sum(p.numel() for p in model.parameters())
    assert dense.nonzero == dense.params
    prunekit.prune(model, 0.5, mode="inplace" if state == "inplace" else "reparam")
    if state == "permanent":
        prunekit.make_permanent(model)
    counts = count_parameters(model)
    weights = 8 * 8 * 9 + 128 * 16 + 16 * 8
    assert counts.params == dense.params
    assert counts.nonzero == dense.params - weights // 2
    assert counts.zeros == weights // 2
    assert counts.sparsity == pytest.approx(weights / 2 / dense.params)
    assert counts.to_dict()["nonzero"] == counts.nonzero


@pytest.mark.parametrize("mode", MODES)
def test_count_parameters_agrees_with_sparsity_report(mode, lenet):
    prunekit.prune(lenet, 0.7, scope="global", mode=mode)
    counts = count_parameters(lenet)
    report = prunekit.sparsity_report(lenet)
    assert (counts.params, counts.nonzero) == (report.model_params, report.model_nonzero)


def test_count_parameters_counts_tied_weights_once():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 10, bias=False))
    model[1].weight = model[0].weight
    assert count_parameters(model).params == sum(p.numel() for p in model.parameters()) == 40


def test_count_parameters_sees_plain_zeros():
    model = nn.Linear(4, 4, bias=False)
    with torch.no_grad():
        model.weight.zero_()
        model.weight[0, 0] = 1.0
    counts = count_parameters(model)
    assert (counts.params, counts.nonzero) == (16, 1)


# -- MACs: exact formulas ---------------------------------------------------------------


@pytest.mark.parametrize(
    "layer, shape, expected",
    [
        # N · H_out · W_out · C_out · (C_in / groups) · kh · kw
        (nn.Conv2d(3, 8, 3, padding=1), (2, 3, 10, 10), 2 * 10 * 10 * 8 * 3 * 9),
        (nn.Conv2d(4, 6, 3, stride=2), (1, 4, 9, 9), 1 * 4 * 4 * 6 * 4 * 9),
        (nn.Conv2d(8, 8, 3, padding=1, groups=8), (1, 8, 6, 6), 6 * 6 * 8 * 1 * 9),  # depthwise
        (nn.Conv2d(8, 12, 3, groups=4), (2, 8, 7, 7), 2 * 5 * 5 * 12 * 2 * 9),  # grouped
        (nn.Conv2d(4, 4, 1), (3, 4, 5, 5), 3 * 25 * 4 * 4),
        (nn.Conv1d(3, 5, 4), (2, 3, 10), 2 * 7 * 5 * 3 * 4),
        (nn.Conv3d(2, 3, 2), (1, 2, 4, 4, 4), 27 * 3 * 2 * 8),
        (nn.Conv2d(3, 8, 3), (3, 6, 6), 4 * 4 * 8 * 3 * 9),  # unbatched input
        # transposed: N · H_in · W_in · C_in · (C_out / groups) · kh · kw
        (nn.ConvTranspose2d(4, 6, 3, stride=2), (1, 4, 5, 5), 25 * 4 * 6 * 9),
        (nn.ConvTranspose1d(4, 6, 3, groups=2), (2, 4, 7), 2 * 7 * 4 * 3 * 3),
        # Linear: Π leading dims · in · out
        (nn.Linear(5, 7), (3, 5), 3 * 5 * 7),
        (nn.Linear(5, 7), (2, 3, 5), 2 * 3 * 5 * 7),
        (nn.Linear(5, 7), (5,), 5 * 7),
    ],
)
def test_macs_match_hand_formulas(layer, shape, expected):
    torch.manual_seed(0)
    with torch.no_grad():  # weights made here, none zero: the layer was built at collection, under any seed
        for p in layer.parameters():
            p.uniform_(0.1, 1.0)
    report = count_macs(layer, input_shape=shape)
    assert report.dense_macs == expected
    assert report.effective_macs == expected
    assert report[""].params == sum(p.numel() for p in layer.parameters())
    assert report[""].calls == 1


def test_macs_of_a_network_are_the_sum_of_its_layers(tiny, tiny_input):
    report = count_macs(tiny, tiny_input)
    conv = 4 * 4 * 4 * 8 * 8 * 9
    assert report["conv"].dense_macs == conv
    assert report["fc1"].dense_macs == 4 * 128 * 16
    assert report["fc2"].dense_macs == 4 * 16 * 8
    assert report.dense_macs == conv + 4 * 128 * 16 + 4 * 16 * 8
    assert [r.name for r in report.rows] == ["conv", "fc1", "fc2"]
    assert report.params == sum(p.numel() for p in tiny.parameters())


def test_example_input_forms_agree():
    torch.manual_seed(0)

    class Two(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(4, 3)
            self.b = nn.Linear(6, 3)

        def forward(self, x, y):
            return self.a(x) + self.b(y)

    model = Two()
    x, y = torch.randn(2, 4), torch.randn(2, 6)
    expected = 2 * 4 * 3 + 2 * 6 * 3
    assert count_macs(model, (x, y)).dense_macs == expected
    assert count_macs(model, {"x": x, "y": y}).dense_macs == expected


def test_shared_module_is_counted_per_call():
    layer = nn.Linear(4, 4)

    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = layer

        def forward(self, x):
            return self.layer(self.layer(x))

    report = count_macs(Twice(), input_shape=(3, 4))
    assert report["layer"].calls == 2
    assert report.dense_macs == 2 * 3 * 16


def test_hf_conv1d_by_class_name():
    class Conv1D(nn.Module):  # the layout of transformers.pytorch_utils.Conv1D
        def __init__(self, nf: int, nx: int) -> None:
            super().__init__()
            self.nf = nf
            self.weight = nn.Parameter(torch.randn(nx, nf))
            self.bias = nn.Parameter(torch.zeros(nf))

        def forward(self, x):
            out = torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight)
            return out.reshape(*x.shape[:-1], self.nf)

    torch.manual_seed(0)
    layer = Conv1D(12, 5)
    report = count_macs(layer, input_shape=(2, 3, 5))
    assert report.dense_macs == 2 * 3 * 5 * 12  # the addmm inside is not counted again
    assert len(report.rows) == 1 and report.rows[0].type == "Conv1D"
    prunekit.prune(layer, 0.5, mode="inplace")
    assert count_macs(layer, input_shape=(2, 3, 5)).effective_macs == 2 * 3 * 5 * 12 // 2


def test_real_hf_conv1d():
    pytorch_utils = pytest.importorskip("transformers.pytorch_utils")
    torch.manual_seed(0)
    layer = pytorch_utils.Conv1D(12, 5)  # weight (in=5, out=12)
    assert tuple(layer.weight.shape) == (5, 12)
    assert count_macs(layer, input_shape=(2, 3, 5)).dense_macs == 2 * 3 * 5 * 12


def test_norms_counted_elementwise_or_excluded():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.GroupNorm(2, 4), nn.Flatten(), nn.LayerNorm(64))
    report = count_macs(model, input_shape=(2, 3, 4, 4))
    conv = 2 * 16 * 4 * 3
    assert report["1"].dense_macs == report["2"].dense_macs == report["4"].dense_macs == 2 * 4 * 16
    assert report.dense_macs == conv + 3 * 2 * 4 * 16
    without = count_macs(model, input_shape=(2, 3, 4, 4), norms=False)
    assert without.dense_macs == conv
    assert without["1"].dense_macs == 0


def test_embedding_is_zero_macs():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(50, 8), nn.Linear(8, 50))
    report = count_macs(model, torch.randint(0, 50, (2, 6)))
    assert report["0"].dense_macs == 0 and report["0"].params == 400
    assert report.dense_macs == 2 * 6 * 8 * 50


def test_model_and_training_flags_unchanged_by_counting(tiny, tiny_input):
    prunekit.prune(tiny, 0.5, mode="reparam")
    tiny.train()
    before = snapshot(tiny)
    count_macs(tiny, tiny_input)
    assert_unchanged(tiny, before)
    assert all(m.training for m in tiny.modules())
    assert not any(m._forward_hooks for m in tiny.modules())


# -- MACs: attention ---------------------------------------------------------------------


def mha_macs(N: int, L: int, S: int, E: int) -> int:
    """q, k, v projections + QKᵀ + AV + output projection (heads do not change it)."""
    return N * L * E * E + 2 * N * S * E * E + 2 * N * L * S * E + N * L * E * E


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("need_weights", [True, False])
def test_multihead_attention(batch_first, need_weights):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, 4, batch_first=batch_first)
    q = torch.randn(2, 5, 16) if batch_first else torch.randn(5, 2, 16)
    kv = torch.randn(2, 7, 16) if batch_first else torch.randn(7, 2, 16)

    class Wrap(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = mha

        def forward(self, q, kv):
            return self.attn(q, kv, kv, need_weights=need_weights)[0]

    report = count_macs(Wrap(), (q, kv))
    assert report.dense_macs == mha_macs(2, 5, 7, 16)  # SDPA/bmm inside are not counted twice
    assert [r.name for r in report.rows] == ["attn"]
    assert report["attn"].params == sum(p.numel() for p in mha.parameters())


def test_multihead_attention_effective_uses_projection_nonzeros():
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, 2, batch_first=True)
    prunekit.prune(mha, 0.5, mode="inplace", types="all", params=["in_proj_weight", "weight"])
    x = torch.randn(3, 4, 16)
    report = count_macs(mha, (x, x, x))
    dense = mha_macs(3, 4, 4, 16)
    attention = 2 * 3 * 4 * 4 * 16
    assert report.dense_macs == dense
    in_nnz = int(torch.count_nonzero(mha.in_proj_weight))
    out_nnz = int(torch.count_nonzero(mha.out_proj.weight))
    assert report.effective_macs == 3 * 4 * in_nnz + attention + 3 * 4 * out_nnz
    assert report.effective_macs == (dense - attention) // 2 + attention


def test_scaled_dot_product_attention_and_matmul():
    class Attn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.qkv = nn.Linear(16, 48)

        def forward(self, x):
            B, T, _ = x.shape
            q, k, v = self.qkv(x).view(B, T, 3, 4, 4).permute(2, 0, 3, 1, 4)
            fused = F.scaled_dot_product_attention(q, k, v)
            manual = torch.softmax(q @ k.transpose(-2, -1) / 2.0, -1) @ v
            return fused + manual

    torch.manual_seed(0)
    report = count_macs(Attn(), input_shape=(2, 5, 16))
    B, H, T, D = 2, 4, 5, 4
    sdpa = B * H * T * T * D + B * H * T * T * D  # QKᵀ + AV
    assert report["[sdpa]"].dense_macs == sdpa
    assert report["[matmul]"].dense_macs == sdpa  # the same two products, written with @
    assert report["[matmul]"].calls == 2
    assert report["qkv"].dense_macs == B * T * 16 * 48
    assert report.effective_macs == report.dense_macs
    assert count_macs(Attn(), input_shape=(2, 5, 16), matmul=False).dense_macs == B * T * 16 * 48 + sdpa


def test_transformer_encoder_layer_is_counted_through_its_modules():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 4, 32, batch_first=True, dropout=0.0)
    report = count_macs(layer, input_shape=(2, 5, 16))
    N, L, E = 2, 5, 16
    expected = mha_macs(N, L, L, E) + 2 * N * L * E * 32 + 2 * N * L * E  # + ffn + two LayerNorms
    assert report.dense_macs == expected
    assert torch.backends.mha.get_fastpath_enabled()  # restored


# -- MACs: effective under pruning --------------------------------------------------------


@pytest.mark.parametrize("state", ["reparam", "inplace", "permanent"])
def test_effective_macs_half_at_half_sparsity_linear(state):
    model = linear_model()
    x = torch.randn(3, 64)
    dense = count_macs(model, x).dense_macs
    prunekit.prune(model, 0.5, mode="inplace" if state == "inplace" else "reparam")
    if state == "permanent":
        prunekit.make_permanent(model)
    report = count_macs(model, x)
    assert report.dense_macs == dense
    assert report.effective_macs * 2 == dense
    assert report.ratio == 0.5
    assert report.nonzero < report.params


@pytest.mark.parametrize("mode", MODES)
def test_effective_macs_conv_network(mode, tiny, tiny_input):
    prunekit.prune(tiny, 0.5, mode=mode)
    report = count_macs(tiny, tiny_input)
    for name, module in (("conv", tiny.conv), ("fc1", tiny.fc1), ("fc2", tiny.fc2)):
        row = report[name]
        nnz = int(torch.count_nonzero(module.weight_orig * module.weight_mask if mode == "reparam" else module.weight))
        positions = row.dense_macs // module.weight.numel()
        assert row.effective_macs == positions * nnz
    assert report.effective_macs * 2 == report.dense_macs


def test_effective_macs_follow_stale_reparam_weight():
    """The count uses orig * mask now, not the attribute left by the last forward."""
    model = linear_model()
    prunekit.prune(model, 0.5)
    with torch.no_grad():
        model[0].weight_orig.zero_()
    report = count_macs(model, input_shape=(1, 64))
    assert report["0"].effective_macs == 0


def test_mac_report_json_and_table(tmp_path, tiny, tiny_input):
    report = count_macs(tiny, tiny_input)
    path = tmp_path / "macs.json"
    text = report.to_json(path)
    data = json.loads(path.read_text())
    assert data == json.loads(text)
    assert data["total"]["dense_macs"] == report.dense_macs
    assert [m["name"] for m in data["modules"]] == ["conv", "fc1", "fc2"]
    table = report.table()
    assert "fc1" in table and f"{report.dense_macs:,}" in table


# -- size -----------------------------------------------------------------------------


def big_linear(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 256))


@pytest.mark.parametrize("mode", MODES)
def test_size_at_90_percent(mode):
    model = big_linear()
    dense_size = model_size(model)
    prunekit.prune(model, 0.9, mode=mode)
    size = model_size(model)
    assert size.dense_bytes == dense_size.dense_bytes  # masks are not part of the dense model
    assert size.compressed_bytes < size.dense_bytes
    assert 0.13 <= size.ratio <= 0.2
    assert size.to_dict()["ratio"] == size.ratio


def test_size_torch_format_and_state_dict_input():
    model = big_linear()
    prunekit.prune(model, 0.9)
    by_model = model_size(model, dense_format="torch")
    by_state = model_size(model.state_dict(), dense_format="torch")
    assert by_model.dense_bytes >= 4 * (2 * 256 * 256)
    assert by_model.compressed_bytes == by_state.compressed_bytes
    assert by_model.dense_format == "torch"


@pytest.mark.parametrize("mode", MODES)
def test_dense_state_dict_is_the_plain_layout(mode, tiny, tiny_input):
    plain = copy.deepcopy(tiny)
    prunekit.prune(tiny, 0.5, mode=mode)
    dense = dense_state_dict(tiny)
    assert sorted(dense) == sorted(plain.state_dict())
    plain.load_state_dict(dense)
    with torch.no_grad():
        assert torch.allclose(plain(tiny_input), tiny(tiny_input))


# -- latency ---------------------------------------------------------------------------


def test_latency_positive_and_threads_restored(tiny, tiny_input):
    before = torch.get_num_threads()
    tiny.train()
    result = measure_latency(tiny, tiny_input, warmup=1, repeats=5, threads=1)
    assert torch.get_num_threads() == before
    assert result.threads == 1
    assert result.batch_size == 4 and result.repeats == 5 and result.warmup == 1
    assert 0 < result.p10_ms <= result.median_ms <= result.p90_ms
    assert result.mean_ms > 0 and result.min_ms > 0 and result.throughput > 0
    assert tiny.training


def test_latency_default_threads_and_stated_batch(tiny, tiny_input):
    result = measure_latency(tiny, tiny_input, warmup=0, repeats=2, batch_size=7)
    assert result.threads == torch.get_num_threads()
    assert result.batch_size == 7
    assert set(result.to_dict()) >= {"median_ms", "p10_ms", "p90_ms", "mean_ms", "threads", "batch_size", "repeats"}


def test_latency_leaves_reparam_model_trainable(tiny, tiny_input):
    prunekit.prune(tiny, 0.5)
    measure_latency(tiny, tiny_input, warmup=0, repeats=1)
    assert not tiny.conv.weight.is_inference()
    tiny(tiny_input).sum().backward()
    assert tiny.conv.weight_orig.grad is not None


# -- accuracy and perplexity -----------------------------------------------------------------


def identity_classifier() -> nn.Module:
    model = nn.Linear(4, 4)
    with torch.no_grad():
        model.weight.copy_(torch.eye(4))
        model.bias.zero_()
    return model


def synthetic_batches(n_batches: int = 3, batch: int = 8) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(3)
    out = []
    for _ in range(n_batches):
        x = torch.randn(batch, 4, generator=g)
        out.append((x, x.argmax(1)))
    return out


def test_accuracy_of_a_perfect_model():
    batches = synthetic_batches()
    result = evaluate_accuracy(identity_classifier(), batches)
    assert result.accuracy == 1.0
    assert result.samples == 24 and result.batches == 3
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    assert result.loss == pytest.approx(float(F.cross_entropy(x, y)), rel=1e-6)


def test_accuracy_with_a_dataloader_and_wrong_model():
    batches = synthetic_batches()
    dataset = torch.utils.data.TensorDataset(torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches]))
    loader = torch.utils.data.DataLoader(dataset, batch_size=5)
    model = identity_classifier()
    with torch.no_grad():
        model.weight.neg_()  # argmin instead of argmax
    result = evaluate_accuracy(model, loader)
    assert result.accuracy == 0.0 and result.samples == 24 and result.batches == 5


def test_perplexity_of_uniform_and_of_perfect_lm():
    V = 11

    class Uniform(nn.Module):
        def forward(self, x):
            return torch.zeros(*x.shape, V)

    g = torch.Generator().manual_seed(4)
    batches = [(torch.randint(0, V, (2, 6), generator=g), torch.randint(0, V, (2, 6), generator=g)) for _ in range(2)]
    result = evaluate_perplexity(Uniform(), batches)
    assert result.perplexity == pytest.approx(V)
    assert result.loss == pytest.approx(math.log(V))
    assert result.tokens == 24

    class Oracle(nn.Module):
        def forward(self, x):
            return 50.0 * F.one_hot(x, V).float()

    copy_batches = [(x, x) for x, _ in batches]
    assert evaluate_perplexity(Oracle(), copy_batches).perplexity == pytest.approx(1.0)


# -- compare ----------------------------------------------------------------------------------


def test_compare_rows_and_ratios(tmp_path):
    dense = linear_model()
    pruned = prunekit.prune(copy.deepcopy(dense), 0.5)
    x = torch.randn(4, 64)
    g = torch.Generator().manual_seed(5)
    loader = [(torch.randn(8, 64, generator=g), torch.randint(0, 10, (8,), generator=g)) for _ in range(2)]
    result = compare(dense, pruned, x, loader=loader, warmup=0, repeats=2)
    assert isinstance(result, Comparison)
    d, p = result.rows
    assert (d.name, p.name) == ("dense", "pruned")
    assert d.params == p.params == count_parameters(dense).params
    assert p.nonzero == count_parameters(pruned).nonzero
    assert d.dense_macs == p.dense_macs == count_macs(dense, x).dense_macs
    assert result.ratios["effective_macs"] == 0.5
    assert result.ratios["dense_macs"] == 1.0
    for name, ratio in result.ratios.items():
        a, b = getattr(d, name), getattr(p, name)
        assert ratio == (None if a is None or b is None or a == 0 else b / a), name
    assert p.bytes_compressed < d.bytes_compressed
    assert d.latency_ms > 0 and p.latency_ms > 0 and result.speedup > 0
    assert 0.0 <= d.accuracy <= 1.0 and d.loss > 0 and p.loss > 0
    assert d.perplexity is None
    path = tmp_path / "out" / "compare.json"
    text = result.to_json(path)
    assert json.loads(path.read_text()) == json.loads(text) == json.loads(json.dumps(result.to_dict()))
    table = result.table()
    assert "effective_macs" in table and "pruned" in table and "0.500" in table


def test_compare_without_latency_size_or_loader():
    dense = linear_model()
    pruned = prunekit.prune(copy.deepcopy(dense), 0.5, mode="inplace")
    result = compare(dense, pruned, torch.randn(2, 64), latency=False, size=False)
    assert result.pruned.latency_ms is None and result.ratios["latency_ms"] is None
    assert result.pruned.bytes_dense is None and result.pruned.accuracy is None
    assert result.speedup is None
    assert "latency_ms" not in result.table()


def test_compare_perplexity_metric():
    V = 7
    torch.manual_seed(0)
    dense = nn.Sequential(nn.Embedding(V, 16), nn.Linear(16, V))
    pruned = prunekit.prune(copy.deepcopy(dense), 0.5)
    x = torch.randint(0, V, (2, 5))
    result = compare(dense, pruned, x, loader=[(x, x)], metric="perplexity", latency=False)
    assert result.dense.perplexity > 1 and result.pruned.perplexity > 1
    assert result.ratios["perplexity"] == pytest.approx(result.pruned.perplexity / result.dense.perplexity)


# -- bad inputs --------------------------------------------------------------------------------


def _raises(param, call):
    with pytest.raises(prunekit.InvalidParameterError) as info:
        call()
    assert info.value.param == param, str(info.value)
    assert str(info.value).startswith(f"{param}: expected")
    return info.value


def test_bad_inputs_raise_invalid_parameter_error(tiny, tiny_input):
    before = snapshot(tiny)
    _raises("model", lambda: count_parameters(tiny.state_dict()))
    _raises("model", lambda: count_macs("model", tiny_input))
    _raises("example_input", lambda: count_macs(tiny))
    _raises("example_input", lambda: count_macs(tiny, 3.0))
    _raises("input_shape", lambda: count_macs(tiny, tiny_input, input_shape=(1, 8, 4, 4)))
    _raises("input_shape", lambda: count_macs(tiny, input_shape=(1, -8, 4, 4)))
    _raises("input_shape", lambda: count_macs(tiny, input_shape="1x8x4x4"))
    _raises("norms", lambda: count_macs(tiny, tiny_input, norms="yes"))
    _raises("dense_format", lambda: model_size(tiny, dense_format="onnx"))
    _raises("model", lambda: model_size(3))
    _raises("warmup", lambda: measure_latency(tiny, tiny_input, warmup=-1))
    _raises("repeats", lambda: measure_latency(tiny, tiny_input, repeats=0))
    _raises("threads", lambda: measure_latency(tiny, tiny_input, threads=0))
    _raises("batch_size", lambda: measure_latency(tiny, tiny_input, batch_size=2.5))
    _raises("example_input", lambda: measure_latency(tiny, None))
    _raises("pruned", lambda: compare(tiny, tiny, tiny_input))
    other = make_tiny(1)
    _raises("metric", lambda: compare(tiny, other, tiny_input, metric="f1"))
    _raises("names", lambda: compare(tiny, other, tiny_input, names=("a", "a")))
    _raises("repeats", lambda: compare(tiny, other, tiny_input, repeats=0))
    _raises("example_input", lambda: compare(tiny, other, None))
    assert_unchanged(tiny, before)
    assert torch.get_num_threads() >= 1


def test_bad_data_raises_invalid_parameter_error():
    model = identity_classifier()
    x = torch.randn(3, 4)
    _raises("data", lambda: evaluate_accuracy(model, 5))
    _raises("data", lambda: evaluate_accuracy(model, x))
    _raises("data", lambda: evaluate_accuracy(model, []))
    _raises("data", lambda: evaluate_accuracy(model, [(x,)]))
    _raises("data", lambda: evaluate_accuracy(model, [(x, torch.zeros(4, dtype=torch.long))]))
    _raises("device", lambda: evaluate_accuracy(model, [(x, x.argmax(1))], device="nowhere"))
    _raises("model", lambda: evaluate_perplexity(model, [(x, x.argmax(1))]))
