"""One call gives unit scores in every unit space, and one name means one thing in all of them."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import prunekit
from prunekit.errors import InvalidParameterError
from prunekit.scores import score_units


def _convnet() -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 3))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    return model.eval()


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x, x, x, need_weights=False)[0]


def test_magnitude_is_the_l1_norm_of_each_unit_in_every_mask_space() -> None:
    model = _convnet()
    w = model[0].weight.detach()
    element = score_units(model, "magnitude", "element")
    assert set(element) == {"0.weight", "3.weight"}
    assert torch.equal(element["0.weight"], w.abs().reshape(-1))
    channel = score_units(model, "magnitude", "channel")
    assert torch.allclose(channel["0.weight"], w.abs().sum(dim=(1, 2, 3)))
    kernel = score_units(model, "l2", "kernel")
    assert torch.allclose(kernel["0.weight"], w.pow(2).sum(dim=(2, 3)).sqrt().reshape(-1))
    nm = score_units(model, "magnitude", "nm", structure="2:4", targets=prunekit.select_targets(model, include="3"))
    assert nm["3.weight"].numel() == model[3].weight.numel()


def test_group_magnitude_sums_every_tensor_the_channel_couples() -> None:
    model = _convnet()
    groups = score_units(model, "magnitude", "group", example_inputs=torch.randn(1, 3, 8, 8))
    conv1, bn, conv2 = model[0], model[1], model[3]
    by_hand = (conv1.weight.abs().sum(dim=(1, 2, 3)) + conv1.bias.abs() + bn.weight.abs() + bn.bias.abs()
               + conv2.weight.abs().sum(dim=(0, 2, 3))).detach()
    (scores,) = [s for s in groups.values() if s.numel() == 4]
    assert torch.allclose(scores, by_hand, rtol=1e-5)


def test_head_scores_come_through_the_same_call() -> None:
    torch.manual_seed(0)
    model = Encoder().eval()
    heads = score_units(model, "magnitude", "head")
    assert [tuple(s.shape) for s in heads.values()] == [(2,)]
    reference = prunekit.score_heads(model, "magnitude")
    assert all(torch.equal(heads[k], reference[k]) for k in reference)
    assert not torch.equal(score_units(model, "l2", "head")["attn"], heads["attn"])


def test_errors_name_the_parameter_and_the_spaces() -> None:
    model = _convnet()
    with pytest.raises(InvalidParameterError, match="^structure: .*2:4"):
        score_units(model, "magnitude", "nm")
    with pytest.raises(InvalidParameterError, match="^example_inputs"):
        score_units(model, "magnitude", "group")
    with pytest.raises(InvalidParameterError, match="^score: expected a score that supports the 'group' unit space"):
        score_units(model, "snip", "group", example_inputs=torch.randn(1, 3, 8, 8))
    with pytest.raises(InvalidParameterError, match="^unit_space"):
        score_units(model, "magnitude", "rows")
    with pytest.raises(InvalidParameterError, match="^score: expected a score that supports the 'layer' unit space"):
        score_units(model, "magnitude", "layer")
