"""Coverage matrix of structural surgery: every zoo model, and small models for
each coupling the tracer must find (concat, split, depthwise, grouped conv,
LayerNorm/GroupNorm, PReLU, Embedding) or refuse (shuffles, indexing)."""

from __future__ import annotations

import copy
import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import prunekit
from prunekit.surgery import (
    UnsupportedOperationError,
    find_groups,
    load_shrunk,
    mask_groups,
    prune_groups,
    save_shrunk,
)

# expected prunable groups; ResNets: 3 residual streams + one group inside each of 3n blocks
EXPECTED_GROUPS = {
    "tutorial_lenet": 3,  # conv1 + 2 hidden Linear; fx cannot trace it and the fallback cannot
    # tell whether x.view(-1, n)'s n is computed, so conv2's channels are kept
    "lenet5": 3,  # 2 convs + fc1
    "lenet_300_100": 2,
    "conv2": 4,  # 2 convs + 2 hidden Linear
    "conv4": 6,
    "conv6": 8,
    "vgg11_bn": 8,  # one a conv
    "vgg16_bn": 13,
    "resnet20": 12,
    "resnet32": 18,
    "resnet56": 30,
    "mobilenetv2_cifar": 25,
    "gpt_tiny": 2,  # the MLP of each of its 2 blocks here (residual stream: LayerNorm; heads: surgery.heads)
    "resnet18_imagenet": 12,  # 4 residual streams (the stem feeds layer1's) + one group in each of 8 blocks
    "resnet50_imagenet": 37,  # stem + 4 residual streams + two groups in each of 16 bottlenecks
    "mobilenetv2_imagenet": 25,
    "vgg16_bn_imagenet": 15,  # 13 convs + the 2 hidden classifier layers
}
# smaller than the defaults where the constructor allows it (the test is about structure)
SMALL = {
    "gpt_tiny": {"n_layer": 2, "n_embd": 32, "n_head": 2, "vocab_size": 65},
    "conv2": {"image_size": 16},
    "conv4": {"image_size": 16},
    "conv6": {"image_size": 16},
    "vgg16_bn_imagenet": {"hidden": 64},
}
SLOW = {"resnet56", "vgg16_bn", "mobilenetv2_cifar", "resnet32", "resnet18_imagenet", "resnet50_imagenet",
        "mobilenetv2_imagenet", "vgg16_bn_imagenet"}


def _input(name: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    if name == "gpt_tiny":
        return torch.randint(0, 65, (1, 8), generator=g)
    if name == "lenet_300_100":
        return torch.randn(1, 784, generator=g)
    if name in ("lenet5", "tutorial_lenet"):
        return torch.randn(1, 1, 28, 28, generator=g)
    size = 32 if name.startswith("vgg") else 16 if name.startswith("conv") else 8
    return torch.randn(1, 3, size, size, generator=g)


def _randomise_norms(model: nn.Module) -> None:
    """Non-trivial BatchNorm statistics, so a wrong coupling shows in the outputs."""
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=g) - 0.5)


def _random_keep(groups, ratio: float = 0.3, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        grp.name: torch.randperm(grp.size, generator=g)[: max(1, grp.size - int(ratio * grp.size))].sort().values
        for grp in groups
    }


def check_exact(model: nn.Module, x: torch.Tensor, groups, keep, tmp_path=None, fresh=None, atol: float = 1e-5) -> nn.Module:
    """Masked copy and shrunk model agree; the shrunk model saves and loads."""
    model.eval()
    masked = copy.deepcopy(model)
    mask_groups(masked, keep, groups)
    with torch.no_grad():
        expected = masked(x)
    before = sum(p.numel() for p in model.parameters())
    prune_groups(model, keep, groups)
    with torch.no_grad():
        got = model(x)
    torch.testing.assert_close(got, expected, atol=atol, rtol=1e-4)
    if any(len(k) < grp.size for grp in groups for k in [keep[grp.name]]):
        assert sum(p.numel() for p in model.parameters()) < before
    if tmp_path is not None:
        save_shrunk(model, tmp_path / "shrunk.safetensors")
        load_shrunk(fresh, tmp_path / "shrunk.safetensors").eval()
        with torch.no_grad():
            assert torch.equal(fresh(x), got)
    return model


