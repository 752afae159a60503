"""Data-free criteria: magnitude (L1, L2, any Ln) and random.

``magnitude`` (alias ``l1``) is the L1 norm of a unit's weights, ``l2`` the L2
norm and ``lnorm:p`` any L_p norm; for single entries all three rank by
``|w|``. ``magnitude`` also scores the linear layers of one-shot pruning
(:class:`~prunekit.scores.calibration.LayerScore`, one threshold per matrix).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..errors import InvalidParameterError
from ..targets import Target
from .base import Criterion
from .calibration import InputStats
from .registry import MASK_SPACES, SCORES

__all__ = ["Magnitude", "Random"]


class Magnitude(Criterion):
    """Magnitude: entry score ``|w|``, a unit's L_p norm (p = 1: L1; Han et al. 2015, Li et al. 2017).

    Entry score ``|w|``; a unit of entries scores its L_p norm
    ``(Σ |w|^p)^(1/p)`` (p = 1 by default: L1, Han et al. 2015 for entries,
    Li et al. 2017 "Pruning Filters for Efficient ConvNets" for filters;
    p = 2 is the ``ln_structured`` default of many studies). For single
    entries every p gives the same ranking.
    """

    name = "magnitude"
    fresh_scores = True
    nonnegative = True
    finite_scores = True

    def __init__(self, p: float = 1) -> None:
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not (p > 0):
            raise InvalidParameterError(
                "p", "a positive number or math.inf (the norm order)", p, "Fix: use 1, 2 or another p > 0."
            )
        self.p = float(p)

    def score(self, target: Target) -> torch.Tensor:
        return target.effective().abs()

    #: One-shot pruning compares the magnitudes of a whole weight matrix (Han et al. 2015).
    compare = "matrix"

    def score_layer(self, weight: torch.Tensor, stats: InputStats | None = None) -> torch.Tensor:
        """``|W_ij|`` of an ``(out, in)`` weight (one-shot pruning; needs no statistics)."""
        return weight.detach().float().abs()

    def reduce(self, scores: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
        if self.p == 1:
            return scores.sum(dim=dims)
        return torch.linalg.vector_norm(scores, ord=self.p, dim=dims)

    def __repr__(self) -> str:
        p = "inf" if math.isinf(self.p) else (int(self.p) if self.p.is_integer() else self.p)
        return f"Magnitude(p={p})"


class Random(Criterion):
    """Uniform random scores: the control every method must beat.

    Scores are redrawn at each :meth:`prepare` (each pruning step) from the
    global torch RNG, or from ``seed`` when given, and are stable between
    calls within a step.
    """

    name = "random"
    fresh_scores = True
    nonnegative = True
    finite_scores = True

    def __init__(self, seed: int | None = None) -> None:
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise InvalidParameterError("seed", "an int or None", seed)
        self.seed = seed
        self._step_seed: int | None = None
        self._calls = 0

    def prepare(self, model: nn.Module, targets: Sequence[Target], **context: Any) -> None:
        if self.seed is None:
            self._step_seed = int(torch.randint(0, 2**62, (1,)).item())
        else:
            self._step_seed = self.seed + self._calls
        self._calls += 1

    def score(self, target: Target) -> torch.Tensor:
        if self._step_seed is None:
            self.prepare(target.module, [target])
        gen = torch.Generator(device="cpu")
        gen.manual_seed((self._step_seed + zlib.crc32(target.name.encode())) % (2**63))
        scores = torch.rand(target.shape, generator=gen, dtype=torch.float32)
        return scores.to(target.original.device)

    def __repr__(self) -> str:
        return f"Random(seed={self.seed})"


def _l2() -> Magnitude:
    """L2 norm of a unit's weights, ``(Σ w²)^½`` (entries rank by ``|w|``)."""
    return Magnitude(p=2)


def _lnorm(p: float = 1) -> Magnitude:
    """L_p norm of a unit's weights, ``lnorm:p`` (``lnorm:1`` is ``magnitude``, ``lnorm:2`` is ``l2``)."""
    return Magnitude(p)


SCORES.register("magnitude", Magnitude, unit_spaces=MASK_SPACES, aliases=("l1", "abs"))
SCORES.register("l2", _l2, unit_spaces=MASK_SPACES)
SCORES.register("lnorm", _lnorm, unit_spaces=MASK_SPACES, aliases=("ln",))
SCORES.register("random", Random, unit_spaces=MASK_SPACES, aliases=("rand",))
