"""Heads of timm-style attention (one fused qkv Linear plus num_heads, ViT/DeiT and Swin window
attention) and MLP neurons of timm-style Mlp modules: found, removed exactly, saved and loaded.

timm is not importable here: the blocks below are small versions written for these tests, with
timm's class names and layout.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import prunekit
from prunekit.coupling import (
    LayerHandler,
    attention_layers,
    fused_qkv_spec,
    head_gates,
    mlp_layers,
    neuron_gates,
    register_layer_handler,
    unregister_layer_handler,
)
from prunekit.errors import InvalidParameterError
from prunekit.surgery import load_shrunk, save_shrunk

DIM, HEADS = 16, 4


class Attention(nn.Module):
    """timm's ViT/DeiT attention layout: qkv read as (B, N, 3, heads, head_dim)."""

    def __init__(self, dim: int, num_heads: int, scale_norm: bool = False) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.attn_dim = num_heads * self.head_dim
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, 3 * self.attn_dim)
        self.q_norm, self.k_norm = nn.Identity(), nn.Identity()
        self.attn_drop = nn.Dropout(0.0)
        self.norm = nn.LayerNorm(self.attn_dim) if scale_norm else nn.Identity()
        self.proj = nn.Linear(self.attn_dim, dim)
        self.proj_drop = nn.Dropout(0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, _ = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        x = F.scaled_dot_product_attention(q, k, v)
        x = x.transpose(1, 2).reshape(B, N, self.attn_dim)
        return self.proj_drop(self.proj(self.norm(x)))


class WindowAttention(nn.Module):
    """timm's Swin window attention layout: a relative position bias table with one column per head."""

    def __init__(self, dim: int, num_heads: int, window: int) -> None:
        super().__init__()
        self.num_heads, self.window_area = num_heads, window * window
        head_dim = dim // num_heads
        self.scale = head_dim ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.randn((2 * window - 1) ** 2, num_heads) * 0.5)
        coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
        self.register_buffer("relative_position_index", rel[..., 0] * (2 * window - 1) + rel[..., 1], persistent=False)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B_, N, _ = x.shape
        qkv = self.qkv(x).reshape(B_, N, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        attn = attn + bias.view(self.window_area, self.window_area, -1).permute(2, 0, 1).unsqueeze(0)
        x = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(B_, N, -1)
        return self.proj(x)


class WindowAttentionV2(WindowAttention):
    """timm's Swin V2 window attention layout: cosine attention with a per-head logit scale, a bias
    table computed by an MLP (one output per head), and q/k/v biases outside the qkv Linear."""

    def __init__(self, dim: int, num_heads: int, window: int) -> None:
        nn.Module.__init__(self)
        self.num_heads, self.window_area = num_heads, window * window
        scale = torch.log(10 * torch.ones(num_heads, 1, 1)) + 0.3 * torch.randn(num_heads, 1, 1)
        self.logit_scale = nn.Parameter(scale)
        self.cpb_mlp = nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, num_heads, bias=False))
        span = torch.arange(-(window - 1), window, dtype=torch.float32) / (window - 1)
        table = torch.stack(torch.meshgrid(span, span, indexing="ij"), -1).view(-1, 2)
        self.register_buffer("relative_coords_table", table, persistent=False)
        coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
        self.register_buffer("relative_position_index", rel[..., 0] * (2 * window - 1) + rel[..., 1], persistent=False)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_bias = nn.Parameter(torch.randn(dim) * 0.1)
        self.register_buffer("k_bias", torch.zeros(dim), persistent=False)
        self.v_bias = nn.Parameter(torch.randn(dim) * 0.1)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B_, N, _ = x.shape
        qkv = F.linear(x, self.qkv.weight, torch.cat((self.q_bias, self.k_bias, self.v_bias)))
        q, k, v = qkv.reshape(B_, N, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
        attn = attn * torch.clamp(self.logit_scale, max=math.log(100.0)).exp()
        table = self.cpb_mlp(self.relative_coords_table).view(-1, self.num_heads)
        bias = table[self.relative_position_index.view(-1)].view(self.window_area, self.window_area, -1)
        attn = attn + 16 * torch.sigmoid(bias.permute(2, 0, 1)).unsqueeze(0)
        return self.proj((attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(B_, N, -1))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.act, self.drop1 = nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(0.0)
        self.norm, self.fc2, self.drop2 = nn.Identity(), nn.Linear(hidden, dim), nn.Dropout(0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.norm(self.drop1(self.act(self.fc1(x))))))


class Block(nn.Module):
    def __init__(self, attn: nn.Module) -> None:
        super().__init__()
        self.norm1, self.attn, self.norm2, self.mlp = nn.LayerNorm(DIM), attn, nn.LayerNorm(DIM), Mlp(DIM, 24)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    """Patch embedding, class token, blocks, classifier (window attention: one 2x2 window of tokens)."""

    def __init__(self, window: str | None = None, scale_norm: bool = False) -> None:
        super().__init__()
        self.window = window
        self.patch_embed = nn.Conv2d(3, DIM, 4, 4)
        self.cls_token = nn.Parameter(torch.randn(1, 1, DIM) * 0.1)
        kinds = {None: lambda: Attention(DIM, HEADS, scale_norm), "v1": lambda: WindowAttention(DIM, HEADS, 2),
                 "v2": lambda: WindowAttentionV2(DIM, HEADS, 2)}
        self.blocks = nn.Sequential(*[Block(kinds[window]()) for _ in range(2)])
        self.norm, self.head = nn.LayerNorm(DIM), nn.Linear(DIM, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        if not self.window:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return self.head(self.norm(self.blocks(x)).mean(dim=1))


def make(seed: int = 0, **kwargs) -> tuple[TinyViT, torch.Tensor]:
    torch.manual_seed(seed)
    model = TinyViT(**kwargs).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.normal_(0, 0.1)
    return model, torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))


