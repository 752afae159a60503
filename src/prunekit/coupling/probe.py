"""Channel-wise by behaviour: a call the coupling rules do not know, tried on its real inputs.

A leaf the tracer cannot look into (a function registered with ``torch.fx.wrap``,
a ``torch.nn`` layer without a layer handler) is refused unless it is known to
act on each channel alone. :func:`channelwise_dims` finds out by running it
where it was met in the traced forward pass: along dim ``d``, the call is
channel-wise when, for a random subset of the indices in a random order,

    f(x.index_select(d, keep)) == f(x).index_select(d, keep)

with the random state reset before each call (so a drop-path mask drawn per
sample is the same). That is exactly what structural pruning needs: the
channels kept give the same values whether or not the others are there. It
fails for anything that mixes channels (statistics over them, a per-channel
constant, the channel count used as a number) and for per-entry random masks
(their draws depend on the shape), which are then refused as before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

__all__ = ["channelwise_dims"]

_TRIALS = 2


def _run(fn: Callable[..., Any], x: torch.Tensor, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    devices = [x.device.index or 0] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        torch.manual_seed(0)
        return fn(x, *args[1:], **kwargs)


def channelwise_dims(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> frozenset[int]:
    """Dims (batch excluded) of ``args[0]`` along which ``fn(*args, **kwargs)`` acts on each index alone
    (module docstring); empty when the first argument is not a floating tensor, the result is not a tensor
    of its shape, or the call fails."""
    x = args[0] if args else None
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim < 2:
        return frozenset()
    try:
        full = _run(fn, x, args, kwargs)
        if not isinstance(full, torch.Tensor) or full.shape != x.shape:
            return frozenset()
        scale = float(full.abs().max()) if full.numel() else 0.0
        generator = torch.Generator().manual_seed(0)
        found = set()
        for d in range(1, x.ndim):
            n = x.shape[d]
            if n < 2:
                continue
            order = torch.randperm(n, generator=generator).to(x.device)
            sizes = sorted({n - 1, max(1, n // 2)}, reverse=True)[:_TRIALS]
            same = True
            for size in sizes:
                keep = order[:size]
                got = _run(fn, x.index_select(d, keep), args, kwargs)
                want = full.index_select(d, keep)
                if not isinstance(got, torch.Tensor) or got.shape != want.shape or not torch.allclose(
                        got, want, rtol=1e-6, atol=1e-7 * max(scale, 1.0)):
                    same = False
                    break
            if same:
                found.add(d)
        return frozenset(found)
    except Exception:  # noqa: BLE001 - any failure means "not known to be channel-wise"
        return frozenset()
