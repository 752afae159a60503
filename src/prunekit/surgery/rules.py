"""How channels flow through each operation: the coupling rules.

Every tracked tensor dim carries a *space*: a run of atoms, one per index
along that dim. Rules either reuse a space for an output dim (the op keeps the
channels as they are: activations, BatchNorm, pooling, residual sums) or add
union edges between atoms (concatenation and split offsets, flatten into
Linear, grouped convolutions, GroupNorm groups). Atoms joined by edges must be
removed together; a set of joined atoms is one *unit* (a channel, in the
user's words).

A *binding* ties a space to one dim of one parameter or buffer, with a role:
``"out"`` (a conv/linear producing the channels), ``"in"`` (a consumer's input
dim) or ``"norm"`` (biases and per-channel parameters/buffers). Atoms that
share a position of a bound tensor are joined (the same weight column).

Marks on spaces: ``fixed`` (never pruned: network input/output, excluded
modules, ops that mix channels such as softmax or a mean over channels, a view
that splits channels), ``refuse`` (ops that would be mis-modelled: channel or
pixel shuffle, indexing along channels, unknown functions; finding groups
raises unless the unit is fixed anyway) and ``approx`` (LayerNorm/RMSNorm over
the channels, pruned only with ``approximate=True``: removing channels changes
its mean and variance).

This is the dependency-graph idea of Fang et al., "DepGraph: Towards Any
Structural Pruning" (CVPR 2023), written here on atoms with union-find.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from .trace import Op, Value, _iter_values

__all__ = ["Space", "Binding", "Graph", "apply_rules"]

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class Space:
    id: int
    size: int
    offset: int


@dataclass(eq=False)
class Binding:
    """``module_name.<tensor>`` dim ``dim`` holds the channels of ``space``;
    ``pos[i]`` is the position along ``dim`` of the space's atom ``i``."""

    module_name: str
    tensor: str
    dim: int
    space: Space
    role: str
    pos: np.ndarray
    aliases: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Mark:
    space: Space
    kind: str  # "fixed" | "refuse" | "approx"
    reason: str


