"""round_to of prune_mlp_neurons / prune_heads: kept widths stay multiples, so a later N:M pass works."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import prunekit
from prunekit.coupling import attention_layers, mlp_layers
from prunekit.errors import InvalidParameterError

DIM, HEADS = 16, 8  # head size 2


class Attention(nn.Module):
    """timm's attention layout (qkv read as (B, N, 3, heads, head_dim))."""

    def __init__(self) -> None:
        super().__init__()
        self.num_heads, self.head_dim = HEADS, DIM // HEADS
        self.attn_dim = DIM
        self.qkv, self.proj = nn.Linear(DIM, 3 * DIM), nn.Linear(DIM, DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, _ = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, N, self.attn_dim))


class Mlp(nn.Module):
    def __init__(self, hidden: int = 30) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(DIM, hidden), nn.GELU(), nn.Linear(hidden, DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn, self.mlp = Attention(), Mlp()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x)
        return x + self.mlp(x)


def make() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return nn.Sequential(Block(), Block()).eval(), torch.randn(2, 5, DIM)


def test_neurons_rounded_so_a_later_two_four_pass_succeeds():
    model, x = make()
    prunekit.prune_mlp_neurons(model, sparsity=0.25)  # 30 -> 22: not a multiple of 4
    with pytest.raises(InvalidParameterError, match="divisible by M=4"):
        prunekit.prune(model, structure="2:4", include="*.fc2")
    model, x = make()
    prunekit.prune_mlp_neurons(model, sparsity=0.25, round_to=4)
    assert [s.size for s in mlp_layers(model).values()] == [20, 20]  # 22 rounded to the nearest multiple
    prunekit.prune(model, structure="2:4", include="*.fc2")
    weight = model[0].mlp.fc2.weight
    assert int((weight.view(DIM, -1, 4) != 0).sum(-1).max()) == 2
    assert model(x).shape == x.shape


def test_rounding_goes_up_as_well_and_drops_the_lowest_scores():
    model, _ = make()
    fc1 = model[0].mlp.fc1
    with torch.no_grad():  # neuron j of the first MLP scores about j (magnitude = L1 of its row and column)
        fc1.weight.copy_(torch.arange(30.0).view(30, 1).expand(30, DIM) / DIM)
        model[0].mlp.fc2.weight.zero_()
    prunekit.prune_mlp_neurons(model, sparsity=0.1, round_to=4)  # 30 - 3 = 27 kept -> 28
    assert [s.size for s in mlp_layers(model).values()] == [28, 28]
    assert torch.equal(model[0].mlp.fc1.weight[:, 0], torch.arange(2.0, 30.0) / DIM)  # neurons 0 and 1 removed


def test_heads_rounded_so_kept_width_is_a_multiple():
    model, x = make()
    prunekit.prune_heads(model, sparsity=0.4, round_to=4)  # 8 - 3 = 5 heads of size 2 -> 4 heads (width 8)
    assert [s.num_heads for s in attention_layers(model).values()] == [4, 4]
    assert model[0].attn.proj.in_features == 8 and model[0].attn.attn_dim == 8
    prunekit.prune(model, structure="2:4", include="*.proj")
    assert model(x).shape == x.shape


def test_explicit_requests_must_leave_multiples():
    model, _ = make()
    with pytest.raises(InvalidParameterError, match="multiple of 4 neurons") as info:
        prunekit.prune_mlp_neurons(model, {"0.mlp": [0, 1, 2]}, round_to=4)
    assert "remove 1 fewer" in str(info.value) or "remove 3 more" in str(info.value)
    prunekit.prune_mlp_neurons(model, {"0.mlp": [0, 1], "1.mlp": [5, 6]}, round_to=4)  # 28 kept: fine
    with pytest.raises(InvalidParameterError, match="multiple of 2 heads"):
        prunekit.prune_heads(model, {"0.attn": [1]}, round_to=4)
    with pytest.raises(InvalidParameterError, match="round_to"):
        prunekit.prune_heads(model, sparsity=0.5, round_to=64)  # more than the 8 heads x 2


@pytest.mark.parametrize("bad", [0, -1, "x", 2.5, True])
def test_bad_round_to_is_the_error_form(bad):
    model, _ = make()
    for call in (lambda: prunekit.prune_mlp_neurons(model, sparsity=0.5, round_to=bad),
                 lambda: prunekit.prune_heads(model, sparsity=0.5, round_to=bad)):
        with pytest.raises(InvalidParameterError) as info:
            call()
        assert info.value.param == "round_to" and "Fix:" in str(info.value)
    assert [s.size for s in mlp_layers(model).values()] == [30, 30]
