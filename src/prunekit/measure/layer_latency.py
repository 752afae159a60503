"""A latency model of a network's prunable layers on the machine at hand.

Latency-aware allocation (:func:`prunekit.allocation.latency_keep_counts`)
needs to know what removing channels from a group saves in *time*, which on a
CPU is far from proportional to the MACs saved: narrow, high-resolution layers
cost more per MAC than wide ones, and thread parallelism helps wide layers
more. Following HALP (Shen et al. 2022, "Structural Pruning via
Latency-Saliency Knapsack") and NetAdapt (Yang et al. 2018, "NetAdapt:
Platform-Aware Neural Network Adaptation for Mobile Applications"), the
network's latency is modelled as a sum over its layers, each looked up in a
table measured on this machine::

    T(widths) = Σ_layers t(type, c_in, c_out, kernel, stride, padding, groups, H×W, batch, threads)

* :class:`LayerSpec` is one table key: a ``Conv2d`` or ``Linear`` with the given
  widths, at the input resolution it sees in the network (``H×W``; a Linear's
  leading dims after the batch count as ``H``), the batch and thread count.
* :class:`LatencyTable` measures an entry the first time it is asked for, on
  the CPU (whatever device the network is on): the layer alone (a ``Conv2d``/``Linear`` with a bias, i.e. BatchNorm folded
  in) on a random input, ``warmup`` untimed forwards, then the median of
  ``repeats`` timed ones under ``torch.inference_mode`` with ``threads`` torch
  threads. Entries are kept in a dict and, with ``path``, in a JSON file
  (written atomically by :meth:`LatencyTable.save`, read at construction).
  ``timer=`` replaces the measurement (tests, or an external profiler).
* :func:`layer_sites` finds, by one forward pass with hooks, every ``Conv2d``
  and ``Linear`` call, its input resolution, its MACs per sample, and which
  dependency groups set its input and output widths
  (``c = base - Σ_g removed_g · positions per channel``).

What the model leaves out, knowingly: element-wise work (ReLU, residual
additions, pooling, BatchNorm when it is not folded), memory traffic between
layers, and interactions between consecutive layers in the cache. The layers
other than ``Conv2d``/``Linear`` are not timed (they are listed at INFO).
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import astuple, dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from ..deprecation import renamed_value
from ..errors import InvalidParameterError
from ..io import atomic_write_text, read_json_object

__all__ = ["LayerSpec", "LatencyTable", "LayerSite", "layer_sites", "predict_latency", "site_spec"]

logger = logging.getLogger(__name__)

KINDS = ("conv2d", "linear")


class _SliceLike(Protocol):
    name: str
    tensor: str
    role: str
    dim: int
    per_channel: int


class GroupLike(Protocol):
    """What :func:`layer_sites` reads of a dependency group (such as :class:`prunekit.surgery.Group`)."""

    name: str

    @property
    def slices(self) -> Sequence[_SliceLike]: ...


@dataclass(frozen=True)
class LayerSpec:
    """One entry of the latency table: a layer's type, shape, input resolution, batch and threads."""

    kind: str
    in_ch: int
    out_ch: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    groups: int
    hw: tuple[int, int]
    batch: int
    threads: int

    def key(self) -> str:
        """The JSON key: the fields joined by ``|`` (tuples as ``AxB``)."""
        return "|".join("x".join(map(str, v)) if isinstance(v, tuple) else str(v) for v in astuple(self))

    @classmethod
    def from_key(cls, key: str) -> LayerSpec:
        parts = key.split("|")
        if len(parts) != 10 or parts[0] not in KINDS:
            raise ValueError(f"not a LayerSpec key: {key!r}")

        def pair(text: str) -> tuple[int, int]:
            a, b = text.split("x")
            return int(a), int(b)

        return cls(parts[0], int(parts[1]), int(parts[2]), pair(parts[3]), pair(parts[4]), pair(parts[5]),
                   int(parts[6]), pair(parts[7]), int(parts[8]), int(parts[9]))

    def build(self) -> tuple[nn.Module, torch.Tensor]:
        """The layer (with a bias) and a random input of the right shape."""
        if self.kind == "conv2d":
            layer: nn.Module = nn.Conv2d(self.in_ch, self.out_ch, self.kernel, self.stride, self.padding,
                                         groups=self.groups, bias=True)
            x = torch.randn(self.batch, self.in_ch, *self.hw)
        else:
            layer = nn.Linear(self.in_ch, self.out_ch, bias=True)
            x = torch.randn(self.batch, self.hw[0] * self.hw[1], self.in_ch).squeeze(1)
        return layer.eval(), x


