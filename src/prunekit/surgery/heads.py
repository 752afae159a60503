"""Physical removal of attention heads and MLP neurons.

An attention layer is described by an :class:`AttentionSpec`: where each
head's rows lie in the query / key / value projections and where its columns
lie in the output projection. Projections may be separate ``nn.Linear``
(BERT, LLaMA, ViT), one fused q/k/v tensor (GPT-2's ``c_attn``, a Hugging
Face ``Conv1D`` whose weight is ``(in, out)``), or an
``nn.MultiheadAttention``'s ``in_proj_weight``; each is a :class:`Block` (a
tensor, the dim along which heads lie, an offset and the width of one unit).
Removing head ``h`` keeps every position of every block except
``offset + h*head_dim ... offset + (h+1)*head_dim - 1``; an MLP neuron is the
same with a width of 1 (the producer's output row, the consumer's input
column). The slicing itself is :func:`prunekit.surgery.slicing.keep_slices`.

Grouped-query attention (LLaMA, ``num_key_value_heads < num_attention_heads``):
query head ``h`` reads key/value head ``h // g`` with ``g = H / KV``
(``repeat_kv``). A removal is accepted when, afterwards, every key/value head
still in use serves the same number of query heads; a key/value head is
removed exactly when all of its query heads are. That allows both removing
whole groups (a KV head with all its query heads) and removing the same
number of query heads from every group, and any mix that leaves the groups
equal; anything else is refused, because ``repeat_kv`` needs one group size.

``nn.MultiheadAttention`` computes its q/k/v with ``embed_dim = num_heads *
head_dim`` and cannot hold fewer heads of the same width, so it is replaced
by :class:`PrunedMultiheadAttention`, a module with the same forward
signature, function and parameter names (it takes over the very Parameter
objects, so optimizers and state dicts keep working) whose projections may
hold fewer heads.

Masking a head (for exactness checks and Michel et al.'s importance) is done
by :func:`head_gates`: a gate ``xi_h`` multiplies head ``h``'s columns of the
output projection, which is the same as multiplying the head's output, since
the output projection is linear.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from ..errors import InvalidParameterError
from ..targets import _is_hf_conv1d, tensor_state
from .history import add_history, surgery_history
from .slicing import SurgeryRecord, replay, update_module_attributes

__all__ = [
    "AttentionSpec",
    "Block",
    "MlpSpec",
    "PrunedMultiheadAttention",
    "after_replay",
    "attention_layers",
    "before_replay",
    "head_gates",
    "mha_spec",
    "mlp_layers",
    "neuron_gates",
    "plan_heads",
    "prune_heads",
    "prune_mlp_neurons",
    "remove_heads",
    "remove_neurons",
    "replay_heads",
    "unit_gates",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Block:
    """Positions of units in some tensors of one module.

    Unit ``u`` occupies ``offset + u*unit + j`` for ``j < unit`` along each
    ``(tensor, dim)`` of ``tensors`` of ``model.<module>``.
    """

    module: str
    tensors: tuple[tuple[str, int], ...]
    offset: int = 0
    unit: int = 1

    def positions(self, units: Sequence[int]) -> list[int]:
        return [self.offset + u * self.unit + j for u in units for j in range(self.unit)]

    def size_of(self, module: nn.Module) -> int:
        """Number of units of width ``unit`` from ``offset`` to the end of the first tensor's dim."""
        tensor, dim = self.tensors[0]
        return (getattr(module, tensor).shape[dim] - self.offset) // self.unit


def producer(name: str, module: nn.Module, offset: int = 0, unit: int = 1) -> Block:
    """Output rows of a Linear (weight dim 0) or HF Conv1D (weight dim 1), with the bias."""
    dim = 1 if _is_hf_conv1d(module) else 0
    tensors: tuple[tuple[str, int], ...] = (("weight", dim),)
    if getattr(module, "bias", None) is not None:
        tensors += (("bias", 0),)
    return Block(name, tensors, offset, unit)


def consumer(name: str, module: nn.Module, unit: int = 1) -> Block:
    """Input columns of a Linear (weight dim 1) or HF Conv1D (weight dim 0)."""
    return Block(name, (("weight", 0 if _is_hf_conv1d(module) else 1),), 0, unit)