class Graph:
    """Spaces, union edges, bindings and marks collected from one trace."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.modules = dict(model.named_modules())
        self.spaces: list[Space] = []
        self.atoms = 0
        self.edges_a: list[np.ndarray] = []
        self.edges_b: list[np.ndarray] = []
        self.bindings: list[Binding] = []
        self._binding_keys: dict[tuple[int, int], Binding] = {}
        self.marks: list[Mark] = []
        self.size_constraints: list[tuple[Space, Space, str]] = []  # must keep equal sizes

    # -- building ---------------------------------------------------------------------
    def new_space(self, size: int) -> Space:
        space = Space(len(self.spaces), int(size), self.atoms)
        self.spaces.append(space)
        self.atoms += int(size)
        return space

    def union(self, a: Space, ia: np.ndarray, b: Space, ib: np.ndarray) -> None:
        self.edges_a.append(a.offset + np.asarray(ia, dtype=np.int64))
        self.edges_b.append(b.offset + np.asarray(ib, dtype=np.int64))

    def union_same(self, a: Space, b: Space) -> None:
        if a is not b:
            n = min(a.size, b.size)
            self.union(a, np.arange(n), b, np.arange(n))

    def mark(self, space: Space | None, kind: str, reason: str) -> None:
        if space is not None:
            self.marks.append(Mark(space, kind, reason))

    def mark_value(self, value: Any, kind: str, reason: str, dims: Iterable[int] | None = None) -> None:
        for v in _iter_values(value):
            for d, space in v.spaces.items():
                if dims is None or d in dims:
                    self.mark(space, kind, reason)

    def tensor(self, module_name: str, tensor: str) -> torch.Tensor:
        module = self.modules[module_name]
        if tensor + "_orig" in module._parameters:
            return module._parameters[tensor + "_orig"]
        found = module._parameters.get(tensor)
        return found if found is not None else module._buffers[tensor]

    def bind(self, module_name: str, tensor: str, dim: int, space: Space, role: str, pos: np.ndarray | None = None) -> None:
        """Tie ``space`` to dim ``dim`` of ``module_name.<tensor>``; a tensor dim bound
        twice (a module called twice, a tied weight) joins both spaces."""
        module = self.modules[module_name]
        if tensor not in module._parameters and tensor + "_orig" not in module._parameters and tensor not in module._buffers:
            return
        if module._parameters.get(tensor, 0) is None or module._buffers.get(tensor, 0) is None:
            return
        t = self.tensor(module_name, tensor)
        dim = dim % t.dim()
        pos = np.arange(space.size) if pos is None else np.asarray(pos, dtype=np.int64)
        # atoms sharing a position of the tensor are one unit
        order = np.argsort(pos, kind="stable")
        same = pos[order][1:] == pos[order][:-1]
        if same.any():
            self.union(space, order[1:][same], space, order[:-1][same])
        key = (id(t), dim)
        existing = self._binding_keys.get(key)
        if existing is not None:
            # join atoms at equal positions of both spaces
            first = {int(p): i for i, p in enumerate(existing.pos)}
            pairs = [(first[int(p)], i) for i, p in enumerate(pos) if int(p) in first]
            if pairs:
                ia, ib = zip(*pairs)
                self.union(existing.space, np.array(ia), space, np.array(ib))
            if (module_name, tensor) != (existing.module_name, existing.tensor) and (module_name, tensor) not in existing.aliases:
                existing.aliases.append((module_name, tensor))
            return
        binding = Binding(module_name, tensor, dim, space, role, pos)
        self._binding_keys[key] = binding
        self.bindings.append(binding)

    def space_for(self, value: Value, dim: int, role: str, reason: str) -> Space:
        """The space of ``value`` at ``dim``; a parameter gets one bound to it, any
        other untracked tensor a fixed one (its channels cannot be removed)."""
        dim = dim % value.ndim
        space = value.spaces.get(dim)
        if space is None:
            space = self.new_space(value.shape[dim])
            value.spaces[dim] = space
            ref_dim = dim if value.ref_dims is None else value.ref_dims.get(dim)
            if value.ref is not None and value.ref[0] in self.modules and ref_dim is not None:
                self.bind(value.ref[0], value.ref[1], ref_dim, space, role)
            else:
                self.mark(space, "fixed", reason)
        return space


# -- helpers ---------------------------------------------------------------------------


def _arg(op: Op, index: int, name: str, default: Any = None) -> Any:
    if name in op.kwargs:
        return op.kwargs[name]
    if len(op.args) > index:
        return op.args[index]
    return default


def _tensors(op: Op) -> list[Value]:
    return [v for v in list(op.args) + list(op.kwargs.values()) if isinstance(v, Value)]


def _has_spaces(op: Op) -> bool:
    return any(v.spaces for v in _iter_values((op.args, op.kwargs)))


def _out(op: Op) -> Value | None:
    return op.out if isinstance(op.out, Value) else None


def _dims(dim: Any, ndim: int) -> list[int]:
    if dim is None:
        return list(range(ndim))
    if isinstance(dim, (list, tuple)):
        return [int(d) % ndim for d in dim]
    return [int(dim) % ndim]


def _where(op: Op) -> str:
    if op.kind == "module":
        return f"{op.module_name} ({type(op.target).__name__}, node {op.name!r})"
    return f"{op.target} (node {op.name!r})"


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


def unknown(g: Graph, op: Op, why: str = "is not supported by structural pruning") -> None:
    for v in _iter_values((op.args, op.kwargs)):
        for d, space in v.spaces.items():
            g.mark(space, "refuse", f"{_where(op)} {why} (it reads dim {d} of a tensor whose channels would be pruned)")


# -- shape rules -------------------------------------------------------------------------------


def _flatten_into(g: Graph, x: Value, dims: list[int], out: Value, od: int) -> None:
    """Output dim ``od`` is ``dims`` of ``x`` flattened (C-order)."""
    tracked = [d for d in dims if d in x.spaces and x.shape[d] > 1]
    if not tracked:
        return
    big = [d for d in dims if x.shape[d] > 1]
    if len(big) == 1:
        out.spaces[od] = x.spaces[big[0]]
        return
    space = g.new_space(out.shape[od])
    atoms = np.arange(space.size)
    for d in tracked:
        inner = math.prod(x.shape[d + 1 : dims[-1] + 1])
        g.union(space, atoms, x.spaces[d], (atoms // inner) % x.shape[d])
    out.spaces[od] = space


def _size_args(op: Op) -> list[bool] | None:
    """For view/reshape/expand/repeat: per output dim, whether its size was computed
    (True) or written as a constant (False) in the model's code; None if not known."""
    out = _out(op)
    if op.kind == "module":
        # nn.Unflatten holds its sizes as constants
        return [False] * out.ndim if isinstance(op.target, nn.Unflatten) and out is not None else []
    if op.target == "unflatten" and out is not None:
        if op.computed is None:
            return None
        dim = int(_arg(op, 1, "dim")) % (out.ndim - len(op.args[2]) + 1)
        sizes = op.computed[2] if len(op.computed) > 2 else ()
        flags = [True] * out.ndim
        for k, f in enumerate(sizes if isinstance(sizes, (list, tuple)) else [sizes] * len(op.args[2])):
            flags[dim + k] = bool(f) or op.args[2][k] == -1
        return flags
    if op.kind != "function" or op.target not in ("view", "reshape", "expand", "repeat", "tile", "broadcast_to"):
        return []
    if op.computed is None:
        return None
    flags = list(op.computed[1:])
    args = list(op.args[1:])
    if len(args) == 1 and isinstance(args[0], (list, tuple)):
        flags, args = list(flags[0]), list(args[0])
    if args and all(isinstance(a, Value) for a in args):
        return []  # view_as-like
    return [bool(f) or a == -1 for f, a in zip(flags, args)]


