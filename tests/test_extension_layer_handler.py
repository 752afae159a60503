"""A layer type defined outside prunekit takes part in channel coupling and surgery
once a layer handler is registered for it (prunekit.register_layer_handler)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import prunekit
from prunekit.coupling import LayerHandler, UnsupportedOperationError, find_groups, handler_for, linear
from prunekit.errors import InvalidParameterError
from prunekit.surgery import mask_groups, prune_groups


class ScaledLinear(nn.Module):
    """``y = (x Wᵀ + b) · s`` with one learned scale per output, written with einsum
    (a function the tracer does not know)."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / in_features ** 0.5)
        self.bias = nn.Parameter(torch.randn(out_features) * 0.1)
        self.scale = nn.Parameter(torch.rand(out_features) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (torch.einsum("...i,oi->...o", x, self.weight) + self.bias) * self.scale


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 10)
        self.mid = ScaledLinear(10, 12)
        self.fc3 = nn.Linear(12, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(torch.relu(self.mid(torch.relu(self.fc1(x)))))


def couple(g, op, name, module) -> None:
    """As nn.Linear, and the scale follows the output features."""
    space = linear(g, op, name)
    if space is not None:
        g.bind(name, "scale", 0, space, "norm")


def update(module: ScaledLinear) -> None:
    module.out_features, module.in_features = module.weight.shape


@pytest.fixture
def handler():
    prunekit.register_layer_handler(ScaledLinear, LayerHandler(couple=couple, update_attributes=update))
    yield
    prunekit.coupling.unregister_layer_handler(ScaledLinear)


def _net() -> Net:
    torch.manual_seed(0)
    return Net().eval()


def test_without_a_handler_tracing_refuses_the_custom_layer() -> None:
    assert handler_for(ScaledLinear(2, 2)) is None
    with pytest.raises(UnsupportedOperationError, match="einsum.*register a layer handler"):
        find_groups(_net(), torch.randn(2, 6))


def test_registered_handler_is_listed_and_found_along_the_mro(handler) -> None:
    name = f"{ScaledLinear.__module__}.{ScaledLinear.__qualname__}"
    assert name in prunekit.list_layer_handlers()

    class Sub(ScaledLinear):
        pass

    assert handler_for(Sub(2, 2)) is handler_for(ScaledLinear(2, 2)) is not None
    with pytest.raises(InvalidParameterError, match="module_type"):
        prunekit.register_layer_handler(42, couple)


def test_prune_groups_shrinks_the_custom_layer_like_the_masked_model(handler) -> None:
    model = _net()
    x = torch.randn(5, 6)
    groups = find_groups(model, x)
    assert sorted(g.name for g in groups) == ["fc1", "mid"]
    mid = next(g for g in groups if g.name == "mid")
    assert {(s.name, s.tensor, s.role) for s in mid.slices} == {
        ("mid", "weight", "out"), ("mid", "bias", "norm"), ("mid", "scale", "norm"), ("fc3", "weight", "in")}
    keep = {"fc1": torch.tensor([0, 2, 3, 5, 7, 9]), "mid": torch.tensor([1, 2, 4, 8, 11])}
    masked = copy.deepcopy(model)
    mask_groups(masked, keep, groups)
    prune_groups(model, keep, groups)
    assert model.mid.weight.shape == (5, 6) and model.mid.scale.shape == (5,)
    assert (model.mid.in_features, model.mid.out_features) == (6, 5)  # update_attributes ran
    torch.testing.assert_close(model(x), masked(x))


def test_structural_prune_uses_the_handler(handler) -> None:
    model = _net()
    x = torch.randn(5, 6)
    reference = copy.deepcopy(model)
    result = prunekit.structural_prune(model, x, sparsity=0.5)
    assert result.channels_after == {"fc1": 5, "mid": 6}
    assert model.mid.scale.shape == (6,)
    # the same channels masked in the original model give the same outputs
    groups = find_groups(reference, x)
    kept = result.records[0].kept
    mask_groups(reference, {k: torch.tensor(v) for k, v in kept.items()}, groups)
    torch.testing.assert_close(model(x), reference(x))


class TransposedLinear(nn.Module):
    """A linear layer storing its weight as ``(in, out)``, like Hugging Face's Conv1D."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(in_features, out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight


def test_weight_layout_of_a_handler_reaches_targets_and_head_surgery() -> None:
    layer = TransposedLinear(3, 5)
    target = prunekit.select_targets(nn.Sequential(layer), types=[TransposedLinear])[0]
    assert target.out_dim == 0 and prunekit.coupling.producer("0", layer).tensors == (("weight", 0),)
    prunekit.register_layer_handler(TransposedLinear, LayerHandler(
        couple=lambda g, op, name, module: linear(g, op, name, transposed=True), weight_out_dim=1))
    try:
        assert (target.out_dim, target.in_dim) == (1, 0)
        assert prunekit.coupling.producer("0", layer).tensors == (("weight", 1),)
        assert prunekit.coupling.consumer("0", layer).tensors == (("weight", 0),)
        model = nn.Sequential(TransposedLinear(3, 5), nn.ReLU(), nn.Linear(5, 2))
        (group,) = find_groups(model, torch.randn(2, 3))
        assert {(s.name, s.dim, s.role) for s in group.slices} == {("0", 1, "out"), ("2", 1, "in")}
    finally:
        prunekit.coupling.unregister_layer_handler(TransposedLinear)
    assert target.out_dim == 0
