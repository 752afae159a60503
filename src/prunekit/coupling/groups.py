"""Dependency groups: which slices of which tensors must be removed together.

:func:`find_groups` traces the model (:mod:`prunekit.coupling.trace`), applies
the coupling rules (:mod:`prunekit.coupling.rules`) and joins coupled channels
with union-find. Channels ("units") that touch the same tensors the same way
form one :class:`Group`: a conv's output channels with its BatchNorm and every
consumer's input columns; every branch of a residual sum in one group;
concatenation and split offsets; a flatten into a Linear (one channel = H·W
columns); depthwise convs (input and output channels one group) and grouped
convs (the same local index in every conv group).

Index layout of :class:`Slice`: ``index`` has shape ``(size,)`` when each
channel is one position of the tensor dim, or ``(size, k)`` when each channel
is ``k`` positions (flatten into Linear: ``k = H·W``; a depthwise conv with a
channel multiplier). ``Slice.positions(i)`` always gives a 1-d tensor.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import InvalidParameterError, PrunekitError, did_you_mean
from ..targets import pattern_matches
from .graph import Binding, Graph
from .refusal import refusal_message
from .rules import apply_rules
from .trace import Trace, trace

__all__ = ["Slice", "Group", "find_groups", "find_groups_traced", "UnsupportedOperationError", "ROLES"]

logger = logging.getLogger(__name__)

ROLES = ("out", "in", "norm")


class UnsupportedOperationError(PrunekitError, ValueError):
    """The model applies an operation to prunable channels that structural
    pruning would get wrong (channel shuffle, pixel shuffle, indexing, an
    unknown function). The message names the operation and the graph node."""


@dataclass(frozen=True, eq=False)
class Slice:
    """One tensor dim of a group: ``index[i]`` holds the position(s) of channel ``i``."""

    name: str
    module: nn.Module
    tensor: str
    dim: int
    index: torch.Tensor
    role: str
    extent: int = -1  # size of the tensor dim when the group was found
    aliases: tuple[str, ...] = ()  # other modules holding the same (tied) tensor

    def positions(self, i: int) -> torch.Tensor:
        """Positions of channel ``i`` along ``dim`` (1-d)."""
        return self.index[i].reshape(-1)

    @property
    def per_channel(self) -> int:
        return 1 if self.index.dim() == 1 else self.index.shape[1]

    def tensor_value(self) -> torch.Tensor:
        """The logical tensor (``<name>_orig`` · mask is not applied)."""
        module = self.module
        if self.tensor + "_orig" in module._parameters:
            return module._parameters[self.tensor + "_orig"]
        found = module._parameters.get(self.tensor)
        return found if found is not None else module._buffers[self.tensor]


@dataclass
class Group:
    """Coupled channels: removing channel ``i`` removes ``positions(i)`` of every slice."""

    name: str
    size: int
    slices: tuple[Slice, ...]
    multiple: int = 1
    notes: tuple[str, ...] = field(default_factory=tuple)  # why removal is approximate, if it is

    def producers(self) -> list[Slice]:
        return [s for s in self.slices if s.role == "out"]

    def consumers(self) -> list[Slice]:
        return [s for s in self.slices if s.role == "in"]

    def norms(self) -> list[Slice]:
        return [s for s in self.slices if s.role == "norm"]

    @property
    def approximate(self) -> bool:
        """True when removal changes the kept channels' outputs (LayerNorm statistics)."""
        return bool(self.notes)

    def __repr__(self) -> str:
        parts = ", ".join(f"{s.name}.{s.tensor}[{s.dim}]:{s.role}" for s in self.slices)
        return f"Group({self.name!r}, size={self.size}, slices=[{parts}])"


# -- union-find on atoms ----------------------------------------------------------------


