"""After prune_heads: PrunedMultiheadAttention's MACs are counted, and channel groups elsewhere
(MLP hidden neurons) are still found and pruned (a torchvision-style ViT, written here)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import prunekit
from prunekit.coupling import find_groups
from prunekit.errors import InvalidParameterError
from prunekit.measure import count_macs, register_mac_rule
from prunekit.surgery.pruned_mha import PrunedMultiheadAttention

E, H, M = 16, 4, 32


class EncoderBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(E)
        self.self_attention = nn.MultiheadAttention(E, H, batch_first=True)
        self.ln_2 = nn.LayerNorm(E)
        self.mlp = nn.Sequential(nn.Linear(E, M), nn.GELU(), nn.Dropout(0.0), nn.Linear(M, E), nn.Dropout(0.0))

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        x = self.ln_1(inp)
        x = self.self_attention(x, x, x, need_weights=False)[0] + inp
        return x + self.mlp(self.ln_2(x))


class VisionTransformer(nn.Module):
    """Patch embedding, class token, position embedding, two encoder blocks, classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_proj = nn.Conv2d(3, E, 4, 4)
        self.class_token = nn.Parameter(torch.zeros(1, 1, E))
        self.pos_embedding = nn.Parameter(torch.randn(1, 5, E) * 0.02)
        self.layers = nn.Sequential(EncoderBlock(), EncoderBlock())
        self.ln = nn.LayerNorm(E)
        self.heads = nn.Linear(E, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        x = self.conv_proj(x).reshape(n, E, -1).permute(0, 2, 1)
        x = torch.cat([self.class_token.expand(n, -1, -1), x], dim=1) + self.pos_embedding
        return self.heads(self.ln(self.layers(x))[:, 0])


def make() -> tuple[VisionTransformer, torch.Tensor]:
    torch.manual_seed(0)
    return VisionTransformer().eval(), torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))


def hand_count(heads: list[int], n: int = 2, tokens: int = 5) -> int:
    """MACs of the model by hand: patch conv, per block LayerNorms, q/k/v, QKᵀ, AV, out, MLP; classifier."""
    total = n * 4 * (E * 3 * 16) + n * tokens * E  # conv over 4 positions, final LayerNorm
    for h in heads:
        inner = h * (E // H)
        total += 2 * n * tokens * E  # ln_1, ln_2
        total += 3 * n * tokens * E * inner + 2 * n * tokens * tokens * inner + n * tokens * inner * E
        total += 2 * n * tokens * E * M
    return total + n * E * 3


def test_macs_of_pruned_attention_equal_a_hand_count():
    model, x = make()
    assert count_macs(model, x).dense_macs == hand_count([H, H])
    prunekit.prune_heads(model, {"layers.0.self_attention": [0, 2], "layers.1.self_attention": [3]})
    assert isinstance(model.layers[0].self_attention, PrunedMultiheadAttention)
    report = count_macs(model, x)
    assert report.dense_macs == hand_count([2, 3])
    assert not any("attention" in name for name in report.uncounted)
    row = report["layers.0.self_attention"]
    assert row.params == sum(p.numel() for p in model.layers[0].self_attention.parameters())


def test_channel_groups_are_still_found_and_pruned_after_heads():
    model, x = make()
    before = len(find_groups(model, x))
    assert before == 2  # the two MLP hidden layers
    prunekit.prune_heads(model, sparsity=0.5)
    assert len(find_groups(model, x)) == before
    with torch.no_grad():
        dense = model(x)
    result = prunekit.structural_prune(model, x, sparsity=0.5)
    assert [block.mlp[0].out_features for block in model.layers] == [M // 2, M // 2]
    assert model.layers[0].self_attention.num_heads == 2  # heads untouched by channel pruning
    assert result.macs_after < result.macs_before
    with torch.no_grad():
        assert model(x).shape == dense.shape


class Scaled(nn.Module):
    """A layer whose product is a functional call on its own parameter (no MAC rule of its own)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(6, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(x, self.w)


def test_a_registered_mac_rule_counts_a_users_layer():
    model, x = nn.Sequential(Scaled()), torch.randn(3, 4)
    assert count_macs(model, x).uncounted == ["0"]

    def rule(module, args, kwargs, output, weight):
        numel, nnz = weight(module, "w")
        rows = output.numel() // module.w.shape[0]
        return rows * numel, rows * nnz

    register_mac_rule(Scaled, rule)
    with torch.no_grad():
        model[0].w[0].zero_()
    report = count_macs(model, x)
    assert (report.dense_macs, report.effective_macs, report.uncounted) == (3 * 24, 3 * 20, [])
    for bad_type, bad_rule in ((object, rule), ("Scaled", rule), (Scaled, 3)):
        with pytest.raises(InvalidParameterError) as info:
            register_mac_rule(bad_type, bad_rule)
        assert info.value.param in ("module_type", "rule") and "Fix:" in str(info.value)
