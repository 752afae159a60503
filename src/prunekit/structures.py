"""Units of pruning and their masks.

A structure groups the entries of a tensor into units (elements, N:M groups,
blocks, kernels, channels), reduces entry scores to one score per unit, and
expands a per-unit keep mask back to the tensor's shape.

Structures speak of a tensor's *output* and *input* dimensions through the
target's layout (dim 0 and 1 for Linear and ConvNd weights; swapped for
Hugging Face's ``Conv1D``), so "2:4 along the input" means the same thing for
every layer type.

Adding a structure is one class and a decorator: subclass :class:`Structure`,
implement :meth:`~Structure.num_units`, :meth:`~Structure.unit_scores`,
:meth:`~Structure.unit_alive` and :meth:`~Structure.expand` (and
:meth:`~Structure.check` for tensors it cannot split), and register it with
:func:`register_structure`; ``prune(model, 0.5, structure="<name>")``, the
allocations (local, global, LAMP, ERK), recipes and the command line then use
it. A structure that fixes its own sparsity (as N:M does) sets
``fixed_sparsity`` and implements :meth:`~Structure.select` instead.

The finest structure is ``"element"``; ``"unstructured"`` is its deprecated name.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch

from .deprecation import warn_once
from .errors import InvalidParameterError
from .registry import Registry, parse_spec
from .targets import Target

__all__ = [
    "Structure",
    "Element",
    "NM",
    "Block",
    "Kernel",
    "Channel",
    "STRUCTURES",
    "create_structure",
    "list_structures",
    "register_structure",
    "unregister_structure",
]

Reduce = Callable[[torch.Tensor, tuple[int, ...]], torch.Tensor]


def _canonical_perm(target: Target) -> tuple[int, ...]:
    """Permutation that puts a tensor in (out, in, *rest) order."""
    ndim = len(target.shape)
    if ndim < 2 or target.out_dim == 0:
        return tuple(range(ndim))
    return (1, 0, *range(2, ndim))


def _inverse(perm: tuple[int, ...]) -> tuple[int, ...]:
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return tuple(inv)


class Structure:
    """Base class of structures: how a tensor's entries group into units.

    A unit is a set of entries pruned together. An allocation ranks units by
    the scores :meth:`unit_scores` gives and asks :meth:`expand` for the
    tensor mask of the units it keeps; :meth:`unit_alive` tells it which
    units an earlier step has already removed. The units of one tensor are
    numbered ``0 .. num_units - 1`` in a fixed order shared by the three.

    Subclasses set :attr:`fixed_sparsity` when the structure itself fixes how
    much is pruned (N:M); those implement :meth:`select` instead of being
    ranked by an allocation.
    """

    name = "structure"
    fixed_sparsity: float | None = None

    def check(self, target: Target) -> None:
        """Raise :class:`InvalidParameterError` if ``target`` cannot take this structure."""

    def num_units(self, target: Target) -> int:
        raise NotImplementedError

    def unit_size(self, target: Target) -> int:
        units = self.num_units(target)
        return target.numel // units if units else 0

    def unit_scores(self, scores: torch.Tensor, target: Target, reduce: Reduce) -> torch.Tensor:
        """One score per unit, flat (length :meth:`num_units`)."""
        raise NotImplementedError

    def unit_alive(self, keep: torch.Tensor, target: Target) -> torch.Tensor:
        """Flat bool per unit: True where any entry of the unit is kept."""
        raise NotImplementedError

    def expand(self, unit_keep: torch.Tensor, target: Target) -> torch.Tensor:
        """Bool mask of the target's shape from a flat per-unit keep mask."""
        raise NotImplementedError

    def select(self, scores: torch.Tensor, keep: torch.Tensor, target: Target) -> torch.Tensor:
        """Keep mask chosen within the structure itself (only with fixed_sparsity)."""
        raise NotImplementedError

    def spec(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class _EntryUnits(Structure):
    """Base of the structures whose units are single entries (Element, and NM,
    which picks its groups in :meth:`select`)."""

    def num_units(self, target: Target) -> int:
        return target.numel

    def unit_scores(self, scores: torch.Tensor, target: Target, reduce: Reduce) -> torch.Tensor:
        return scores.reshape(-1)

    def unit_alive(self, keep: torch.Tensor, target: Target) -> torch.Tensor:
        return keep.reshape(-1)

    def expand(self, unit_keep: torch.Tensor, target: Target) -> torch.Tensor:
        return unit_keep.reshape(target.shape)


class Element(_EntryUnits):
    """Unstructured: every entry is a unit."""

    name = "element"


class Channel(Structure):
    """Whole slices along one dimension: filters, channels, neurons, rows.

    ``dim=None`` (default) is the output dimension of the layer (filters of a
    conv, neurons of a Linear); an int is a raw tensor dimension, as in
    ``torch.nn.utils.prune.ln_structured``.
    """

    name = "channel"

    def __init__(self, dim: int | None = None) -> None:
        if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int)):
            raise InvalidParameterError("dim", "an int tensor dimension or None (the output dim)", dim)
        self.dim = dim

    def _dim(self, target: Target) -> int:
        ndim = len(target.shape)
        dim = target.out_dim if self.dim is None else self.dim
        if not -ndim <= dim < ndim:
            raise InvalidParameterError(
                "structure",
                f"a channel dim within the {ndim}-D tensor {target.name} of shape {tuple(target.shape)}",
                f"dim={dim}",
                f"Fix: use a dim in [{-ndim}, {ndim - 1}] or exclude {target.name!r}.",
            )
        return dim % ndim

    def check(self, target: Target) -> None:
        self._dim(target)

    def _others(self, target: Target) -> tuple[int, ...]:
        d = self._dim(target)
        return tuple(i for i in range(len(target.shape)) if i != d)

    def num_units(self, target: Target) -> int:
        return target.shape[self._dim(target)]

    def unit_scores(self, scores: torch.Tensor, target: Target, reduce: Reduce) -> torch.Tensor:
        others = self._others(target)
        return reduce(scores, others) if others else scores.clone()

    def unit_alive(self, keep: torch.Tensor, target: Target) -> torch.Tensor:
        others = self._others(target)
        return keep.any(dim=others) if others else keep.clone()

    def expand(self, unit_keep: torch.Tensor, target: Target) -> torch.Tensor:
        d = self._dim(target)
        view = [1] * len(target.shape)
        view[d] = -1
        return unit_keep.view(view).expand(target.shape).contiguous()

    def spec(self) -> str:
        return "channel" if self.dim is None else f"channel:{self.dim}"

    def __repr__(self) -> str:
        return f"Channel(dim={self.dim})"


