"""Every public path runs on the model's device: each test runs on the devices present (``cpu``;
``cuda`` where available, marked ``cuda``), checks that every parameter, mask and buffer stays on
the model's device, and that the result equals the CPU result where the computation is exact."""

from __future__ import annotations


import pytest
import torch
from torch import nn

import prunekit
from prunekit.errors import PrunekitError
from prunekit.oneshot import to_semi_structured
from prunekit.oneshot.semi_structured import semi_structured_available

from conftest import HAS_CUDA, TinyNet, make_tiny

VOCAB = 64


@pytest.fixture(autouse=True)
def _exact_cuda_math():
    """No TF32 on CUDA (cuDNN convolutions use it by default): CUDA results are compared with CPU ones.
    Untouched where there is no CUDA (torch's cuBLAS settings object may not hold the attribute then)."""
    if not HAS_CUDA:
        yield
        return
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def runs(device: torch.device) -> list[torch.device]:
    """The devices to run a path on: the CPU (the reference) and ``device`` (once when it is the CPU)."""
    return [device] if device.type == "cpu" else [torch.device("cpu"), device]


def assert_on(model: nn.Module, device: torch.device) -> None:
    """Every parameter and buffer (masks included) of ``model`` is on ``device``."""
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        assert tensor.device.type == device.type, f"{name} is on {tensor.device}, the model on {device}"


def masks_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: buf.detach().cpu() for name, buf in model.named_buffers() if name.endswith("_mask")}


