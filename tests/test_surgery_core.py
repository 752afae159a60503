"""Surgery core: slicing, record/replay, groups, removal, exactness, saving, optimizer."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunekit.errors import InvalidParameterError
from prunekit.masks import apply_masks
from prunekit.surgery import SurgeryRecord, keep_slices, replay, update_module_attributes
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
