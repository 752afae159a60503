"""Coupling rules of layers: convolutions (plain, depthwise, grouped,
transposed), Linear (and transposed-weight linears such as Hugging Face's
``Conv1D``), per-channel layers (BatchNorm, InstanceNorm, PReLU), LayerNorm /
RMSNorm, GroupNorm and Embedding.

Each is ``rule(g, op, name, ...)`` with ``name`` the module's qualified name;
they are the building blocks of layer handlers (:mod:`.handlers`), so a
custom layer's handler usually calls one of them and binds its own extra
per-channel tensors with ``g.bind``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from torch import nn

from .graph import Graph, Space, _out, _tensors, _where
from .trace import Op, Value

__all__ = ["produce", "conv", "linear", "per_channel", "layer_norm", "group_norm", "embedding", "channelwise"]


# -- layers -------------------------------------------------------------------------------------


def produce(g: Graph, out: Value, dim: int, module_name: str, weight_dim: int, bias: str | None, pos: Any = None) -> Space:
    """A new space for ``out``'s ``dim``, bound as the output of ``module_name.weight`` dim
    ``weight_dim`` (and ``bias`` dim 0 when given); ``pos[i]``: position of channel ``i``."""
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
        produce(g, out, 1, name, 1, has_bias)
        return
    per_in, per_out = module.in_channels // groups, module.out_channels // groups
    if groups == 1:
        if 1 in x.spaces:
            g.bind(name, "weight", 1, x.spaces[1], "in")
        produce(g, out, 1, name, 0, has_bias)
    elif per_in == 1:
        # depthwise (with channel multiplier per_out): input channel c feeds outputs c*per_out ...
        space = produce(g, out, 1, name, 0, has_bias)
        inp = g.space_for(x, 1, "in", f"channels of an untracked tensor (network input?) into {_where(op)}")
        atoms = np.arange(space.size)
        g.union(space, atoms, inp, atoms // per_out)
    else:
        # grouped: the same local input (output) index is removed from every group,
        # so the group count stays; Xie et al., ResNeXt (CVPR 2017) style groups
        if 1 in x.spaces:
            g.bind(name, "weight", 1, x.spaces[1], "in", np.arange(x.shape[1]) % per_in)
        if per_out > 1:
            produce(g, out, 1, name, 0, has_bias, np.arange(out.shape[1]))
            space = out.spaces[1]
            atoms = np.arange(space.size)
            g.union(space, atoms, space, atoms % per_out)
        # one output a group: an output channel is a whole conv group, not pruned (no space)


def linear(g: Graph, op: Op, name: str, transposed: bool = False) -> Space | None:
    """Linear (weight (out, in)) or, ``transposed``, a weight (in, out) such as Hugging
    Face's Conv1D. Returns the space of the output features (None when no tensor comes out)."""
    x, out = _tensors(op)[0], _out(op)
    if out is None:
        return None
    last = x.ndim - 1
    if last in x.spaces:
        g.bind(name, "weight", 0 if transposed else 1, x.spaces[last], "in")
    _keep_other_dims(x, out, {last})
    module = g.modules[name]
    has_bias = "bias" if getattr(module, "bias", None) is not None or "bias_orig" in module._parameters else None
    return produce(g, out, -1, name, 1 if transposed else 0, has_bias)


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


def channelwise(g: Graph, op: Op, name: str | None = None, module: nn.Module | None = None) -> None:
    """A layer that acts on each channel alone (an activation, a mask or scale of whole samples such as
    stochastic depth): its output keeps the input's channels. A ready ``couple`` rule for a layer handler::

        prunekit.register_layer_handler(MyDropPath, prunekit.coupling.channelwise)
    """
    tensors = _tensors(op)
    x, out = (tensors[0] if tensors else None), _out(op)
    if x is None or out is None:
        return
    lead = out.ndim - x.ndim
    for d, space in x.spaces.items():
        if 0 <= d + lead < out.ndim and out.shape[d + lead] == x.shape[d]:
            out.spaces[d + lead] = space


def embedding(g: Graph, op: Op, name: str) -> None:
    out = _out(op)
    if out is not None:
        space = g.new_space(out.shape[-1])
        out.spaces[out.ndim - 1] = space
        g.bind(name, "weight", 1, space, "norm")