def _zoo_params():
    for name in prunekit.list_models():
        marks = [pytest.mark.slow] if name in SLOW else []
        yield pytest.param(name, marks=marks, id=name)


@pytest.mark.parametrize("name", list(_zoo_params()))
def test_zoo_model_discovery_removal_exactness_round_trip(name: str, tmp_path) -> None:
    assert name in EXPECTED_GROUPS, f"new zoo model {name}: add it to EXPECTED_GROUPS"
    torch.manual_seed(0)
    model = prunekit.create_model(name, **SMALL.get(name, {}))
    fresh = copy.deepcopy(model)
    _randomise_norms(model)
    x = _input(name)
    groups = find_groups(model, x)
    assert len(groups) == EXPECTED_GROUPS[name]
    assert len({g.name for g in groups}) == len(groups)
    for grp in groups:
        assert grp.producers() or any(s.tensor == "weight" and s.role == "norm" for s in grp.norms())
        assert grp.consumers(), grp  # channels nobody reads are not a group
        for s in grp.slices:
            assert s.index.shape[0] == grp.size
    check_exact(model, x, groups, _random_keep(groups), tmp_path, fresh)


# -- purpose-built models -------------------------------------------------------------


class Concat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(3, 6, 1)
        self.bn = nn.BatchNorm2d(10)
        self.c = nn.Conv2d(10, 5, 3)
        self.fc = nn.Linear(5 * 4 * 4, 3)

    def forward(self, x):
        y = F.relu(self.bn(torch.cat([self.a(x), self.b(x)], dim=1)))
        return self.fc(torch.flatten(F.relu(self.c(y)), 1))


