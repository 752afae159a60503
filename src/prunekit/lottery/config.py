"""Hyperparameters of an iterative-magnitude-pruning run, in one frozen dataclass.

Modelled on OpenLTH's hyperparameter dataclasses (Frankle et al.): every
choice that changes the result is a field, the run directory stores the
config and its fingerprint (sha256 of the canonical JSON), and a resumed run
whose config differs is refused.

Pruning per level ``L`` (Frankle & Carbin 2019, "The Lottery Ticket
Hypothesis"): each level prunes ``rate`` of the weights still remaining, so
after ``L`` levels a fraction ``(1 - rate)^L`` remains; the output layer is
pruned at its own ``output_rate`` (``(1 - output_rate)^L`` remains).
"""

from __future__ import annotations

import hashlib
import json
import numbers
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..allocation import SCOPES
from ..errors import InvalidParameterError, check_choice
from ..training import LR_SCHEDULES, OPTIMIZERS

__all__ = ["CONTROLS", "RESETS", "LotteryConfig"]

#: How the survivors are reset after each pruning level (see :mod:`prunekit.lottery.rewind`).
RESETS = ("lottery", "rewind", "lr_rewind", "finetune")
#: Control experiments trained beside each level's ticket (see :mod:`prunekit.lottery.controls`).
CONTROLS = ("reinit", "shuffle")


def _int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise InvalidParameterError(name, f"an int >= {minimum}", value)
    return int(value)


