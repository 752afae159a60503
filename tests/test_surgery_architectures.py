"""Structural pruning on the blocks of common classification architectures, written small:
stochastic depth (torchvision's StochasticDepth and its fx-wrapped function, timm's DropPath,
a user's own), ConvNeXt / ConvNeXt-V2 / MobileViT blocks (channels normalised by LayerNorm,
GRN, one-group GroupNorm), branches that run only in training (Inception auxiliary heads),
grouped convolutions under latency-aware allocation (ResNeXt), and requests that cannot be
met (no group found, an operation that cannot be modelled) refused with fixes that work."""

from __future__ import annotations

import ast
import copy
import logging
import re

import pytest
import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

import prunekit
from prunekit.coupling import UnsupportedOperationError, channelwise
from prunekit.errors import InvalidParameterError
from prunekit.measure.layer_latency import LatencyTable, LayerSpec, layer_sites
from prunekit.surgery import find_groups, mask_groups, prune_groups

# -- stochastic depth, as torchvision and timm write it ---------------------------------------


def stochastic_depth(x: torch.Tensor, p: float, mode: str, training: bool = True) -> torch.Tensor:
    """Each sample (``row``) or the whole batch kept with probability 1 - p and scaled by 1 / (1 - p)."""
    if not training or p == 0.0:
        return x
    survival = 1.0 - p
    size = [x.shape[0]] + [1] * (x.ndim - 1) if mode == "row" else [1] * x.ndim
    noise = torch.empty(size, dtype=x.dtype, device=x.device).bernoulli_(survival)
    noise.div_(survival)
    return x * noise


torch.fx.wrap("stochastic_depth")  # a leaf of fx traces, as torchvision registers it


class StochasticDepth(nn.Module):
    def __init__(self, p: float, mode: str = "row") -> None:
        super().__init__()
        self.p, self.mode = p, mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return stochastic_depth(x, self.p, self.mode, self.training)


class SampleDepth(nn.Module):
    """The fx-wrapped function called from a class of another name (traced through, not a leaf)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.rate = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return stochastic_depth(x, self.rate, "row", self.training)


def drop_samples(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """A drop path under a name no rule knows: accepted by how it behaves on its inputs."""
    if not training:
        return x
    mask = (torch.rand(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device) >= p).to(x.dtype)
    return x * mask / (1 - p)


torch.fx.wrap("drop_samples")


class SampleDrops(nn.Module):
    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_samples(x, self.p, self.training)


class DropPath(nn.Module):
    def __init__(self, drop_prob: float) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep_prob = 1 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep_prob)
        return x.div(keep_prob) * mask


class SampleDrop(nn.Module):
    """A user's own drop-path (another class name): random floor of keep + U(0, 1)."""

    def __init__(self, drop_prob: float) -> None:
        super().__init__()
        self.keep = 1.0 - drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        noise = self.keep + torch.rand((x.shape[0],) + (1,) * (x.ndim - 1), dtype=x.dtype, device=x.device)
        noise.floor_()
        return x.div(self.keep) * noise


class Residual(nn.Module):
    """x + drop(BN(conv(ReLU(BN(conv(x)))))): the drop sits on the residual stream."""

    def __init__(self, c: int, drop: nn.Module) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, 2 * c, 3, padding=1, bias=False), nn.BatchNorm2d(2 * c)
        self.conv2, self.bn2 = nn.Conv2d(2 * c, c, 1, bias=False), nn.BatchNorm2d(c)
        self.drop = drop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


class DepthNet(nn.Module):
    def __init__(self, make_drop) -> None:
        super().__init__()
        self.stem, self.bn = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.blocks = nn.Sequential(Residual(8, make_drop()), Residual(8, make_drop()))
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.blocks(torch.relu(self.bn(self.stem(x)))).mean((2, 3)))


DROPS = {
    "torchvision StochasticDepth": lambda: StochasticDepth(0.5),
    "fx-wrapped stochastic_depth": lambda: SampleDepth(0.5),
    "timm DropPath": lambda: DropPath(0.5),
    "a user's drop path": lambda: SampleDrop(0.5),
    "an fx-wrapped drop path of another name": lambda: SampleDrops(0.5),
}


def _randomise(model: nn.Module, seed: int = 1) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=g) - 0.5)
    return model


