"""Swapping layers in a model, comparing its outputs with the dense ones, timing both versions."""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..errors import PrunekitError

__all__ = ["check_close", "swap_modules", "tensors_of", "time_dense_and_sparse"]

#: Relative tolerance of the converted model's outputs, per output dtype (times the largest |output|).
RTOL = {torch.float32: 1e-4, torch.float64: 1e-4, torch.bfloat16: 3e-2, torch.float16: 3e-3}


def swap_modules(model: nn.Module, replacements: Mapping[str, nn.Module]) -> dict[str, nn.Module]:
    """Put each ``replacements[name]`` at ``name`` in ``model``; return the modules taken out."""
    taken = {}
    for name, module in replacements.items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        taken[name] = getattr(parent, child)
        setattr(parent, child, module)
    return taken


def tensors_of(output: Any) -> list[torch.Tensor]:
    """The floating tensors in a model's output (tensor, tuple/list, dict, Hugging Face ModelOutput)."""
    if isinstance(output, torch.Tensor):
        return [output] if output.is_floating_point() else []
    if isinstance(output, Mapping):
        return [t for value in output.values() for t in tensors_of(value)]
    if isinstance(output, (tuple, list)):
        return [t for value in output for t in tensors_of(value)]
    return []


def check_close(output: Any, reference: Any) -> float:
    """The largest absolute difference between ``output`` and ``reference``; raises beyond float tolerance."""
    got, want = tensors_of(output), tensors_of(reference)
    if len(got) != len(want):
        raise PrunekitError(f"to_sparse: the converted model returns {len(got)} tensors, the dense one {len(want)}")
    worst = 0.0
    for a, b in zip(got, want):
        if a.shape != b.shape:
            raise PrunekitError(f"to_sparse: output shape {tuple(a.shape)} differs from dense {tuple(b.shape)}")
        if not b.numel():
            continue
        diff = (a.float() - b.float()).abs().max().item()
        scale = max(1.0, b.float().abs().max().item())
        if not diff <= RTOL.get(b.dtype, 1e-4) * scale:
            raise PrunekitError(
                f"to_sparse: the converted model's outputs differ from the dense model's by {diff:.3g} "
                f"(tolerance {RTOL.get(b.dtype, 1e-4) * scale:.3g}); the model was left unchanged. "
                "This is a bug in a sparse kernel: please report it with the layer shapes.")
        worst = max(worst, diff)
    return worst


def time_dense_and_sparse(model: nn.Module, dense: Mapping[str, nn.Module], sparse: Mapping[str, nn.Module],
                          args: tuple, kwargs: dict, *, repeats: int) -> tuple[float, float]:
    """Median ms of ``model`` with the ``dense`` layers and with the ``sparse`` ones, in interleaved
    rounds (the swap itself is not timed); the model is left with the sparse layers."""
    times: dict[str, list[float]] = {"dense": [], "sparse": []}
    for round_ in range(repeats + 1):  # round 0 warms up
        for label, layers in (("dense", dense), ("sparse", sparse)):
            swap_modules(model, layers)
            start = time.perf_counter()
            model(*args, **kwargs)
            if round_:
                times[label].append(time.perf_counter() - start)
    return statistics.median(times["dense"]) * 1e3, statistics.median(times["sparse"]) * 1e3