def _rate(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 < float(value) < 1.0:
        raise InvalidParameterError(name, "a fraction in (0, 1) of the remaining weights pruned per level",
                                    value, "Fix: e.g. 0.2 (Frankle & Carbin 2019).")
    return float(value)


def _patterns(name: str, value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise InvalidParameterError(name, "a name pattern or a list of them", value, "Fix: e.g. ('fc*',).")
    return tuple(value)


@dataclass(frozen=True)
class LotteryConfig:
    """One IMP run.

    Attributes:
        model: a zoo model name (:func:`prunekit.zoo.create_model`); ignored
            for building when a ``model_fn`` is given to the run, but kept in
            the fingerprint.
        model_kwargs: keyword arguments of the zoo model.
        levels: pruning levels after the dense level 0 (the run has
            ``levels + 1`` level directories).
        rate: fraction of the remaining prunable weights removed per level.
        output_rate: the output layer's rate; None = ``rate / 2`` (Frankle &
            Carbin 2019 prune the output layer at half the rate).
        output_layer: name pattern of the output layer's weight; None = the
            last selected target.
        scope: ``"local"`` (each layer loses ``rate`` of its weights) or
            ``"global"`` (one magnitude ranking over all layers but the output).
        include, exclude: target selection (:func:`prunekit.select_targets`).
        reset: ``"lottery"`` (survivors back to θ₀), ``"rewind"`` (to θ_k,
            train steps k..T), ``"lr_rewind"`` (keep the weights, replay the
            LR schedule from step k; Renda et al. 2020) or ``"finetune"``
            (keep the weights, ``finetune_steps`` at the final LR).
        rewind_step: k, in iterations (used by ``rewind`` and ``lr_rewind``).
        train_steps: T, iterations of level 0 (and of each lottery level).
        finetune_steps: iterations per level for ``finetune``; None = T - k.
        batch_size, optimizer, lr, momentum, weight_decay, lr_schedule: as
            :func:`prunekit.fit` (``lr_schedule`` over T global iterations).
        eval_every: iterations between evaluations (validation and test);
            the early-stop iteration is the evaluated iteration of minimum
            validation loss.
        seed: θ₀ comes from ``torch.manual_seed(seed)``; every level, control
            and data order has its own seed derived from it.
        controls: ``"reinit"`` (the level's mask on a fresh random init) and/or
            ``"shuffle"`` (each layer's mask permuted at random, same reset
            weights), trained beside every level >= 1 on the same data order.
    """

    model: str = "lenet_300_100"
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)
    levels: int = 19
    rate: float = 0.2
    output_rate: float | None = None
    output_layer: str | None = None
    scope: str = "local"
    include: tuple[str, ...] | None = None
    exclude: tuple[str, ...] | None = None
    reset: str = "lottery"
    rewind_step: int = 0
    train_steps: int = 5000
    finetune_steps: int | None = None
    batch_size: int = 60
    optimizer: str = "adam"
    lr: float = 1.2e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_schedule: str = "none"
    eval_every: int = 500
    seed: int = 0
    controls: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        put = object.__setattr__
        if not isinstance(self.model, str) or not self.model:
            raise InvalidParameterError("model", "a zoo model name", self.model, "Fix: e.g. 'lenet_300_100'.")
        if not isinstance(self.model_kwargs, Mapping):
            raise InvalidParameterError("model_kwargs", "a mapping of keyword arguments", self.model_kwargs)
        put(self, "model_kwargs", dict(self.model_kwargs))
        put(self, "levels", _int("levels", self.levels, 0))
        put(self, "rate", _rate("rate", self.rate))
        if self.output_rate is not None:
            put(self, "output_rate", _rate("output_rate", self.output_rate))
        if self.output_layer is not None and not isinstance(self.output_layer, str):
            raise InvalidParameterError("output_layer", "a name pattern or None", self.output_layer)
        check_choice("scope", self.scope, SCOPES)
        put(self, "include", _patterns("include", self.include))
        put(self, "exclude", _patterns("exclude", self.exclude))
        check_choice("reset", self.reset, RESETS)
        put(self, "train_steps", _int("train_steps", self.train_steps, 1))
        put(self, "rewind_step", _int("rewind_step", self.rewind_step, 0))
        if self.rewind_step >= self.train_steps:
            raise InvalidParameterError("rewind_step", f"an iteration < train_steps ({self.train_steps})",
                                        self.rewind_step, "Fix: rewind to early training, e.g. 1-5% of T.")
        if self.finetune_steps is not None:
            put(self, "finetune_steps", _int("finetune_steps", self.finetune_steps, 1))
        put(self, "batch_size", _int("batch_size", self.batch_size, 1))
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        for name in ("lr", "momentum", "weight_decay"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or value < 0 or (
                    name == "lr" and value == 0):
                raise InvalidParameterError(name, "a positive float" if name == "lr" else "a float >= 0", value)
            put(self, name, float(value))
        check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        put(self, "eval_every", _int("eval_every", self.eval_every, 1))
        put(self, "seed", _int("seed", self.seed, 0))
        controls = self.controls
        if isinstance(controls, str):
            controls = (controls,)
        if not isinstance(controls, (list, tuple)):
            raise InvalidParameterError("controls", "a list of control names", controls,
                                        "Fix: e.g. ('reinit', 'shuffle').")
        for name in controls:
            check_choice("controls", name, CONTROLS)
        if controls and self.reset not in ("lottery", "rewind"):
            raise InvalidParameterError(
                "controls", f"no controls with reset={self.reset!r}", list(controls),
                "Fix: controls compare a ticket with its reset weights; use reset='lottery' or 'rewind'.")
        put(self, "controls", tuple(dict.fromkeys(controls)))

    # -- derived values ------------------------------------------------------------------

    @property
    def effective_output_rate(self) -> float:
        """The output layer's rate per level (``rate / 2`` when not set)."""
        return self.rate / 2 if self.output_rate is None else self.output_rate

    def sparsity_at(self, level: int, output: bool = False) -> float:
        """Fraction pruned after ``level`` levels: ``1 - (1 - rate)^level``."""
        rate = self.effective_output_rate if output else self.rate
        return 1.0 - (1.0 - rate) ** level

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("include", "exclude", "controls"):
            if out[key] is not None:
                out[key] = list(out[key])
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> LotteryConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InvalidParameterError("config", f"keys among {sorted(known)}", unknown)
        kwargs = dict(values)
        for key in ("include", "exclude", "controls"):
            if isinstance(kwargs.get(key), list):
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)

    def fingerprint(self) -> str:
        """sha256 of the canonical JSON of every field."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(text.encode()).hexdigest()
