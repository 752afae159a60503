"""Latency of every model of a report timed together, in turn, so machine load hits all alike.

Each model's latency measured right after its own stage depends on what the
machine was doing then; minutes apart, a busy neighbour can move a figure by
tens of percent and make a masked model look faster than the dense one.
:func:`interleaved_latency` times the models round-robin instead: ``warmup``
untimed rounds, then ``repeats`` rounds in each of which every model runs one
forward pass, timed alone with ``time.perf_counter``; a model's figure is the
median of its ``repeats`` times (ms). A drift in load during the pass then
touches every model in the same rounds.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ..timing import interleaved_medians

__all__ = ["interleaved_latency"]


def interleaved_latency(models: Mapping[str, nn.Module], example: torch.Tensor, *, warmup: int, repeats: int,
                        threads: int | None = None) -> dict[str, float]:
    """Median milliseconds of one forward pass of ``example`` per model, timed round-robin."""
    before = torch.get_num_threads()
    flags = {name: [m.training for m in model.modules()] for name, model in models.items()}
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        for model in models.values():
            model.eval()
        with torch.inference_mode():
            seconds = interleaved_medians({name: (lambda m=model: m(example)) for name, model in models.items()},
                                          repeats=repeats, warmup=warmup)
    finally:
        torch.set_num_threads(before)
        for name, model in models.items():
            for module, flag in zip(model.modules(), flags[name]):
                module.training = flag
    return {name: 1000.0 * s for name, s in seconds.items()}
