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
pixel shuffle, indexing along channels, unknown functions and layers unless
tried on their inputs they act on each channel alone (:mod:`.probe`); finding
groups raises unless the unit is fixed anyway, naming fixes that work:
:mod:`.refusal`) and ``approx`` (LayerNorm/RMSNorm over the channels, also
``F.layer_norm`` on a LayerNorm's own weights, statistics taken along channels
with ``keepdim=True`` as in ConvNeXt-V2's GRN; pruned only with
``approximate=True``: removing channels changes their mean and variance).
Stochastic depth (torchvision's ``StochasticDepth``/``stochastic_depth``,
timm's ``DropPath``/``drop_path``) scales whole samples: channel-wise.

The rules live by family: :mod:`.graph` (spaces, bindings, marks),
:mod:`.ops_generic` and :mod:`.ops_shape` (torch functions), :mod:`.functions`
(which rule serves which function name), :mod:`.layers` (layer families) and
the layer handlers (:mod:`.handlers`, :mod:`.builtin_handlers`) that apply
them to modules by type.

This is the dependency-graph idea of Fang et al., "DepGraph: Towards Any
Structural Pruning" (CVPR 2023), written here on atoms with union-find.
"""

from __future__ import annotations

from collections.abc import Iterable

from .functions import apply_function
from .graph import Graph, _has_spaces, _out, _tensors, _where
from .handlers import handler_for
from .ops_generic import channelwise_by_behaviour, unary, unknown
from .trace import Op

__all__ = ["apply_rules"]

def _module(g: Graph, op: Op) -> None:
    """A leaf module: its handler's rule; without one, channel-wise when it behaves so on its inputs
    (:mod:`.probe`), else ``unknown`` where it reads tracked channels."""
    module, name = op.target, op.module_name or ""
    handler = handler_for(module)
    if handler is not None and handler.couple is not None:
        handler.couple(g, op, name, module)
    elif _tensors(op) and _has_spaces(op):
        (unary if channelwise_by_behaviour(op) else unknown)(g, op)


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
            apply_function(g, op)
        if op.size_uses:
            _size_uses(g, op)