class Split(nn.Module):
    def __init__(self, how: str = "chunk") -> None:
        super().__init__()
        self.how = how
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.left = nn.Conv2d(4, 6, 1)
        self.right = nn.Conv2d(4, 6, 1)
        self.head = nn.Conv2d(6, 2, 1)

    def forward(self, x):
        y = F.relu(self.stem(x))
        if self.how == "chunk":
            a, b = y.chunk(2, dim=1)
        elif self.how == "computed":
            a, b = torch.split(y, y.shape[1] // 2, dim=1)
        else:
            a, b = torch.split(y, [4, 4], dim=1)
        return self.head(F.relu(self.left(a) + self.right(b))).mean((2, 3))


class Depthwise(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.expand = nn.Conv2d(3, 8, 1)
        self.bn1 = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 16, 3, padding=1, groups=8)  # channel multiplier 2
        self.bn2 = nn.BatchNorm2d(16)
        self.project = nn.Conv2d(16, 4, 1)

    def forward(self, x):
        x = F.relu6(self.bn1(self.expand(x)))
        x = F.relu6(self.bn2(self.dw(x)))
        return self.project(x).mean((2, 3))


class Grouped(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 1)
        self.grouped = nn.Conv2d(8, 12, 3, padding=1, groups=2)
        self.bn = nn.BatchNorm2d(12)
        self.fc = nn.Linear(12, 2)

    def forward(self, x):
        x = F.relu(self.bn(self.grouped(F.relu(self.conv1(x)))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class Norms(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.gn = nn.GroupNorm(4, 8)
        self.prelu = nn.PReLU(8)
        self.conv2 = nn.Conv2d(8, 6, 1)
        self.fc1 = nn.Linear(6, 10)
        self.ln = nn.LayerNorm(10)
        self.fc2 = nn.Linear(10, 2)

    def forward(self, x):
        x = self.prelu(self.gn(self.conv1(x)))
        x = F.gelu(self.conv2(x)).mean((2, 3))
        return self.fc2(self.ln(self.fc1(x)))


class Embedder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, 8)
        self.pos = nn.Parameter(torch.randn(6, 8))
        self.fc1 = nn.Linear(8, 12)
        self.fc2 = nn.Linear(12, 3)

    def forward(self, idx):
        h = self.emb(idx) + self.pos[: idx.shape[1]]
        return self.fc2(F.silu(self.fc1(h))).mean(1)


def _slices(group) -> set[tuple[str, str, int, str]]:
    return {(s.name, s.tensor, s.dim, s.role) for s in group.slices}


def test_concat_offsets() -> None:
    torch.manual_seed(0)
    model, x = Concat(), torch.randn(2, 3, 6, 6)
    _randomise_norms(model)
    groups = {g.name: g for g in find_groups(model, x)}
    assert set(groups) == {"a", "b", "c"}
    a, b = groups["a"], groups["b"]
    assert (a.size, b.size) == (4, 6)
    bn_a = next(s for s in a.slices if s.name == "bn" and s.tensor == "weight")
    bn_b = next(s for s in b.slices if s.name == "bn" and s.tensor == "weight")
    assert bn_a.index.tolist() == [0, 1, 2, 3] and bn_b.index.tolist() == list(range(4, 10))
    assert ("c", "weight", 1, "in") in _slices(a) & _slices(b)
    fc_in = next(s for s in groups["c"].slices if s.name == "fc")
    assert fc_in.index.shape == (5, 16) and fc_in.positions(1).tolist() == list(range(16, 32))
    check_exact(model, x, list(groups.values()), {"a": torch.tensor([1, 3]), "b": torch.tensor([0, 2, 5]), "c": torch.tensor([0, 4])})
    assert model.bn.num_features == 5 and model.c.in_channels == 5 and model.fc.in_features == 32


def test_chunk_couples_the_parts_and_sum_of_branches() -> None:
    torch.manual_seed(0)
    model, x = Split("chunk"), torch.randn(2, 3, 5, 5)
    groups = {g.name: g for g in find_groups(model, x)}
    assert set(groups) == {"stem", "left"}
    assert ("right", "weight", 0, "out") in _slices(groups["left"])  # summed branches: one group
    stem = groups["stem"]
    assert stem.size == 4 and stem.producers()[0].positions(1).tolist() == [1, 5]  # channel 1 of both parts
    assert {("left", "weight", 1, "in"), ("right", "weight", 1, "in")} <= _slices(stem)
    check_exact(model, x, list(groups.values()), {"stem": torch.tensor([0, 2]), "left": torch.tensor([0, 1, 5])})
    assert model.stem.out_channels == 4 and model.left.in_channels == 2 and model.right.in_channels == 2


@pytest.mark.parametrize("how", ["constant", "computed"])
def test_split_sized_by_the_code_is_not_pruned(how: str) -> None:
    # split(y, [4, 4]) and split(y, y.shape[1] // 2): the code would not follow a removal
    assert [g.name for g in find_groups(Split(how), torch.randn(1, 3, 4, 4))] == ["left"]


class ToImage(nn.Module):
    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how
        self.a, self.c = nn.Linear(3, 8), nn.Conv2d(8, 4, 1)
        self.unflatten = nn.Unflatten(1, (8, 1, 1))

    def forward(self, x):
        y = self.a(x)
        if self.how == "module":
            y = self.unflatten(y)
        elif self.how == "function":
            y = torch.unflatten(y, 1, (8, 1, 1))
        else:
            y = y[:, :, None, None]
        return self.c(y).flatten(1)


@pytest.mark.parametrize("how, found", [("module", []), ("function", []), ("index", ["a"])])
def test_unflatten_with_constant_sizes_keeps_channels(how: str, found: list[str]) -> None:
    # nn.Unflatten(1, (8, 1, 1)) and torch.unflatten(y, 1, (8, 1, 1)) write 8 in the code; y[:, :, None, None] does not
    assert [g.name for g in find_groups(ToImage(how), torch.randn(1, 3))] == found


class SqueezeExcite(nn.Module):
    """Sizes read from one tensor and used to view another (Hu et al., SE-Net, CVPR 2018)."""

    def __init__(self, sized_by: str = "x") -> None:
        super().__init__()
        self.sized_by = sized_by
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.other = nn.Conv2d(3, 8, 1)
        self.fc1, self.fc2 = nn.Linear(8, 4), nn.Linear(4, 8)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, inputs):
        x = F.relu(self.conv(inputs))
        size_source = x if self.sized_by == "x" else self.other(inputs)
        b, c = size_source.size(0), size_source.size(1)
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean((2, 3)))))).view(b, c, 1, 1)
        return self.head(x * gate).mean((2, 3))