def _keep(groups, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {grp.name: torch.randperm(grp.size, generator=g)[: max(1, grp.size // 2)].sort().values for grp in groups}


def _outputs(model: nn.Module, x: torch.Tensor, training: bool) -> list[torch.Tensor]:
    model.train(training)
    torch.manual_seed(7)  # the same drop masks for the masked and the pruned model
    with torch.no_grad():
        out = model(x)
    return [out] if isinstance(out, torch.Tensor) else [o for o in out if o is not None]


def exact_in_both_modes(model: nn.Module, x: torch.Tensor, groups, keep) -> None:
    """Pruned = dense with the removed channels zeroed, in eval mode and (same random state) in train mode."""
    masked = copy.deepcopy(model)
    mask_groups(masked, keep, groups)
    expected = {mode: _outputs(copy.deepcopy(masked), x, mode) for mode in (False, True)}
    before = sum(p.numel() for p in model.parameters())
    prune_groups(model, keep, groups)
    assert sum(p.numel() for p in model.parameters()) < before
    for mode in (False, True):
        got = _outputs(copy.deepcopy(model), x, mode)
        assert len(got) == len(expected[mode])
        for a, b in zip(got, expected[mode]):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", list(DROPS))
def test_stochastic_depth_is_channel_wise_and_pruning_is_exact_in_both_modes(kind: str) -> None:
    torch.manual_seed(0)
    model, x = _randomise(DepthNet(DROPS[kind])), torch.randn(4, 3, 6, 6)
    groups = find_groups(model, x)
    names = {g.name for g in groups}
    assert {"stem", "blocks.0.conv1", "blocks.1.conv1"} <= names  # the residual stream through the drops too
    stream = next(g for g in groups if g.name == "stem")
    assert {s.name for s in stream.producers()} == {"stem", "blocks.0.conv2", "blocks.1.conv2"}
    exact_in_both_modes(model, x, groups, _keep(groups))
    assert model.stem.out_channels == 4


@pytest.mark.parametrize("kind", ["torchvision StochasticDepth", "a user's drop path"])
def test_stochastic_depth_models_reach_a_macs_target(kind: str) -> None:
    torch.manual_seed(0)
    model, x = DepthNet(DROPS[kind]), torch.randn(2, 3, 6, 6)
    result = prunekit.structural_prune(model, x, macs_target=0.5)
    assert 0.4 < result.macs_ratio <= 0.5
    model.train()
    assert model(x).shape == (2, 5)


class SqueezeExcite(nn.Module):
    def __init__(self, c: int, r: int) -> None:
        super().__init__()
        self.pool, self.fc1, self.fc2 = nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, r, 1), nn.Conv2d(r, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.fc2(F.silu(self.fc1(self.pool(x)))))


class MBConv(nn.Module):
    """EfficientNet's block: expand 1x1, depthwise 3x3, squeeze-excitation, project 1x1, stochastic depth."""

    def __init__(self, c: int, expand: int = 4) -> None:
        super().__init__()
        e = c * expand
        self.block = nn.Sequential(
            nn.Conv2d(c, e, 1, bias=False), nn.BatchNorm2d(e), nn.SiLU(),
            nn.Conv2d(e, e, 3, padding=1, groups=e, bias=False), nn.BatchNorm2d(e), nn.SiLU(),
            SqueezeExcite(e, 2), nn.Conv2d(e, c, 1, bias=False), nn.BatchNorm2d(c))
        self.stochastic_depth = StochasticDepth(0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.stochastic_depth(self.block(x))


def test_efficientnet_blocks_are_pruned_exactly_in_both_modes() -> None:
    torch.manual_seed(0)
    model = _randomise(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.SiLU(),
                                     MBConv(8), MBConv(8), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5)))
    x = torch.randn(4, 3, 6, 6)
    groups = find_groups(model, x)
    assert [g.name for g in groups] == ["0", "3.block.0", "3.block.6.fc1", "4.block.0", "4.block.6.fc1"]
    exact_in_both_modes(model, x, groups, _keep(groups))


def test_stochastic_depth_handlers_match_by_class_name_and_attributes() -> None:
    assert prunekit.coupling.is_leaf(StochasticDepth(0.1)) and prunekit.coupling.is_leaf(DropPath(0.1))

    class DropPathLike(nn.Module):  # the name alone is not enough: no drop_prob
        pass

    DropPathLike.__name__ = "DropPath"
    assert not prunekit.coupling.is_leaf(DropPathLike())
    assert {"StochasticDepth", "DropPath"} <= set(prunekit.list_layer_handlers())


# -- refusals whose fixes work ----------------------------------------------------------------


def mix_channels(x: torch.Tensor) -> torch.Tensor:
    """Something the tracer does not know (a leaf function): scales by a statistic of all channels."""
    return x * torch.sigmoid(x.mean())


torch.fx.wrap("mix_channels")


class Mixer(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return mix_channels(x)


def _fix_exclude(message: str) -> list[str]:
    found = re.search(r"exclude=(\[[^\]]*\])", message)
    assert found, message
    return ast.literal_eval(found.group(1))


def test_refusal_names_an_exclude_value_that_works() -> None:
    torch.manual_seed(0)
    model, x = DepthNet(Mixer), torch.randn(2, 3, 6, 6)
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(UnsupportedOperationError, match=r"mix_channels .* in blocks\.0\.drop \(Mixer\)") as caught:
        prunekit.structural_prune(model, x, sparsity=0.5)
    message = str(caught.value)
    assert "register_layer_handler(Mixer, prunekit.coupling.channelwise)" in message
    exclude = _fix_exclude(message)
    assert exclude == caught.value.exclude
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    # the fix as the message words it
    groups = find_groups(model, x, exclude=exclude)
    assert {g.name for g in groups} == {"blocks.0.conv1", "blocks.1.conv1"}
    result = prunekit.structural_prune(model, x, sparsity=0.5, exclude=exclude)
    assert result.groups_pruned and model(x).shape == (2, 5)


def test_refusal_names_a_channel_wise_handler_that_works() -> None:
    # a drop path written with a function the tracer does not know: the handler is the fix
    torch.manual_seed(0)
    model, x = _randomise(DepthNet(Mixer)), torch.randn(2, 3, 6, 6)
    with pytest.raises(UnsupportedOperationError):
        find_groups(model, x)
    prunekit.register_layer_handler(Mixer, channelwise)
    try:
        groups = find_groups(model, x)
        assert "stem" in {g.name for g in groups}
        assert prunekit.structural_prune(copy.deepcopy(model), x, sparsity=0.5).groups_pruned
    finally:
        prunekit.coupling.unregister_layer_handler(Mixer)


class Sinc(nn.Module):
    """Element-wise, but through a function the coupling rules do not list."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sinc(x)


class Untraceable(DepthNet):
    """fx cannot trace it (control flow on a tensor value): the fallback tracer records a run."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 1e9:
            x = x * 0
        return super().forward(x)


def test_refusal_fixes_work_with_the_fallback_tracer() -> None:
    torch.manual_seed(0)
    model, x = _randomise(Untraceable(Sinc)), torch.randn(2, 3, 6, 6)
    with pytest.raises(UnsupportedOperationError, match=r"sinc .* in blocks\.0\.drop \(Sinc\)") as caught:
        find_groups(model, x)
    assert "register_layer_handler(Sinc, prunekit.coupling.channelwise)" in str(caught.value)
    assert {g.name for g in find_groups(model, x, exclude=_fix_exclude(str(caught.value)))} == {
        "blocks.0.conv1", "blocks.1.conv1"}
    prunekit.register_layer_handler(Sinc, channelwise)
    try:
        groups = find_groups(model, x)
        assert "stem" in {g.name for g in groups}
        exact_in_both_modes(model, x, groups, _keep(groups))
    finally:
        prunekit.coupling.unregister_layer_handler(Sinc)


def test_leaves_without_rules_are_tried_on_their_inputs() -> None:
    # a torch.nn layer without a handler: element-wise ones are accepted, channel-mixing ones refused
    torch.manual_seed(0)
    model, x = DepthNet(lambda: nn.Hardshrink(0.1)), torch.randn(2, 3, 6, 6)
    groups = find_groups(model, x)
    assert "stem" in {g.name for g in groups}
    exact_in_both_modes(model, x, groups, _keep(groups))
    with pytest.raises(UnsupportedOperationError, match="LocalResponseNorm"):
        find_groups(DepthNet(lambda: nn.LocalResponseNorm(3)), x)
    # a wrapped leaf whose result depends on the channel count is refused too
    with pytest.raises(UnsupportedOperationError, match="mix_channels"):
        find_groups(DepthNet(Mixer), x)


def test_refusal_of_a_shuffle_offers_only_the_exclude_fix() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ChannelShuffle(2), nn.Conv2d(8, 4, 1))
    with pytest.raises(UnsupportedOperationError, match="shuffles channels") as caught:
        find_groups(model, torch.randn(1, 3, 4, 4))
    assert "channelwise" not in str(caught.value)
    assert find_groups(model, torch.randn(1, 3, 4, 4), exclude=_fix_exclude(str(caught.value))) == []


# -- no group at all: never a silent success -------------------------------------------------


def test_zero_groups_is_an_error_with_a_fix_that_works() -> None:
    model, x = nn.Sequential(nn.Linear(6, 4)), torch.randn(2, 6)
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(InvalidParameterError, match="no dependency group") as caught:
        prunekit.structural_prune(model, x, sparsity=0.9)
    assert caught.value.param == "model" and "prunekit.prune(model, sparsity=0.5)" in str(caught.value)
    with pytest.raises(InvalidParameterError, match="no dependency group"), pytest.warns(FutureWarning):
        prunekit.structural_prune(model, x, ratio=0.9)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    prunekit.prune(model, sparsity=0.5)  # the fix
    assert (model[0].weight == 0).float().mean().item() == pytest.approx(0.5)


def test_zero_groups_because_of_exclude_says_exclude_fewer() -> None:
    model, x = DepthNet(nn.Identity), torch.randn(2, 3, 6, 6)
    with pytest.raises(InvalidParameterError, match="exclude fewer"):
        prunekit.structural_prune(model, x, sparsity=0.5, exclude="*")


# -- channels normalised by LayerNorm: ConvNeXt, ConvNeXt-V2, MobileViT ----------------------


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW tensor (torchvision's and timm's form)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class Permute(nn.Module):
    def __init__(self, dims: list[int]) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.permute(x, self.dims)


class GRN(nn.Module):
    """ConvNeXt-V2's global response normalisation (channels last)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.randn(1, 1, 1, dim) * 0.1)
        self.beta = nn.Parameter(torch.randn(1, 1, 1, dim) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gx = torch.norm(x, p=2, dim=(1, 2), keepdim=True)
        nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
        return self.gamma * (x * nx) + self.beta + x


class CNBlock(nn.Module):
    """dwconv 7x7 -> channels last -> LayerNorm -> Linear(C, 4C) -> GELU [-> GRN] -> Linear(4C, C)
    -> channels first -> layer scale (V1) -> stochastic depth -> + input."""

    def __init__(self, c: int, v2: bool) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(c, c, 7, padding=3, groups=c), Permute([0, 2, 3, 1]), nn.LayerNorm(c, eps=1e-6),
            nn.Linear(c, 4 * c), nn.GELU(), *([GRN(4 * c)] if v2 else []), nn.Linear(4 * c, c), Permute([0, 3, 1, 2]))
        self.layer_scale = None if v2 else nn.Parameter(torch.full((c, 1, 1), 0.5))
        self.drop = DropPath(0.2) if v2 else StochasticDepth(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        if self.layer_scale is not None:
            y = self.layer_scale * y
        return x + self.drop(y)


class ConvNeXt(nn.Module):
    def __init__(self, v2: bool = False) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 4, stride=4), LayerNorm2d(8))
        self.stage1 = nn.Sequential(CNBlock(8, v2), CNBlock(8, v2))
        self.down = nn.Sequential(LayerNorm2d(8), nn.Conv2d(8, 16, 2, stride=2))
        self.stage2 = CNBlock(16, v2)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.LayerNorm(16), nn.Linear(16, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stage2(self.down(self.stage1(self.stem(x)))))


class TokenMLP(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.norm, self.fc1, self.fc2 = nn.LayerNorm(d), nn.Linear(d, 2 * d), nn.Linear(2 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(F.silu(self.fc1(self.norm(x))))


class MobileViTBlock(nn.Module):
    """Local conv, pixels as tokens (B, HW, d) through a LayerNorm'd MLP, back to a map, projection,
    residual, one-group GroupNorm (MobileViT-V2's LayerNorm over channels)."""

    def __init__(self, c: int = 8, d: int = 12) -> None:
        super().__init__()
        self.local = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.SiLU(),
                                   nn.Conv2d(c, d, 1, bias=False))
        self.mlp, self.norm = TokenMLP(d), nn.LayerNorm(d)
        self.proj = nn.Sequential(nn.Conv2d(d, c, 1, bias=False), nn.BatchNorm2d(c), nn.SiLU())
        self.gn = nn.GroupNorm(1, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.local(x)
        b, c, h, w = y.shape
        tokens = self.norm(self.mlp(y.flatten(2).transpose(1, 2)))
        return self.gn(x + self.proj(tokens.transpose(1, 2).reshape(b, c, h, w)))


class MobileViT(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.SiLU())
        self.block, self.fc = MobileViTBlock(), nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.block(self.stem(x)).mean((2, 3)))


class TimmLayerNorm(nn.LayerNorm):
    """timm's channels-last LayerNorm: the functional call on the module's own weights."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)


class TimmCNBlock(nn.Module):
    """timm's ConvNeXt block: the layer scale is a (C,) parameter reshaped in forward."""

    def __init__(self, c: int, constant_view: bool = False) -> None:
        super().__init__()
        self.conv_dw = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm = TimmLayerNorm(c)
        self.fc1, self.act, self.fc2 = nn.Linear(c, 4 * c), nn.GELU(), nn.Linear(4 * c, c)
        self.gamma = nn.Parameter(torch.linspace(0.5, 1.5, c))
        self.drop_path = DropPath(0.1)
        self.constant_view = constant_view

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.conv_dw(x).permute(0, 2, 3, 1))
        y = self.fc2(self.act(self.fc1(y))).permute(0, 3, 1, 2)
        scale = self.gamma.view(1, 8, 1, 1) if self.constant_view else self.gamma.reshape(1, -1, 1, 1)
        return self.drop_path(y.mul(scale)) + x


def _timm_convnext(constant_view: bool = False) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 4, stride=4), LayerNorm2d(8), TimmCNBlock(8, constant_view),
                         TimmCNBlock(8, constant_view), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))