PLAN = {"blocks.0.attn": [1, 3], "blocks.1.attn": [0]}


@pytest.mark.parametrize("window", [None, "v1", "v2"], ids=["vit", "swin", "swinv2"])
def test_heads_are_found_and_removed_exactly_as_gated(window):
    model, x = make(window=window)
    specs = attention_layers(model)
    assert list(specs) == ["blocks.0.attn", "blocks.1.attn"]
    assert all((s.num_heads, s.head_dim) == (HEADS, DIM // HEADS) for s in specs.values())
    with torch.no_grad(), head_gates(model, specs) as gates:
        for layer, heads in PLAN.items():
            gates[layer][heads] = 0.0
        gated = model(x)
    dense = model(x)
    assert not torch.allclose(gated, dense, atol=1e-4)
    table = model.blocks[0].attn.relative_position_bias_table.detach().clone() if window == "v1" else None
    prunekit.prune_heads(model, PLAN)
    with torch.no_grad():
        assert torch.allclose(model(x), gated, atol=1e-5)
    first, second = model.blocks[0].attn, model.blocks[1].attn
    assert (first.num_heads, second.num_heads) == (2, 3)
    assert first.qkv.weight.shape == (3 * 2 * 4, DIM) and first.proj.weight.shape == (DIM, 8)
    assert getattr(first, "scale", 4 ** -0.5) == pytest.approx(4 ** -0.5)  # the head size is kept
    if window == "v1":  # the bias table keeps the columns of the kept heads
        assert torch.equal(first.relative_position_bias_table, table[:, [0, 2]])
    elif window == "v2":  # per-head scale, bias MLP outputs and q/k/v biases follow the heads
        assert first.logit_scale.shape == (2, 1, 1) and first.cpb_mlp[2].out_features == 2
        assert first.q_bias.shape == first.k_bias.shape == first.v_bias.shape == (8,)
    else:
        assert (first.attn_dim, first.head_dim, second.attn_dim) == (8, 4, 12)


def test_heads_by_sparsity_then_save_and_load(tmp_path):
    model, x = make()
    prunekit.prune_heads(model, sparsity=0.5)
    assert [s.num_heads for s in attention_layers(model).values()] == [2, 2]
    with torch.no_grad():
        expected = model(x)
    save_shrunk(model, tmp_path / "vit.safetensors")
    fresh = load_shrunk(make(seed=5)[0], tmp_path / "vit.safetensors")
    assert fresh.blocks[1].attn.attn_dim == 8
    with torch.no_grad():
        assert torch.allclose(fresh(x), expected, atol=1e-6)


def test_heads_then_mlp_neurons_are_removed_exactly():
    model, x = make()
    prunekit.prune_heads(model, PLAN)
    specs = mlp_layers(model)
    assert list(specs) == ["blocks.0.mlp", "blocks.1.mlp"]
    with torch.no_grad(), neuron_gates(model, specs) as gates:
        gates["blocks.0.mlp"][[0, 5, 9]] = 0.0
        gated = model(x)
    prunekit.prune_mlp_neurons(model, {"blocks.0.mlp": [0, 5, 9]})
    assert model.blocks[0].mlp.fc1.out_features == 21 and model.blocks[0].mlp.fc2.in_features == 21
    with torch.no_grad():
        assert torch.allclose(model(x), gated, atol=1e-5)


def test_a_norm_across_heads_is_refused_and_the_model_left_as_it_was():
    model, x = make(scale_norm=True)
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    with pytest.raises(InvalidParameterError, match="scale_norm") as info:
        prunekit.prune_heads(model, sparsity=0.5)
    assert "Fix:" in str(info.value)
    assert {k: v.shape for k, v in model.state_dict().items()} == shapes


class OwnAttention(nn.Module):
    """A user's attention of timm's layout under another class name."""

    def __init__(self) -> None:
        super().__init__()
        self.num_heads, self.head_dim = HEADS, DIM // HEADS
        self.qkv, self.proj = nn.Linear(DIM, 3 * DIM), nn.Linear(DIM, DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, _ = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, N, -1))


def test_a_users_class_of_the_same_layout_takes_part_once_registered():
    torch.manual_seed(0)
    model = nn.Sequential(OwnAttention()).eval()
    with pytest.raises(InvalidParameterError, match="register a LayerHandler"):
        prunekit.prune_heads(model, sparsity=0.5)
    register_layer_handler(OwnAttention, LayerHandler(attention=fused_qkv_spec))
    try:
        x = torch.randn(2, 5, DIM)
        prunekit.prune_heads(model, {"0": [2]})
        assert model(x).shape == (2, 5, DIM) and model[0].num_heads == 3
    finally:
        unregister_layer_handler(OwnAttention)


def test_a_sparsity_that_removes_nothing_is_said(caplog):
    model, _ = make()
    with caplog.at_level("WARNING", logger="prunekit.surgery.heads"):
        record = prunekit.prune_heads(model, sparsity=0.1)  # 0.4 of 4 heads rounds to none
    assert record.removals == []
    assert "sparsity=0.1 removed no heads" in caplog.text and "sparsity=0.25 removes one" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="prunekit.surgery.heads"):
        prunekit.prune_heads(model, sparsity=0.25)
        prunekit.prune_mlp_neurons(model, sparsity=0.0)
    assert caplog.text == ""
    assert [s.num_heads for s in attention_layers(model).values()] == [3, 3]
