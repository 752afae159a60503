"""The MACs target search: MACs follow from the kept channels exactly (no pruned copies),
the ratio found is the one a search on pruned copies finds, and models whose MACs do not
follow from the weights alone (a product of activations) fall back to copies."""

from __future__ import annotations

import copy
import logging

import pytest
import torch
from torch import nn

import prunekit
from prunekit.allocation import allocate_channels
from prunekit.coupling.groups import find_groups_traced
from prunekit.measure import count_macs
from prunekit.surgery import find_groups, prune_groups
from prunekit.surgery.macs_search import (
    MacsModel,
    macs_from_trace,
    macs_of_copy,
    ratio_for_macs,
    total_macs,
)


class Mixed(nn.Module):
    """Depthwise, grouped and transposed convs, a residual sum, a flatten into a Linear,
    a Linear over tokens and a Linear called twice (the MAC rules of every kind)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False)
        self.grouped = nn.Conv2d(16, 16, 1, groups=4)
        self.up = nn.ConvTranspose2d(16, 12, 2, stride=2)
        self.down = nn.Conv2d(12, 8, 2, stride=2)
        self.token = nn.Linear(8, 6)
        self.twice = nn.Linear(6, 6)
        self.fc = nn.Linear(8 * 8 * 6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn(self.stem(x)))
        y = y + self.grouped(torch.relu(self.dw(y)))
        y = self.down(torch.relu(self.up(y)))  # (N, 8, 8, 8)
        y = self.twice(torch.relu(self.twice(self.token(y))))  # Linear over the last dim: (N, 8, 8, 6)
        return self.fc(torch.flatten(y, 1))


class ActivationProduct(nn.Module):
    """``a(x) @ b(x).T``: MACs that scale with the channels of two layers' outputs, not a weight."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(6, 12)
        self.b = nn.Linear(6, 12)
        self.head = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = torch.matmul(torch.relu(self.a(x)), torch.relu(self.b(x)).transpose(-1, -2))  # (N, 5, 5)
        return self.head(scores)


class TrainOnlyBranch(nn.Module):
    """An auxiliary head that runs only in training (MACs are counted in eval mode)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.aux = nn.Linear(8, 4)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.conv(x)).mean((2, 3))
        return self.fc(y) + self.aux(y) if self.training else self.fc(y)


class WithAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Linear(6, 8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.hidden, self.head = nn.Linear(8, 16), nn.Linear(16, 3)  # the hidden channels can be pruned

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.up(x)
        return self.head(torch.relu(self.hidden(self.attn(h, h, h, need_weights=False)[0])))


def _random_keeps(groups, count: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    for _ in range(count):
        yield {grp.name: torch.randperm(grp.size, generator=g)[: int(torch.randint(1, grp.size + 1, (1,), generator=g))]
               .sort().values for grp in groups}


CASES = {
    "mixed": (Mixed, (2, 3, 8, 8)),
    "resnet20": (lambda: prunekit.create_model("resnet20"), (1, 3, 16, 16)),
    "mobilenetv2_cifar": (lambda: prunekit.create_model("mobilenetv2_cifar", width_mult=0.5), (1, 3, 8, 8)),
    "vgg16_bn_imagenet": (lambda: prunekit.create_model("vgg16_bn_imagenet", hidden=32), (1, 3, 32, 32)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_macs_follow_from_the_kept_channels_exactly(case: str) -> None:
    torch.manual_seed(0)
    build, shape = CASES[case]
    model = build().eval()
    x = torch.randn(*shape)
    groups = find_groups(model, x)
    predicted = MacsModel(model, groups, count_macs(model, x, norms=False))
    assert predicted.exact and predicted.total == count_macs(model, x, norms=False).dense_macs
    for keep in _random_keeps(groups, 2):
        assert predicted.after(keep) == macs_of_copy(model, groups, keep, x)


TRACED = {
    "mixed": (Mixed, (2, 3, 8, 8)),
    "train_only_branch": (TrainOnlyBranch, (2, 3, 8, 8)),
    "tutorial_lenet": (lambda: prunekit.create_model("tutorial_lenet"), (1, 1, 28, 28)),  # the fallback tracer
    "resnet18_imagenet": (lambda: prunekit.create_model("resnet18_imagenet"), (1, 3, 32, 32)),
    "mobilenetv2_imagenet": (lambda: prunekit.create_model("mobilenetv2_imagenet"), (1, 3, 32, 32)),
    "vgg16_bn_imagenet": (lambda: prunekit.create_model("vgg16_bn_imagenet", hidden=32), (1, 3, 32, 32)),
}


@pytest.mark.parametrize("case", sorted(TRACED))
def test_macs_read_from_the_trace_are_those_counted(case: str) -> None:
    torch.manual_seed(0)
    build, shape = TRACED[case]
    model = build().eval()
    x = torch.randn(*shape)
    rows = macs_from_trace(model, find_groups_traced(model, x)[1])
    counted = count_macs(model, x, norms=False)
    if case == "train_only_branch":  # counted in eval mode: the trace must not add the training branch
        assert rows is None or dict(rows) == {r.name: r.dense_macs for r in counted.rows if r.dense_macs}
        return
    assert rows is not None
    assert dict(rows) == {r.name: r.dense_macs for r in counted.rows if r.dense_macs}
    assert total_macs(rows) == counted.dense_macs


class ScaledLinear(nn.Linear):
    """A Linear subclass with its own forward: the tracer goes through it, count_macs counts it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.weight * 2, self.bias)


