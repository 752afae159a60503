"""Shape coupling rules: view/reshape/flatten, permutations, expand/repeat,
concatenation and stacking, split/chunk, and indexing with ``[]``.

A reshape that merges dims flattens their channels (a flatten into a Linear:
one channel = ``H·W`` columns); one that splits a tracked dim fixes it; sizes
the model's code writes as constants (``x.view(-1, 400)``) fix the channels.
"""

from __future__ import annotations

import logging
import math

import numpy as np
from torch import nn

from .graph import Graph, _arg, _dims, _out, _tensors, _where
from .trace import Op, Value, _iter_values

__all__ = ["reshape", "permute", "expand", "cat", "stack", "split", "getitem"]

logger = logging.getLogger(__name__)


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
    if out is None or (not x.spaces and x.ref is None):
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
    if x.ref is not None:
        _view_of_parameter(op, x, out, blocks)
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


def _view_of_parameter(op: Op, x: Value, out: Value, blocks: list[tuple[list[int], list[int]]]) -> None:
    """A reshaped parameter (``self.gamma.reshape(1, -1, 1, 1)``, timm's ConvNeXt layer scale): a dim
    kept whole (only dims of size 1 added or dropped) stays bindable when its size is computed or ``-1``
    in the code, so channels it scales can still be removed with its entries."""
    flags = _size_args(op)
    if flags is None:
        return  # the fallback tracer cannot tell whether the sizes are written as constants
    mapping: dict[int, int] = {}
    for ins, outs in blocks:
        big_in = [d for d in ins if x.shape[d] > 1]
        big_out = [d for d in outs if out.shape[d] > 1]
        if len(big_in) == 1 and len(big_out) == 1 and (not flags or (big_out[0] < len(flags) and flags[big_out[0]])):
            ref_dim = big_in[0] if x.ref_dims is None else x.ref_dims.get(big_in[0])
            if ref_dim is not None:
                mapping[big_out[0]] = ref_dim
    out.ref, out.ref_dims = x.ref, mapping


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