def _check_constant_sizes(g: Graph, op: Op, x: Value, out: Value, dims: dict[int, list[int]]) -> bool:
    """Mark as fixed the channels whose size the model's code writes as a constant
    (``x.view(-1, 400)``): after removal that code would be wrong. ``dims`` maps an
    output dim to the input dims it comes from. Returns True if all is well."""
    flags = _size_args(op)
    ok = True
    for od, ins in dims.items():
        if not any(d in x.spaces for d in ins):
            continue
        if flags is None or (flags and od < len(flags) and not flags[od]):
            why = "the fallback tracer cannot tell whether its sizes are computed" if flags is None else "a size is a constant in the model's code"
            g.mark_value(x, "fixed", f"{_where(op)}: {why}", dims=ins)
            ok = False
    return ok


def reshape(g: Graph, op: Op) -> None:
    """view/reshape/flatten/unflatten/squeeze/unsqueeze from the two shapes: dims are
    matched in blocks of equal product; a block that merges dims flattens their
    channels, a block that splits a tracked dim fixes it (it is not modelled), and
    channels whose size the code writes as a constant are fixed."""
    x, out = _tensors(op)[0], _out(op)
    if out is None or not x.spaces:
        return
    xs, os_ = x.shape, out.shape
    i = j = 0
    blocks: list[tuple[list[int], list[int]]] = []
    try:
        while i < len(xs) and j < len(os_):
            ins, outs = [i], [j]
            pi, po = xs[i], os_[j]
            i, j = i + 1, j + 1
            while pi != po:
                if pi < po:
                    ins.append(i)
                    pi *= xs[i]
                    i += 1
                else:
                    outs.append(j)
                    po *= os_[j]
                    j += 1
            blocks.append((ins, outs))
    except IndexError:
        g.mark_value(x, "fixed", f"{_where(op)}: shapes {xs} -> {os_} not understood")
        return
    for ins, outs in blocks:
        big_out = [d for d in outs if os_[d] > 1]
        if not any(d in x.spaces and xs[d] > 1 for d in ins):
            continue
        if len(big_out) == 1:
            if _check_constant_sizes(g, op, x, out, {big_out[0]: ins}):
                _flatten_into(g, x, ins, out, big_out[0])
        else:
            logger.info("%s splits a tracked dim into %s: those channels are not pruned", _where(op), [os_[d] for d in outs])
            g.mark_value(x, "fixed", f"{_where(op)} splits channels into several dims", dims=ins)


def permute(g: Graph, op: Op) -> None:
    x, out = _tensors(op)[0], _out(op)
    if out is None:
        return
    name = op.target
    rest = [a for a in op.args[1:]]
    if name == "permute":
        perm = rest[0] if len(rest) == 1 and isinstance(rest[0], (list, tuple)) else rest
        perm = list(_arg(op, 99, "dims", perm))
    elif name in ("transpose", "swapaxes", "swapdims"):
        a, b = int(_arg(op, 1, "dim0")) % x.ndim, int(_arg(op, 2, "dim1")) % x.ndim
        perm = list(range(x.ndim))
        perm[a], perm[b] = perm[b], perm[a]
    elif name == "t":
        perm = list(range(x.ndim))[::-1]
    else:  # movedim
        src, dst = _dims(_arg(op, 1, "source"), x.ndim), _dims(_arg(op, 2, "destination"), x.ndim)
        order = [d for d in range(x.ndim) if d not in src]
        for s, t in sorted(zip(dst, src)):
            order.insert(s, t)
        perm = order
    for new, old in enumerate(perm):
        old = int(old) % x.ndim
        if old in x.spaces:
            out.spaces[new] = x.spaces[old]


def expand(g: Graph, op: Op) -> None:
    x, out = _tensors(op)[0], _out(op)
    if out is None:
        return
    for d, space in x.spaces.items():
        od = d + out.ndim - x.ndim
        if out.shape[od] != x.shape[d]:
            g.mark(space, "fixed", f"{_where(op)} repeats channels")
        elif _check_constant_sizes(g, op, x, out, {od: [d]}):
            out.spaces[od] = space


def _join_aligned(g: Graph, op: Op, values: list[Value], d: int, out: Value, od: int) -> None:
    """Dim ``d`` of every value (cat/stack along another dim) is one space, output dim ``od``."""
    tracked = [v.spaces[d] for v in values if d in v.spaces]
    if tracked:
        for v in values:
            g.union_same(tracked[0], g.space_for(v, d, "norm", f"untracked tensor joined in {_where(op)}"))
        out.spaces[od] = tracked[0]


