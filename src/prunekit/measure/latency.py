"""Latency of a forward pass, on the device the model is on.

:func:`measure_latency` runs ``warmup`` untimed forwards, then ``repeats``
timed ones, each timed alone with ``time.perf_counter``, in eval mode under
``torch.inference_mode``. On a CUDA device (any parameter, buffer or input
tensor on one) each timed forward is bracketed by ``torch.cuda.synchronize``,
so the time is that of the kernels, not of their launch. It reports, in milliseconds::

    median = the 50th percentile of the repeats
    p10, p90 = the 10th and 90th percentiles (linear interpolation)
    mean = Σ t / repeats
    throughput = batch_size / median   (samples per second)

The thread count used is ``threads`` when given (set with
``torch.set_num_threads`` and restored afterwards), else the current
``torch.get_num_threads()``. Every module's ``training`` flag is restored.
"""

from __future__ import annotations

import logging
import numbers
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..errors import InvalidParameterError
from ..masks import pruned_tensors
from ..targets import find_reparam_hook
from .macs import eval_mode, prepare_input
from .params import _check_model

__all__ = ["LatencyResult", "measure_latency"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LatencyResult:
    """Latency statistics of one forward pass, in milliseconds."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    threads: int
    batch_size: int
    repeats: int
    warmup: int

    @property
    def throughput(self) -> float:
        """Samples per second at the median latency: ``batch_size / median``."""
        return self.batch_size / (self.median_ms / 1000.0) if self.median_ms > 0 else float("inf")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "throughput": self.throughput}


def _check_int(name: str, value: Any, minimum: int, fix: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise InvalidParameterError(name, f"an int >= {minimum}", value, fix)
    return int(value)


def _refresh_reparam(model: nn.Module) -> None:
    """Recompute ``<name> = orig * mask`` outside inference mode, so no inference
    tensor is left on reparametrised modules (autograd refuses those later)."""
    for _q, module, name, state in pruned_tensors(model):
        if state == "reparam":
            hook = find_reparam_hook(module, name)
            if hook is not None:
                setattr(module, name, hook.apply_mask(module))


def _leading_dim(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            return int(value.shape[0]) if value.dim() else 1
    return 1


def _cuda_sync(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Callable[[], None]:
    """A function waiting for the CUDA devices the model or its inputs are on (a no-op on the CPU)."""
    tensors = [*model.parameters(), *model.buffers(),
               *(v for v in (*args, *kwargs.values()) if isinstance(v, torch.Tensor))]
    devices = sorted({t.device.index or 0 for t in tensors if t.device.type == "cuda"})
    if not devices:
        return lambda: None

    def sync() -> None:
        for index in devices:
            torch.cuda.synchronize(index)

    return sync


def measure_latency(
    model: nn.Module,
    example_input: Any,
    *,
    warmup: int = 10,
    repeats: int = 50,
    threads: int | None = None,
    batch_size: int | None = None,
) -> LatencyResult:
    """Time ``model(example_input)`` where the model and its input are (CPU or CUDA: synchronised).

    Args:
        model: the network (any pruning state; reparametrised models pay for
            the ``orig * mask`` product in each forward, as they would in use).
        example_input: a tensor, a tuple/list of positional arguments or a
            dict of keyword arguments.
        warmup: untimed forwards first (>= 0).
        repeats: timed forwards (>= 1).
        threads: intra-op threads to use (restored afterwards); None keeps
            the current ``torch.get_num_threads()``.
        batch_size: the batch size to report; None takes the leading
            dimension of the first input tensor.

    Returns:
        :class:`LatencyResult` (median, p10, p90, mean, min in ms; threads,
        batch size, repeats, warmup).
    """
    _check_model(model)
    if example_input is None:
        raise InvalidParameterError(
            "example_input", "a tensor, a tuple of arguments or a dict of keyword arguments", None,
            "Fix: pass the input the model is timed on, e.g. torch.randn(1, 3, 224, 224).",
        )
    warmup = _check_int("warmup", warmup, 0, "Fix: e.g. warmup=10.")
    repeats = _check_int("repeats", repeats, 1, "Fix: e.g. repeats=50.")
    if threads is not None:
        threads = _check_int("threads", threads, 1, f"Fix: None, or 1..{torch.get_num_threads()} on this machine.")
    if batch_size is not None:
        batch_size = _check_int("batch_size", batch_size, 1, "Fix: None to take the input's leading dimension.")
    args, kwargs = prepare_input(model, example_input)
    if batch_size is None:
        batch_size = _leading_dim(args, kwargs)

    sync = _cuda_sync(model, args, kwargs)
    before = torch.get_num_threads()
    times: list[float] = []
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        used = torch.get_num_threads()
        with eval_mode(model), torch.inference_mode():
            for _ in range(warmup):
                model(*args, **kwargs)
            sync()
            for _ in range(repeats):
                start = time.perf_counter()
                model(*args, **kwargs)
                sync()
                times.append((time.perf_counter() - start) * 1000.0)
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
        _refresh_reparam(model)
    ms = np.asarray(times, dtype=np.float64)
    result = LatencyResult(
        median_ms=float(np.median(ms)),
        p10_ms=float(np.percentile(ms, 10)),
        p90_ms=float(np.percentile(ms, 90)),
        mean_ms=float(ms.mean()),
        min_ms=float(ms.min()),
        threads=used,
        batch_size=batch_size,
        repeats=repeats,
        warmup=warmup,
    )
    logger.info("latency: median %.3f ms (p10 %.3f, p90 %.3f) over %d repeats, %d threads, batch %d",
                result.median_ms, result.p10_ms, result.p90_ms, repeats, used, batch_size)
    return result