class Kernel(Structure):
    """Each k×k (or k, k×k×k) kernel of an (output, input) pair of a convolution."""

    name = "kernel"

    def check(self, target: Target) -> None:
        if len(target.shape) < 3:
            raise InvalidParameterError(
                "structure",
                "a convolution weight (3-D or more) for 'kernel'",
                f"{target.name} of shape {tuple(target.shape)}",
                f"Fix: exclude {target.name!r} or use 'channel' or 'element' for it.",
            )

    def num_units(self, target: Target) -> int:
        self.check(target)
        return target.shape[0] * target.shape[1]

    def unit_scores(self, scores: torch.Tensor, target: Target, reduce: Reduce) -> torch.Tensor:
        return reduce(scores, tuple(range(2, scores.dim()))).reshape(-1)

    def unit_alive(self, keep: torch.Tensor, target: Target) -> torch.Tensor:
        return keep.flatten(2).any(dim=2).reshape(-1)

    def expand(self, unit_keep: torch.Tensor, target: Target) -> torch.Tensor:
        shape = target.shape
        view = unit_keep.view(shape[0], shape[1], *([1] * (len(shape) - 2)))
        return view.expand(shape).contiguous()


class Block(Structure):
    """Blocks of ``rows × cols`` over the (output, input) dimensions.

    For convolutions a block spans the whole kernel of each (output, input)
    pair it covers. Blocks must tile the tensor exactly.
    """

    name = "block"

    def __init__(self, rows: int | tuple[int, int] = 4, cols: int | None = None) -> None:
        if isinstance(rows, (tuple, list)):
            if len(rows) != 2 or cols is not None:
                raise InvalidParameterError("block", "a (rows, cols) pair such as (4, 4)", rows)
            rows, cols = rows
        cols = rows if cols is None else cols
        for name, value in (("rows", rows), ("cols", cols)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidParameterError(f"block {name}", "a positive int", value, "Fix: e.g. block (4, 4).")
        self.rows, self.cols = rows, cols

    def check(self, target: Target) -> None:
        shape = target.shape
        if len(shape) < 2:
            raise InvalidParameterError(
                "structure",
                "a 2-D or larger tensor for 'block'",
                f"{target.name} of shape {tuple(shape)}",
                f"Fix: exclude {target.name!r} or use 'element' for it.",
            )
        perm = _canonical_perm(target)
        out_size, in_size = shape[perm[0]], shape[perm[1]]
        if out_size % self.rows or in_size % self.cols:
            raise InvalidParameterError(
                "structure",
                f"a block shape that tiles {target.name} (outputs×inputs = {out_size}×{in_size})",
                f"block {self.rows}x{self.cols}",
                "Fix: choose rows dividing the output size and cols dividing the input size, "
                f"or exclude {target.name!r}.",
            )

    def num_units(self, target: Target) -> int:
        self.check(target)
        perm = _canonical_perm(target)
        return (target.shape[perm[0]] // self.rows) * (target.shape[perm[1]] // self.cols)

    def _blocked(self, tensor: torch.Tensor, target: Target) -> torch.Tensor:
        canon = tensor.permute(_canonical_perm(target))
        o, i, *rest = canon.shape
        return canon.reshape(o // self.rows, self.rows, i // self.cols, self.cols, *rest)

    def unit_scores(self, scores: torch.Tensor, target: Target, reduce: Reduce) -> torch.Tensor:
        blocked = self._blocked(scores, target)
        dims = (1, 3, *range(4, blocked.dim()))
        return reduce(blocked, dims).reshape(-1)

    def unit_alive(self, keep: torch.Tensor, target: Target) -> torch.Tensor:
        blocked = self._blocked(keep, target)
        dims = (1, 3, *range(4, blocked.dim()))
        return blocked.any(dim=dims).reshape(-1)

    def expand(self, unit_keep: torch.Tensor, target: Target) -> torch.Tensor:
        perm = _canonical_perm(target)
        canon_shape = [target.shape[p] for p in perm]
        o, i, *rest = canon_shape
        view = unit_keep.view(o // self.rows, 1, i // self.cols, 1, *([1] * len(rest)))
        full = view.expand(o // self.rows, self.rows, i // self.cols, self.cols, *rest).reshape(canon_shape)
        return full.permute(_inverse(perm)).contiguous()

    def spec(self) -> str:
        return f"block:{self.rows}x{self.cols}"

    def __repr__(self) -> str:
        return f"Block({self.rows}, {self.cols})"


class NM(_EntryUnits):
    """N:M semi-structured sparsity: in every group of M consecutive entries
    along the input dimension, keep the N highest-scoring (Mishra et al. 2021,
    "Accelerating Sparse Deep Neural Networks"; 2:4 runs on NVIDIA Ampere
    sparse tensor cores). Sparsity is fixed at 1 − N/M.

    For convolutions the groups run along input channels at each (output,
    kernel position), as NVIDIA's ASP lays them out. 1-D tensors are grouped
    along their only dimension.
    """

    name = "nm"

    def __init__(self, n: int = 2, m: int = 4) -> None:
        for name, value in (("n", n), ("m", m)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidParameterError(f"N:M {name}", "an int", value, "Fix: e.g. '2:4'.")
        if not 1 <= n < m:
            raise InvalidParameterError(
                "structure",
                "N:M with 1 <= N < M (N kept out of every M)",
                f"{n}:{m}",
                "Fix: use e.g. '2:4' or '4:8'.",
            )
        self.n, self.m = n, m
        self.fixed_sparsity = 1 - n / m

    def _group_dim_size(self, target: Target) -> int:
        return target.shape[target.in_dim] if target.in_dim is not None else target.shape[0]

    def check(self, target: Target) -> None:
        size = self._group_dim_size(target)
        if size % self.m:
            raise InvalidParameterError(
                "structure",
                f"an input dimension divisible by M={self.m} for N:M",
                f"{target.name} with input size {size} (shape {tuple(target.shape)})",
                f"Fix: exclude {target.name!r}, or pick M dividing {size}.",
            )

    def _perm(self, target: Target) -> tuple[int, ...]:
        ndim = len(target.shape)
        if ndim < 2:
            return (0,)
        canon = _canonical_perm(target)
        # (out, in, *rest) -> (out, *rest, in): groups run along the input dim
        return (canon[0], *canon[2:], canon[1])

    def _groups(self, tensor: torch.Tensor, target: Target) -> torch.Tensor:
        return tensor.permute(self._perm(target)).reshape(-1, self.m)

    def _ungroup(self, grouped: torch.Tensor, target: Target) -> torch.Tensor:
        perm = self._perm(target)
        permuted_shape = [target.shape[p] for p in perm]
        return grouped.reshape(permuted_shape).permute(_inverse(perm)).contiguous()

    def select(self, scores: torch.Tensor, keep: torch.Tensor, target: Target) -> torch.Tensor:
        grouped = self._groups(scores, target).to(torch.float64 if scores.dtype == torch.float64 else torch.float32)
        alive = self._groups(keep, target)
        grouped = grouped.masked_fill(~alive, float("-inf"))
        top = grouped.topk(self.n, dim=1).indices
        new_keep = torch.zeros_like(alive).scatter_(1, top, True) & alive
        return self._ungroup(new_keep, target)

    def spec(self) -> str:
        return f"{self.n}:{self.m}"

    def __repr__(self) -> str:
        return f"NM({self.n}, {self.m})"


STRUCTURES: Registry[Structure] = Registry("structure")
STRUCTURES.register("element", Element)
STRUCTURES.register("nm", NM, aliases=("n:m",))
STRUCTURES.register("block", Block)
STRUCTURES.register("kernel", Kernel)
STRUCTURES.register("channel", Channel, aliases=("filter", "neuron"))

#: Former names of structures: still accepted, with a warning (once).
DEPRECATED_NAMES = {"unstructured": "element"}

_NM_SHORT = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")


def register_structure(name: str, *, aliases: tuple[str, ...] = ()) -> Callable[[type[Structure]], type[Structure]]:
    """Class decorator: register a :class:`Structure` subclass under ``name`` (and ``aliases``).

    The spec ``"name:arg:..."`` then builds ``cls(arg, ...)`` wherever a
    structure is named: :func:`prunekit.prune`, :class:`prunekit.Pruner`,
    recipes and ``prunekit prune --structure``. A class without its own
    ``name`` attribute gets ``name``.
    """

    def add(cls: type[Structure]) -> type[Structure]:
        if not (isinstance(cls, type) and issubclass(cls, Structure)):
            raise InvalidParameterError(
                "structure", "a subclass of prunekit.Structure", cls, "Fix: class MyUnits(prunekit.Structure): ..."
            )
        STRUCTURES.register(name, cls, aliases=aliases)
        if "name" not in vars(cls):
            cls.name = name.lower()
        return cls

    return add


def unregister_structure(name: str) -> None:
    """Remove the structure ``name`` and its aliases (for tests and plugins)."""
    STRUCTURES.unregister(name)


def create_structure(structure: str | Structure) -> Structure:
    """A structure from a spec (``"element"``, ``"2:4"``, ``"block:4x4"``,
    ``"kernel"``, ``"channel"``, ``"channel:1"``, a registered name) or an instance."""
    if isinstance(structure, Structure):
        return structure
    if isinstance(structure, str):
        short = _NM_SHORT.match(structure)
        if short:
            return NM(int(short.group(1)), int(short.group(2)))
        name = parse_spec(structure)[0]
        if name in DEPRECATED_NAMES:
            new = DEPRECATED_NAMES[name]
            warn_once(f"structure={name!r}", f"structure={new!r}")
            structure = new + structure.strip()[len(name):]
        made = STRUCTURES.create(structure)
        if not isinstance(made, Structure):
            raise InvalidParameterError(
                "structure", f"a Structure from the factory registered as {name!r}", f"<{type(made).__name__}>",
                "Fix: register a subclass of prunekit.Structure.",
            )
        return made
    raise InvalidParameterError(
        "structure",
        "a Structure instance or a spec such as 'element', '2:4', 'block:4x4', 'kernel', 'channel:0'",
        structure,
    )


def list_structures(pattern: str = "*") -> list[str]:
    """Names of registered structures matching the wildcard ``pattern``."""
    return STRUCTURES.names(pattern)