def _joined(op: Op) -> tuple[list[Value], Value, int] | None:
    """The inputs, output and dim of cat/stack."""
    values = [v for v in _arg(op, 0, "tensors") if isinstance(v, Value)]
    out = _out(op)
    if out is None or not values:
        return None
    return values, out, int(_arg(op, 1, "dim", 0)) % out.ndim


def cat(g: Graph, op: Op) -> None:
    joined = _joined(op)
    if joined is None:
        return
    values, out, dim = joined
    if any(dim in v.spaces for v in values):
        space = g.new_space(out.shape[dim])
        offset = 0
        for v in values:
            if dim in v.spaces:
                g.union(space, offset + np.arange(v.shape[dim]), v.spaces[dim], np.arange(v.shape[dim]))
            offset += v.shape[dim]
        out.spaces[dim] = space
    for d in range(out.ndim):
        if d != dim:
            _join_aligned(g, op, values, d, out, d)


def stack(g: Graph, op: Op) -> None:
    joined = _joined(op)
    if joined is None:
        return
    values, out, dim = joined
    for d in range(values[0].ndim):
        _join_aligned(g, op, values, d, out, d if d < dim else d + 1)


def split(g: Graph, op: Op) -> None:
    """chunk / tensor_split into n equal parts, or split by a computed part size:
    channel i of every part is one unit, so the parts stay equal. split with a
    list of sizes: the parts' offsets, when every size is computed in the graph
    (from other tensors' shapes); sizes written as constants in the code, or
    unknown (fallback tracer), fix the channels."""
    x = _tensors(op)[0]
    parts = [o for o in (op.out if isinstance(op.out, tuple) else ()) if isinstance(o, Value)]
    if not parts:
        return
    name = op.target
    dim = int(_arg(op, 2 if name != "unbind" else 1, "dim", 0)) % x.ndim
    if name == "unbind":
        if dim in x.spaces:
            g.mark(x.spaces[dim], "refuse", f"{_where(op)} indexes single channels")
        return
    for part in parts:
        for d, space in x.spaces.items():
            if d != dim:
                part.spaces[d] = space
    space = x.spaces.get(dim)
    if space is None:
        return
    sizes = [p.shape[dim] for p in parts]
    count = _arg(op, 1, "chunks" if name == "chunk" else ("sections" if name == "tensor_split" else "split_size"))
    computed = op.computed[1] if op.computed is not None and len(op.computed) > 1 else None
    if name == "split" and isinstance(count, int) and not computed:
        why = "the fallback tracer cannot tell whether its size is computed" if computed is None else "its size is a constant in the model's code"
        g.mark(space, "fixed", f"{_where(op)}: {why}")
        return
    if isinstance(count, int):  # n equal parts (chunk, tensor_split) or a computed part size (split)
        if len(set(sizes)) != 1:
            g.mark(space, "fixed", f"{_where(op)} splits {x.shape[dim]} channels into unequal parts")
            return
        atoms = np.arange(space.size)
        g.union(space, atoms, space, atoms % sizes[0])
    else:
        flags = computed if isinstance(computed, (list, tuple)) else [computed]
        if computed is None or not all(flags):
            why = "the fallback tracer cannot tell whether its sizes are computed" if computed is None else "its sizes are constants in the model's code"
            g.mark(space, "fixed", f"{_where(op)}: {why}")
            return
    offset = 0
    for part in parts:
        sub = g.new_space(part.shape[dim])
        g.union(sub, np.arange(sub.size), space, offset + np.arange(sub.size))
        part.spaces[dim] = sub
        offset += part.shape[dim]


def getitem(g: Graph, op: Op) -> None:
    source, index = op.args[0], op.args[1]
    out = op.out
    if isinstance(source, (tuple, list)):
        chosen = source[index]
        for o, c in zip(_iter_values(out), _iter_values(chosen)):
            o.spaces.update(c.spaces)
        return
    if not isinstance(source, Value) or not (source.spaces or source.ref):
        return
    x = source
    kept_dims: dict[int, int] = {}
    idx = list(index) if isinstance(index, tuple) else [index]
    if any(i is Ellipsis for i in idx):
        at = next(k for k, i in enumerate(idx) if i is Ellipsis)
        used = sum(1 for i in idx if i is not None and i is not Ellipsis)
        idx = idx[:at] + [slice(None)] * (x.ndim - used) + idx[at + 1 :]
    idx += [slice(None)] * (x.ndim - sum(1 for i in idx if i is not None))
    d = od = 0
    for i in idx:
        if i is None:
            od += 1
            continue
        space = x.spaces.get(d)
        if isinstance(i, slice):
            full = i.step in (None, 1) and i.start in (None, 0) and (i.stop is None or (isinstance(i.stop, int) and i.stop >= x.shape[d]))
            if space is not None:
                if full and isinstance(out, Value):
                    out.spaces[od] = space
                elif not full:
                    g.mark(space, "refuse", f"{_where(op)} slices the channels ({i})")
            if full:
                kept_dims[od] = d
            d, od = d + 1, od + 1
        elif isinstance(i, int):
            if space is not None:
                g.mark(space, "refuse", f"{_where(op)} indexes a single channel")
            d += 1
        else:  # tensor or list index: advanced indexing
            for rest, sp in x.spaces.items():
                if rest >= d:
                    g.mark(sp, "refuse", f"{_where(op)} indexes channels with a tensor")
            return
    if x.ref is not None and isinstance(out, Value):
        # a view of a parameter (``self.pos[:t]``): its fully kept dims stay bindable
        out.ref = x.ref
        out.ref_dims = {od: (d if x.ref_dims is None else x.ref_dims.get(d)) for od, d in kept_dims.items()}


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