def test_size_read_and_used_as_is_couples_by_the_channels() -> None:
    torch.manual_seed(0)
    model, x = SqueezeExcite(), torch.randn(2, 3, 4, 4)
    groups = {g.name: g for g in find_groups(model, x)}
    assert set(groups) == {"conv", "fc1"}
    assert ("fc2", "weight", 0, "out") in _slices(groups["conv"])  # gate channels = x channels
    check_exact(model, x, list(groups.values()), {"conv": torch.tensor([0, 3, 6]), "fc1": torch.tensor([1, 2])})
    assert model(x).shape == (2, 2)


def test_size_of_other_channels_keeps_both() -> None:
    model = SqueezeExcite("other")
    assert [g.name for g in find_groups(model, torch.randn(2, 3, 4, 4))] == ["fc1"]


def test_depthwise_conv_couples_input_and_output() -> None:
    torch.manual_seed(0)
    model, x = Depthwise(), torch.randn(2, 3, 5, 5)
    _randomise_norms(model)
    groups = find_groups(model, x)
    assert [g.name for g in groups] == ["expand"]
    (grp,) = groups
    assert grp.size == 8
    dw = next(s for s in grp.slices if s.name == "dw" and s.tensor == "weight")
    assert dw.index.shape == (8, 2) and dw.positions(3).tolist() == [6, 7]
    check_exact(model, x, groups, {"expand": torch.tensor([0, 3, 4])})
    assert (model.dw.in_channels, model.dw.out_channels, model.dw.groups) == (3, 6, 3)
    assert model.project.in_channels == 6


def test_grouped_conv_removes_the_same_index_in_every_group() -> None:
    torch.manual_seed(0)
    model, x = Grouped(), torch.randn(2, 3, 5, 5)
    _randomise_norms(model)
    groups = {g.name: g for g in find_groups(model, x)}
    conv1, grouped = groups["conv1"], groups["grouped"]
    assert conv1.size == 4 and conv1.producers()[0].positions(1).tolist() == [1, 5]
    assert grouped.size == 6 and grouped.producers()[0].positions(0).tolist() == [0, 6]
    check_exact(model, x, list(groups.values()), {"conv1": torch.tensor([0, 3]), "grouped": torch.tensor([1, 2, 5])})
    assert (model.grouped.in_channels, model.grouped.out_channels, model.grouped.groups) == (4, 6, 2)


def test_group_norm_prelu_exact_and_layer_norm_approximate() -> None:
    torch.manual_seed(0)
    model, x = Norms(), torch.randn(2, 3, 4, 4)
    groups = {g.name: g for g in find_groups(model, x)}
    assert set(groups) == {"conv1", "conv2"}  # fc1 feeds a LayerNorm: approximate only
    conv1 = groups["conv1"]
    assert conv1.size == 4 and conv1.producers()[0].index.shape == (4, 2)  # whole GroupNorm groups
    assert ("prelu", "weight", 0, "norm") in _slices(conv1) and ("gn", "bias", 0, "norm") in _slices(conv1)
    check_exact(model, x, list(groups.values()), {"conv1": torch.tensor([1, 2]), "conv2": torch.tensor([0, 5])})
    assert (model.gn.num_groups, model.gn.num_channels, model.prelu.num_parameters) == (2, 4, 4)

    approx = {g.name: g for g in find_groups(model, x, approximate=True)}
    fc1 = approx["fc1"]
    assert fc1.approximate and "normalises over these channels" in fc1.notes[0]
    assert ("ln", "weight", 0, "norm") in _slices(fc1)
    prune_groups(model, {"fc1": torch.tensor([0, 1, 2, 7])}, list(approx.values()))
    assert model.ln.normalized_shape == (4,) and model(x).shape == (2, 2)


def test_norms_whose_size_nothing_records_are_kept() -> None:
    gn = nn.Sequential(nn.Conv2d(3, 8, 1), nn.GroupNorm(4, 8, affine=False), nn.Conv2d(8, 4, 1), nn.Flatten(), nn.Linear(36, 2))
    assert [g.name for g in find_groups(gn, torch.randn(1, 3, 3, 3))] == ["2"]
    ln = nn.Sequential(nn.Linear(3, 8), nn.LayerNorm(8, elementwise_affine=False), nn.Linear(8, 2))
    assert find_groups(ln, torch.randn(1, 3), approximate=True) == []

    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.w = nn.Linear(3, 8), nn.Linear(8, 2), nn.Parameter(torch.ones(8))

        def forward(self, x):
            return self.b(F.layer_norm(self.a(x), (8,), self.w))

    assert find_groups(Functional(), torch.randn(1, 3), approximate=True) == []


