"""How a transformer layer splits into units: attention heads and MLP neurons.

A :class:`UnitSlice` says where units lie in some tensors of one module: unit
``u`` occupies ``offset + u*unit + j`` (``j < unit``) along each ``(tensor,
dim)``. An attention layer is an :class:`AttentionSpec`: where each head's
rows lie in the query / key / value projections and its columns in the output
projection (separate Linear layers as in BERT, LLaMA and ViT, one fused q/k/v
tensor as GPT-2's ``c_attn``, or an ``nn.MultiheadAttention``'s
``in_proj_weight``). An MLP hidden layer is an :class:`MlpSpec`: its
producers' output rows and consumers' input columns (a unit width of 1).

Which dim of a weight holds the outputs comes from the module's layer handler
(:func:`.handlers.weight_out_dim`: 0 for ``nn.Linear``, 1 for Hugging Face's
``Conv1D``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from torch import nn

from .handlers import weight_out_dim

__all__ = ["UnitSlice", "AttentionSpec", "MlpSpec", "producer", "consumer", "mha_spec"]


@dataclass(frozen=True)
class UnitSlice:
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


def producer(name: str, module: nn.Module, offset: int = 0, unit: int = 1) -> UnitSlice:
    """Output rows of a Linear-like layer (weight dim :func:`weight_out_dim`), with the bias."""
    tensors: tuple[tuple[str, int], ...] = (("weight", weight_out_dim(module)),)
    if getattr(module, "bias", None) is not None:
        tensors += (("bias", 0),)
    return UnitSlice(name, tensors, offset, unit)


def consumer(name: str, module: nn.Module, unit: int = 1) -> UnitSlice:
    """Input columns of a Linear-like layer (the weight dim that is not the outputs')."""
    return UnitSlice(name, (("weight", 1 - weight_out_dim(module)),), 0, unit)


@dataclass
class AttentionSpec:
    """One attention layer: its heads and where they lie.

    ``query`` slices hold one unit per query head, ``key_value`` slices one
    unit per key/value head, ``output`` slices one unit per query head (the
    output projection's input). ``attributes(H, KV)`` gives the module
    attributes to set on ``model.<module>`` after ``H`` query and ``KV``
    key/value heads remain (e.g. ``{"num_heads": H}``).
    """

    module: str
    num_heads: int
    num_kv_heads: int
    head_dim: int
    query: tuple[UnitSlice, ...]
    key_value: tuple[UnitSlice, ...]
    output: tuple[UnitSlice, ...]
    attributes: Callable[[int, int], dict[str, int]] = field(default=lambda h, kv: {})

    @property
    def group_size(self) -> int:
        return self.num_heads // self.num_kv_heads


@dataclass
class MlpSpec:
    """One MLP hidden layer of ``size`` neurons: producers' output rows, consumers' input columns."""

    module: str
    size: int
    producers: tuple[UnitSlice, ...]
    consumers: tuple[UnitSlice, ...]
    attributes: Callable[[int], dict[str, int]] = field(default=lambda n: {})


def mha_spec(name: str, mha: nn.Module) -> AttentionSpec:
    """Spec of an ``nn.MultiheadAttention`` (or ``PrunedMultiheadAttention``) named ``name``.

    Removing heads from an ``nn.MultiheadAttention`` first replaces it
    (:func:`prunekit.surgery.pruned_mha.replace_mha`); a replaced one holds a
    ``head_index`` buffer whose entries are removed with the heads.
    """
    h, d = mha.num_heads, mha.head_dim
    inner = h * d
    bias = (("in_proj_bias", 0),) if mha.in_proj_bias is not None else ()
    if mha.in_proj_weight is not None:  # fused q/k/v
        q, k, v = (UnitSlice(name, (("in_proj_weight", 0), *bias), i * inner, d) for i in range(3))
        query, kv = [q], [k, v]
    else:
        query = [UnitSlice(name, (("q_proj_weight", 0),), 0, d)]
        kv = [UnitSlice(name, ((w, 0),), 0, d) for w in ("k_proj_weight", "v_proj_weight")]
        if bias:
            query.append(UnitSlice(name, bias, 0, d))
            kv += [UnitSlice(name, bias, i * inner, d) for i in (1, 2)]
    if mha.bias_k is not None:
        kv.append(UnitSlice(name, (("bias_k", 2), ("bias_v", 2)), 0, d))
    if "head_index" in mha._buffers:
        query.append(UnitSlice(name, (("head_index", 0),), 0, 1))
    return AttentionSpec(
        name, h, h, d, tuple(query), tuple(kv),
        (consumer(f"{name}.out_proj" if name else "out_proj", mha.out_proj, unit=d),),
        attributes=lambda heads, _kv: {"num_heads": heads},
    )
