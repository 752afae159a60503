"""Surgery core: slicing, record/replay, groups, removal, exactness, saving, optimizer."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from prunekit.errors import CheckpointError, InvalidParameterError
from prunekit.masks import apply_masks
from prunekit.surgery import (
    SurgeryRecord,
    carry_optimizer,
    find_groups,
    keep_slices,
    load_shrunk,
    mask_groups,
    prune_groups,
    read_history,
    replay,
    save_shrunk,
    surgery_history,
    update_module_attributes,
)
from prunekit.targets import select_targets, tensor_state


def _keep(*idx: int) -> torch.Tensor:
    return torch.tensor(idx, dtype=torch.long)


# -- slicing -----------------------------------------------------------------------


def test_keep_slices_parameter_and_buffer() -> None:
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(4)
    bn.running_mean.uniform_()
    w_before, mean_before = bn.weight, bn.running_mean.clone()
    swap = keep_slices(bn, "weight", 0, _keep(0, 2))
    keep_slices(bn, "running_mean", 0, _keep(0, 2))
    assert isinstance(bn.weight, nn.Parameter) and bn.weight is not w_before and bn.weight.requires_grad
    assert swap is not None and swap.old() is w_before and swap.new is bn.weight
    assert keep_slices(bn, "running_mean", 0, _keep(1)) is None  # a buffer: no swap
    assert "running_mean" in bn._buffers and torch.equal(bn.running_mean, mean_before[[2]])


def test_keep_slices_conv_updates_attributes_and_runs() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 6, 3)
    x = torch.randn(1, 3, 5, 5)
    full = conv(x)
    keep_slices(conv, "weight", 0, _keep(1, 4, 5))
    keep_slices(conv, "bias", 0, _keep(1, 4, 5))
    update_module_attributes(conv)
    assert conv.out_channels == 3 and conv.in_channels == 3
    torch.testing.assert_close(conv(x), full[:, [1, 4, 5]])


def test_depthwise_conv_loses_whole_groups() -> None:
    conv = nn.Conv2d(4, 8, 3, groups=4)  # channel multiplier 2
    keep_slices(conv, "weight", 0, _keep(0, 1, 6, 7))
    keep_slices(conv, "bias", 0, _keep(0, 1, 6, 7))
    update_module_attributes(conv)
    update_module_attributes(conv)  # idempotent
    assert (conv.in_channels, conv.out_channels, conv.groups) == (2, 4, 2)
    assert conv(torch.randn(1, 2, 4, 4)).shape == (1, 4, 2, 2)


def test_keep_slices_reparam_and_inplace_states() -> None:
    torch.manual_seed(0)
    for mode in ("reparam", "inplace"):
        lin = nn.Linear(4, 3)
        target = select_targets(lin)[0]
        apply_masks([target], [torch.rand(3, 4) > 0.5], mode=mode)
        before = lin.weight.detach().clone()
        keep_slices(lin, "weight", 1, _keep(0, 3))
        update_module_attributes(lin)
        assert tensor_state(lin, "weight") == mode and lin.in_features == 2
        assert lin.weight_mask.shape == (3, 2)
        torch.testing.assert_close(lin.weight.detach(), before[:, [0, 3]])
        assert lin(torch.randn(2, 2)).shape == (2, 3)


def test_inplace_mask_enforced_on_new_parameter_after_slicing() -> None:
    torch.manual_seed(0)
    lin = nn.Linear(4, 3)
    apply_masks(select_targets(lin), [torch.tensor([[1, 0, 1, 1]] * 3, dtype=torch.bool)], mode="inplace")
    keep_slices(lin, "weight", 1, _keep(1, 2))
    opt = torch.optim.SGD(lin.parameters(), lr=0.5)
    lin(torch.randn(5, 2)).sum().backward()
    opt.step()
    assert torch.all(lin.weight[:, 0] == 0)  # the mask's zero column survives the update


@pytest.mark.parametrize(
    "keep",
    [torch.tensor([2, 1]), torch.tensor([0, 9]), torch.tensor([], dtype=torch.long), torch.tensor([0.0, 1.0])],
)
def test_keep_slices_rejects_bad_indices(keep: torch.Tensor) -> None:
    lin = nn.Linear(4, 3)
    weight = lin.weight
    with pytest.raises(InvalidParameterError, match="keep"):
        keep_slices(lin, "weight", 1, keep)
    assert lin.weight is weight


def test_keep_slices_rejects_unknown_tensor() -> None:
    with pytest.raises(InvalidParameterError, match="tensor_name"):
        keep_slices(nn.Linear(2, 2), "wieght", 0, _keep(0))


def test_record_replays_on_fresh_model() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
    fresh = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
    fresh.load_state_dict(model.state_dict())
    record = SurgeryRecord()
    keep = _keep(0, 3, 5)
    record.slice(model, "0", "weight", 0, keep)
    record.slice(model, "0", "bias", 0, keep)
    record.slice(model, "2", "weight", 1, keep)
    for name in record.modules():
        update_module_attributes(model.get_submodule(name))
    again = SurgeryRecord.from_json(record.to_json())
    replay(fresh, again.removals)
    x = torch.randn(3, 4)
    assert torch.equal(model(x), fresh(x))
    assert fresh[0].out_features == 3 and fresh[2].in_features == 3


def test_replay_validates_before_slicing() -> None:
    model = nn.Sequential(nn.Linear(4, 6))
    record = SurgeryRecord()
    record.slice(nn.Sequential(nn.Linear(4, 6)), "0", "bias", 0, _keep(1))
    bad = SurgeryRecord.from_json(
        {"removals": [r.to_json() for r in record.removals] + [{"module": "0", "tensor": "weight", "dim": 0, "keep": [7]}]}
    )
    with pytest.raises(InvalidParameterError, match="record"):
        replay(model, bad.removals)
    assert model[0].bias.shape == (6,)


# -- groups, removal, exactness ------------------------------------------------------------


class Net(nn.Module):
    """conv-BN-ReLU twice with a residual sum, flatten into a Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(6)
        self.conv3 = nn.Conv2d(6, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 2 * 2, 5)
        self.out = nn.Linear(5, 3)

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(y + self.bn2(self.conv2(y)))
        y = torch.relu(self.conv3(y)).flatten(1)
        return self.out(torch.relu(self.fc(y)))