def test_timm_convnext_layer_scale_is_a_reshaped_parameter_pruned_with_its_channels() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 16, 16)
    dense = _timm_convnext()
    exact = find_groups(dense, x)
    assert [g.name for g in exact] == ["2.fc1", "3.fc1"]
    exact_in_both_modes(dense, x, exact, _keep(exact))
    model = _timm_convnext()
    stream = {g.name: g for g in find_groups(model, x, approximate=True)}["0"]
    assert {("2", "gamma"), ("3", "gamma"), ("1", "weight"), ("2.norm", "weight")} <= {
        (s.name, s.tensor) for s in stream.slices}
    result = prunekit.structural_prune(model, x, macs_target=0.5, approximate=True)
    assert 0.4 < result.macs_ratio <= 0.5 and model[2].gamma.shape[0] == model[0].out_channels < 8
    model.train()
    assert model(x).shape == (2, 5)
    # a size written as a constant (gamma.view(1, 8, 1, 1)) keeps those channels
    assert "0" not in {g.name for g in find_groups(_timm_convnext(constant_view=True), x, approximate=True)}


def test_convnext_mlp_hidden_channels_are_pruned_exactly() -> None:
    torch.manual_seed(0)
    model, x = ConvNeXt(), torch.randn(2, 3, 16, 16)
    groups = find_groups(model, x)
    assert [g.name for g in groups] == ["stage1.0.block.3", "stage1.1.block.3", "stage2.block.3"]
    assert all(g.size == 4 * c and not g.approximate for g, c in zip(groups, (8, 8, 16)))
    exact_in_both_modes(model, x, groups, _keep(groups))