def state_cpu(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def tiny_input(device: torch.device | str = "cpu") -> torch.Tensor:
    return torch.randn(4, 8, 4, 4, generator=torch.Generator().manual_seed(1)).to(device)


def gpt(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return prunekit.create_model("gpt_tiny", vocab_size=VOCAB, n_layer=2, n_embd=32, n_head=4, block_size=64).eval()


def tokens(n: int = 8, t: int = 16) -> torch.Tensor:
    return torch.randint(0, VOCAB, (n, t), generator=torch.Generator().manual_seed(1))


PRUNE_CASES = [
    ("element", "reparam", "local"), ("element", "inplace", "global"), ("element", "reparam", "global"),
    ("nm", "reparam", "local"), ("nm", "inplace", "local"),
    ("channel", "reparam", "local"), ("channel", "inplace", "global"),
]


@pytest.mark.parametrize("structure, mode, scope", PRUNE_CASES, ids=["-".join(c) for c in PRUNE_CASES])
def test_prune_keeps_masks_on_the_model_device_and_equals_cpu(device, structure, mode, scope):
    kwargs = dict(structure=prunekit.NM(2, 4), sparsity=0.5) if structure == "nm" else \
        dict(structure=structure, sparsity=0.5 if structure == "element" else 0.25)
    reference = prunekit.prune(make_tiny(0), mode=mode, scope=scope, **kwargs)
    model = prunekit.prune(make_tiny(0).to(device), mode=mode, scope=scope, **kwargs)
    assert_on(model, device)
    mine, ref = masks_of(model), masks_of(reference)
    assert mine.keys() == ref.keys() and mine
    for name in ref:
        assert torch.equal(mine[name], ref[name]), name
    with torch.no_grad():
        torch.testing.assert_close(model(tiny_input(device)).cpu(), reference(tiny_input()), rtol=1e-4, atol=1e-5)


def test_pruner_steps_a_schedule_on_the_model_device(device):
    schedule = prunekit.create_schedule("agp", final=0.75, end=3)
    results = []
    for dev in runs(device):
        model = make_tiny(0).to(dev)
        pruner = prunekit.Pruner(model, scope="global")
        levels = []
        for t in range(5):
            level = schedule.sparsity_at(t)
            if level is not None:
                pruner.step(level)
                levels.append(pruner.report().sparsity)
        assert_on(model, torch.device(dev))
        results.append((levels, masks_of(model)))
    (levels_cpu, masks_cpu), (levels_dev, masks_dev) = results[0], results[-1]
    assert levels_dev == pytest.approx(levels_cpu) and levels_dev[-1] == pytest.approx(0.75, abs=1e-4)
    assert all(torch.equal(masks_dev[k], masks_cpu[k]) for k in masks_cpu)


def test_inplace_masks_survive_sgd_steps_on_the_model_device(device):
    from prunekit.fused_sgd import FUSE_MIN_NUMEL

    outs = []
    for dev in runs(device):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(300, 256), nn.ReLU(), nn.Linear(256, 8)).to(dev)
        assert model[0].weight.numel() >= FUSE_MIN_NUMEL  # the fused masked update on the CPU, plain SGD elsewhere
        prunekit.prune(model, 0.7, mode="inplace")
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
        x = torch.randn(16, 300, generator=torch.Generator().manual_seed(2)).to(dev)
        for _ in range(3):
            optimizer.zero_grad()
            model(x).square().mean().backward()
            optimizer.step()
        assert_on(model, torch.device(dev))
        for layer in (model[0], model[2]):
            assert bool((layer.weight[layer.weight_mask == 0] == 0).all())
        outs.append({k: v.detach().cpu() for k, v in model.state_dict().items()})
    for key in outs[0]:
        torch.testing.assert_close(outs[-1][key], outs[0][key], rtol=1e-4, atol=1e-6)


def test_apply_masks_moves_cpu_masks_to_the_parameter_and_make_permanent_stays(device):
    model = make_tiny(0).to(device)
    targets = prunekit.select_targets(model)
    gen = torch.Generator().manual_seed(3)
    keeps = [torch.rand(t.shape, generator=gen) > 0.5 for t in targets]  # built on the CPU, as users do
    prunekit.apply_masks(targets, keeps, mode="reparam")
    assert_on(model, device)
    for target, keep in zip(targets, keeps):
        assert torch.equal(getattr(target.module, "weight_mask").cpu() != 0, keep)
    prunekit.make_permanent(model)
    assert_on(model, device)
    assert not masks_of(model)
    for target, keep in zip(targets, keeps):
        assert bool((target.module.weight.detach().cpu()[~keep] == 0).all())


def test_structural_prune_runs_on_the_model_device_and_equals_cpu(device):
    reference = make_tiny(0)
    prunekit.structural_prune(reference, tiny_input(), sparsity=0.25, measure=False)
    model = make_tiny(0).to(device)
    prunekit.structural_prune(model, tiny_input(device), sparsity=0.25, measure=False)
    assert_on(model, device)
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in reference.state_dict().items()}
    with torch.no_grad():
        torch.testing.assert_close(model(tiny_input(device)).cpu(), reference(tiny_input()), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("criterion", ["taylor", "hrank", "thinet"])
def test_structural_prune_with_cpu_data_on_the_model_device(device, criterion):
    data = [(tiny_input(), torch.tensor([0, 1, 2, 3]))]  # on the CPU: moved to the model's device
    shapes = []
    for dev in runs(device):
        model = make_tiny(0).to(dev)
        prunekit.structural_prune(model, tiny_input(dev), sparsity=0.25, criterion=criterion, data=data,
                                  loss_fn=nn.functional.cross_entropy, measure=False)
        assert_on(model, torch.device(dev))
        shapes.append({k: v.shape for k, v in model.state_dict().items()})
    assert shapes[0] == shapes[-1]


def test_prune_with_a_data_criterion_on_the_model_device(device):
    data = [(tiny_input(), torch.tensor([0, 1, 2, 3]))]
    context = {"data": data, "loss_fn": nn.functional.cross_entropy}
    reference = prunekit.prune(make_tiny(0), 0.5, criterion="snip", context=context)
    model = prunekit.prune(make_tiny(0).to(device), 0.5, criterion="snip", context=context)
    assert_on(model, device)
    mine, ref = masks_of(model), masks_of(reference)
    for name in ref:  # gradients round differently on another device: near-ties may swap
        assert (mine[name] == ref[name]).float().mean().item() > 0.98, name
        assert mine[name].sum() == ref[name].sum(), name


@pytest.mark.parametrize("timed", [False, True], ids=["table", "timer"])
def test_latency_allocation_says_where_it_times(device, timed, caplog):
    from prunekit.measure.layer_latency import LatencyTable

    table = LatencyTable(timer=lambda spec: float(spec.out_ch * spec.in_ch)) if timed or device.type == "cpu" else None
    model = make_tiny(0).to(device)
    with caplog.at_level("WARNING", logger="prunekit.surgery.api"):
        prunekit.structural_prune(model, tiny_input(device), macs_target=0.7, allocation="latency",
                                  latency_table=table, measure=False)
    assert_on(model, device)
    warned = [r.getMessage() for r in caplog.records if "times single layers on the CPU" in r.getMessage()]
    assert len(warned) == (device.type != "cpu" and not timed)


def test_prune_heads_and_neurons_on_the_model_device(device):
    x = tokens(2, 12)
    results = []
    for dev in runs(device):
        model = gpt(0).to(dev)
        heads = prunekit.prune_heads(model, sparsity=0.5, importance="l2")
        neurons = prunekit.prune_mlp_neurons(model, sparsity=0.25)
        assert_on(model, torch.device(dev))
        with torch.no_grad():
            results.append((heads.kept, neurons.kept, model(x.to(dev)).cpu()))
    (heads_cpu, neurons_cpu, out_cpu), (heads_dev, neurons_dev, out_dev) = results[0], results[-1]
    assert heads_dev == heads_cpu and neurons_dev == neurons_cpu
    torch.testing.assert_close(out_dev, out_cpu, rtol=1e-4, atol=1e-4)


def test_prune_heads_and_neurons_of_a_hugging_face_model_on_its_device(device):
    transformers = pytest.importorskip("transformers")
    x = tokens(2, 12)
    results = []
    for dev in runs(device):
        config = transformers.BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                         intermediate_size=64, max_position_embeddings=32)  # uniform pruning edits it
        torch.manual_seed(0)
        model = transformers.BertModel(config).eval().to(dev)
        heads = prunekit.prune_heads(model, sparsity=0.5, importance="l2", uniform=True)
        neurons = prunekit.prune_mlp_neurons(model, sparsity=0.25, uniform=True)
        assert_on(model, torch.device(dev))
        with torch.no_grad():
            results.append((heads.kept, neurons.kept, model(input_ids=x.to(dev)).last_hidden_state.cpu()))
    (heads_cpu, neurons_cpu, out_cpu), (heads_dev, neurons_dev, out_dev) = results[0], results[-1]
    assert heads_dev == heads_cpu and neurons_dev == neurons_cpu
    torch.testing.assert_close(out_dev, out_cpu, rtol=1e-4, atol=1e-4)


