"""The channel ratio that reaches a MACs target, found without pruning copies of the model.

The dense MACs of a convolution or Linear layer are ``positions · numel(W)``
(:mod:`prunekit.measure.macs`; ``positions`` is the batch times the output
positions, or the leading dims of a Linear). Removing channels changes neither
``positions`` nor anything of ``W`` but the sizes of its dims: when group ``g``
keeps ``keep_g`` of its ``size_g`` channels and its slice holds ``k`` positions
of dim ``j`` per channel, that dim loses ``k · (size_g - keep_g)`` positions. So
one counted forward pass gives the MACs of every candidate allocation:

    MACs(keep) = Σ_layers positions_l · Π_j (extent_lj - Σ_g k_glj · (size_g - keep_g)) + rest

``rest`` is the MACs of the rows no such rule covers (functional attention and
matrix products, ``nn.MultiheadAttention``), taken as counted. The bisection on
the channel ratio (:func:`ratio_for_macs`) evaluates this formula; it finds the
same ratio as pruning a copy at each candidate and counting its MACs, without
the copies. When ``rest`` is not zero the ratio found is checked once on a copy;
if that count differs from the formula, the search is repeated on copies.
"""

from __future__ import annotations

import copy
import logging
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..coupling.groups import Group
from ..coupling.trace import Trace, Value
from ..errors import InvalidParameterError
from ..measure.macs import MacReport, count_macs, mac_rule
from ..progress import ProgressCallback, ProgressEvent
from .remove import prune_groups

__all__ = ["MacsModel", "count_dense_macs", "macs_from_trace", "macs_of_copy", "ratio_for_macs", "total_macs"]

logger = logging.getLogger(__name__)

#: Bisection steps on the channel ratio (to 2**-14 of the range).
BISECTIONS = 14


def count_dense_macs(model: nn.Module, example_inputs: Any) -> int:
    """Dense MACs of one forward pass, norms not counted (:func:`prunekit.measure.count_macs`)."""
    return count_macs(model, example_inputs, norms=False).dense_macs


def total_macs(report: MacReport | Sequence[tuple[str, int]]) -> int:
    """Dense MACs of a :class:`~prunekit.measure.macs.MacReport` or of :func:`macs_from_trace`'s rows."""
    return report.dense_macs if isinstance(report, MacReport) else sum(macs for _name, macs in report)


def macs_of_copy(model: nn.Module, groups: Sequence[Group], keep: Mapping[str, torch.Tensor],
                 example_inputs: Any) -> int:
    """Dense MACs of a copy of ``model`` with ``keep`` removed (the model is unchanged)."""
    twin, twin_groups = copy.deepcopy((model, list(groups)))
    prune_groups(twin, keep, twin_groups)
    return count_dense_macs(twin, example_inputs)


#: The MAC rules that count ``positions · numel(weight)``.
_WEIGHT_RULES = ("conv", "conv_transpose", "linear", "hf_conv1d")
#: The MAC rules that count nothing with ``norms=False``.
_ZERO_RULES = ("norm", "embedding")

_PRODUCTS = {"matmul", "mm", "bmm", "addmm", "baddbmm", "scaled_dot_product_attention"}


def _numel(shape: Sequence[int]) -> int:
    total = 1
    for d in shape:
        total *= int(d)
    return total


