"""Pruning at initialisation: SNIP, GraSP, SynFlow and the one-shot / iterative driver."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import prunekit
from prunekit.scores import SNIP, GraSP, SynFlow
from prunekit.scores.gradients import hessian_gradient_product, input_flow, synaptic_flow
from prunekit.pruning_at_init import exponential_levels, is_collapsed, prune_at_init


def chain(seed: int = 0, widths: tuple[int, ...] = (20, 100, 100, 100, 5), bias: bool = True) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(widths)):
        layers.append(nn.Linear(a, b, bias=bias))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def small_cnn(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
    )


def batch(n: int = 16, shape: tuple[int, ...] = (20,), classes: int = 5, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g), torch.randint(0, classes, (n,), generator=g)


def kept(model: nn.Module) -> int:
    return sum(int(t.keep_mask().sum()) for t in prunekit.select_targets(model))


def total(model: nn.Module) -> int:
    return sum(t.numel for t in prunekit.select_targets(model))


def scores_of(criterion, model, **context):
    targets = prunekit.select_targets(model)
    criterion.prepare(model, targets, **context)
    return [criterion.score(t) for t in targets]


# -- SNIP ------------------------------------------------------------------------------------


def test_snip_is_abs_gradient_times_weight_by_hand():
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    x, y = batch(8, (4,), 3)
    (score,) = scores_of(SNIP(), model, data=(x, y))
    # ∂(mean CE)/∂W = (softmax(Wx+b) − onehot(y))ᵀ x / N
    p = torch.softmax(x @ model.weight.detach().T + model.bias.detach(), dim=1)
    grad = (p - F.one_hot(y, 3).float()).T @ x / len(x)
    torch.testing.assert_close(score, (grad * model.weight.detach()).abs())


def test_snip_is_the_mask_gradient_at_one():
    torch.manual_seed(0)
    model = nn.Linear(6, 3)
    x, y = batch(8, (6,), 3)
    c = torch.ones_like(model.weight, requires_grad=True)
    loss = F.cross_entropy(F.linear(x, model.weight.detach() * c, model.bias.detach()), y)
    (dc,) = torch.autograd.grad(loss, c)
    (score,) = scores_of(SNIP(), model, data=(x, y))
    torch.testing.assert_close(score, dc.abs())


def test_snip_averages_batches_like_one_big_batch():
    model = chain()
    x, y = batch(16)
    (a, *_) = scores_of(SNIP(), model, data=[(x[:8], y[:8]), (x[8:], y[8:])])
    (b, *_) = scores_of(SNIP(), model, data=(x, y))
    torch.testing.assert_close(a, b)


def test_snip_scores_the_masked_network():
    model = chain()
    x, y = batch()
    prunekit.prune(model, 0.5, criterion="random", scope="global")
    targets = prunekit.select_targets(model)
    snip = SNIP()
    snip.prepare(model, targets, data=(x, y))
    for t in targets:
        assert (snip.score(t)[~t.keep_mask()] == 0).all()


# -- GraSP ------------------------------------------------------------------------------------


def test_grasp_hessian_gradient_product_matches_the_explicit_hessian():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    x, y = batch(6, (3,), 2)
    w1, w2 = model[0].weight, model[2].weight
    temperature = 3.0

    def loss_of(flat: torch.Tensor) -> torch.Tensor:
        a, b = flat[:12].view(4, 3), flat[12:].view(2, 4)
        h = torch.tanh(F.linear(x, a, model[0].bias.detach()))
        return F.cross_entropy(F.linear(h, b, model[2].bias.detach()) / temperature, y)

    flat = torch.cat([w1.detach().reshape(-1), w2.detach().reshape(-1)])
    hessian = torch.autograd.functional.hessian(loss_of, flat)
    grad = torch.autograd.functional.jacobian(loss_of, flat)
    g, hg = hessian_gradient_product(model, [w1, w2], [(x, y)], temperature=temperature)
    torch.testing.assert_close(torch.cat([t.reshape(-1) for t in g]), grad)
    torch.testing.assert_close(torch.cat([t.reshape(-1) for t in hg]), hessian @ grad)
    assert w1.grad is None and w2.grad is None


def test_grasp_removes_the_highest_minus_theta_hg():
    model = chain(widths=(10, 16, 4))
    x, y = batch(8, (10,), 4)
    targets = prunekit.select_targets(model)
    _, hg = hessian_gradient_product(model, [t.original for t in targets], [(x, y)], temperature=200.0)
    paper = torch.cat([(-t.original.detach() * h).reshape(-1) for t, h in zip(targets, hg)])  # S(−θ) = −θ⊙Hg
    prune_at_init(model, 0.25, "grasp", data=(x, y), min_keep=0)
    removed = torch.cat([~t.keep_mask().reshape(-1) for t in prunekit.select_targets(model)])
    k = round(0.25 * paper.numel())
    assert int(removed.sum()) == k
    assert paper[removed].min() >= paper[~removed].max()


def test_grasp_uses_the_temperature():
    model = chain(widths=(10, 16, 4))
    x, y = batch(8, (10,), 4)
    (a, _) = scores_of(GraSP(1.0), model, data=(x, y))
    (b, _) = scores_of(GraSP(200.0), model, data=(x, y))
    assert not torch.allclose(a, b)
    assert repr(prunekit.scores.as_criterion("grasp:50")) == "GraSP(temperature=50)"


# -- SynFlow -----------------------------------------------------------------------------------


def test_synflow_conserves_flow_layer_by_layer():
    # Tanaka et al. 2020, Theorem 2: in a bias-free chain the synaptic saliency
    # summed over each layer equals R (the same for every layer)
    model = chain(widths=(7, 12, 9, 5), bias=False)
    targets = prunekit.select_targets(model)
    flow, scores = synaptic_flow(model, (7,), [t.original for t in targets])
    sums = torch.stack([s.sum() for s in scores])
    torch.testing.assert_close(sums, flow.expand(3), rtol=1e-10, atol=0)
    assert scores[0].dtype == torch.float64
    # R by hand: 1ᵀ|W3||W2||W1|1
    w = [t.original.detach().double().abs() for t in targets]
    assert math.isclose(float(flow), float((w[2] @ w[1] @ w[0]).sum()), rel_tol=1e-12)


def test_synflow_is_data_free_and_leaves_the_model_as_it_was():
    model = small_cnn()
    model.train()
    with torch.no_grad():  # non-trivial BN statistics that must survive
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = prune_at_init(model, 0.8, "synflow", rounds=5, input_shape=(3, 8, 8))
    assert model.training and all(m.training for m in model.modules())
    after = model.state_dict()
    for key, value in before.items():
        new_key = key if key in after else key.replace(".weight", ".weight_orig")
        assert torch.equal(after[new_key], value), key
    assert all(p.grad is None for p in model.parameters())
    assert kept(model) == total(model) - round(0.8 * total(model))
    assert len(result.levels) == 5 and result.collapsed is False


def test_data_criteria_leave_bn_statistics_modes_and_grads_alone():
    x, y = torch.randn(8, 3, 8, 8), torch.randint(0, 4, (8,))
    for method in ("snip", "grasp"):
        model = small_cnn()
        model.train()
        bn = {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}
        prune_at_init(model, 0.5, method, data=(x, y))
        state = model.state_dict()
        assert all(torch.equal(state[k], v) for k, v in bn.items()), method
        assert model.training and all(p.grad is None for p in model.parameters())


def test_exponential_schedule_hits_the_target_exactly():
    levels = exponential_levels(0.9, 10)
    assert levels == pytest.approx([1 - 0.1 ** (k / 10) for k in range(1, 11)], abs=1e-12)
    assert levels[-1] == 0.9
    model = chain()
    result = prune_at_init(model, 0.9, "magnitude", rounds=10)
    assert result.levels == levels
    assert kept(model) == total(model) - round(0.9 * total(model))


def test_iterative_synflow_avoids_the_collapse_of_one_shot():
    one_shot, iterative = chain(), chain()
    a = prune_at_init(one_shot, 0.99, "synflow", rounds=1, input_shape=(20,), min_keep=0)
    b = prune_at_init(iterative, 0.99, "synflow", rounds=20, input_shape=(20,), min_keep=0)
    assert a.collapsed is True and is_collapsed(one_shot, (20,))
    assert b.collapsed is False and input_flow(iterative, (20,)) > 0
    assert kept(one_shot) == kept(iterative) == total(iterative) - round(0.99 * total(iterative))


def test_iterative_masks_only_shrink(monkeypatch):
    model = chain()
    masks = []
    realise = prunekit.Pruner.realise

    def recording(self, keeps, description=""):
        masks.append([m.clone() for m in keeps])
        return realise(self, keeps, description)

    monkeypatch.setattr(prunekit.Pruner, "realise", recording)
    prune_at_init(model, 0.95, "synflow", rounds=6, input_shape=(20,))
    assert len(masks) == 6
    for earlier, later in itertools.pairwise(masks):
        assert all(bool((b <= a).all()) for a, b in zip(earlier, later))


def test_every_method_local_and_global():
    x, y = batch(8, (10,), 4)
    for method in ("snip", "grasp", "synflow", "magnitude", "random"):
        for scope in ("global", "local"):
            model = chain(widths=(10, 16, 16, 4))
            prune_at_init(model, 0.7, method, data=(x, y), scope=scope, rounds=2)
            if scope == "local":
                for t in prunekit.select_targets(model):
                    assert int((~t.keep_mask()).sum()) == round(0.7 * t.numel), (method, t.name)
            else:
                assert kept(model) == total(model) - round(0.7 * total(model)), method


def test_criteria_are_registered():
    assert {"snip", "grasp", "synflow"} <= set(prunekit.list_scores(unit_space="element"))
    assert SNIP.requires == ("data",) and GraSP.requires == ("data",) and SynFlow.requires == ()


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"sparsity": 1.0, "method": "synflow", "input_shape": (20,)}, "sparsity"),
        ({"sparsity": 0.5, "method": "snip"}, "data"),
        ({"sparsity": 0.5, "method": "grasp", "data": []}, "data"),
        ({"sparsity": 0.5, "method": "synflow"}, "input_shape"),
        ({"sparsity": 0.5, "method": "synflow", "input_shape": (20,), "rounds": 0}, "rounds"),
        ({"sparsity": 0.5, "method": "snipp", "input_shape": (20,)}, "criterion"),
        ({"sparsity": 0.5, "method": "grasp:-1", "data": ((torch.ones(2, 20), torch.zeros(2)))}, "temperature"),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(kwargs, param):
    model = chain()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(prunekit.InvalidParameterError) as info:
        prune_at_init(model, **kwargs)
    assert info.value.param == param
    assert list(model.state_dict()) == list(before)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())


def test_works_under_no_grad():
    x, y = batch(8)
    with torch.no_grad():
        for method in ("snip", "grasp", "synflow"):
            model = chain(widths=(20, 16, 5))
            prune_at_init(model, 0.5, method, data=(x, y), rounds=2)
            assert kept(model) == total(model) - round(0.5 * total(model)), method


def test_synflow_on_a_reparametrised_model_leaves_its_weight_attributes():
    model = chain(widths=(20, 16, 5))
    prunekit.prune(model, 0.5, criterion="random", scope="global")  # torch-compatible reparam masks
    x, _ = batch(4)
    out = model(x)
    weight = model[0].weight
    flow, scores = synaptic_flow(model, (20,), [t.original for t in prunekit.select_targets(model)])
    assert model[0].weight is weight and weight.dtype == torch.float32
    assert torch.equal(model(x), out)
    assert float(flow) > 0 and all((s[~t.keep_mask()] == 0).all() for s, t in zip(scores, prunekit.select_targets(model)))
    proxies = prunekit.zero_cost_proxies(model, batch(8))
    assert all(math.isfinite(v) for v in proxies.values())