def test_embedding_and_parameter_used_by_a_function() -> None:
    torch.manual_seed(0)
    model, idx = Embedder(), torch.randint(0, 20, (2, 5))
    groups = {g.name: g for g in find_groups(model, idx)}
    assert set(groups) == {"emb", "fc1"}
    emb = groups["emb"]
    assert {("emb", "weight", 1, "norm"), ("", "pos", 1, "norm"), ("fc1", "weight", 1, "in")} <= _slices(emb)
    check_exact(model, idx, list(groups.values()), {"emb": torch.tensor([0, 2, 3, 7]), "fc1": torch.tensor([1, 5, 6])})
    assert model.emb.embedding_dim == 4 and model.pos.shape == (6, 4)


class Mixed(nn.Module):
    """Transposed conv, instance norm, upsampling, a channels-last Linear (ConvNeXt
    style permute), Conv1d with BatchNorm1d on a reshaped sequence."""

    def __init__(self) -> None:
        super().__init__()
        self.down = nn.Conv2d(3, 6, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(6, 5, 2, stride=2)
        self.norm = nn.InstanceNorm2d(5, affine=True)
        self.upsample = nn.Upsample(scale_factor=2)
        self.pointwise = nn.Linear(5, 7)
        self.seq = nn.Conv1d(7, 4, 3, padding=1)
        self.bn = nn.BatchNorm1d(4)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        y = self.upsample(self.norm(self.up(F.relu(self.down(x)))))
        y = F.gelu(self.pointwise(y.permute(0, 2, 3, 1))).permute(0, 3, 1, 2)
        y = F.relu(self.bn(self.seq(y.flatten(2))))
        return self.head(y.mean(2))


def test_transposed_conv_instance_norm_channels_last_linear_conv1d() -> None:
    torch.manual_seed(0)
    model, x = Mixed(), torch.randn(2, 3, 4, 4)
    _randomise_norms(model)
    groups = {g.name: g for g in find_groups(model, x)}
    assert set(groups) == {"down", "up", "pointwise", "seq"}
    assert ("up", "weight", 0, "in") in _slices(groups["down"]) and ("up", "weight", 1, "out") in _slices(groups["up"])
    assert ("norm", "weight", 0, "norm") in _slices(groups["up"]) and ("pointwise", "weight", 1, "in") in _slices(groups["up"])
    assert ("seq", "weight", 1, "in") in _slices(groups["pointwise"])
    keep = {"down": torch.tensor([0, 4]), "up": torch.tensor([1, 2, 3]), "pointwise": torch.tensor([0, 6]), "seq": torch.tensor([3])}
    check_exact(model, x, list(groups.values()), keep)
    assert (model.up.in_channels, model.up.out_channels, model.norm.num_features) == (2, 3, 3)
    assert (model.seq.in_channels, model.bn.num_features, model.head.in_features) == (2, 1, 1)


class Tied(nn.Module):
    """Output head tied to the embedding (GPT-2 style), an MLP on the residual stream."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(40, 8)
        self.fc1, self.fc2 = nn.Linear(8, 16), nn.Linear(16, 8)
        self.head = nn.Linear(8, 40, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, idx):
        h = self.emb(idx)
        h = h + self.fc2(F.relu(self.fc1(h)))
        return self.head(h)


def test_tied_weights_stay_tied(tmp_path) -> None:
    torch.manual_seed(0)
    model, idx = Tied(), torch.randint(0, 40, (2, 5))
    fresh = Tied()
    groups = {g.name: g for g in find_groups(model, idx)}
    assert set(groups) == {"fc1", "fc2"}
    stream = groups["fc2"]
    tied = next(s for s in stream.slices if s.tensor == "weight" and s.dim == 1 and s.name in ("emb", "head"))
    assert {tied.name, *tied.aliases} == {"emb", "head"}
    keep = {"fc1": torch.tensor([0, 5, 9]), "fc2": torch.tensor([1, 2, 6])}
    check_exact(model, idx, list(groups.values()), keep, tmp_path, fresh)
    for m in (model, fresh):
        assert m.head.weight is m.emb.weight and m.emb.weight.shape == (40, 3)  # 120 values: stored densely
        assert m.head.in_features == 3 and m.emb.embedding_dim == 3


# -- refusals ----------------------------------------------------------------------------


class Refused(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.conv1 = nn.Conv2d(3, 8, 1)
        self.conv2 = nn.Conv2d(8 if kind not in ("pixel_shuffle", "slice") else 2, 4, 1)
        self.shuffle = nn.ChannelShuffle(2) if kind == "channel_shuffle_module" else nn.Identity()

    def forward(self, x):
        y = self.conv1(x)
        if self.kind == "channel_shuffle":
            y = torch.channel_shuffle(y, 2)
        elif self.kind == "channel_shuffle_module":
            y = self.shuffle(y)
        elif self.kind == "pixel_shuffle":
            y = F.pixel_shuffle(y, 2)
        elif self.kind == "index":
            y = y[:, torch.tensor([1, 0, 2, 3, 4, 5, 6, 7])]
        elif self.kind == "slice":
            y = y[:, 2:4]
        elif self.kind == "unknown":
            y = torch.fft.fft(y, dim=1).real
        return self.conv2(y).mean((2, 3))


@pytest.mark.parametrize(
    "kind, words",
    [
        ("channel_shuffle", "shuffles channels"),
        ("channel_shuffle_module", "ChannelShuffle"),
        ("pixel_shuffle", "moves channels into space"),
        ("index", "indexes channels with a tensor"),
        ("slice", "slices the channels"),
        ("unknown", "fft"),
    ],
)
def test_mis_modelled_operations_are_refused_by_name(kind: str, words: str) -> None:
    model = Refused(kind)
    with pytest.raises(UnsupportedOperationError, match=words):
        find_groups(model, torch.randn(1, 3, 4, 4))
    groups = find_groups(model, torch.randn(1, 3, 4, 4), exclude="conv1")  # the fix the message gives
    assert [g.name for g in groups] == []


def test_fallback_tracer_for_data_dependent_control_flow(caplog) -> None:
    class Branchy(Concat):
        def forward(self, x):
            if x.sum() > -1e9:  # fx cannot trace this
                return super().forward(x)
            return x

    torch.manual_seed(0)
    model, x = Branchy(), torch.randn(2, 3, 6, 6)
    with caplog.at_level(logging.WARNING, logger="prunekit.coupling.trace"):
        groups = find_groups(model, x)
    assert "recording one forward pass" in caplog.text
    reference = find_groups(Concat(), x)
    assert [(g.name, g.size, sorted(_slices(g))) for g in groups] == [(g.name, g.size, sorted(_slices(g))) for g in reference]
    check_exact(model, x, groups, _random_keep(groups, 0.5))


@pytest.mark.parametrize("mode", ["reparam", "inplace"])
def test_fallback_tracer_on_masked_models(mode: str) -> None:
    from prunekit.masks import apply_masks
    from prunekit.targets import select_targets

    class Branchy(Concat):
        def forward(self, x):
            return super().forward(x) if x.sum() > -1e9 else x

    torch.manual_seed(0)
    model, x = Branchy(), torch.randn(2, 3, 6, 6)
    targets = select_targets(model)
    apply_masks(targets, [torch.rand(t.shape) > 0.4 for t in targets], mode=mode)
    groups = find_groups(model, x)
    assert [(g.name, g.size) for g in groups] == [("a", 4), ("b", 6), ("c", 5)]
    check_exact(model, x, groups, _random_keep(groups, 0.5))


class Twice(nn.Module):
    """One conv applied twice: its input and output channels are one group."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(3, 6, 1), nn.Conv2d(6, 6, 1), nn.Linear(6, 2)

    def forward(self, x):
        y = F.relu(self.b(F.relu(self.b(F.relu(self.a(x))))))
        return self.c(y.mean((2, 3)))


def test_module_called_twice_couples_its_input_and_output() -> None:
    torch.manual_seed(0)
    model, x = Twice(), torch.randn(2, 3, 4, 4)
    (group,) = find_groups(model, x)
    assert {("b", "weight", 0, "out"), ("b", "weight", 1, "in")} <= _slices(group)
    check_exact(model, x, [group], {"a": torch.tensor([1, 4])})
    assert (model.b.in_channels, model.b.out_channels) == (2, 2)


class TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 6), nn.Linear(4, 6)
        self.out1, self.out2 = nn.Linear(6, 2), nn.Linear(6, 2)

    def forward(self, x):
        return self.out1(F.relu(self.fc1(x))) + self.out2(torch.tanh(self.fc2(x)))