@dataclass
class AttentionSpec:
    """One attention layer: its heads and where they lie.

    ``query`` blocks hold one unit per query head, ``key_value`` blocks one
    unit per key/value head, ``output`` blocks one unit per query head (the
    output projection's input). ``attributes(H, KV)`` gives the module
    attributes to set on ``model.<module>`` after ``H`` query and ``KV``
    key/value heads remain (e.g. ``{"num_heads": H}``).
    """

    module: str
    num_heads: int
    num_kv_heads: int
    head_dim: int
    query: tuple[Block, ...]
    key_value: tuple[Block, ...]
    output: tuple[Block, ...]
    attributes: Callable[[int, int], dict[str, int]] = field(default=lambda h, kv: {})

    @property
    def group_size(self) -> int:
        return self.num_heads // self.num_kv_heads


@dataclass
class MlpSpec:
    """One MLP hidden layer of ``size`` neurons: producers' output rows, consumers' input columns."""

    module: str
    size: int
    producers: tuple[Block, ...]
    consumers: tuple[Block, ...]
    attributes: Callable[[int], dict[str, int]] = field(default=lambda n: {})


# -- planning ---------------------------------------------------------------------------


def _unit_list(param: str, layer: Any, units: Any, size: int, what: str) -> list[int]:
    """Validate a list of unit indices to remove (sorted on return)."""
    try:
        if isinstance(units, (str, bytes)):
            raise TypeError
        values = [int(u) for u in units]
        if any(int(u) != u for u in units):
            raise TypeError
    except (TypeError, ValueError):
        raise InvalidParameterError(param, f"a list of {what} indices for layer {layer!r}", units) from None
    bad = [u for u in values if not 0 <= u < size]
    if bad:
        raise InvalidParameterError(
            param, f"{what} indices in [0, {size}) for layer {layer!r}", bad,
            f"Fix: layer {layer!r} has {size} {what}s.",
        )
    if len(set(values)) != len(values):
        raise InvalidParameterError(param, f"distinct {what} indices for layer {layer!r}", values)
    if len(values) == size:
        raise InvalidParameterError(
            param, f"fewer than all {size} {what}s of layer {layer!r}", values,
            "Fix: keep at least one; removing a whole layer is not head/neuron surgery.",
        )
    return sorted(values)


