"""Data-free criteria: magnitude (L1, L2, any Ln) and random."""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..errors import InvalidParameterError
from ..targets import Target
from .base import CRITERIA, Criterion

__all__ = ["Magnitude", "Random"]


class Magnitude(Criterion):
    """Magnitude of the current (masked) weights.

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


CRITERIA.register("magnitude", Magnitude, aliases=("l1", "abs"))
CRITERIA.register("l2", lambda: Magnitude(p=2))
CRITERIA.register("lnorm", Magnitude, aliases=("ln",))
CRITERIA.register("random", Random, aliases=("rand",))