def test_exclude_drops_the_groups_touching_a_module() -> None:
    model, x = Concat(), torch.randn(2, 3, 6, 6)
    assert [g.name for g in find_groups(model, x, exclude=["a"])] == ["b", "c"]
    assert [g.name for g in find_groups(model, x, exclude="f*")] == ["a", "b"]  # fc reads c's channels
    assert [g.name for g in find_groups(model, x, exclude="c")] == []  # c reads a and b, c is never changed
    with pytest.raises(prunekit.InvalidParameterError, match="exclude"):
        find_groups(model, x, exclude=[3])
    with pytest.raises(prunekit.InvalidParameterError, match="Did you mean 'bn'"):
        find_groups(model, x, exclude="bnn")


def test_extra_groups_declare_a_coupling() -> None:
    torch.manual_seed(0)
    model, x = TwoHeads(), torch.randn(3, 4)
    assert [g.name for g in find_groups(model, x)] == ["fc1", "fc2"]
    declared = [[("fc1", "weight", 0), ("fc2", "weight", 0)]]
    (merged,) = find_groups(model, x, extra_groups=declared)
    assert merged.size == 6 and {("fc2", "bias", 0, "norm"), ("out2", "weight", 1, "in")} <= _slices(merged)
    check_exact(model, x, [merged], {"fc1": torch.tensor([0, 4])})
    assert model.fc2.out_features == 2 and model.out2.in_features == 2
    with pytest.raises(prunekit.InvalidParameterError, match="extra_groups"):
        find_groups(TwoHeads(), x, extra_groups=[[("fc1", "weight", 0), ("out1", "weight", 0)]])  # 6 vs 2
    with pytest.raises(prunekit.InvalidParameterError, match="extra_groups"):
        find_groups(TwoHeads(), x, extra_groups=[[("fc9", "weight", 0)]])