def test_pruned_attention_is_causal_on_the_model_device(device):
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 4, dim_feedforward=32, batch_first=True, dropout=0.0)
    model = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False).eval().to(device)
    prunekit.prune_heads(model, {"layers.0.self_attn": [1, 2]})
    attention = model.layers[0].self_attn
    assert isinstance(attention, prunekit.PrunedMultiheadAttention)
    assert_on(model, device)
    x = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(4)).to(device)
    causal = torch.ones(5, 5, dtype=torch.bool, device=device).triu(1)
    with torch.no_grad():
        implicit = attention(x, x, x, is_causal=True, need_weights=False)[0]
        explicit = attention(x, x, x, attn_mask=causal, need_weights=False)[0]
    assert implicit.device.type == device.type
    torch.testing.assert_close(implicit, explicit)


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
def test_oneshot_prune_on_the_model_device(device, method):
    data = tokens()  # on the CPU: the batches are moved to where the blocks are pruned
    results = []
    for dev in runs(device):
        model = gpt(0).to(dev)
        prunekit.oneshot_prune(model, data, method=method, sparsity=0.5)
        assert_on(model, torch.device(dev))
        weights = {n: p.detach().cpu() for n, p in model.named_parameters() if n.startswith("blocks") and p.dim() == 2}
        results.append(weights)
    cpu, dev = results[0], results[-1]
    for name, w in cpu.items():
        same_zeros = ((dev[name] == 0) == (w == 0)).float().mean().item()
        assert (dev[name] == 0).float().mean().item() == pytest.approx((w == 0).float().mean().item(), abs=1e-6), name
        if method == "magnitude":
            assert same_zeros == 1.0, name
        else:  # the statistics (and SparseGPT's factorisation) round differently on another device
            assert same_zeros > 0.98, name


def test_score_units_on_the_model_device_equal_cpu(device):
    cpu = prunekit.score_units(make_tiny(0), "magnitude", "element")
    dev = prunekit.score_units(make_tiny(0).to(device), "magnitude", "element")
    assert cpu.keys() == dev.keys()
    for key in cpu:
        torch.testing.assert_close(dev[key].cpu(), cpu[key].cpu())
    channels_cpu = prunekit.score_units(make_tiny(0), "l2", "channel", example_inputs=tiny_input())
    channels_dev = prunekit.score_units(make_tiny(0).to(device), "l2", "channel", example_inputs=tiny_input(device))
    for key in channels_cpu:
        torch.testing.assert_close(channels_dev[key].cpu().double(), channels_cpu[key].cpu().double())


def test_sparsity_report_and_macs_on_the_model_device(device):
    reference = prunekit.prune(make_tiny(0), 0.5)
    model = prunekit.prune(make_tiny(0).to(device), 0.5)
    assert prunekit.sparsity_report(model).sparsity == pytest.approx(prunekit.sparsity_report(reference).sparsity)
    from prunekit.measure import count_macs

    by_shape = count_macs(model, input_shape=(4, 8, 4, 4))  # the input is made on the model's device
    by_input = count_macs(model, tiny_input(device))
    ref = count_macs(reference, tiny_input())
    assert by_shape.dense_macs == by_input.dense_macs == ref.dense_macs
    assert by_input.effective_macs == ref.effective_macs
    assert_on(model, device)