def plan_heads(spec: AttentionSpec, heads: Sequence[int], layer: Any = None) -> tuple[list[int], list[int]]:
    """Validate removing ``heads`` from ``spec``; return (kept query heads, kept KV heads).

    Raises :class:`InvalidParameterError` for bad indices, all heads, or a
    grouped-query removal that leaves key/value groups of different sizes.
    """
    layer = spec.module if layer is None else layer
    remove = set(_unit_list("heads_to_prune", layer, heads, spec.num_heads, "head"))
    keep_q = [h for h in range(spec.num_heads) if h not in remove]
    per_group = Counter(h // spec.group_size for h in keep_q)
    if len(set(per_group.values())) > 1:
        raise InvalidParameterError(
            "heads_to_prune",
            f"a grouped-query removal that leaves every key/value group of layer {layer!r} with the same "
            f"number of query heads ({spec.num_kv_heads} groups of {spec.group_size})",
            sorted(remove),
            "Fix: remove whole groups (a KV head with all its query heads) or the same number of query "
            "heads from every group (gqa='group' or gqa='query' when pruning by ratio).",
        )
    return keep_q, sorted(per_group)


# -- slicing ----------------------------------------------------------------------------


def _slice_blocks(model: nn.Module, removals: Sequence[tuple[Block, Sequence[int]]], record: SurgeryRecord) -> None:
    """Remove units from blocks; blocks of the same tensor are cut together."""
    drop: dict[tuple[str, str, int], set[int]] = {}
    for block, units in removals:
        for tensor, dim in block.tensors:
            drop.setdefault((block.module, tensor, dim), set()).update(block.positions(units))
    for (module_name, tensor, dim), gone in drop.items():
        if not gone:
            continue
        size = getattr(model.get_submodule(module_name), tensor).shape[dim]
        keep = torch.tensor([i for i in range(size) if i not in gone], dtype=torch.long)
        record.slice(model, module_name, tensor, dim, keep)
    for module_name in dict.fromkeys(key[0] for key in drop):
        update_module_attributes(model.get_submodule(module_name))


def _set_attributes(model: nn.Module, module_name: str, values: Mapping[str, int], record: SurgeryRecord) -> None:
    module = model.get_submodule(module_name)
    for key, value in values.items():
        setattr(module, key, value)
    heads = record.extra.setdefault("heads", {})
    heads.setdefault("attributes", {}).setdefault(module_name, {}).update(values)


def remove_heads(model: nn.Module, spec: AttentionSpec, heads: Sequence[int], record: SurgeryRecord) -> None:
    """Remove query ``heads`` from ``spec`` (and KV heads left without query heads).

    Validates before touching anything; ``spec`` is stale afterwards (derive it again).
    """
    keep_q, keep_kv = plan_heads(spec, heads)
    gone_q = [h for h in range(spec.num_heads) if h not in keep_q]
    gone_kv = [h for h in range(spec.num_kv_heads) if h not in keep_kv]
    if not gone_q:
        return
    removals = [(b, gone_q) for b in spec.query + spec.output] + [(b, gone_kv) for b in spec.key_value]
    _slice_blocks(model, removals, record)
    h, kv = len(keep_q), len(keep_kv)
    _set_attributes(model, spec.module, spec.attributes(h, kv), record)
    record.kept[spec.module] = keep_q
    logger.info("%s: %d -> %d heads (%d -> %d key/value heads)", spec.module, spec.num_heads, h, spec.num_kv_heads, kv)


def remove_neurons(model: nn.Module, spec: MlpSpec, neurons: Sequence[int], record: SurgeryRecord, layer: Any = None) -> None:
    """Remove hidden ``neurons`` of one MLP (producers' rows, consumers' columns)."""
    gone = _unit_list("neurons_to_prune", spec.module if layer is None else layer, neurons, spec.size, "neuron")
    if not gone:
        return
    _slice_blocks(model, [(b, gone) for b in spec.producers + spec.consumers], record)
    _set_attributes(model, spec.module, spec.attributes(spec.size - len(gone)), record)
    logger.info("%s: %d -> %d neurons", spec.module, spec.size, spec.size - len(gone))


# -- gates ------------------------------------------------------------------------------


class _ColumnGate(nn.Module):
    """Parametrization ``W -> W * xi`` with ``xi`` repeated over each head's positions along ``dim``."""

    def __init__(self, gate: torch.Tensor, block: Block, dim: int, size: int) -> None:
        super().__init__()
        self.gate, self.unit, self.dim, self.size = gate, block.unit, dim, size
        self.index = torch.tensor(block.positions(range(gate.numel())), device=gate.device)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        scale = torch.ones(self.size, dtype=weight.dtype, device=weight.device)
        scale = scale.index_put((self.index,), self.gate.to(weight.dtype).repeat_interleave(self.unit))
        shape = [1] * weight.dim()
        shape[self.dim] = self.size
        return weight * scale.view(shape)


@contextlib.contextmanager
def unit_gates(
    model: nn.Module, units: Mapping[Any, tuple[int, Sequence[Block]]], *, requires_grad: bool = False
) -> Iterator[dict[Any, torch.Tensor]]:
    """Gate units read by linear consumers: ``units[key] = (count, consumer blocks)``.

    Yields ``{key: xi}``, ``xi`` ones of shape ``(count,)``; inside the block
    unit ``u`` reaches its consumers multiplied by ``xi[u]`` (0 masks it).
    Implemented as a ``torch.nn.utils.parametrize`` parametrization of each
    consumer weight (its unit columns times ``xi``), removed on exit with the
    original weight restored. The weights must be Parameters (in-place masks
    are fine; make ``reparam`` masks permanent first).
    """
    gates: dict[Any, torch.Tensor] = {}
    added: list[tuple[nn.Module, str]] = []
    try:
        for key, (count, blocks) in units.items():
            device = getattr(model.get_submodule(blocks[0].module), blocks[0].tensors[0][0]).device
            gate = torch.ones(count, device=device, requires_grad=requires_grad)
            for block in blocks:
                module = model.get_submodule(block.module)
                (tensor, dim), = block.tensors
                if tensor_state(module, tensor) == "reparam" or parametrize.is_parametrized(module, tensor):
                    raise InvalidParameterError(
                        "model", f"a plain {tensor} in {block.module} to gate units",
                        "<a reparametrised (torch.nn.utils.prune-style) or parametrised weight>",
                        "Fix: call prunekit.make_permanent(model) first.",
                    )
                size = getattr(module, tensor).shape[dim]
                parametrize.register_parametrization(module, tensor, _ColumnGate(gate, block, dim, size))
                added.append((module, tensor))
            gates[key] = gate
        yield gates
    finally:
        for module, tensor in added:
            parametrize.remove_parametrizations(module, tensor, leave_parametrized=False)


def head_gates(
    model: nn.Module, specs: Mapping[Any, AttentionSpec], *, requires_grad: bool = False
) -> contextlib.AbstractContextManager[dict[Any, torch.Tensor]]:
    """Gate every head (see :func:`unit_gates`): ``{layer: xi}`` with ``xi`` of shape ``(num_heads,)``.

    The gate multiplies head ``h``'s columns of the output projection, the
    same as multiplying the head's output (Michel et al. 2019's ``xi_h``).
    """
    return unit_gates(model, {k: (s.num_heads, s.output) for k, s in specs.items()}, requires_grad=requires_grad)


def neuron_gates(
    model: nn.Module, specs: Mapping[Any, MlpSpec], *, requires_grad: bool = False
) -> contextlib.AbstractContextManager[dict[Any, torch.Tensor]]:
    """Gate every MLP hidden neuron (see :func:`unit_gates`): ``{layer: xi}`` of shape ``(size,)``."""
    return unit_gates(model, {k: (s.size, s.consumers) for k, s in specs.items()}, requires_grad=requires_grad)


# -- nn.MultiheadAttention ---------------------------------------------------------------


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
            attn_mask = torch.ones(length, source, dtype=torch.bool).triu(1)
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


def mha_spec(name: str, mha: nn.Module) -> AttentionSpec:
    """Spec of an ``nn.MultiheadAttention`` or :class:`PrunedMultiheadAttention` named ``name``.

    Removing heads from an ``nn.MultiheadAttention`` first replaces it (:func:`replace_mha`).
    """
    h, d = mha.num_heads, mha.head_dim
    inner = h * d
    bias = (("in_proj_bias", 0),) if mha.in_proj_bias is not None else ()
    if mha.in_proj_weight is not None:  # fused q/k/v
        q, k, v = (Block(name, (("in_proj_weight", 0), *bias), i * inner, d) for i in range(3))
        query, kv = [q], [k, v]
    else:
        query = [Block(name, (("q_proj_weight", 0),), 0, d)]
        kv = [Block(name, ((w, 0),), 0, d) for w in ("k_proj_weight", "v_proj_weight")]
        if bias:
            query.append(Block(name, bias, 0, d))
            kv += [Block(name, bias, i * inner, d) for i in (1, 2)]
    if mha.bias_k is not None:
        kv.append(Block(name, (("bias_k", 2), ("bias_v", 2)), 0, d))
    if isinstance(mha, PrunedMultiheadAttention):
        query.append(Block(name, (("head_index", 0),), 0, 1))
    return AttentionSpec(
        name, h, h, d, tuple(query), tuple(kv),
        (consumer(f"{name}.out_proj" if name else "out_proj", mha.out_proj, unit=d),),
        attributes=lambda heads, _kv: {"num_heads": heads},
    )


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


# -- replay -----------------------------------------------------------------------------


def before_replay(model: nn.Module, extra: Mapping[str, Any]) -> None:
    """Replace the ``nn.MultiheadAttention`` modules a head surgery replaced (a no-op without heads)."""
    scratch = SurgeryRecord()
    for name in extra.get("heads", {}).get("replaced", []):
        module = model.get_submodule(name)
        if not isinstance(module, nn.MultiheadAttention):
            raise InvalidParameterError(
                "record", f"an nn.MultiheadAttention at {name!r}", f"<{type(module).__name__}>",
                "Fix: load into a fresh model of the class the record was made on.",
            )
        replace_mha(model, name, scratch)


def after_replay(model: nn.Module, extra: Mapping[str, Any]) -> None:
    """Set the head/neuron count attributes a head surgery set (a no-op without heads)."""
    for name, values in extra.get("heads", {}).get("attributes", {}).items():
        module = model.get_submodule(name)
        for key, value in values.items():
            setattr(module, key, value)
    config = extra.get("heads", {}).get("config")
    if config and getattr(model, "config", None) is not None:
        for key, value in config.items():
            setattr(model.config, key, value)


def replay_heads(model: nn.Module, record: SurgeryRecord) -> SurgeryRecord:
    """Replay a head/neuron surgery on a fresh model of the original class."""
    before_replay(model, record.extra)
    new = replay(model, record.removals)
    after_replay(model, record.extra)
    new.extra.update(record.extra)
    new.kept.update(record.kept)
    return new


# -- discovery and the public entry points ------------------------------------------------


def attention_layers(model: nn.Module) -> dict[Any, AttentionSpec]:
    """Every attention layer whose heads can be removed: ``{key: spec}``.

    Keys are layer indices (0, 1, ...) for a Hugging Face model of a supported
    family (see :mod:`prunekit.surgery.hf`), else the qualified names of the
    ``nn.MultiheadAttention`` / :class:`PrunedMultiheadAttention` modules.
    """
    from .hf import hf_family, hf_layers

    family = hf_family(model)
    if family is not None:
        return {i: family.attention(name, layer) for i, (name, layer) in enumerate(hf_layers(model, family))}
    specs: dict[Any, AttentionSpec] = {}
    for name, module in model.named_modules():
        if isinstance(module, (PrunedMultiheadAttention, nn.MultiheadAttention)):
            specs[name] = mha_spec(name, module)
    return specs


def mlp_layers(model: nn.Module) -> dict[int, MlpSpec]:
    """Every MLP hidden layer of a Hugging Face model of a supported family: ``{layer index: spec}``.

    (MLPs of other models are channel groups: see ``prunekit.structural_prune``.)
    """
    from .hf import hf_family, hf_layers

    family = hf_family(model)
    if family is None:
        raise InvalidParameterError(
            "model", "a Hugging Face BERT, DistilBERT, GPT-2, LLaMA or ViT model", f"<{type(model).__name__}>",
            "Fix: prune other models' MLP neurons with prunekit.structural_prune.",
        )
    return {i: family.mlp(name, layer) for i, (name, layer) in enumerate(hf_layers(model, family))}


def _check_request(param: str, request: Any, ratio: Any) -> None:
    if (request is None) == (ratio is None):
        raise InvalidParameterError(
            param, f"exactly one of {param} and ratio", f"<{param}={request!r}, ratio={ratio!r}>",
            f"Fix: pass {param}={{layer: [indices]}} or ratio=0.25.",
        )
    if request is not None and not isinstance(request, Mapping):
        raise InvalidParameterError(param, "a mapping {layer: [indices to remove]}", request)


def _check_keys(param: str, request: Mapping[Any, Any], specs: Mapping[Any, Any]) -> None:
    from ..errors import did_you_mean

    for key in request:
        if key not in specs:
            names = [str(k) for k in specs]
            raise InvalidParameterError(
                param, "layers among " + (", ".join(repr(k) for k in list(specs)[:12]) or "<none found>"), key,
                ("Fix: use a key of attention_layers(model) / mlp_layers(model)." + did_you_mean(str(key), names)),
            )


def _add_history(model: nn.Module, record: SurgeryRecord) -> None:
    """Append to the model's surgery history (for ``save_shrunk``), merging the "heads" extra."""
    if not record.removals:
        return
    merged = copy.deepcopy(surgery_history(model).extra.get("heads", {}))
    new = record.extra.get("heads", {})
    merged["replaced"] = merged.get("replaced", []) + new.get("replaced", [])
    for name, values in new.get("attributes", {}).items():
        merged.setdefault("attributes", {}).setdefault(name, {}).update(values)
    merged.setdefault("config", {}).update(new.get("config", {}))
    add_history(model, SurgeryRecord(removals=record.removals, kept=record.kept, extra={"heads": merged}))


def prune_heads(
    model: nn.Module,
    heads_to_prune: Mapping[Any, Sequence[int]] | None = None,
    *,
    ratio: float | None = None,
    importance: str | Mapping[Any, torch.Tensor] = "magnitude",
    batches: Any = None,
    loss_fn: Callable[[nn.Module, Any], torch.Tensor] | None = None,
    gqa: str = "query",
    scope: str = "local",
) -> SurgeryRecord:
    """Physically remove attention heads; return the :class:`SurgeryRecord`.

    Either ``heads_to_prune={layer: [head, ...]}`` (keys from
    :func:`attention_layers`: layer indices for Hugging Face models, module
    names for ``nn.MultiheadAttention``), or ``ratio`` of heads to remove,
    chosen by ``importance`` (``"magnitude"``, ``"gradient"`` = Michel et al.
    2019 with ``batches``, or your own ``{layer: scores}``; see
    :mod:`prunekit.surgery.head_importance`). Grouped-query attention keeps
    equal groups (``gqa``, see :func:`plan_heads`). For Hugging Face models the
    config is updated (:mod:`prunekit.surgery.hf`; LLaMA and ViT need the same
    count in every layer). ``nn.MultiheadAttention`` modules that lose heads are
    replaced by :class:`PrunedMultiheadAttention`. Everything is validated
    before the model is touched.
    """
    from .head_importance import head_scores, resolve_scores, select_heads
    from .hf import check_uniform, hf_family, update_config

    _check_request("heads_to_prune", heads_to_prune, ratio)
    specs = attention_layers(model)
    if not specs:
        raise InvalidParameterError(
            "model", "a model with attention layers (Hugging Face BERT/DistilBERT/GPT-2/LLaMA/ViT or "
            "nn.MultiheadAttention)", f"<{type(model).__name__}>",
        )
    if ratio is not None:
        scores = resolve_scores(model, specs, importance, head_scores, batches=batches, loss_fn=loss_fn)
        heads_to_prune = select_heads(specs, scores, ratio, gqa=gqa, scope=scope)
    _check_keys("heads_to_prune", heads_to_prune, specs)
    plans = {k: plan_heads(s, heads_to_prune.get(k, ()), k) for k, s in specs.items()}
    family = hf_family(model)
    if family is not None:
        check_uniform(model, family, [len(q) for q, _ in plans.values()], None)
    record = SurgeryRecord()
    for key, spec in specs.items():
        heads = list(heads_to_prune.get(key, ()))
        if not heads:
            continue
        if isinstance(model.get_submodule(spec.module), nn.MultiheadAttention):
            spec = mha_spec(spec.module, replace_mha(model, spec.module, record))
        remove_heads(model, spec, heads, record)
    if family is not None and record.removals:
        record.extra.setdefault("heads", {})["config"] = update_config(model, family)
    _add_history(model, record)
    return record


def prune_mlp_neurons(
    model: nn.Module,
    neurons_to_prune: Mapping[int, Sequence[int]] | None = None,
    *,
    ratio: float | None = None,
    importance: str | Mapping[Any, torch.Tensor] = "magnitude",
    batches: Any = None,
    loss_fn: Callable[[nn.Module, Any], torch.Tensor] | None = None,
) -> SurgeryRecord:
    """Physically remove MLP hidden neurons of a Hugging Face transformer.

    The hidden (intermediate) dimension: BERT/ViT ``intermediate``/``fc1`` rows
    and ``output``/``fc2`` columns, DistilBERT ``lin1``/``lin2``, GPT-2
    ``c_fc``/``c_proj`` (``Conv1D``), LLaMA ``gate_proj`` and ``up_proj`` rows
    and ``down_proj`` columns. Either ``neurons_to_prune={layer: [neuron, ...]}``
    or ``ratio`` (the same number in every layer) chosen by ``importance``
    (``"magnitude"``, ``"gradient"`` with a gate per neuron, or
    ``{layer: scores}``). The config's width field (``intermediate_size``,
    ``hidden_dim``, ``n_inner``) is updated, so the count must be the same in
    every layer.
    """
    from .head_importance import neuron_scores, resolve_scores, select_neurons
    from .hf import check_uniform, hf_family, update_config

    _check_request("neurons_to_prune", neurons_to_prune, ratio)
    specs = mlp_layers(model)
    if ratio is not None:
        scores = resolve_scores(model, specs, importance, neuron_scores, batches=batches, loss_fn=loss_fn)
        neurons_to_prune = select_neurons({k: s.size for k, s in specs.items()}, scores, ratio)
    _check_keys("neurons_to_prune", neurons_to_prune, specs)
    kept = [s.size - len(_unit_list("neurons_to_prune", k, neurons_to_prune.get(k, ()), s.size, "neuron"))
            for k, s in specs.items()]
    family = hf_family(model)
    check_uniform(model, family, None, kept)
    record = SurgeryRecord()
    for key, spec in specs.items():
        remove_neurons(model, spec, list(neurons_to_prune.get(key, ())), record, key)
    if record.removals:
        record.extra.setdefault("heads", {})["config"] = update_config(model, family)
    _add_history(model, record)
    return record