class TracedThrough(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up = ScaledLinear(6, 8)
        self.unused = nn.Linear(8, 8)
        self.hidden, self.head = nn.Linear(8, 16), nn.Linear(16, 3)  # the hidden channels can be pruned

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.hidden(torch.relu(self.up(x)))))


@pytest.mark.parametrize("build, shape", [(ActivationProduct, (2, 5, 6)), (WithAttention, (2, 5, 6)),
                                          (TracedThrough, (2, 6))])
def test_macs_the_trace_cannot_tell_are_counted(build, shape) -> None:
    model = build().eval()
    x = torch.randn(*shape)
    assert macs_from_trace(model, find_groups_traced(model, x)[1]) is None
    result = prunekit.structural_prune(copy.deepcopy(model), x, sparsity=0.25)
    assert result.macs_before == count_macs(model, x, norms=False).dense_macs


def test_macs_of_a_masked_model_follow_from_the_kept_channels() -> None:
    torch.manual_seed(0)
    model = Mixed().eval()
    x = torch.randn(2, 3, 8, 8)
    prunekit.prune(model, sparsity=0.5)  # torch-style reparametrised weights
    groups = find_groups(model, x)
    predicted = MacsModel(model, groups, count_macs(model, x, norms=False))
    assert predicted.exact
    for keep in _random_keeps(groups, 2, seed=1):
        assert predicted.after(keep) == macs_of_copy(model, groups, keep, x)


def _search_on_copies(model, groups, target, x, alloc) -> float:
    """The search as it was: every candidate pruned on a copy and counted."""
    lo, hi = 0.0, 1.0 - 1e-6
    for _ in range(14):
        mid = (lo + hi) / 2
        if macs_of_copy(model, groups, alloc(mid), x) <= target:
            hi = mid
        else:
            lo = mid
    return hi


@pytest.mark.parametrize("scope", ["local", "global"])
def test_the_ratio_found_is_the_one_a_search_on_copies_finds(scope: str) -> None:
    torch.manual_seed(0)
    model = Mixed().eval()
    x = torch.randn(2, 3, 8, 8)
    groups = find_groups(model, x)
    scores = prunekit.scores.groups.group_l2()(model, groups)

    def alloc(r: float):
        return allocate_channels(groups, scores, r, scope=scope)

    target = count_macs(model, x, norms=False).dense_macs // 2
    ratio = ratio_for_macs(model, groups, target, x, alloc)
    assert ratio == _search_on_copies(model, groups, target, x, alloc)
    assert macs_of_copy(model, groups, alloc(ratio), x) <= target


def test_structural_prune_reports_the_macs_it_counts() -> None:
    torch.manual_seed(0)
    model = Mixed().eval()
    x = torch.randn(2, 3, 8, 8)
    before = count_macs(model, x, norms=False).dense_macs
    result = prunekit.structural_prune(model, x, macs_target=0.5)
    assert result.macs_before == before
    assert result.macs_after == count_macs(model, x, norms=False).dense_macs
    assert result.macs_after <= 0.5 * result.macs_before
    assert result.params_after == sum(p.numel() for p in model.parameters())


def test_a_product_of_activations_is_searched_on_copies(caplog) -> None:
    torch.manual_seed(0)
    model = ActivationProduct().eval()
    x = torch.randn(2, 5, 6)
    groups = find_groups(model, x)
    predicted = MacsModel(model, groups, count_macs(model, x, norms=False))
    assert not predicted.exact and predicted.rest_rows  # the matmul row
    twin = copy.deepcopy(model)
    with caplog.at_level(logging.INFO, logger="prunekit.surgery.macs_search"):
        result = prunekit.structural_prune(model, x, macs_target=0.5)
    assert "searching on copies" in caplog.text
    assert result.macs_after == count_macs(model, x, norms=False).dense_macs <= 0.5 * result.macs_before
    # the ratio is the smallest one that meets the target, as a search on copies finds it
    twin_groups = find_groups(twin, x)
    scores = prunekit.scores.groups.group_l1()(twin, twin_groups)

    def alloc(r: float):
        return allocate_channels(twin_groups, scores, r)

    ratio = _search_on_copies(twin, twin_groups, result.macs_before // 2, x, alloc)
    keep = alloc(ratio)
    assert result.channels_after == {g.name: int(keep[g.name].numel()) for g in twin_groups}


def test_an_unreachable_target_is_refused_before_anything_changes() -> None:
    torch.manual_seed(0)
    model = Mixed().eval()
    x = torch.randn(2, 3, 8, 8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(prunekit.errors.InvalidParameterError, match="macs_target"):
        prunekit.structural_prune(model, x, macs_target=0.01, max_layer_ratio=0.2)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_prune_groups_after_the_prediction_still_removes_the_channels() -> None:
    torch.manual_seed(0)
    model = Mixed().eval()
    x = torch.randn(2, 3, 8, 8)
    groups = find_groups(model, x)
    predicted = MacsModel(model, groups, count_macs(model, x, norms=False))
    keep = next(_random_keeps(groups, 1, seed=3))
    expected = predicted.after(keep)
    prune_groups(model, keep, groups)
    assert count_macs(model, x, norms=False).dense_macs == expected
