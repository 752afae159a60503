"""Sparsity over time: when to prune and to what level.

A schedule maps training progress ``t`` (in its ``unit``: steps or epochs)
to the sparsity a pruner should reach if a pruning event happens at ``t``.
Events happen at ``start, start + frequency, ...`` up to ``end``; between
events the mask is left as it is. ``sparsity_at(t)`` returns the level at
an event and None otherwise; ``events()`` lists them all.

Formulas (s_i initial, s_f final, t₀ = start, n events after the first, Δt = frequency):

* one-shot: s_f at ``start``.
* linear: s_t = s_i + (s_f − s_i)·(t − t₀)/(nΔt).
* AGP, cubic (Zhu & Gupta 2017, "To prune, or not to prune"):
  s_t = s_f + (s_i − s_f)·(1 − (t − t₀)/(nΔt))³.
* exponential (SynFlow, Tanaka et al. 2020; also iterative magnitude pruning
  at a fixed rate per round): the density shrinks by a constant factor per
  event, 1 − s_t = (1 − s_i)·((1 − s_f)/(1 − s_i))^((t − t₀)/(nΔt)).
* iterative: ``steps`` events from ``start`` every ``frequency``, with equal
  increments of sparsity (``spacing="equal"``) or a constant fraction of the
  remaining weights each time (``spacing="geometric"``, the exponential rule).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidParameterError, check_choice
from .registry import Registry

__all__ = [
    "Schedule",
    "OneShot",
    "Linear",
    "AGP",
    "Exponential",
    "Iterative",
    "SCHEDULES",
    "create_schedule",
    "list_schedules",
]

UNITS = ("step", "epoch")


def _check_fraction(name: str, value: Any, upper_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= float(value) <= 1.0:
        raise InvalidParameterError(name, "a float in [0, 1]", value, "Fix: e.g. 0.9 for 90% pruned at the end.")
    if upper_open and float(value) >= 1.0:
        raise InvalidParameterError(name, "a float in [0, 1) for this schedule", value, "Fix: use at most 0.999.")
    return float(value)


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise InvalidParameterError(name, f"an int >= {minimum}", value)
    return int(value)


@dataclass
class Schedule:
    """Base: events at ``start, start+frequency, ..., end`` in ``unit``s."""

    final: float = 0.5
    start: int = 0
    end: int = 0
    frequency: int = 1
    initial: float = 0.0
    unit: str = "epoch"
    name: str = field(default="schedule", init=False, repr=False)

    def __post_init__(self) -> None:
        self.final = _check_fraction("final", self.final)
        self.initial = _check_fraction("initial", self.initial)
        self.start = _check_int("start", self.start, 0)
        self.end = _check_int("end", self.end, 0)
        self.frequency = _check_int("frequency", self.frequency, 1)
        self.unit = check_choice("unit", self.unit, UNITS)
        if self.end < self.start:
            raise InvalidParameterError(
                "end", f"an int >= start ({self.start})", self.end, "Fix: end is the last pruning event."
            )
        if self.initial > self.final:
            raise InvalidParameterError(
                "initial", f"at most final ({self.final})", self.initial, "Fix: sparsity only grows over a schedule."
            )
        if (self.end - self.start) % self.frequency:
            raise InvalidParameterError(
                "end",
                f"start + a multiple of frequency ({self.start} + k·{self.frequency})",
                self.end,
                f"Fix: use end={self.start + (self.end - self.start) // self.frequency * self.frequency}.",
            )

    @property
    def num_events(self) -> int:
        return (self.end - self.start) // self.frequency + 1

    def progress(self, t: int) -> float:
        """(t − t₀)/(nΔt), in [0, 1]; 1 when there is a single event."""
        span = self.end - self.start
        return 1.0 if span == 0 else min(max((t - self.start) / span, 0.0), 1.0)

    def level(self, progress: float) -> float:
        """Sparsity at a progress in [0, 1]."""
        raise NotImplementedError

    def is_event(self, t: int) -> bool:
        return self.start <= t <= self.end and (t - self.start) % self.frequency == 0

    def sparsity_at(self, t: int) -> float | None:
        """Target sparsity if ``t`` is a pruning event, else None."""
        if isinstance(t, bool) or not isinstance(t, numbers.Integral):
            raise InvalidParameterError("t", f"an int count of {self.unit}s", t)
        return self.level(self.progress(t)) if self.is_event(t) else None

    def current(self, t: int) -> float:
        """Sparsity the model should have after all events up to ``t``."""
        if t < self.start:
            return 0.0
        last = min(self.end, self.start + (t - self.start) // self.frequency * self.frequency)
        return self.level(self.progress(last))

    def events(self) -> list[tuple[int, float]]:
        return [(t, self.level(self.progress(t))) for t in range(self.start, self.end + 1, self.frequency)]


@dataclass
class OneShot(Schedule):
    """Prune once to ``final`` at ``start``."""

    name: str = field(default="oneshot", init=False, repr=False)

    def __post_init__(self) -> None:
        if self.end == 0 or self.end < self.start:
            self.end = self.start
        super().__post_init__()
        if self.end != self.start:
            raise InvalidParameterError("end", f"equal to start ({self.start}) for a one-shot schedule", self.end)

    def level(self, progress: float) -> float:
        return self.final


@dataclass
class Linear(Schedule):
    """s_t = s_i + (s_f − s_i)·p, p = (t − t₀)/(nΔt)."""

    name: str = field(default="linear", init=False, repr=False)

    def level(self, progress: float) -> float:
        return self.initial + (self.final - self.initial) * progress


@dataclass
class AGP(Schedule):
    """Automated gradual pruning, cubic: s_t = s_f + (s_i − s_f)(1 − p)³ (Zhu & Gupta 2017)."""

    name: str = field(default="agp", init=False, repr=False)

    def level(self, progress: float) -> float:
        return self.final + (self.initial - self.final) * (1.0 - progress) ** 3


@dataclass
class Exponential(Schedule):
    """Density shrinks geometrically: 1 − s_t = (1 − s_i)·((1 − s_f)/(1 − s_i))^p
    (SynFlow's schedule, Tanaka et al. 2020)."""

    name: str = field(default="exponential", init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.initial >= 1.0:
            raise InvalidParameterError("initial", "a float in [0, 1)", self.initial)

    def level(self, progress: float) -> float:
        if self.final >= 1.0:
            return 1.0 if progress >= 1.0 else 1.0 - (1.0 - self.initial) * (1.0 - progress)
        ratio = (1.0 - self.final) / (1.0 - self.initial)
        return 1.0 - (1.0 - self.initial) * math.exp(progress * math.log(ratio))


@dataclass
class Iterative(Schedule):
    """``steps`` pruning events every ``frequency`` from ``start``, each one
    step closer to ``final``: equal increments or geometric (a constant
    fraction of what remains). ``end`` is derived from ``steps``; the first
    event already prunes (to s_f/steps for equal spacing)."""

    steps: int = 1
    spacing: str = "equal"
    name: str = field(default="iterative", init=False, repr=False)

    def __post_init__(self) -> None:
        self.steps = _check_int("steps", self.steps, 1)
        self.spacing = check_choice("spacing", self.spacing, ("equal", "geometric"))
        self.end = self.start + (self.steps - 1) * _check_int("frequency", self.frequency, 1)
        super().__post_init__()

    def _index(self, progress: float) -> int:
        return round(progress * (self.steps - 1)) + 1 if self.steps > 1 else 1

    def level(self, progress: float) -> float:
        k = self._index(progress) / self.steps
        if self.spacing == "equal":
            return self.initial + (self.final - self.initial) * k
        if self.final >= 1.0:
            return 1.0 if k >= 1.0 else 1.0 - (1.0 - self.initial) * (1.0 - k)
        return 1.0 - (1.0 - self.initial) * ((1.0 - self.final) / (1.0 - self.initial)) ** k


SCHEDULES: Registry[Schedule] = Registry("schedule")
SCHEDULES.register("oneshot", OneShot, aliases=("one-shot", "one_shot"))
SCHEDULES.register("linear", Linear)
SCHEDULES.register("agp", AGP, aliases=("cubic",))
SCHEDULES.register("exponential", Exponential, aliases=("synflow",))
SCHEDULES.register("iterative", Iterative)


def create_schedule(schedule: str | Schedule, **kwargs: Any) -> Schedule:
    """A schedule from a registered name and keyword arguments, or an instance."""
    if isinstance(schedule, Schedule):
        return schedule
    if isinstance(schedule, str):
        return SCHEDULES.get(schedule)(**kwargs)
    raise InvalidParameterError("schedule", f"a name ({', '.join(SCHEDULES.names())}) or a Schedule", schedule)


def list_schedules(pattern: str = "*") -> list[str]:
    """Names of registered schedules matching the wildcard ``pattern``."""
    return SCHEDULES.names(pattern)