# -- transformer families through the tracer (MLP neurons; heads: tests/test_surgery_heads.py) --


def _hf_models():
    transformers = pytest.importorskip("transformers")
    tokens = torch.randint(0, 50, (1, 6), generator=torch.Generator().manual_seed(0))
    small = dict(num_hidden_layers=2, num_attention_heads=2, hidden_size=16, intermediate_size=32)
    return {
        "gpt2": (transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=2, n_head=2, n_embd=16, vocab_size=50, n_positions=16)), tokens, "mlp.c_fc", "nf", 64),
        "bert": (transformers.BertModel(transformers.BertConfig(vocab_size=50, **small)), tokens, "intermediate.dense", "out_features", 32),
        "llama": (transformers.LlamaForCausalLM(transformers.LlamaConfig(vocab_size=50, num_key_value_heads=1, **small)), tokens, "mlp.gate_proj", "out_features", 32),
        "vit": (transformers.ViTModel(transformers.ViTConfig(image_size=8, patch_size=4, **small)), torch.randn(1, 3, 8, 8), "mlp.fc1", "out_features", 32),
    }


def _first_output(out):
    return out[0] if isinstance(out, tuple) else out.to_tuple()[0]


@pytest.mark.slow
def test_hugging_face_mlp_neurons_through_the_fallback_tracer() -> None:
    torch.manual_seed(0)
    for family, (model, x, suffix, attribute, width) in _hf_models().items():
        model.eval()
        groups = find_groups(model, x)
        assert len(groups) == 2 and all(g.name.endswith(suffix) and g.size == width for g in groups), (family, groups)
        if family == "llama":  # gate and up projections are one group (SwiGLU product)
            assert any(s.name.endswith("up_proj") and s.role == "out" for s in groups[0].slices)
        keep = {g.name: torch.arange(0, g.size, 2) for g in groups}
        masked = copy.deepcopy(model)
        mask_groups(masked, keep, groups)
        with torch.no_grad():
            expected = _first_output(masked(x))
            prune_groups(model, keep, groups)
            got = _first_output(model(x))
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
        assert getattr(groups[0].producers()[0].module, attribute) == width // 2, family