def _net(seed: int = 0) -> Net:
    torch.manual_seed(seed)
    net = Net()
    with torch.no_grad():
        for bn in (net.bn1, net.bn2):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 1.5)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
    return net.eval()


X = torch.randn(2, 3, 2, 2, generator=torch.Generator().manual_seed(5))
KEEP = {"conv1": torch.tensor([0, 2, 5]), "conv3": torch.tensor([1, 3]), "fc": torch.tensor([0, 1, 4])}


def test_groups_of_a_residual_net() -> None:
    groups = {g.name: g for g in find_groups(_net(), X)}
    assert set(groups) == {"conv1", "conv3", "fc"}
    residual = {(s.name, s.tensor, s.dim, s.role) for s in groups["conv1"].slices}
    assert {("conv1", "weight", 0, "out"), ("conv2", "weight", 0, "out"), ("conv2", "weight", 1, "in"),
            ("conv3", "weight", 1, "in"), ("bn2", "running_var", 0, "norm")} <= residual
    fc_in = next(s for s in groups["conv3"].slices if s.name == "fc")
    assert fc_in.index.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15]]
    assert fc_in.per_channel == 4 and fc_in.positions(2).tolist() == [8, 9, 10, 11]
    assert [s.role for s in groups["fc"].slices] == ["out", "in", "norm"]


def test_removal_equals_masked_model() -> None:
    net, groups = _net(), None
    groups = find_groups(net, X)
    masked = copy.deepcopy(net)
    mask_groups(masked, KEEP, groups)
    record = prune_groups(net, KEEP, groups)
    torch.testing.assert_close(net(X), masked(X), atol=1e-5, rtol=1e-5)
    assert (net.conv2.in_channels, net.conv2.out_channels, net.bn2.num_features) == (3, 3, 3)
    assert (net.fc.in_features, net.fc.out_features, net.out.in_features) == (8, 3, 3)
    assert net.bn1.running_mean.shape == (3,) and record.kept["conv1"] == [0, 2, 5]


