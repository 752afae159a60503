"""``PrunedMultiheadAttention``: an ``nn.MultiheadAttention`` that may hold fewer heads.

``nn.MultiheadAttention`` computes its q/k/v with ``embed_dim = num_heads *
head_dim`` and cannot hold fewer heads of the same width, so head surgery
replaces it (:func:`replace_mha`) by :class:`PrunedMultiheadAttention`, a
module with the same forward signature, function and parameter names (it
takes over the very Parameter objects, so optimizers and state dicts keep
working) whose projections may hold fewer heads. Its layer handler gives its
attention spec (:func:`prunekit.coupling.units.mha_spec`), so
:func:`prunekit.coupling.attention_layers` finds it, and a coupling rule the
same as ``nn.MultiheadAttention``'s: it is one operation of the trace whose
input and output channels are kept (its heads are pruned by
:mod:`prunekit.surgery.heads`), so channel groups elsewhere in the model (MLP
hidden neurons, convolutions) are still found after a head surgery.
:func:`prunekit.measure.count_macs` counts it as ``nn.MultiheadAttention``
with ``num_heads · head_dim`` rows per projection.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..coupling.graph import Graph
from ..coupling.handlers import LayerHandler, register_layer_handler
from ..coupling.trace import Op
from ..coupling.units import mha_spec
from ..errors import InvalidParameterError
from ..measure.mac_rules import mha_macs, register_mac_rule
from .slicing import SurgeryRecord

__all__ = ["PrunedMultiheadAttention", "replace_mha"]

logger = logging.getLogger(__name__)


class PrunedMultiheadAttention(nn.Module):
    """``nn.MultiheadAttention`` whose ``num_heads * head_dim`` need not equal ``embed_dim``.

    Same forward signature and outputs as ``nn.MultiheadAttention`` (Vaswani
    et al. 2017: ``softmax(Q_h K_h^T / sqrt(d)) V_h`` per head, heads
    concatenated and projected by ``out_proj``) and the same parameters
    (``in_proj_weight`` or ``q/k/v_proj_weight``, ``in_proj_bias``,
    ``bias_k``/``bias_v``, ``out_proj``), only with ``num_heads * head_dim``
    rows per projection. :meth:`from_mha` takes over the very Parameter
    objects of an ``nn.MultiheadAttention``, so an optimizer keeps them.
    ``head_index`` (a buffer) holds the original index of each kept head: a
    3-d ``attn_mask`` of shape ``(N * original_num_heads, L, S)`` is read for
    the kept heads only. The attention weights returned are those of the kept
    heads (averaged over them when ``average_attn_weights``). torch's fused
    fast paths (``nn.TransformerEncoderLayer`` / ``nn.TransformerEncoder``
    nested tensors) assume ``embed_dim == num_heads * head_dim`` and are kept
    away (``_qkv_same_embed_dim`` is False; :func:`replace_mha` turns off the
    encoder's ``use_nested_tensor``).
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        head_dim: int | None = None,
        *,
        kdim: int | None = None,
        vdim: int | None = None,
        bias: bool = True,
        add_bias_kv: bool = False,
        add_zero_attn: bool = False,
        dropout: float = 0.0,
        batch_first: bool = False,
        original_num_heads: int | None = None,
    ) -> None:
        super().__init__()
        head_dim = embed_dim // num_heads if head_dim is None else head_dim
        inner = num_heads * head_dim
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, head_dim
        self.kdim, self.vdim = kdim or embed_dim, vdim or embed_dim
        fused = self.kdim == embed_dim and self.vdim == embed_dim
        # read by torch's TransformerEncoderLayer / MultiheadAttention fast paths, which assume
        # embed_dim == num_heads * head_dim: False keeps them away from this module
        self._qkv_same_embed_dim = False
        self.dropout, self.batch_first, self.add_zero_attn = dropout, batch_first, add_zero_attn
        self.original_num_heads = original_num_heads or num_heads

        def param(*shape: int) -> nn.Parameter:
            return nn.Parameter(torch.empty(*shape).normal_(0, embed_dim ** -0.5))

        if fused:
            self.in_proj_weight = param(3 * inner, embed_dim)
            self.q_proj_weight = self.k_proj_weight = self.v_proj_weight = None
        else:
            self.in_proj_weight = None
            self.q_proj_weight, self.k_proj_weight = param(inner, embed_dim), param(inner, self.kdim)
            self.v_proj_weight = param(inner, self.vdim)
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * inner)) if bias else None
        self.out_proj = nn.Linear(inner, embed_dim, bias=bias)
        self.bias_k = nn.Parameter(torch.zeros(1, 1, inner)) if add_bias_kv else None
        self.bias_v = nn.Parameter(torch.zeros(1, 1, inner)) if add_bias_kv else None
        self.register_buffer("head_index", torch.arange(num_heads))

    @classmethod
    def from_mha(cls, mha: nn.MultiheadAttention) -> PrunedMultiheadAttention:
        """A module computing the same function as ``mha``, holding ``mha``'s own Parameters."""
        for name, module in mha.named_modules():
            for tensor in list(module._parameters) + list(module._buffers):
                if tensor.endswith(("_orig", "_mask")):
                    raise InvalidParameterError(
                        "model", "nn.MultiheadAttention without pruning masks",
                        f"<masks on {name + '.' if name else ''}{tensor}>",
                        "Fix: call prunekit.make_permanent(model) first.",
                    )
        new = cls(
            mha.embed_dim, mha.num_heads, kdim=mha.kdim, vdim=mha.vdim, bias=mha.in_proj_bias is not None,
            add_bias_kv=mha.bias_k is not None, add_zero_attn=mha.add_zero_attn, dropout=mha.dropout,
            batch_first=mha.batch_first,
        )
        for key in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight", "in_proj_bias",
                    "bias_k", "bias_v"):
            setattr(new, key, getattr(mha, key))
        new.out_proj = mha.out_proj
        new.head_index = new.head_index.to(mha.out_proj.weight.device)
        return new.train(mha.training)

    def _projections(self) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor | None, ...]]:
        inner = self.num_heads * self.head_dim
        if self.in_proj_weight is not None:
            weights = tuple(self.in_proj_weight.split(inner))
        else:
            weights = (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight)
        biases = tuple(self.in_proj_bias.split(inner)) if self.in_proj_bias is not None else (None, None, None)
        return weights, biases

    def _mask(
        self, attn_mask: torch.Tensor | None, key_padding_mask: torch.Tensor | None,
        is_causal: bool, n: int, length: int, source: int, dtype: torch.dtype,
    ) -> torch.Tensor | None:
        """One additive float mask broadcastable to ``(N, H, L, S)``."""

        def additive(mask: torch.Tensor) -> torch.Tensor:
            if mask.dtype == torch.bool:
                return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, float("-inf"))
            return mask.to(dtype)

        mask = None
        if attn_mask is None and is_causal:
            attn_mask = torch.ones(length, source, dtype=torch.bool, device=self.head_index.device).triu(1)
        if attn_mask is not None:
            mask = additive(attn_mask)
            if mask.dim() == 3:
                mask = mask.view(n, self.original_num_heads, length, source).index_select(1, self.head_index)
        if key_padding_mask is not None:
            pad = additive(key_padding_mask).view(n, 1, 1, source)
            mask = pad if mask is None else mask + pad
        return mask

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batched = query.dim() == 3
        if not batched:
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
            key_padding_mask = None if key_padding_mask is None else key_padding_mask.unsqueeze(0)
        elif self.batch_first:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        length, n, _ = query.shape
        source = key.shape[0]
        h, d = self.num_heads, self.head_dim
        (wq, wk, wv), (bq, bk, bv) = self._projections()
        q, k, v = F.linear(query, wq, bq), F.linear(key, wk, bk), F.linear(value, wv, bv)
        mask = self._mask(attn_mask, key_padding_mask, is_causal, n, length, source, q.dtype)
        extra = 0
        if self.bias_k is not None:
            k = torch.cat([k, self.bias_k.expand(1, n, -1)])
            v = torch.cat([v, self.bias_v.expand(1, n, -1)])
            extra += 1
        q = q.view(length, n, h, d).permute(1, 2, 0, 3)
        k = k.view(-1, n, h, d).permute(1, 2, 0, 3)
        v = v.view(-1, n, h, d).permute(1, 2, 0, 3)
        if self.add_zero_attn:
            zeros = k.new_zeros(n, h, 1, d)
            k, v = torch.cat([k, zeros], dim=2), torch.cat([v, zeros], dim=2)
            extra += 1
        if mask is not None and extra:
            mask = F.pad(mask, (0, extra))
        p = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            scores = torch.matmul(q * (1.0 / math.sqrt(d)), k.transpose(-2, -1))
            if mask is not None:
                scores = scores + mask
            weights = torch.softmax(scores, dim=-1)
            out = torch.matmul(F.dropout(weights, p) if p else weights, v)
            if average_attn_weights:
                weights = weights.mean(dim=1)
            if not batched:
                weights = weights.squeeze(0)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        out = self.out_proj(out.permute(2, 0, 1, 3).reshape(length, n, h * d))
        if not batched:
            out = out.squeeze(1)
        elif self.batch_first:
            out = out.transpose(0, 1)
        return out, weights