@pytest.mark.parametrize("mode", ["reparam", "inplace"])
def test_save_sparse_load_sparse_round_trip_on_the_model_device(device, mode, tmp_path):
    model = prunekit.prune(make_tiny(0).to(device), 0.6, mode=mode)
    prunekit.save_sparse(model, tmp_path / "m.safetensors")
    fresh = TinyNet().to(device)
    prunekit.load_sparse(tmp_path / "m.safetensors", fresh)
    assert_on(fresh, device)
    before, after = state_cpu(model), state_cpu(fresh)
    assert before.keys() == after.keys()
    for key in before:
        mask = before.get(key[: -len("_orig")] + "_mask") if key.endswith("_orig") else None
        if mask is not None:  # the file keeps the kept values only
            assert torch.equal(before[key] * mask, after[key] * mask), key
        else:
            assert torch.equal(before[key], after[key]), key
    with torch.no_grad():
        torch.testing.assert_close(fresh(tiny_input(device)), model(tiny_input(device)))


def test_dense_safetensors_and_onnx_of_a_model_on_its_device(device, tmp_path):
    from safetensors.torch import load_file

    model = prunekit.prune(nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)).to(device), 0.5)
    x = torch.randn(2, 8, generator=torch.Generator().manual_seed(0)).to(device)
    prunekit.save_dense(model, tmp_path / "dense.safetensors")
    plain = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    plain.load_state_dict(load_file(str(tmp_path / "dense.safetensors")))
    with torch.no_grad():
        torch.testing.assert_close(plain(x.cpu()), model(x).cpu())
    result = prunekit.export_onnx(model, x, tmp_path / "m.onnx")  # checked in onnxruntime against the model
    assert result.max_abs_error < 1e-4
    assert_on(model, device)


def test_bn_l1_penalty_on_the_model_device(device):
    from prunekit.surgery.regularizers import bn_l1_penalty

    with_bn = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6)).to(device)
    without = nn.Sequential(nn.Linear(4, 6)).to(device)
    assert bn_l1_penalty(with_bn).device.type == device.type
    assert bn_l1_penalty(without).device.type == device.type and float(bn_l1_penalty(without)) == 0.0


def test_measure_latency_on_the_model_device(device):
    from prunekit.measure import measure_latency

    model = make_tiny(0).to(device)
    result = measure_latency(model, tiny_input(device), warmup=1, repeats=3)
    assert result.median_ms > 0 and result.repeats == 3
    assert_on(model, device)


def test_to_sparse_leaves_layers_it_has_no_kernel_for_dense(device):
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 8))
    prunekit.prune(model, 0.9)
    prunekit.make_permanent(model)
    model = model.to(device)
    x = torch.randn(1, 64, generator=torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad():
        expected = model(x)
    result = prunekit.to_sparse(model, x, kernels=("csr",), repeats=2, warmup=1, model_repeats=2)
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)
    assert_on(model, device)
    if device.type != "cpu":
        assert result.converted == [] and all("cuda" in layer.reason for layer in result.layers)


def _two_four_linear(device: torch.device, dtype: torch.dtype) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(128, 256), nn.ReLU(), nn.Linear(256, 128))
    prunekit.prune(model, 0.5, structure=prunekit.NM(2, 4))
    prunekit.make_permanent(model)
    return model.to(device=device, dtype=dtype).eval()


def test_to_semi_structured_says_why_not_or_converts(device):
    model = _two_four_linear(device, torch.float16)
    if device.type == "cpu":
        if not HAS_CUDA:
            with pytest.raises(PrunekitError, match="no CUDA device"):
                to_semi_structured(model)
        else:
            assert to_semi_structured(model) == []  # layers on the CPU are left dense
        return
    ok, why = semi_structured_available(device)
    if not ok:
        with pytest.raises(PrunekitError, match="compute capability"):
            to_semi_structured(model)
        return
    x = torch.randn(64, 128, generator=torch.Generator().manual_seed(0)).to(device=device, dtype=torch.float16)
    with torch.no_grad():
        expected = model(x)
        assert to_semi_structured(model) == ["0", "2"]
        torch.testing.assert_close(model(x), expected, rtol=1e-2, atol=1e-2)