def macs_from_trace(model: nn.Module, traced: Trace) -> list[tuple[str, int]] | None:
    """Dense MACs per module, as ``count_macs(model, x, norms=False)`` counts them, read from the
    shapes a trace of ``model`` on ``x`` recorded (no forward pass); None where the trace cannot
    tell them: attention modules, products of activations (``matmul``, ``sdpa``), a recorded
    module with children or from outside ``torch.nn`` without a Conv/Linear rule (what runs inside
    it is not seen), or a Conv/Linear layer the trace did not record as one call (a subclass
    traced through, a layer not called)."""
    if traced.method not in ("fx", "run") or any(isinstance(m, nn.MultiheadAttention) for m in model.modules()):
        return None
    names = {id(m): n for n, m in model.named_modules()}
    macs: dict[str, int] = {}
    for op in traced.ops:
        if op.kind != "module":
            if isinstance(op.target, str) and op.target in _PRODUCTS:
                return None
            continue
        module = op.target
        rule = mac_rule(module)
        if next(module.children(), None) is not None \
                or (rule is None and not type(module).__module__.startswith("torch.nn.")):
            return None
        if rule is None or rule in _ZERO_RULES:
            continue
        if rule not in _WEIGHT_RULES:  # a registered rule or attention: not a function of the shapes alone
            return None
        out = op.out if isinstance(op.out, Value) else None
        weight = _logical_weight(module)
        if out is None or weight is None or id(module) not in names:
            return None
        if rule == "conv":
            positions = _numel(out.shape) // module.out_channels
        elif rule == "conv_transpose":
            x = op.args[0] if op.args and isinstance(op.args[0], Value) else op.kwargs.get("input")
            if not isinstance(x, Value):
                return None
            positions = _numel(x.shape) // module.in_channels
        elif rule == "linear":
            positions = _numel(out.shape) // module.out_features
        else:
            positions = _numel(out.shape) // int(module.nf)
        name = names[id(module)]
        macs[name] = macs.get(name, 0) + positions * weight.numel()
    # a layer with a MAC rule the trace did not record as one operation (traced through, or not
    # called) would be counted by count_macs and not here
    if any(_scales_with_weight(m) and names[id(m)] not in macs for m in model.modules()):
        return None
    return list(macs.items())


def _logical_weight(module: nn.Module) -> torch.Tensor | None:
    found = module._parameters.get("weight_orig")
    if found is None:
        found = module._parameters.get("weight")
    return found if isinstance(found, torch.Tensor) else None


def _scales_with_weight(module: nn.Module) -> bool:
    """The MAC rule of ``module`` is ``positions · numel(weight)`` (conv, conv-transpose,
    Linear, or a Linear whose weight is stored (in, out))."""
    return mac_rule(module) in _WEIGHT_RULES