def _check_count(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise InvalidParameterError(name, f"an int >= {minimum}", value)
    return int(value)


class LatencyTable:
    """Measured CPU latency (ms) of single layers, cached by :class:`LayerSpec` (``timer=`` for other devices).

    Args:
        batch_size: batch size the layers are timed at (the network's input batch is replaced).
        threads: torch threads during the timing (default: ``torch.get_num_threads()`` now).
        warmup, repeats: untimed forwards, then timed ones; the entry is their median.
        path: a JSON file of entries: read now if it exists, written by :meth:`save`.
        timer: ``timer(spec) -> ms`` instead of timing (deterministic tests, other devices).
        batch: deprecated name of ``batch_size``.

    ``hits`` and ``misses`` count the lookups answered from the table and those measured.
    """

    def __init__(self, *, batch_size: int | None = None, threads: int | None = None, warmup: int = 3,
                 repeats: int = 10, path: str | Path | None = None, timer: Callable[[LayerSpec], float] | None = None,
                 batch: int | None = None) -> None:
        batch_size = renamed_value(batch, "batch", "batch_size", "prunekit.surgery.LatencyTable", new_value=batch_size)
        self.batch_size = 1 if batch_size is None else _check_count("batch_size", batch_size, 1)
        self.threads = torch.get_num_threads() if threads is None else _check_count("threads", threads, 1)
        self.warmup = _check_count("warmup", warmup, 0)
        self.repeats = _check_count("repeats", repeats, 1)
        if timer is not None and not callable(timer):
            raise InvalidParameterError("timer", "None or a callable timer(spec) -> milliseconds", timer)
        self.timer = timer
        self.path = Path(path) if path is not None else None
        self.entries: dict[LayerSpec, float] = {}
        self.hits = 0
        self.misses = 0
        if self.path is not None:
            self._load(self.path)

    def _load(self, path: Path) -> None:
        stored = read_json_object(path, then="the entries are measured again")
        if stored is None:
            return
        for key, value in stored.get("entries", {}).items():
            try:
                self.entries[LayerSpec.from_key(key)] = float(value)
            except (ValueError, TypeError):
                logger.warning("latency table %s: skipping malformed entry %r", path, key)
        logger.info("latency table %s: %d entries read", path, len(self.entries))

    @property
    def batch(self) -> int:
        """The batch size (the field name of :class:`LayerSpec`): ``batch_size``."""
        return self.batch_size

    def save(self) -> None:
        """Write the entries to ``path`` (atomically); nothing without a path."""
        if self.path is None:
            return
        payload = {"entries": {spec.key(): ms for spec, ms in sorted(self.entries.items(), key=lambda kv: kv[0].key())}}
        atomic_write_text(self.path, json.dumps(payload, indent=1))
        logger.info("latency table: %d entries written to %s", len(self.entries), self.path)

    def __len__(self) -> int:
        return len(self.entries)

    def __call__(self, spec: LayerSpec) -> float:
        """Latency of ``spec`` in ms, measured on first use."""
        found = self.entries.get(spec)
        if found is not None:
            self.hits += 1
            return found
        self.misses += 1
        ms = float(self.timer(spec)) if self.timer is not None else self._measure(spec)
        if not math.isfinite(ms) or ms < 0:
            raise InvalidParameterError("timer", "a finite latency >= 0 in ms", ms)
        self.entries[spec] = ms
        logger.debug("latency %s: %.4f ms", spec.key(), ms)
        return ms

    def _measure(self, spec: LayerSpec) -> float:
        layer, x = spec.build()
        before = torch.get_num_threads()
        torch.set_num_threads(spec.threads)
        try:
            with torch.inference_mode():
                for _ in range(self.warmup):
                    layer(x)
                times = []
                for _ in range(self.repeats):
                    t0 = time.perf_counter()
                    layer(x)
                    times.append((time.perf_counter() - t0) * 1000.0)
        finally:
            torch.set_num_threads(before)
        return statistics.median(times)


@dataclass
class LayerSite:
    """One ``Conv2d``/``Linear`` call of the network and the groups that set its widths.

    ``layer`` is its table key at the current widths (batch: the example input's, threads: 0);
    ``in_terms``/``out_terms`` map a group name to the input/output positions one of its channels
    occupies (for a grouped conv, one channel of a group removes that local index from every conv
    group, so its input term counts ``groups`` positions); ``depthwise`` convs (one input channel a
    conv group, with any channel multiplier) take their input width and ``groups`` from their output width.
    """

    name: str
    layer: LayerSpec
    out_hw: tuple[int, int]
    in_terms: dict[str, int]
    out_terms: dict[str, int]
    depthwise: bool = False

    def widths(self, removed: Mapping[str, int]) -> tuple[int, int, int]:
        """(in, out, conv groups) after ``removed[group]`` channels left each group."""
        out_ch = self.layer.out_ch - sum(removed.get(g, 0) * k for g, k in self.out_terms.items())
        if self.depthwise:
            groups = out_ch // max(1, self.layer.out_ch // self.layer.groups)
            return groups, out_ch, groups
        in_ch = self.layer.in_ch - sum(removed.get(g, 0) * k for g, k in self.in_terms.items())
        return in_ch, out_ch, self.layer.groups

    def macs(self, removed: Mapping[str, int]) -> int:
        """Multiply-accumulates of this call in the example forward pass (its batch included),
        as :func:`prunekit.measure.count_macs` counts them."""
        in_ch, out_ch, groups = self.widths(removed)
        kh, kw = self.layer.kernel
        return (in_ch // groups) * out_ch * kh * kw * self.out_hw[0] * self.out_hw[1] * self.layer.batch


def site_spec(site: LayerSite, removed: Mapping[str, int], batch: int, threads: int) -> LayerSpec:
    """The table key of ``site`` with ``removed`` channels gone from its groups."""
    in_ch, out_ch, groups = site.widths(removed)
    return replace(site.layer, in_ch=in_ch, out_ch=out_ch, groups=groups, batch=batch, threads=threads)


def predict_latency(sites: Sequence[LayerSite], removed: Mapping[str, int], table: LatencyTable) -> float:
    """Modelled latency (ms) of the network: the sum of its layers' table entries."""
    return sum(table(site_spec(s, removed, table.batch_size, table.threads)) for s in sites)


def _pair(value: Any) -> tuple[int, int]:
    return (int(value), int(value)) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _padding(conv: nn.Conv2d) -> tuple[int, int]:
    """Numeric padding (``"same"`` pads ``dilation · (k - 1) // 2`` a side, ``"valid"`` none)."""
    if isinstance(conv.padding, str):
        if conv.padding == "valid":
            return (0, 0)
        k, d = _pair(conv.kernel_size), _pair(conv.dilation)
        return (d[0] * (k[0] - 1) // 2, d[1] * (k[1] - 1) // 2)
    return _pair(conv.padding)


def layer_sites(model: nn.Module, example_inputs: Any, groups: Sequence[GroupLike]) -> list[LayerSite]:
    """Every ``Conv2d``/``Linear`` call in one forward pass of ``model`` on ``example_inputs``,
    with the groups setting its widths (see the module docstring). Shared modules give one site per call."""
    calls: list[tuple[str, nn.Module, tuple[int, ...], tuple[int, ...]]] = []
    unmodelled: set[str] = set()
    names = {id(m): n for n, m in model.named_modules()}

    def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if args and isinstance(args[0], torch.Tensor) and isinstance(output, torch.Tensor):
            calls.append((names[id(module)], module, tuple(args[0].shape), tuple(output.shape)))

    handles = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            handles.append(module.register_forward_hook(hook))
        elif not list(module.children()) and any(p.requires_grad for p in module.parameters(recurse=False)) \
                and not isinstance(module, nn.modules.batchnorm._NormBase):
            unmodelled.add(name)
    was_training = model.training
    try:
        model.eval()
        inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
        with torch.no_grad():
            model(*inputs)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    if unmodelled:
        logger.info("latency model: layers with parameters not timed (only Conv2d/Linear are): %s",
                    sorted(unmodelled)[:10])
    in_terms: dict[str, dict[str, int]] = {}
    out_terms: dict[str, dict[str, int]] = {}
    for g in groups:
        for s in g.slices:
            if s.tensor != "weight":
                continue
            if s.role == "out" and s.dim == 0:
                out_terms.setdefault(s.name, {})[g.name] = s.per_channel
            elif s.role == "in" and s.dim == 1:
                in_terms.setdefault(s.name, {})[g.name] = s.per_channel
    sites = []
    for name, module, in_shape, out_shape in calls:
        if isinstance(module, nn.Conv2d):
            depthwise = module.groups > 1 and module.groups == module.in_channels
            # grouped: a group's channel is one local input index, removed from every conv group
            scale = module.groups if module.groups > 1 and not depthwise else 1
            layer = LayerSpec("conv2d", module.in_channels, module.out_channels, _pair(module.kernel_size),
                              _pair(module.stride), _padding(module), module.groups, (in_shape[-2], in_shape[-1]),
                              in_shape[0], 0)
            out_hw = (out_shape[-2], out_shape[-1])
        else:
            tokens = math.prod(in_shape[1:-1]) if len(in_shape) > 2 else 1
            layer = LayerSpec("linear", module.in_features, module.out_features, (1, 1), (1, 1), (0, 0), 1,
                              (tokens, 1), in_shape[0], 0)
            depthwise, out_hw, scale = False, (tokens, 1), 1
        inputs = {g: k * scale for g, k in in_terms.get(name, {}).items()}
        sites.append(LayerSite(name, layer, out_hw, inputs, out_terms.get(name, {}), depthwise))
    return sites
