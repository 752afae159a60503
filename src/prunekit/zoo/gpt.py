"""A small GPT-style decoder-only language model.

The architecture of GPT-2 (Radford et al., "Language Models are Unsupervised
Multitask Learners", 2019), itself the decoder of Vaswani et al., "Attention Is
All You Need" (NeurIPS 2017), at toy scale in the manner of Karpathy's nanoGPT:
learned token and position embeddings, ``n_layer`` pre-LayerNorm blocks of
causal multi-head self-attention and an MLP (Linear n_embd→4·n_embd, GELU,
Linear 4·n_embd→n_embd), a final LayerNorm and a linear LM head.

Pruning-friendly choices:

* the attention has separate ``q_proj``, ``k_proj``, ``v_proj`` and
  ``out_proj`` :class:`torch.nn.Linear` layers (not one fused ``c_attn``), so
  each can be a pruning target and heads can be pruned by rows/columns;
* the LM head is **not tied** to the token embedding by default
  (``tie_weights=False``): pruning a tied weight would mask the embedding too,
  and ``torch.nn.utils.prune`` replaces ``weight`` on one module only, which
  silently unties it. Pass ``tie_weights=True`` for GPT-2's tied head.

Attention uses :func:`torch.nn.functional.scaled_dot_product_attention` with
``is_causal=True``.

Heads and MLP neurons can be removed physically (Michel et al., "Are Sixteen
Heads Really Better than One?", NeurIPS 2019): the layer handlers registered
here give the :class:`~prunekit.coupling.AttentionSpec` of each
:class:`CausalSelfAttention` (head ``h`` = rows ``h·d ... (h+1)·d − 1`` of
``q_proj``, ``k_proj``, ``v_proj`` with their biases and the same columns of
``out_proj``, ``d = n_embd / n_head``) and the :class:`~prunekit.coupling.MlpSpec`
of each :class:`MLP` (rows of ``fc``, columns of ``proj``), so
:func:`prunekit.prune_heads` and :func:`prunekit.prune_mlp_neurons` apply. The
attention reads its head width from ``head_dim`` and its head count from
``n_head`` (set by the surgery), not from the embedding width. ``forward(idx)`` takes token ids ``(B, T)`` with
``T <= block_size`` and returns logits ``(B, T, vocab_size)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..coupling.families import separate_attention
from ..coupling.handlers import LayerHandler, register_layer_handler
from ..coupling.units import AttentionSpec, MlpSpec, consumer, producer
from ..errors import InvalidParameterError
from .registry import register_model

__all__ = ["GPT", "MLP", "CausalSelfAttention", "GPTBlock", "attention_spec", "gpt_tiny", "mlp_spec"]


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with separate q/k/v/out projections.

    ``n_head`` heads of width ``head_dim`` (``n_embd / n_head`` when built;
    head surgery lowers ``n_head`` and keeps ``head_dim``)."""

    def __init__(self, n_embd: int, n_head: int, dropout: float = 0.0, bias: bool = True) -> None:
        super().__init__()
        if n_embd % n_head:
            raise InvalidParameterError(
                "n_head", f"a divisor of n_embd={n_embd}", n_head, "Fix: choose n_embd as a multiple of n_head."
            )
        self.n_head = n_head
        self.head_dim = n_embd // n_head
        self.q_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.k_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.v_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.out_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.dropout = dropout
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        h, d = self.n_head, self.head_dim

        def heads(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, t, h, d).transpose(1, 2)

        q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True
        )
        y = y.transpose(1, 2).contiguous().view(b, t, h * d)
        return self.resid_dropout(self.out_proj(y))


class MLP(nn.Module):
    """Linear n_embd→4·n_embd, GELU, Linear 4·n_embd→n_embd, dropout."""

    def __init__(self, n_embd: int, dropout: float = 0.0, bias: bool = True) -> None:
        super().__init__()
        self.fc = nn.Linear(n_embd, 4 * n_embd, bias=bias)
        self.proj = nn.Linear(4 * n_embd, n_embd, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x))))