class MacsModel:
    """Dense MACs of ``model`` as a function of the channels each group keeps (module docstring).

    Built from the MACs of the model as it is, per module: a
    :class:`~prunekit.measure.macs.MacReport` (counted with ``norms=False``) or the
    ``(module name, dense MACs)`` rows of :func:`macs_from_trace`, and the groups found on it.
    """

    def __init__(self, model: nn.Module, groups: Sequence[Group],
                 report: MacReport | Sequence[tuple[str, int]]) -> None:
        rows = [(r.name, r.dense_macs) for r in report.rows] if isinstance(report, MacReport) else list(report)
        self.total = total_macs(rows)
        self._names = [g.name for g in groups]
        self._sizes = [g.size for g in groups]
        # (id(tensor), dim) -> [(group position, positions per channel)]
        cuts: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
        for k, g in enumerate(groups):
            for s in g.slices:
                t = s.tensor_value()
                cuts[(id(t), s.dim % t.dim())].append((k, s.per_channel))
        modules = dict(model.named_modules(remove_duplicate=False))
        self._layers: list[tuple[int, list[tuple[int, list[tuple[int, int]]]]]] = []
        self.rest = 0
        self.rest_rows: list[str] = []
        for name, macs in rows:
            if macs == 0:
                continue
            module = modules.get(name)
            weight = _logical_weight(module) if module is not None else None
            if module is None or weight is None or not _scales_with_weight(module) or weight.numel() == 0 \
                    or macs % weight.numel():
                self.rest += macs
                self.rest_rows.append(name)
                continue
            dims = [(int(extent), cuts.get((id(weight), d), [])) for d, extent in enumerate(weight.shape)]
            self._layers.append((macs // weight.numel(), dims))

    @property
    def exact(self) -> bool:
        """Every counted MAC scales with a weight's kept dims (no ``rest``)."""
        return not self.rest_rows

    def after(self, keep: Mapping[str, torch.Tensor]) -> int:
        """Dense MACs once each group keeps the ``keep[name].numel()`` channels of ``keep``
        (a group not in ``keep`` keeps all of its channels)."""
        return self.predict([size - (int(keep[name].numel()) if name in keep else size)
                             for name, size in zip(self._names, self._sizes)])

    def predict(self, removed: Sequence[int]) -> int:
        """Dense MACs after removing ``removed[k]`` channels of the ``k``-th group."""
        total = self.rest
        for positions, dims in self._layers:
            numel = 1
            for extent, cut in dims:
                numel *= extent - sum(per * removed[k] for k, per in cut)
            total += positions * numel
        return total


def ratio_for_macs(
    model: nn.Module,
    groups: Sequence[Group],
    target: int,
    example_inputs: Any,
    alloc: Callable[[float], Mapping[str, torch.Tensor]],
    *,
    report: MacReport | None = None,
    macs_model: MacsModel | None = None,
    counts: Callable[[float], Mapping[str, int]] | None = None,
    progress: ProgressCallback | None = None,
) -> float:
    """Smallest channel ratio (to ``2**-BISECTIONS``) whose pruned model has at most ``target``
    dense MACs, by bisection over ``alloc(ratio)`` (the kept channels of each group).

    ``macs_model`` (or ``report``, a ``count_macs(model, example_inputs, norms=False)`` of the model
    as it is) gives the MACs of each candidate (module docstring); without either the model is
    counted here. ``counts(ratio)``: how many channels each group keeps, as ``alloc`` would
    keep them (cheaper than choosing the channels; ``alloc`` is then called only to prune
    copies). Raises :class:`InvalidParameterError` when even the largest ratio stays above
    ``target``. ``progress`` receives a :class:`~prunekit.progress.ProgressEvent` (stage
    ``"macs-search"``, ``figures`` ``ratio``) after each bisection step.
    """
    if macs_model is None:
        macs_model = MacsModel(model, groups, report or count_macs(model, example_inputs, norms=False))

    def on_copies(keep: Mapping[str, torch.Tensor]) -> int:
        return macs_of_copy(model, groups, keep, example_inputs)

    def kept(r: float) -> tuple[int, ...]:
        if counts is not None:
            n = counts(r)
            return tuple(int(n[g.name]) for g in groups)
        keep = alloc(r)
        return tuple(int(keep[g.name].numel()) for g in groups)

    sizes = [g.size for g in groups]

    def from_model(r: float, n: tuple[int, ...]) -> int:
        return macs_model.predict([size - k for size, k in zip(sizes, n)])

    if macs_model.exact:
        return _bisect(target, kept, from_model, progress)
    try:
        ratio = _bisect(target, kept, from_model, progress)
        keep = alloc(ratio)
        if on_copies(keep) == macs_model.after(keep):
            return ratio
    except InvalidParameterError:
        pass  # the rest may shrink too: the copies decide
    logger.info("MACs of %s do not follow the kept channels alone (%s); searching on copies",
                type(model).__name__, ", ".join(macs_model.rest_rows[:3]))
    return _bisect(target, kept, lambda r, n: on_copies(alloc(r)), progress)


def _bisect(target: int, kept: Callable[[float], tuple[int, ...]],
            macs: Callable[[float, tuple[int, ...]], int], progress: ProgressCallback | None = None) -> float:
    """Bisection on the ratio; ``kept(r)`` the channels each group keeps at ``r``, ``macs(r, kept)``
    the MACs then (asked once per distinct ``kept``)."""
    seen: dict[tuple[int, ...], int] = {}

    def macs_at(r: float) -> int:
        key = kept(r)
        if key not in seen:
            seen[key] = macs(r, key)
        return seen[key]

    lo, hi = 0.0, 1.0 - 1e-6
    if macs_at(hi) > target:
        raise InvalidParameterError(
            "macs_target", "a target reachable within the caps (removing every allowed channel still exceeds it)",
            target, "Fix: raise macs_target, relax max_layer_ratio, or exclude fewer layers.",
        )
    for step in range(BISECTIONS):
        mid = (lo + hi) / 2
        if macs_at(mid) <= target:
            hi = mid
        else:
            lo = mid
        if progress is not None:
            progress(ProgressEvent("macs-search", step + 1, BISECTIONS, {"ratio": hi}, f"target {target} MACs"))
    logger.debug("macs target %d: ratio %.5f after %d MAC counts", target, hi, len(seen))
    return hi