def replace_mha(model: nn.Module, name: str, record: SurgeryRecord) -> PrunedMultiheadAttention:
    """Swap ``model.<name>`` (an ``nn.MultiheadAttention``) for an equivalent :class:`PrunedMultiheadAttention`."""
    old = model.get_submodule(name)
    new = PrunedMultiheadAttention.from_mha(old)
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
    for owner_name, owner in model.named_modules():
        if isinstance(owner, nn.TransformerEncoder) and owner.use_nested_tensor \
                and (not owner_name or name.startswith(owner_name + ".")):
            # its nested-tensor fast path runs torch's fused layer, which needs embed_dim == heads * head_dim
            owner.use_nested_tensor = False
            logger.info("%s: nested-tensor fast path turned off (its attention %s lost heads)", owner_name, name)
    record.extra.setdefault("heads", {}).setdefault("replaced", []).append(name)
    return new


def couple_attention(g: Graph, op: Op, name: str, module: nn.Module) -> None:
    """Coupling rule: the channels this attention reads are kept (not channel-pruned); heads are
    removed by :func:`prunekit.surgery.heads.prune_heads`. Its output starts no channel space."""
    g.mark_value((op.args, op.kwargs), "fixed", f"{name} ({type(module).__name__}): attention heads are pruned "
                 "by prunekit.surgery.heads")


register_layer_handler(PrunedMultiheadAttention, LayerHandler(couple=couple_attention, attention=mha_spec))
register_mac_rule(PrunedMultiheadAttention, mha_macs)  # its projections are F.linear calls, not modules