def test_layer_norm_channels_need_approximate_and_the_error_names_it() -> None:
    x = torch.randn(2, 3, 16, 16)
    with pytest.raises(InvalidParameterError, match=r"macs_target.*approximate=True"):
        prunekit.structural_prune(ConvNeXt(), x, macs_target=0.5)
    v2 = ConvNeXt(v2=True)  # GRN normalises the hidden channels too: nothing is exact
    assert find_groups(v2, x) == []
    with pytest.raises(InvalidParameterError, match=r"no dependency group.*approximate=True"):
        prunekit.structural_prune(v2, x, sparsity=0.5)


@pytest.mark.parametrize("name", ["convnext", "convnext_v2", "mobilevit"])
def test_approximate_prunes_layer_norm_channels_to_the_macs_target(name: str) -> None:
    torch.manual_seed(0)
    model = {"convnext": ConvNeXt, "convnext_v2": lambda: ConvNeXt(v2=True), "mobilevit": MobileViT}[name]()
    x = torch.randn(2, 3, 16, 16) if name != "mobilevit" else torch.randn(2, 3, 8, 8)
    groups = {g.name: g for g in find_groups(model, x, approximate=True)}
    stream = groups["stem.0"]  # the stem's channels, normalised by LayerNorm2d / the GroupNorm
    assert stream.approximate and stream.notes
    norms = {n: m for n, m in model.named_modules() if isinstance(m, (nn.LayerNorm, nn.GroupNorm))}
    before = {n: m.weight.shape[0] for n, m in norms.items()}
    result = prunekit.structural_prune(model, x, macs_target=0.5, approximate=True)
    assert 0.4 < result.macs_ratio <= 0.5
    for mode in (False, True):
        model.train(mode)
        assert model(x).shape == (2, 5)
    assert model.stem[0].out_channels < 8
    shrunk = {n for n, m in norms.items() if m.weight.shape[0] < before[n]}
    assert {"stem.1", "down.0"} <= shrunk if name != "mobilevit" else {"block.gn", "block.norm"} <= shrunk
    for m in norms.values():
        if isinstance(m, nn.LayerNorm):
            assert m.normalized_shape == tuple(m.weight.shape)
        else:
            assert (m.num_groups, m.num_channels) == (1, m.weight.shape[0])


