"""The coupling graph: channel *spaces* of tensor dims, union edges between
their atoms, *bindings* of spaces to parameter dims, and marks.

Every tracked tensor dim carries a space: a run of atoms, one per index along
that dim. Rules (:mod:`.rules`) either reuse a space for an output dim or add
union edges between atoms; atoms joined by edges are removed together.

A *binding* ties a space to one dim of one parameter or buffer, with a role:
``"out"`` (a conv/linear producing the channels), ``"in"`` (a consumer's input
dim) or ``"norm"`` (biases and per-channel parameters/buffers). Atoms that
share a position of a bound tensor are joined (the same weight column).

Marks on spaces: ``fixed`` (never pruned), ``refuse`` (an operation that
would be mis-modelled; finding groups raises unless the unit is fixed anyway)
and ``approx`` (removal changes the kept channels' values, e.g. LayerNorm
statistics; pruned only with ``approximate=True``).

The small helpers at the end (``_arg``, ``_tensors``, ``_out`` ...) read an
:class:`~.trace.Op`; rules of every family use them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from .trace import Op, Value, _iter_values

__all__ = ["Space", "Binding", "Mark", "Graph"]


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