def test_zero_percent_is_bit_exact_and_touches_nothing() -> None:
    net = _net()
    groups = find_groups(net, X)
    before, params = net(X), [id(p) for p in net.parameters()]
    record = prune_groups(net, {g.name: torch.arange(g.size) for g in groups}, groups)
    assert torch.equal(net(X), before) and [id(p) for p in net.parameters()] == params
    assert record.removals == []


@pytest.mark.parametrize("mode", ["reparam", "inplace"])
def test_removal_of_masked_models(mode: str) -> None:
    net = _net()
    targets = select_targets(net, types=(nn.Conv2d, nn.Linear))
    g = torch.Generator().manual_seed(3)
    apply_masks(targets, [torch.rand(t.shape, generator=g) > 0.3 for t in targets], mode=mode)
    groups = find_groups(net, X)
    masked = copy.deepcopy(net)
    mask_groups(masked, KEEP, groups)
    prune_groups(net, KEEP, groups)
    torch.testing.assert_close(net(X), masked(X), atol=1e-5, rtol=1e-5)
    assert tensor_state(net.conv2, "weight") == mode and net.conv2.weight_mask.shape == (3, 3, 3, 3)


def _bad_keeps():
    return [
        ({"conv9": torch.tensor([0])}, "Did you mean 'conv"),
        ({"conv1": torch.tensor([2, 0])}, "sorted"),
        ({"conv1": torch.tensor([], dtype=torch.long)}, "at least one"),
        ({"conv1": torch.tensor([0, 6])}, r"\[0, 6\)"),
        ({"conv1": torch.tensor([0.0, 1.0])}, "integer"),
    ]


@pytest.mark.parametrize("keep, words", _bad_keeps())
def test_bad_keep_is_refused_before_anything_changes(keep, words) -> None:
    net = _net()
    groups = find_groups(net, X)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    good = {"conv3": torch.tensor([0])}  # valid, listed first: must not be applied either
    with pytest.raises(InvalidParameterError, match=words):
        prune_groups(net, {**good, **keep}, groups)
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in state.items())


def test_groups_must_be_found_on_the_model_as_it_is() -> None:
    net = _net()
    groups = find_groups(net, X)
    with pytest.raises(InvalidParameterError, match="this model"):
        prune_groups(_net(), KEEP, groups)
    prune_groups(net, KEEP, groups)
    with pytest.raises(InvalidParameterError, match="find the groups again"):
        prune_groups(net, KEEP, groups)
    again = find_groups(net, X)
    prune_groups(net, {"conv1": torch.tensor([1])}, again)
    assert net.conv1.out_channels == 1 and net(X).shape == (2, 3)


def test_example_inputs_checked() -> None:
    with pytest.raises(InvalidParameterError, match="example_inputs"):
        find_groups(_net(), "x")


# -- saving ---------------------------------------------------------------------------------


def test_save_and_load_shrunk_bit_exact(tmp_path) -> None:
    net = _net()
    groups = find_groups(net, X)
    prune_groups(net, KEEP, groups)
    prune_groups(net, {"conv1": torch.tensor([0, 2])}, find_groups(net, X))  # a second round
    path = tmp_path / "net.safetensors"
    save_shrunk(net, path)
    fresh = _net(seed=1)  # different weights: all must come from the file
    load_shrunk(fresh, path)
    assert torch.equal(fresh(X), net(X))
    assert fresh.conv2.weight.shape == (2, 2, 3, 3) and fresh.fc.in_features == 8
    assert len(read_history(path).removals) == len(surgery_history(net).removals) > 0
    again = tmp_path / "again.safetensors"
    save_shrunk(fresh, again)  # a loaded model saves again
    assert torch.equal(load_shrunk(_net(), again)(X), net(X))