# -- branches that run only in training -------------------------------------------------------


class InceptionAux(nn.Module):
    """A GoogLeNet-style auxiliary classifier that runs only in training."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.c2, self.bn2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.aux = nn.Sequential(nn.Conv2d(8, 6, 1), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 16, 3))
        self.aux_logits = True
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor):
        x = torch.relu(self.bn1(self.c1(x)))
        aux = self.aux(x) if self.training and self.aux_logits else None
        x = torch.relu(self.bn2(self.c2(x)))
        out = self.fc(x.mean((2, 3)))
        return (out, aux) if self.training else out


class DataDependentAux(InceptionAux):
    """The same, with control flow on a tensor value: fx cannot trace it (the fallback records runs)."""

    def forward(self, x: torch.Tensor):
        if x.sum() > 1e9:
            x = x * 0
        return super().forward(x)


@pytest.mark.parametrize("cls", [InceptionAux, DataDependentAux])
def test_train_only_branches_are_traced_and_both_modes_work(cls) -> None:
    torch.manual_seed(0)
    model, x = _randomise(cls()), torch.randn(2, 3, 4, 4)
    model.train()
    model.bn1.eval()
    stats = copy.deepcopy(model.state_dict())
    rng = torch.get_rng_state()
    groups = find_groups(model, x)
    # modes restored module by module; no running statistic nor the random state changed
    assert model.training and not model.bn1.training and model.bn2.training
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in stats.items())
    assert torch.equal(rng, torch.get_rng_state())
    c1 = next(g for g in groups if g.name == "c1")
    assert "aux.0" in {s.name for s in c1.consumers()}
    assert "aux.0" in {g.name for g in groups}
    exact_in_both_modes(model, x, groups, _keep(groups))
    assert model.aux[0].in_channels == 4


def test_a_model_that_cannot_run_in_train_mode_keeps_its_eval_graph(caplog) -> None:
    class NeedsTargets(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 2, 1)

        def forward(self, x):
            if self.training:  # as detection models do without targets
                raise ValueError("targets are needed in training")
            return self.b(torch.relu(self.a(x)))

    with caplog.at_level(logging.WARNING, logger="prunekit.coupling.trace"):
        groups = find_groups(NeedsTargets(), torch.randn(1, 3, 4, 4))
    assert [g.name for g in groups] == ["a"]
    assert "cannot be traced in train mode" in caplog.text


# -- grouped convolutions and latency-aware allocation (ResNeXt, RegNet) ----------------------


class ResNeXtBlock(nn.Module):
    def __init__(self, c: int = 16, width: int = 16, groups: int = 4) -> None:
        super().__init__()
        self.a, self.bna = nn.Conv2d(c, width, 1, bias=False), nn.BatchNorm2d(width)
        self.b, self.bnb = nn.Conv2d(width, width, 3, padding=1, groups=groups, bias=False), nn.BatchNorm2d(width)
        self.c, self.bnc = nn.Conv2d(width, c, 1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bnb(self.b(torch.relu(self.bna(self.a(x))))))
        return torch.relu(x + self.bnc(self.c(y)))


class ResNeXt(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.blocks = nn.Sequential(ResNeXtBlock(), ResNeXtBlock())
        self.fc = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.blocks(self.stem(x)).mean((2, 3)))


def test_latency_allocation_on_grouped_convolutions() -> None:
    torch.manual_seed(0)
    model, x = ResNeXt(), torch.randn(1, 3, 8, 8)
    asked: list[LayerSpec] = []

    def timer(spec: LayerSpec) -> float:
        asked.append(spec)
        spec.build()  # every trial layer can be built
        return spec.in_ch * spec.out_ch / spec.groups * spec.hw[0] * spec.hw[1] * 1e-4 + 0.01 * spec.out_ch

    result = prunekit.structural_prune(model, x, macs_target=0.5, allocation="latency", criterion="l2",
                                       latency_table=LatencyTable(timer=timer))
    assert result.macs_ratio <= 0.5
    grouped = [s for s in asked if s.groups > 1]
    assert grouped and all(s.in_ch % s.groups == 0 and s.out_ch % s.groups == 0 for s in grouped)
    assert {s.in_ch for s in grouped} != {16}  # the grouped convs' widths were tried smaller
    assert all(block.b.groups == 4 for block in model.blocks)
    assert model(x).shape == (1, 4)


def test_latency_allocation_on_grouped_convolutions_with_measured_table() -> None:
    torch.manual_seed(0)
    model, x = ResNeXt(), torch.randn(1, 3, 8, 8)
    table = LatencyTable(warmup=0, repeats=1, threads=1)
    result = prunekit.structural_prune(model, x, macs_target=0.6, allocation="latency", criterion="l2",
                                       latency_table=table)
    assert result.macs_ratio <= 0.6 and len(table) > 0
    assert model(x).shape == (1, 4)


def test_latency_sites_of_grouped_and_multiplier_depthwise_convs() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 3, groups=4), nn.Conv2d(8, 16, 3, groups=8),
                          nn.Conv2d(16, 4, 1))
    x = torch.randn(1, 3, 8, 8)
    groups = {g.name: g for g in find_groups(model, x)}
    sites = {s.name: s for s in layer_sites(model, x, list(groups.values()))}
    # one channel of group "0" is one local input index of every one of the 4 conv groups of "1"
    assert sites["1"].widths({"0": 1}) == (4, 8, 4)
    # a channel of "1" is a local index of its 4 conv groups, and feeds a depthwise conv with multiplier 2:
    # 4 inputs (and conv groups) and 8 outputs of "2" go with it
    assert sites["2"].widths({"1": 1}) == (4, 8, 4)
    assert groups["1"].size == 2 and groups["0"].size == 2
    prune_groups(model, {"0": torch.tensor([0]), "1": torch.tensor([1])}, list(groups.values()))
    assert (model[1].in_channels, model[1].out_channels, model[1].groups) == (4, 4, 4)
    assert (model[2].in_channels, model[2].out_channels, model[2].groups) == (4, 8, 4)


class UnknownBlock(nn.Module):
    """A block with a conv and an unknown function: a channel-wise handler for it would be wrong."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return mix_channels(self.conv(x))


def test_refusal_never_offers_channel_wise_for_a_layer_holding_parameters() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 1), UnknownBlock(), nn.Conv2d(8, 4, 1))
    with pytest.raises(UnsupportedOperationError, match=r"layer handler for UnknownBlock whose couple rule") as caught:
        find_groups(model, torch.randn(1, 3, 4, 4))
    assert "channelwise" not in str(caught.value)
    # excluding the block's conv keeps its inputs too; the channels before them stay prunable
    assert caught.value.exclude == ["2.conv"]
    assert [g.name for g in find_groups(model, torch.randn(1, 3, 4, 4), exclude=["2.conv"])] == ["0"]
