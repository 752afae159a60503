"""Generic coupling rules: element-wise ops, pooling, reductions along a dim,
padding, matmul and attention products, and the rule for what is not known.

Each rule is ``rule(g, op)``: it reads the spaces of ``op``'s input values
and sets those of its output (see :mod:`.graph`).
"""

from __future__ import annotations

import logging
from typing import Any
from weakref import WeakKeyDictionary

from .graph import Graph, _arg, _dims, _out, _tensors, _where
from .trace import Op, Value, _iter_values

logger = logging.getLogger(__name__)

__all__ = ["elementwise", "unary", "keep_leading", "along_dim", "unknown", "pad", "matmul", "sdpa", "channelwise_by_behaviour"]


# -- generic rules --------------------------------------------------------------------------


def elementwise(g: Graph, op: Op, inputs: list[Value] | None = None) -> None:
    """Broadcasting element-wise op: aligned dims of equal size are one space."""
    out = _out(op)
    if out is None:
        return
    inputs = _tensors(op) if inputs is None else inputs
    for d in range(out.ndim):
        if out.shape[d] <= 1:
            continue
        aligned = [(v, d - (out.ndim - v.ndim)) for v in inputs if 0 <= d - (out.ndim - v.ndim) < v.ndim]
        aligned = [(v, dv) for v, dv in aligned if v.shape[dv] == out.shape[d]]
        tracked = [v.spaces[dv] for v, dv in aligned if dv in v.spaces]
        if not tracked:
            continue
        space = tracked[0]
        for v, dv in aligned:
            other = g.space_for(v, dv, "norm", f"untracked tensor combined with channels in {_where(op)}")
            g.union_same(space, other)
        out.spaces[d] = space


def unary(g: Graph, op: Op) -> None:
    first = _tensors(op)[:1]
    elementwise(g, op, first)


def keep_leading(g: Graph, op: Op, keep: int = 2) -> None:
    """Pooling, interpolation: batch and channel dims kept, the others mixed."""
    x, out = _tensors(op)[0], _out(op)
    for d, space in x.spaces.items():
        if d < keep and out is not None and d < out.ndim and out.shape[d] == x.shape[d]:
            out.spaces[d] = space
        else:
            g.mark(space, "fixed", f"{_where(op)} mixes values along dim {d}")


def along_dim(g: Graph, op: Op, dim: Any, kind: str, what: str) -> None:
    """An op that reads across ``dim`` (softmax, reductions, indexing): a space there is
    marked ``kind``; the other dims are kept (or shifted when ``dim`` disappears)."""
    x, out = _tensors(op)[0], op.out
    dims = _dims(dim, x.ndim)
    for d in dims:
        if d in x.spaces:
            g.mark(x.spaces[d], kind, f"{what} {_where(op)} along dim {d}")
    for o in _iter_values(out):
        if o.ndim == x.ndim:
            mapping = {d: d for d in range(x.ndim) if d not in dims}
        else:  # reduced dims dropped
            kept = [d for d in range(x.ndim) if d not in dims]
            mapping = {d: i for i, d in enumerate(kept)} if len(kept) == o.ndim else {}
        for d, od in mapping.items():
            if d in x.spaces and o.shape[od] == x.shape[d]:
                o.spaces[od] = x.spaces[d]


#: per graph, the refusal reasons of a layer's call, or of a call made inside a layer: reason -> (module
#: name, class), so that the refusal can name the layer type a handler would serve (:mod:`.refusal`)
REFUSED_SCOPES: WeakKeyDictionary[Graph, dict[str, tuple[str, type]]] = WeakKeyDictionary()


def channelwise_by_behaviour(op: Op) -> bool:
    """The call was tried on its real inputs (:mod:`.probe`) and acts on each channel alone along every
    tracked dim of its first tensor, which is the only one with tracked channels; its result has that shape."""
    if not op.channelwise_dims:
        return False
    tensors = _tensors(op)
    out = _out(op)
    if not tensors or out is None or out.shape != tensors[0].shape:
        return False
    first = tensors[0]
    for v in _iter_values((op.args, op.kwargs)):
        if v.spaces and (v is not first or not set(v.spaces) <= op.channelwise_dims):
            return False
    logger.info("%s acts on each channel alone (tried on its inputs): coupled as channel-wise", _where(op))
    return True


_UNKNOWN = "is not supported by structural pruning"


def unknown(g: Graph, op: Op, why: str = _UNKNOWN) -> None:
    if op.kind == "module":
        scope, where = (op.module_name or "", type(op.target)), _where(op)
    else:
        scope = op.scope
        where = _where(op) + (f" in {scope[0]} ({scope[1].__name__})" if scope is not None else "")
    for v in _iter_values((op.args, op.kwargs)):
        for d, space in v.spaces.items():
            reason = f"{where} {why} (it reads dim {d} of a tensor whose channels would be pruned)"
            g.mark(space, "refuse", reason)
            if scope is not None and why == _UNKNOWN:  # a known channel mixer (a shuffle) is not channel-wise
                REFUSED_SCOPES.setdefault(g, {})[reason] = scope


def pad(g: Graph, op: Op) -> None:
    x, out = _tensors(op)[0], _out(op)
    amounts = list(_arg(op, 1, "pad", ()))
    padded = {x.ndim - 1 - k // 2 for k, a in enumerate(amounts) if a}
    for d, space in x.spaces.items():
        if d in padded:
            g.mark(space, "fixed", f"{_where(op)} pads along channels")
        elif out is not None:
            out.spaces[d] = space


def matmul(g: Graph, op: Op) -> None:
    values = _tensors(op)
    out = _out(op)
    if len(values) < 2 or out is None or values[0].ndim < 2 or values[1].ndim < 2:
        unknown(g, op, "(matmul of vectors)")
        return
    a, b = values[0], values[1]
    if -1 % a.ndim in a.spaces or -2 % b.ndim in b.spaces or a.ref or b.ref:
        sa = g.space_for(a, -1, "in", f"untracked operand of {_where(op)}")
        sb = g.space_for(b, -2, "in", f"untracked operand of {_where(op)}")
        g.union_same(sa, sb)
    if (a.ndim - 2) in a.spaces:
        out.spaces[out.ndim - 2] = a.spaces[a.ndim - 2]
    if (b.ndim - 1) in b.spaces or b.ref:
        out.spaces[out.ndim - 1] = g.space_for(b, -1, "out", "")
    for d in range(out.ndim - 2):
        da = d - (out.ndim - a.ndim)
        if 0 <= da < a.ndim - 2 and da in a.spaces and a.shape[da] == out.shape[d]:
            out.spaces[d] = a.spaces[da]


def sdpa(g: Graph, op: Op) -> None:
    q, k, v = _tensors(op)[:3]
    out = _out(op)
    if q.ndim - 1 in q.spaces or k.ndim - 1 in k.spaces:
        g.union_same(g.space_for(q, -1, "in", f"untracked query of {_where(op)}"), g.space_for(k, -1, "in", f"untracked key of {_where(op)}"))
    for t in (k, v):
        if t.ndim - 2 in t.spaces:
            g.mark(t.spaces[t.ndim - 2], "fixed", f"{_where(op)} mixes along the key dim")
    if out is None:
        return
    if v.ndim - 1 in v.spaces:
        out.spaces[out.ndim - 1] = v.spaces[v.ndim - 1]
    if q.ndim - 2 in q.spaces:
        out.spaces[out.ndim - 2] = q.spaces[q.ndim - 2]