# -- without a GPU: nothing a path makes lands on the default device ---------------------------
#
# With the default device set to "meta", a tensor made without ``device=`` is a meta tensor, which
# cannot be mixed with the model's (CPU) tensors: the path fails, or a meta tensor ends up in the
# model. So these checks find, on any machine, a tensor that would be made on the CPU beside a CUDA
# model. Paths whose bookkeeping is deliberately on the CPU (the global ranking of allocation, lists
# of kept indices) read those values back with ``.item()`` and are covered by the cases above only.


def _pruned_tiny() -> nn.Module:
    return prunekit.prune(make_tiny(0), 0.5)


def _apply_cpu_masks(model: nn.Module) -> None:
    targets = prunekit.select_targets(model)
    gen = torch.Generator(device="cpu").manual_seed(3)
    keeps = [torch.rand(t.shape, generator=gen, device="cpu") > 0.5 for t in targets]
    prunekit.apply_masks(targets, keeps, mode="reparam")


def _causal_attention(model: nn.Module, need_weights: bool) -> None:
    x = torch.randn(2, 5, 16, generator=torch.Generator(device="cpu").manual_seed(4), device="cpu")
    model.layers[0].self_attn(x, x, x, is_causal=True, need_weights=need_weights)


def _pruned_encoder() -> nn.Module:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 4, dim_feedforward=32, batch_first=True, dropout=0.0)
    model = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False).eval()
    prunekit.prune_heads(model, {"layers.0.self_attn": [1, 2]})
    return model


def _cpu_input() -> torch.Tensor:
    return torch.randn(4, 8, 4, 4, generator=torch.Generator(device="cpu").manual_seed(1), device="cpu")


def _cpu_tokens() -> torch.Tensor:
    return torch.randint(0, VOCAB, (8, 16), generator=torch.Generator(device="cpu").manual_seed(1), device="cpu")


def _cpu_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(_cpu_input(), torch.tensor([0, 1, 2, 3], device="cpu"))]


def _on_cpu(tensor: torch.Tensor) -> None:
    assert tensor.device.type == "cpu", tensor.device


def _measure(model: nn.Module):
    from prunekit.measure import count_macs, measure_latency

    count_macs(model, _cpu_input())
    measure_latency(model, _cpu_input(), warmup=0, repeats=1)


META_PATHS = {
    "prune-nm": (lambda: make_tiny(0), lambda m: prunekit.prune(m, 0.5, structure=prunekit.NM(2, 4))),
    "oneshot-magnitude": (gpt, lambda m: prunekit.oneshot_prune(m, _cpu_tokens(), method="magnitude", sparsity=0.5)),
    "oneshot-wanda": (gpt, lambda m: prunekit.oneshot_prune(m, _cpu_tokens(), method="wanda", sparsity=0.5)),
    "oneshot-sparsegpt-2:4": (gpt, lambda m: prunekit.oneshot_prune(m, _cpu_tokens(), method="sparsegpt", sparsity=0.5,
                                                                     structure="2:4")),
    "apply_masks": (lambda: make_tiny(0), _apply_cpu_masks),
    "make_permanent": (_pruned_tiny, prunekit.make_permanent),
    "sparsity_report-macs-latency": (_pruned_tiny, lambda m: (prunekit.sparsity_report(m), _measure(m))),
    "score_units-channel": (lambda: make_tiny(0), lambda m: prunekit.score_units(m, "l2", "channel",
                                                                                  example_inputs=_cpu_input())),
    "score_heads": (gpt, lambda m: prunekit.score_heads(m, "l2")),
    "score_units-snip": (lambda: make_tiny(0), lambda m: prunekit.score_units(m, "snip", "element", data=_cpu_batches(),
                                                                               loss_fn=nn.functional.cross_entropy)),
    **{f"score_units-{name}": (lambda: make_tiny(0), lambda m, name=name: prunekit.score_units(
        m, name, "group", example_inputs=_cpu_input(), data=_cpu_batches(), loss_fn=nn.functional.cross_entropy))
       for name in ("taylor", "hrank", "thinet")},
    "bn_l1_penalty": (lambda: make_tiny(0), lambda m: _on_cpu(prunekit.surgery.regularizers.bn_l1_penalty(m))),
    "causal-attention-weights": (_pruned_encoder, lambda m: _causal_attention(m, True)),
    "causal-attention-fused": (_pruned_encoder, lambda m: _causal_attention(m, False)),
}


@pytest.mark.parametrize("path", list(META_PATHS))
def test_paths_make_nothing_on_the_default_device(path):
    build, run = META_PATHS[path]
    model = build()
    torch.set_default_device("meta")
    try:
        run(model)
    finally:
        torch.set_default_device(None)
    assert_on(model, torch.device("cpu"))