class GPTBlock(nn.Module):
    """Pre-LayerNorm transformer block: ``x + attn(ln_1(x))``, then ``x + mlp(ln_2(x))``."""

    def __init__(self, n_embd: int, n_head: int, dropout: float = 0.0, bias: bool = True) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd, bias=bias)
        self.attn = CausalSelfAttention(n_embd, n_head, dropout, bias)
        self.ln_2 = nn.LayerNorm(n_embd, bias=bias)
        self.mlp = MLP(n_embd, dropout, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """A GPT-2-style decoder LM (Radford et al. 2019): ``wte`` + ``wpe``
    embeddings, dropout, ``blocks`` of :class:`GPTBlock`, ``ln_f``, ``lm_head``
    (untied unless ``tie_weights``). Weights are initialised as in GPT-2: normal
    with std 0.02, and the residual projections with 0.02/sqrt(2·n_layer)."""

    def __init__(
        self,
        vocab_size: int = 65,
        block_size: int = 128,
        n_layer: int = 4,
        n_head: int = 4,
        n_embd: int = 128,
        dropout: float = 0.0,
        bias: bool = True,
        tie_weights: bool = False,
    ) -> None:
        super().__init__()
        for name, value in (("vocab_size", vocab_size), ("block_size", block_size), ("n_layer", n_layer),
                            ("n_head", n_head), ("n_embd", n_embd)):
            if not isinstance(value, int) or value < 1:
                raise InvalidParameterError(name, "a positive int", value)
        if not 0.0 <= dropout < 1.0:
            raise InvalidParameterError("dropout", "a probability in [0, 1)", dropout)
        self.block_size = block_size
        self.tie_weights = tie_weights
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.wpe = nn.Embedding(block_size, n_embd)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(GPTBlock(n_embd, n_head, dropout, bias) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd, bias=bias)
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("attn.out_proj.weight") or name.endswith("mlp.proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))
        if tie_weights:
            self.lm_head.weight = self.wte.weight

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, T, vocab_size)`` for token ids ``idx`` of shape ``(B, T)``."""
        if idx.dim() != 2:
            raise InvalidParameterError("idx", "token ids of shape (batch, time)", f"<shape {tuple(idx.shape)}>")
        t = idx.shape[1]
        if t > self.block_size:
            raise InvalidParameterError(
                "idx", f"at most block_size={self.block_size} positions", t,
                "Fix: crop the context to the last block_size tokens or build a larger block_size.",
            )
        pos = torch.arange(t, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))


def gpt_tiny(
    vocab_size: int = 65,
    block_size: int = 128,
    n_layer: int = 4,
    n_head: int = 4,
    n_embd: int = 128,
    dropout: float = 0.0,
    bias: bool = True,
    tie_weights: bool = False,
) -> GPT:
    """A tiny GPT (Radford et al. 2019; nanoGPT-style): by default 4 layers,
    4 heads, 128 wide, 128 positions, vocabulary 65 (tinyshakespeare's
    characters), LM head untied; about 0.8M parameters."""
    return GPT(vocab_size, block_size, n_layer, n_head, n_embd, dropout, bias, tie_weights)


def attention_spec(name: str, module: CausalSelfAttention) -> AttentionSpec:
    """Where the heads of a :class:`CausalSelfAttention` named ``name`` lie (its layer handler's ``attention``)."""
    return separate_attention(name, module, ("q_proj", "k_proj", "v_proj"), f"{name}.out_proj", module.out_proj,
                     module.head_dim, lambda heads, _kv: {"n_head": heads})


def mlp_spec(name: str, module: MLP) -> MlpSpec:
    """Where the hidden neurons of an :class:`MLP` named ``name`` lie (its layer handler's ``mlp``)."""
    first = producer(f"{name}.fc", module.fc)
    return MlpSpec(name, first.size_of(module.fc), producers=(first,), consumers=(consumer(f"{name}.proj", module.proj),))


register_layer_handler(CausalSelfAttention, LayerHandler(attention=attention_spec))
register_layer_handler(MLP, LayerHandler(mlp=mlp_spec))
register_model("gpt_tiny", gpt_tiny, input_shape=(128,), vocab=65)