def _components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Root (smallest atom) of each atom's component: hook roots to the smaller
    root of each edge, then compress, until every edge is inside one component."""
    parent = np.arange(n, dtype=np.int64)
    if a.size == 0:
        return parent
    while True:
        pa, pb = parent[a], parent[b]
        differ = pa != pb
        if not differ.any():
            return parent
        pa, pb = pa[differ], pb[differ]
        low = np.minimum(pa, pb)
        np.minimum.at(parent, pa, low)
        np.minimum.at(parent, pb, low)
        while True:
            nxt = parent[parent]
            if np.array_equal(nxt, parent):
                break
            parent = nxt


# -- finding groups ------------------------------------------------------------------------


def _as_tuple(example_inputs: Any) -> tuple[Any, ...]:
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    if isinstance(example_inputs, (tuple, list)):
        return tuple(example_inputs)
    raise InvalidParameterError(
        "example_inputs", "a tensor or a tuple of positional inputs", f"<{type(example_inputs).__name__}>",
        "Fix: pass e.g. torch.randn(1, 3, 32, 32).",
    )


def _check_patterns(param: str, value: str | Iterable[str], model: nn.Module) -> list[str]:
    items = [value] if isinstance(value, str) else list(value)
    if not all(isinstance(v, str) for v in items):
        raise InvalidParameterError(param, "module names or glob patterns (strings)", value)
    names = [n for n, _ in model.named_modules() if n]
    for pattern in items:
        if not any(pattern_matches(pattern, n, param=param) for n in names):
            raise InvalidParameterError(
                param, f"names or patterns matching modules of {type(model).__name__}", pattern,
                ("Fix: use qualified module names (model.named_modules())." + did_you_mean(pattern, names)).strip(),
            )
    return items


def _declare(g: Graph, extra_groups: Sequence[Sequence[Sequence[Any]]]) -> None:
    """User-declared couplings: each entry lists ``(module, tensor, dim[, role])``
    whose indices are coupled one to one."""
    for n, entry in enumerate(extra_groups):
        spaces = []
        for item in entry:
            if not isinstance(item, (tuple, list)) or len(item) not in (3, 4):
                raise InvalidParameterError(
                    f"extra_groups[{n}]", "(module name, tensor name, dim) or (..., role) tuples", item,
                    'Fix: e.g. [("block.fc", "weight", 0), ("block.gate", "weight", 0)].',
                )
            module_name, tensor, dim = str(item[0]), str(item[1]), int(item[2])
            role = str(item[3]) if len(item) == 4 else ("out" if dim == 0 and tensor == "weight" else "norm")
            if role not in ROLES:
                raise InvalidParameterError(f"extra_groups[{n}] role", "one of 'out', 'in', 'norm'", role)
            if module_name not in g.modules:
                raise InvalidParameterError(f"extra_groups[{n}]", "module names of the model", module_name)
            module = g.modules[module_name]
            if not any(tensor == k or tensor + "_orig" == k for k in list(module._parameters) + list(module._buffers)):
                raise InvalidParameterError(f"extra_groups[{n}]", f"a tensor of {module_name}", tensor)
            t = g.tensor(module_name, tensor)
            if not -t.dim() <= dim < t.dim():
                raise InvalidParameterError(f"extra_groups[{n}]", f"a dim of {module_name}.{tensor} {tuple(t.shape)}", dim)
            key = (id(t), dim % t.dim())
            binding = g._binding_keys.get(key)
            if binding is None:
                space = g.new_space(t.shape[dim])
                g.bind(module_name, tensor, dim, space, role)
            else:
                space = binding.space
            spaces.append(space)
        if len({s.size for s in spaces}) > 1:
            raise InvalidParameterError(f"extra_groups[{n}]", "tensor dims of equal size", [s.size for s in spaces])
        for space in spaces[1:]:
            g.union_same(spaces[0], space)


def _atom_roots(g: Graph, roots: np.ndarray, space: Any) -> np.ndarray:
    return roots[space.offset : space.offset + space.size]


def find_groups(
    model: nn.Module,
    example_inputs: Any,
    *,
    exclude: str | Iterable[str] = (),
    extra_groups: Sequence[Sequence[Sequence[Any]]] = (),
    approximate: bool = False,
) -> list[Group]:
    """Find the prunable dependency groups of ``model``.

    Args:
        model: the network (dense, or pruned with masks in either prunekit mode).
        example_inputs: a tensor or tuple of positional inputs; one forward pass is run.
        exclude: module names or glob patterns never to prune; groups touching them are dropped.
        extra_groups: couplings the tracer cannot see, each a list of
            ``(module name, tensor name, dim[, role])`` coupled index by index.
        approximate: also return groups whose removal changes the kept
            channels' values (channels normalised by a LayerNorm/RMSNorm or a
            one-group GroupNorm); their ``notes`` say why.

    Returns the groups in trace order. The network's input and output channels
    are never in a group. Channels are kept (not offered, logged at INFO with
    the reason) when an operation mixes them (softmax, mean, LayerNorm unless
    ``approximate``), pads them, splits them into several dims (attention
    heads), or when the model's code computes with their size (``x.view(-1, 400)``,
    ``split(y, [3, 5])``, ``c // h`` from ``x.shape``; the fallback tracer cannot
    follow sizes, so there every read size and every view/split of channels
    keeps them). Raises :class:`UnsupportedOperationError` when an operation
    that would be mis-modelled (channel/pixel shuffle, indexing channels, an
    unknown function or module) touches channels that could otherwise be pruned.
    """
    return find_groups_traced(model, example_inputs, exclude=exclude, extra_groups=extra_groups,
                              approximate=approximate)[0]


def find_groups_traced(
    model: nn.Module,
    example_inputs: Any,
    *,
    exclude: str | Iterable[str] = (),
    extra_groups: Sequence[Sequence[Sequence[Any]]] = (),
    approximate: bool = False,
) -> tuple[list[Group], Trace]:
    """:func:`find_groups`, and the :class:`~.trace.Trace` of ``model`` it was found from
    (the shapes every recorded operation saw with ``example_inputs``)."""
    inputs = _as_tuple(example_inputs)
    patterns = _check_patterns("exclude", exclude, model)
    if not isinstance(approximate, bool):
        raise InvalidParameterError("approximate", "True or False", approximate)
    traced = trace(model, inputs)
    g = Graph(model)
    apply_rules(g, traced.ops)
    g.mark_value(traced.outputs, "fixed", "network output")
    _declare(g, extra_groups)
    a = np.concatenate(g.edges_a) if g.edges_a else np.zeros(0, dtype=np.int64)
    b = np.concatenate(g.edges_b) if g.edges_b else np.zeros(0, dtype=np.int64)
    roots = _components(g.atoms, a, b)

    for source, target, reason in g.size_constraints:
        if sorted(_atom_roots(g, roots, source).tolist()) != sorted(_atom_roots(g, roots, target).tolist()):
            g.mark(source, "fixed", reason)
            g.mark(target, "fixed", reason)
    marks: dict[str, dict[int, str]] = {"fixed": {}, "refuse": {}, "approx": {}}
    for mark in g.marks:
        for r in np.unique(_atom_roots(g, roots, mark.space)).tolist():
            marks[mark.kind].setdefault(r, mark.reason)
    for binding in g.bindings:
        names = [binding.module_name] + [m for m, _t in binding.aliases]
        if patterns and any(pattern_matches(p, n, param="exclude") for p in patterns for n in names):
            for r in np.unique(_atom_roots(g, roots, binding.space)).tolist():
                marks["fixed"].setdefault(r, f"{binding.module_name} is excluded")

    table = _RootTable(g, roots)
    refused = []
    kept: dict[str, int] = defaultdict(int)
    units: dict[tuple[tuple[int, int], ...], list[int]] = defaultdict(list)
    for i in table.first_seen():
        if not table.produced[i]:
            continue
        r = table.root_ids[i]
        if r in marks["fixed"]:
            kept[marks["fixed"][r]] += 1
            continue
        if r in marks["refuse"]:
            refused.append((r, marks["refuse"][r]))
            continue
        if r in marks["approx"] and not approximate:
            continue
        units[table.key(i)].append(i)
    if refused:
        message, names = refusal_message(g, refused, table.bindings_per_root())
        error = UnsupportedOperationError(message)
        error.exclude = names  # type: ignore[attr-defined]  # the exclude= value that avoids this refusal
        raise error
    for reason, count in kept.items():
        logger.info("%d channels kept (not offered for pruning): %s", count, reason)
    groups = [_make_group(g, key, np.asarray(members, dtype=np.int64), table, marks["approx"])
              for key, members in units.items()]
    groups.sort(key=lambda grp: grp._order)  # type: ignore[attr-defined]
    _name_groups(groups)
    logger.info("found %d prunable groups in %s (traced with %s)", len(groups), type(model).__name__, traced.method)
    return groups, traced


class _RootTable:
    """Which positions of which bindings each root (unit) touches, as sorted arrays.

    Rows are the distinct ``(root, binding, position)`` triples sorted in that order;
    a *pair* is the run of one root and one binding; a root's pairs are consecutive
    and sorted by binding. Root ``i`` (in ``root_ids`` order) owns pairs
    ``pair_of_root[i] .. pair_of_root[i + 1]``.
    """

    def __init__(self, g: Graph, roots: np.ndarray) -> None:
        parts_r, parts_k, parts_p = [], [], []
        for k, binding in enumerate(g.bindings):
            atom_roots = _atom_roots(g, roots, binding.space)
            n = min(len(atom_roots), len(binding.pos))
            parts_r.append(atom_roots[:n])
            parts_p.append(np.asarray(binding.pos[:n], dtype=np.int64))
            parts_k.append(np.full(n, k, dtype=np.int64))
        empty = np.zeros(0, dtype=np.int64)
        r = np.concatenate(parts_r) if parts_r else empty
        k = np.concatenate(parts_k) if parts_k else empty
        p = np.concatenate(parts_p) if parts_p else empty
        # roots in the order first met going through the bindings (the order reasons are reported in)
        self._first = np.unique(r, return_index=True)[1]
        self._r_in_order = r
        order = np.lexsort((p, k, r))
        r, k, p = r[order], k[order], p[order]
        distinct = np.ones(len(r), dtype=bool)
        distinct[1:] = (r[1:] != r[:-1]) | (k[1:] != k[:-1]) | (p[1:] != p[:-1])
        r, k, p = r[distinct], k[distinct], p[distinct]
        self.positions = p
        new_pair = np.ones(len(r), dtype=bool)
        new_pair[1:] = (r[1:] != r[:-1]) | (k[1:] != k[:-1])
        self.pair_start = np.flatnonzero(new_pair)
        pair_r = r[self.pair_start]
        self.pair_k = k[self.pair_start]
        self.pair_n = np.diff(np.append(self.pair_start, len(r)))
        new_root = np.ones(len(pair_r), dtype=bool)
        new_root[1:] = pair_r[1:] != pair_r[:-1]
        starts = np.flatnonzero(new_root)
        self.pair_of_root = np.append(starts, len(pair_r))
        self.root_ids: list[int] = pair_r[starts].tolist()
        not_in = np.array([b.role != "in" for b in g.bindings], dtype=bool)
        self.produced: list[bool] = (
            np.logical_or.reduceat(not_in[self.pair_k], starts).tolist() if len(starts) else [])
        self._pairs = list(zip(self.pair_k.tolist(), self.pair_n.tolist()))
        self._bounds = self.pair_of_root.tolist()

    def first_seen(self) -> list[int]:
        """Root indices in the order the roots are first met going through the bindings."""
        met = self._r_in_order[np.sort(self._first)]
        return np.searchsorted(np.asarray(self.root_ids, dtype=np.int64), met).tolist()

    def bindings_per_root(self) -> dict[int, dict[int, None]]:
        """``{root: {binding index: None, ...}}``: the bindings each root touches (for refusal messages)."""
        return {root: dict.fromkeys(self.pair_k[self._bounds[i]:self._bounds[i + 1]].tolist())
                for i, root in enumerate(self.root_ids)}

    def key(self, i: int) -> tuple[tuple[int, int], ...]:
        """``((binding, positions touched), ...)`` of root ``i``, sorted by binding."""
        return tuple(self._pairs[self._bounds[i]:self._bounds[i + 1]])

    def rows(self, members: np.ndarray, j: int, n: int) -> np.ndarray:
        """The ``n`` sorted positions of each member root in its ``j``-th binding, ``(members, n)``."""
        start = self.pair_start[self.pair_of_root[members] + j]
        return self.positions[start[:, None] + np.arange(n)]


def _make_group(g: Graph, key: tuple[tuple[int, int], ...], members: np.ndarray, table: _RootTable,
                approx: dict[int, str]) -> Group:
    order = [k for k, _n in key]
    lead_j = next((j for j, k in enumerate(order) if g.bindings[k].role == "out"), 0)
    lead_rows = table.rows(members, lead_j, key[lead_j][1])
    by_lead = np.argsort(lead_rows[:, 0], kind="stable")
    members, lead_rows = members[by_lead], lead_rows[by_lead]
    slices = []
    for j, (k, n) in enumerate(key):
        binding: Binding = g.bindings[k]
        index = torch.from_numpy(np.ascontiguousarray(table.rows(members, j, n)))
        if n == 1:
            index = index[:, 0].contiguous()
        t = g.tensor(binding.module_name, binding.tensor)
        slices.append(
            Slice(binding.module_name, g.modules[binding.module_name], binding.tensor, binding.dim, index,
                  binding.role, int(t.shape[binding.dim]), tuple(m for m, _t in binding.aliases))
        )
    slices.sort(key=lambda s: ROLES.index(s.role))
    root_ids = [table.root_ids[i] for i in members.tolist()]
    notes = tuple(dict.fromkeys(approx[r] for r in root_ids if r in approx))
    lead = order[lead_j]
    group = Group(g.bindings[lead].module_name, len(members), tuple(slices), 1, notes)
    group._order = (min(order), int(lead_rows[0, 0]))  # type: ignore[attr-defined]
    group._span = (int(lead_rows[0, 0]), int(lead_rows.max()) + 1)  # type: ignore[attr-defined]
    return group


def _name_groups(groups: list[Group]) -> None:
    counts: dict[str, int] = defaultdict(int)
    for grp in groups:
        counts[grp.name] += 1
    seen: set[str] = set()
    for grp in groups:
        if counts[grp.name] > 1:
            lo, hi = grp._span  # type: ignore[attr-defined]
            grp.name = f"{grp.name}[{lo}:{hi}]"
        base, n = grp.name, 1
        while grp.name in seen:
            n += 1
            grp.name = f"{base}#{n}"
        seen.add(grp.name)


def group_map(groups: Sequence[Group]) -> Mapping[str, Group]:
    return {grp.name: grp for grp in groups}