def test_save_and_load_masked_shrunk_model(tmp_path) -> None:
    net = _net()
    targets = select_targets(net)
    apply_masks(targets, [torch.rand(t.shape, generator=torch.Generator().manual_seed(4)) > 0.5 for t in targets])
    prune_groups(net, KEEP, find_groups(net, X))
    save_shrunk(net, tmp_path / "m.safetensors")
    fresh = load_shrunk(_net(seed=2), tmp_path / "m.safetensors")
    assert torch.equal(fresh(X), net(X)) and tensor_state(fresh.conv2, "weight") == "reparam"


def test_load_shrunk_errors(tmp_path) -> None:
    net = _net()
    prune_groups(net, KEEP, find_groups(net, X))
    save_shrunk(net, tmp_path / "net.safetensors")
    with pytest.raises(InvalidParameterError, match="record"):
        load_shrunk(nn.Sequential(nn.Linear(2, 2)), tmp_path / "net.safetensors")
    with pytest.raises(CheckpointError):
        load_shrunk(_net(), tmp_path / "missing.safetensors")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(CheckpointError):
        load_shrunk(_net(), tmp_path / "plain.safetensors")


# -- optimizer continuation ---------------------------------------------------------------------


def _train_step(net: nn.Module, opt: torch.optim.Optimizer) -> None:
    net.train()
    opt.zero_grad()
    torch.nn.functional.cross_entropy(net(X), torch.tensor([0, 2])).backward()
    opt.step()


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_optimizer_state_is_sliced_and_training_continues(kind: str) -> None:
    net = _net()
    opt = (
        torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
        if kind == "sgd"
        else torch.optim.Adam(net.parameters(), lr=1e-3)
    )
    _train_step(net, opt)
    net.eval()
    keys = ("momentum_buffer",) if kind == "sgd" else ("exp_avg", "exp_avg_sq")
    before = {k: opt.state[net.conv2.weight][k].clone() for k in keys}
    step = opt.state[net.conv2.weight].get("step")
    prune_groups(net, KEEP, find_groups(net, X), optimizer=opt)
    params = list(net.parameters())
    assert [id(p) for p in opt.param_groups[0]["params"]] == [id(p) for p in params]
    keep = KEEP["conv1"]
    for k in keys:
        assert torch.equal(opt.state[net.conv2.weight][k], before[k][keep][:, keep])  # sliced, not reset
    if step is not None:
        assert torch.equal(torch.as_tensor(opt.state[net.conv2.weight]["step"]), torch.as_tensor(step))
    weight = net.conv2.weight.detach().clone()
    _train_step(net, opt)
    assert not torch.equal(net.conv2.weight, weight)
    assert all(p.shape == opt.state[p][keys[0]].shape for p in net.parameters() if p in opt.state)


def test_carry_optimizer_after_the_fact() -> None:
    net = _net()
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    _train_step(net, opt)
    momentum = opt.state[net.fc.weight]["momentum_buffer"].clone()
    record = prune_groups(net, KEEP, find_groups(net, X))
    # conv1 w,b; bn1 w,b; conv2 w (2 dims); bn2 w,b; conv3 w (2 dims), b; fc w (2 dims), b; out w
    assert carry_optimizer(opt, record) == 15
    assert torch.equal(opt.state[net.fc.weight]["momentum_buffer"], momentum[KEEP["fc"]][:, [4, 5, 6, 7, 12, 13, 14, 15]])
    assert all(any(p is q for q in opt.param_groups[0]["params"]) for p in net.parameters())
    _train_step(net, opt)


def test_keep_slices_after_two_rounds_of_reparam_pruning() -> None:
    torch.manual_seed(0)
    lin = nn.Linear(4, 3)
    for _ in range(2):  # the second round wraps the hooks in a PruningContainer
        apply_masks(select_targets(lin), [torch.rand(3, 4) > 0.3])
    effective = lin.weight.detach().clone()
    keep_slices(lin, "weight", 0, _keep(0, 2))
    update_module_attributes(lin)
    assert torch.equal(lin.weight, effective[[0, 2]]) and lin.weight_orig.shape == (2, 4)
    assert torch.nn.utils.prune.is_pruned(lin)