# -- layers -------------------------------------------------------------------------------------


def _produce(g: Graph, out: Value, dim: int, module_name: str, weight_dim: int, bias: str | None, pos=None) -> Space:
    dim = dim % out.ndim
    space = g.new_space(out.shape[dim])
    out.spaces[dim] = space
    g.bind(module_name, "weight", weight_dim, space, "out", pos)
    if bias is not None:
        g.bind(module_name, bias, 0, space, "norm", pos)
    return space


def _keep_other_dims(x: Value, out: Value, skip: set[int]) -> None:
    for d, space in x.spaces.items():
        if d not in skip and d < out.ndim and out.shape[d] == x.shape[d]:
            out.spaces[d] = space


def conv(g: Graph, op: Op, name: str, module: nn.modules.conv._ConvNd) -> None:
    x, out = _tensors(op)[0], _out(op)
    if out is None:
        return
    spatial = set(range(2, x.ndim))
    for d in spatial & set(x.spaces):
        g.mark(x.spaces[d], "fixed", f"{_where(op)} mixes values along dim {d}")
    _keep_other_dims(x, out, spatial | {1})
    groups = module.groups
    has_bias = "bias" if getattr(module, "bias", None) is not None or "bias_orig" in module._parameters else None
    if module.transposed:
        if groups != 1:
            g.mark(x.spaces.get(1), "fixed", f"grouped transposed convolution {name}")
            return  # its output channels get no space: never pruned
        if 1 in x.spaces:
            g.bind(name, "weight", 0, x.spaces[1], "in")
        _produce(g, out, 1, name, 1, has_bias)
        return
    per_in, per_out = module.in_channels // groups, module.out_channels // groups
    if groups == 1:
        if 1 in x.spaces:
            g.bind(name, "weight", 1, x.spaces[1], "in")
        _produce(g, out, 1, name, 0, has_bias)
    elif per_in == 1:
        # depthwise (with channel multiplier per_out): input channel c feeds outputs c*per_out ...
        space = _produce(g, out, 1, name, 0, has_bias)
        inp = g.space_for(x, 1, "in", f"channels of an untracked tensor (network input?) into {_where(op)}")
        atoms = np.arange(space.size)
        g.union(space, atoms, inp, atoms // per_out)
    else:
        # grouped: the same local input (output) index is removed from every group,
        # so the group count stays; Xie et al., ResNeXt (CVPR 2017) style groups
        if 1 in x.spaces:
            g.bind(name, "weight", 1, x.spaces[1], "in", np.arange(x.shape[1]) % per_in)
        if per_out > 1:
            _produce(g, out, 1, name, 0, has_bias, np.arange(out.shape[1]))
            space = out.spaces[1]
            atoms = np.arange(space.size)
            g.union(space, atoms, space, atoms % per_out)
        # one output a group: an output channel is a whole conv group, not pruned (no space)


def linear(g: Graph, op: Op, name: str, transposed: bool = False) -> None:
    """Linear (weight (out, in)) or Hugging Face Conv1D (weight (in, out))."""
    x, out = _tensors(op)[0], _out(op)
    if out is None:
        return
    last = x.ndim - 1
    if last in x.spaces:
        g.bind(name, "weight", 0 if transposed else 1, x.spaces[last], "in")
    _keep_other_dims(x, out, {last})
    module = g.modules[name]
    has_bias = "bias" if getattr(module, "bias", None) is not None or "bias_orig" in module._parameters else None
    _produce(g, out, -1, name, 1 if transposed else 0, has_bias)


def per_channel(g: Graph, op: Op, name: str, tensors: Iterable[str], dim: int = 1) -> Space | None:
    """BatchNorm / InstanceNorm / PReLU: per-channel tensors on ``dim``; output = input."""
    x, out = _tensors(op)[0], _out(op)
    if out is None:
        return None
    for d, space in x.spaces.items():
        out.spaces[d] = space
    if x.ndim <= dim or x.shape[dim] <= 1:
        return None
    space = g.space_for(x, dim, "norm", f"channels of an untracked tensor (network input?) into {_where(op)}")
    out.spaces[dim] = space
    for t in tensors:
        g.bind(name, t, 0, space, "norm")
    return space


def layer_norm(g: Graph, op: Op, name: str | None, shape: tuple[int, ...], tensors: Iterable[str]) -> None:
    x, out = _tensors(op)[0], _out(op)
    if out is None:
        return
    normed = set(range(x.ndim - len(shape), x.ndim))
    for d, space in x.spaces.items():
        out.spaces[d] = space
        if d not in normed:
            continue
        where = _where(op)
        if len(shape) > 1:
            g.mark(space, "fixed", f"{where} normalises over several dims")
            continue
        g.mark(space, "approx", f"{where} normalises over these channels: removing channels changes its mean and variance")
        if name is not None:
            for t in tensors:
                g.bind(name, t, 0, space, "norm")


def group_norm(g: Graph, op: Op, name: str, groups: int) -> None:
    """Whole GroupNorm groups are removed, so the other groups' statistics stay exact
    (Wu & He, "Group Normalization", ECCV 2018)."""
    space = per_channel(g, op, name, ("weight", "bias"))
    if space is not None and groups > 1:
        per = space.size // groups
        atoms = np.arange(space.size)
        g.union(space, atoms, space, (atoms // per) * per)
    elif space is not None:
        g.mark(space, "approx", f"{_where(op)} (one group) normalises over these channels")


def embedding(g: Graph, op: Op, name: str) -> None:
    out = _out(op)
    if out is not None:
        space = g.new_space(out.shape[-1])
        out.spaces[out.ndim - 1] = space
        g.bind(name, "weight", 1, space, "norm")


_UNARY = {
    "relu", "relu6", "gelu", "silu", "sigmoid", "tanh", "leaky_relu", "elu", "selu", "celu", "hardswish",
    "hardsigmoid", "hardtanh", "mish", "softplus", "softsign", "tanhshrink", "logsigmoid", "dropout", "dropout1d",
    "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout", "contiguous", "clone", "detach", "float",
    "half", "double", "bfloat16", "to", "type_as", "type", "abs", "exp", "log", "sqrt", "rsqrt", "square", "neg",
    "sin", "cos", "erf", "sign", "clamp", "clip", "clamp_min", "clamp_max", "reciprocal", "threshold", "cpu", "cuda",
    "requires_grad", "masked_fill", "nan_to_num", "round", "floor", "ceil", "trunc", "relu_", "identity",
}
_NARY = {"add", "sub", "mul", "truediv", "div", "floordiv", "pow", "maximum", "minimum", "where", "rsub", "addcmul", "addcdiv", "lerp", "fmod", "remainder"}
_SPATIAL = {
    "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d",
    "adaptive_avg_pool2d", "adaptive_avg_pool3d", "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d",
    "interpolate", "upsample", "upsample_nearest", "upsample_bilinear", "lp_pool1d", "lp_pool2d",
    "max_pool2d_with_indices", "adaptive_max_pool2d_with_indices",
}
_RESHAPE = {"view", "reshape", "flatten", "unflatten", "squeeze", "unsqueeze", "view_as", "reshape_as"}
_PERMUTE = {"permute", "transpose", "swapaxes", "swapdims", "t", "movedim", "moveaxis"}
_EXPAND = {"expand", "expand_as", "repeat", "tile", "broadcast_to"}
_MIXING = {"softmax", "log_softmax", "softmin", "normalize", "cumsum", "cumprod", "logcumsumexp"}
_REDUCE = {"mean", "sum", "amax", "amin", "prod", "std", "var", "norm", "logsumexp", "max", "min", "argmax", "argmin", "nansum", "nanmean", "all", "any", "count_nonzero", "median"}
_INDEXING = {"index_select": 1, "gather": 1, "narrow": 1, "select": 1, "take_along_dim": 2, "scatter": 1, "scatter_add": 1, "index_add": 1, "index_copy": 1, "index_fill": 1, "sort": 1, "argsort": 1, "topk": 2, "roll": 2, "flip": 1, "kthvalue": 2}
_REFUSED = {
    "channel_shuffle": "shuffles channels",
    "native_channel_shuffle": "shuffles channels",
    "pixel_shuffle": "moves channels into space",
    "pixel_unshuffle": "moves space into channels",
}


def _reduce(g: Graph, op: Op) -> None:
    values = _tensors(op)
    if op.target in ("max", "min") and len(values) > 1:
        elementwise(g, op)
        return
    dim = _arg(op, 1, "dim", None)
    if isinstance(dim, Value):
        dim = None
    along_dim(g, op, dim, "fixed", "reduction")


def _indexing(g: Graph, op: Op) -> None:
    position = _INDEXING[op.target]
    default = -1 if op.target in ("sort", "argsort", "topk", "kthvalue") else None
    name = "dims" if op.target in ("flip", "roll") else "dim"
    dim = _arg(op, position, name, default)
    if dim is None or isinstance(dim, Value):
        unknown(g, op)
        return
    x = _tensors(op)[0]
    dims = _dims(dim, x.ndim)
    for d in dims:
        if d in x.spaces:
            g.mark(x.spaces[d], "refuse", f"{_where(op)} ({op.target}) reorders or indexes channels")
    out_values = list(_iter_values(op.out))
    for o in out_values:
        if o.ndim == x.ndim:
            for d, space in x.spaces.items():
                if d not in dims and o.shape[d] == x.shape[d]:
                    o.spaces[d] = space
        elif op.target == "select" and o.ndim == x.ndim - 1:
            for d, space in x.spaces.items():
                if d not in dims:
                    o.spaces[d if d < dims[0] else d - 1] = space


def _function(g: Graph, op: Op) -> None:
    name = op.target
    if not any(True for _ in _iter_values(op.out)):
        return  # x.shape, x.size(1), ...: no tensor comes out
    if name == "getitem":
        getitem(g, op)
        return
    values = _tensors(op)
    if name in ("cat", "concat", "concatenate", "stack"):
        values = [v for v in _iter_values(_arg(op, 0, "tensors"))]
    if not values:
        return
    refs = [v for v in _iter_values((op.args, op.kwargs)) if v.ref is not None]
    if not _has_spaces(op) and not (refs and name in ("linear", "conv1d", "conv2d", "conv3d", "embedding")):
        return
    _FUNCTION_RULES.get(name, unknown)(g, op)


def _mixing(g: Graph, op: Op) -> None:
    along_dim(g, op, _arg(op, 1, "dim", 1 if op.target == "normalize" else None), "fixed", "channel-mixing")


def _refused(g: Graph, op: Op) -> None:
    unknown(g, op, _REFUSED[op.target])


def _functional_layer(g: Graph, op: Op) -> None:
    """``F.linear(x, self.weight)`` and friends, with parameters as values."""
    name = op.target
    values = _tensors(op)
    x = values[1] if name == "embedding" else values[0]
    weight = _arg(op, 0 if name == "embedding" else 1, "weight")
    if name == "embedding":
        weight = values[1] if len(values) > 1 else None
        x = values[0]
    if name in ("batch_norm", "instance_norm"):
        params = values[1:]
        if any(p.ref is None for p in params):
            unknown(g, op, "(functional normalisation with computed statistics)")
            return
        space = per_channel(g, op, "", ())
        if space is not None:
            for p in params:
                g.bind(p.ref[0], p.ref[1], 0, space, "norm")
        return
    if name in ("layer_norm", "group_norm"):
        # the normalised shape / group count is written in the calling code
        unary(g, op)
        g.mark_value(op.out, "fixed", f"{_where(op)}: functional normalisation, its size is in the model's code")
        return
    if not isinstance(weight, Value) or weight.ref is None:
        unknown(g, op, "(functional layer with a computed weight)")
        return
    module_name, tensor = weight.ref
    if name == "prelu":
        space = per_channel(g, op, "", ())
        if space is not None and weight.shape[0] > 1:
            g.bind(module_name, tensor, 0, space, "norm")
        return
    if name == "embedding":
        out = _out(op)
        if out is not None:
            space = g.new_space(out.shape[-1])
            out.spaces[out.ndim - 1] = space
            g.bind(module_name, tensor, 1, space, "norm")
        return
    if name.startswith("conv") and int(_arg(op, 6, "groups", 1)) != 1:
        unknown(g, op, "(functional grouped convolution)")
        return
    out = _out(op)
    if out is None:
        return
    cdim = x.ndim - 1 if name == "linear" else 1
    if cdim in x.spaces:
        g.bind(module_name, tensor, 1, x.spaces[cdim], "in")
    if name != "linear":
        for d in set(range(2, x.ndim)) & set(x.spaces):
            g.mark(x.spaces[d], "fixed", f"{_where(op)} mixes values along dim {d}")
    _keep_other_dims(x, out, {cdim} | (set() if name == "linear" else set(range(2, x.ndim))))
    space = g.new_space(out.shape[cdim])
    out.spaces[cdim] = space
    g.bind(module_name, tensor, 0, space, "out")
    bias = _arg(op, 2, "bias")
    if isinstance(bias, Value) and bias.ref is not None:
        g.bind(bias.ref[0], bias.ref[1], 0, space, "norm")


_FUNCTIONAL_LAYERS = ("linear", "conv1d", "conv2d", "conv3d", "batch_norm", "layer_norm", "group_norm", "instance_norm", "embedding", "prelu")
_FUNCTION_RULES: dict[str, Callable[[Graph, Op], None]] = {
    **dict.fromkeys(_UNARY, unary),
    **dict.fromkeys(_NARY, elementwise),
    **dict.fromkeys(_SPATIAL, keep_leading),
    **dict.fromkeys(_RESHAPE, reshape),
    **dict.fromkeys(_PERMUTE, permute),
    **dict.fromkeys(_EXPAND, expand),
    **dict.fromkeys(("cat", "concat", "concatenate"), cat),
    "stack": stack,
    **dict.fromkeys(("split", "chunk", "tensor_split", "unbind", "split_with_sizes"), split),
    "pad": pad,
    **dict.fromkeys(("matmul", "mm", "bmm"), matmul),
    "scaled_dot_product_attention": sdpa,
    **dict.fromkeys(_MIXING, _mixing),
    **dict.fromkeys(_REDUCE, _reduce),
    **dict.fromkeys(_INDEXING, _indexing),
    **dict.fromkeys(_REFUSED, _refused),
    **dict.fromkeys(_FUNCTIONAL_LAYERS, _functional_layer),
}

_ACTIVATIONS = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardswish,
    nn.Hardsigmoid, nn.Hardtanh, nn.Mish, nn.Softplus, nn.Softsign, nn.Tanhshrink, nn.LogSigmoid, nn.Identity,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout, nn.Threshold,
)
_POOLS = (
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
    nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d, nn.LPPool1d, nn.LPPool2d,
)
_NORM_TENSORS = ("weight", "bias", "running_mean", "running_var")


def _module(g: Graph, op: Op) -> None:
    module, name = op.target, op.module_name or ""
    values = _tensors(op)
    if isinstance(module, nn.Embedding):
        embedding(g, op, name)
        return
    if isinstance(module, nn.modules.conv._ConvNd):
        conv(g, op, name, module)
        return
    if isinstance(module, nn.Linear):
        linear(g, op, name)
        return
    if type(module).__name__ == "Conv1D" and hasattr(module, "nf"):
        linear(g, op, name, transposed=True)
        return
    if not values or not _has_spaces(op):
        return
    if isinstance(module, _ACTIVATIONS):
        unary(g, op)
    elif isinstance(module, _POOLS):
        keep_leading(g, op)
    elif isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)):
        per_channel(g, op, name, _NORM_TENSORS)
    elif isinstance(module, (nn.LayerNorm, nn.GroupNorm)) and getattr(module, "weight", None) is None:
        # no parameter to slice, so nothing would carry its new shape into the saved model
        unary(g, op)
        g.mark_value(op.out, "fixed", f"{_where(op)} has no affine parameters to record its new size")
    elif isinstance(module, nn.LayerNorm) or type(module).__name__ == "RMSNorm":
        layer_norm(g, op, name, tuple(module.normalized_shape), ("weight", "bias"))
    elif isinstance(module, nn.GroupNorm):
        group_norm(g, op, name, module.num_groups)
    elif isinstance(module, nn.PReLU):
        if module.num_parameters > 1:
            per_channel(g, op, name, ("weight",))
        else:
            unary(g, op)
    elif isinstance(module, (nn.Flatten, nn.Unflatten)):
        reshape(g, op)
    elif isinstance(module, (nn.Softmax, nn.LogSoftmax, nn.Softmin)):
        along_dim(g, op, module.dim, "fixed", "channel-mixing")
    elif isinstance(module, (nn.modules.padding._ConstantPadNd, nn.modules.padding._ReflectionPadNd, nn.modules.padding._ReplicationPadNd)):
        op.kwargs = {**op.kwargs, "pad": module.padding}
        pad(g, op)
    elif isinstance(module, nn.ChannelShuffle):
        unknown(g, op, "shuffles channels")
    elif isinstance(module, (nn.PixelShuffle, nn.PixelUnshuffle)):
        unknown(g, op, "moves channels into space" if isinstance(module, nn.PixelShuffle) else "moves space into channels")
    elif isinstance(module, nn.MultiheadAttention):
        g.mark_value(values, "fixed", f"{_where(op)}: attention heads are pruned by prunekit.surgery.heads")
    else:
        unknown(g, op)


def _size_uses(g: Graph, op: Op) -> None:
    """The code uses the size of tracked channels: passed as is as the size of an
    output dim, the two must stay equal (checked after joining); used otherwise
    (arithmetic, other ops, or any read seen by the fallback tracer), the channels
    are kept."""
    out = _out(op)
    for value, d, od in op.size_uses:
        space = value.spaces.get(d)
        if space is None:
            continue
        target = out.spaces.get(od) if (od is not None and out is not None) else None
        if target is None:
            g.mark(space, "fixed", f"the model's code computes with the size of these channels ({_where(op)})")
        elif target is not space:
            g.size_constraints.append((space, target, f"{_where(op)} sizes a dim by other channels' size"))


def apply_rules(g: Graph, ops: Iterable[Op]) -> None:
    for op in ops:
        if op.kind == "module":
            _module(g, op)
        elif op.target != "size_read":
            _function(g, op)
        if op.size_uses:
            _size_uses(g, op)

