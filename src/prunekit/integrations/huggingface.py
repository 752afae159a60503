"""A ``transformers.TrainerCallback`` that prunes on a prunekit schedule during ``Trainer.train``.

::

    from prunekit.integrations.huggingface import PrunekitTrainerCallback
    from prunekit.schedules import AGP

    callback = PrunekitTrainerCallback(
        AGP(final=0.8, start=0, end=300, frequency=50, unit="step"),
        criterion="magnitude", scope="global", include="bert.encoder.*",
    )
    Trainer(model=model, args=args, train_dataset=ds, callbacks=[callback]).train()

Events of a ``unit="step"`` schedule happen in ``on_step_begin`` when
``state.global_step`` (optimizer steps done) equals the event's time, i.e.
before that step, as in :func:`prunekit.training.fit`; those of a
``unit="epoch"`` schedule in ``on_epoch_begin`` of that epoch. Sparsities are
prunekit's: the fraction of the targets zero after the event.

Importing this module needs transformers (``pip install transformers``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

try:
    from transformers import TrainerCallback
except ImportError as exc:  # pragma: no cover - exercised only without transformers
    raise ImportError(
        "prunekit.integrations.huggingface needs transformers, which is not installed. "
        "Fix: pip install transformers (or pip install 'prunekit[transformers]')."
    ) from exc

from ..allocation import NORMALIZERS, SCOPES, Sparsity, check_sparsity, compute_keep_masks
from ..scores import Criterion, as_criterion
from ..errors import InvalidParameterError, check_choice
from ..masks import MODES, apply_masks, make_permanent
from ..pruner import Pruner
from ..schedules import OneShot, Schedule
from ..structures import Structure, create_structure
from ..targets import Target
from ._common import LotteryTicket, flag_at, mask_stats, sync_keep_masks

__all__ = ["PrunekitTrainerCallback"]

logger = logging.getLogger(__name__)


class PrunekitTrainerCallback(TrainerCallback):
    """Prune a ``transformers.Trainer``'s model on a prunekit schedule.

    Args:
        schedule: a :class:`~prunekit.schedules.Schedule` in steps or epochs.
        sparsity: instead of a schedule: prune once, before the first step,
            to this level (prunekit meaning: fraction zero afterwards). For N:M
            structures neither is needed (they fix the level).
        criterion, structure, scope, overrides, normalize, min_keep, mode: as
            for :class:`prunekit.Pruner`.
        targets: explicit ``(module, name)`` pairs of the model (or
            :class:`~prunekit.Target` objects); otherwise chosen by ``types``,
            ``include``, ``exclude`` and ``params`` (see :func:`prunekit.select_targets`).
        use_lottery_ticket_hypothesis: bool, or ``t -> bool`` (t in the
            schedule's unit): after an event, reset the unpruned target weights to
            their values at the start of training (``resample_parameters``: to a
            fresh draw of ``reset_parameters()``).
        make_pruning_permanent: fold the masks into the weights in ``on_train_end``.
        log_sparsity: add ``"sparsity"`` (fraction of the targets' entries
            pruned) to every log of the Trainer (``state.log_history`` and the
            callbacks after this one).

    Under ``torch.distributed`` (multi-GPU ``Trainer``) rank 0's masks and
    lottery-ticket values are broadcast, so every rank holds the same ones.

    Attributes:
        pruner: the :class:`~prunekit.Pruner`, made in ``on_train_begin``.
        events: ``(t, sparsity)`` of every pruning done (t in the schedule's unit).
    """

    def __init__(
        self,
        schedule: Schedule | None = None,
        *,
        sparsity: Sparsity | None = None,
        criterion: str | Criterion | Callable[[Target], torch.Tensor] = "magnitude",
        structure: str | Structure = "element",
        scope: str = "local",
        targets: Sequence[Target] | Sequence[tuple[nn.Module, str]] | None = None,
        types: Any = None,
        include: str | Sequence[str] | None = None,
        exclude: str | Sequence[str] | None = None,
        params: str | Sequence[str] = "weight",
        overrides: Mapping[str, Sparsity] | None = None,
        normalize: str = "none",
        min_keep: int = 1,
        mode: str = "reparam",
        use_lottery_ticket_hypothesis: bool | Callable[[int], bool] = False,
        resample_parameters: bool = False,
        make_pruning_permanent: bool = True,
        log_sparsity: bool = True,
    ) -> None:
        self.criterion = as_criterion(criterion)
        self.structure = create_structure(structure)
        self.scope = check_choice("scope", scope, SCOPES)
        self.normalize = check_choice("normalize", normalize, NORMALIZERS)
        self.mode = check_choice("mode", mode, MODES)
        fixed = self.structure.fixed_sparsity
        if schedule is not None and sparsity is not None:
            raise InvalidParameterError(
                "sparsity", "None when a schedule is given", sparsity,
                "Fix: pass a schedule, or a sparsity for one pruning at the start of training.",
            )
        if schedule is None:
            if sparsity is None and fixed is None:
                raise InvalidParameterError(
                    "schedule", "a prunekit Schedule (or sparsity=)", None,
                    "Fix: e.g. prunekit.create_schedule('agp', final=0.8, start=0, end=500, frequency=50, unit='step').",
                )
            level = check_sparsity(sparsity) if sparsity is not None else fixed
            if isinstance(level, int):
                raise InvalidParameterError("sparsity", "a float in [0, 1]", sparsity, "Fix: e.g. sparsity=0.5.")
            schedule = OneShot(final=float(level), start=0, unit="step")
        elif not isinstance(schedule, Schedule):
            raise InvalidParameterError(
                "schedule", "a prunekit Schedule (prunekit.create_schedule(...))", schedule,
                "Fix: e.g. prunekit.schedules.Linear(final=0.8, start=0, end=100, frequency=10, unit='step').",
            )
        if fixed is not None and scope != "local":
            raise InvalidParameterError("scope", f"'local' for structure {self.structure.spec()!r}", scope)
        if not (isinstance(use_lottery_ticket_hypothesis, bool) or callable(use_lottery_ticket_hypothesis)):
            raise InvalidParameterError("use_lottery_ticket_hypothesis", "a bool or a function t -> bool",
                                        use_lottery_ticket_hypothesis)
        self.schedule = schedule
        self._selection: dict[str, Any] = {
            "targets": targets, "types": types, "include": include, "exclude": exclude, "params": params,
        }
        self._overrides = dict(overrides) if overrides else None
        for pattern, value in (self._overrides or {}).items():
            check_sparsity(value, f"overrides[{pattern!r}]")
        self._min_keep = min_keep
        self._lth = use_lottery_ticket_hypothesis
        self._resample = bool(resample_parameters)
        self._make_permanent = bool(make_pruning_permanent)
        self._log_sparsity = bool(log_sparsity)
        self._sync = True
        self.pruner: Pruner | None = None
        self.events: list[tuple[int, float]] = []
        self._lottery: LotteryTicket | None = None
        self._done: set[int] = set()

    # -- Trainer events ------------------------------------------------------------

    def on_train_begin(self, args: Any, state: Any, control: Any, model: nn.Module | None = None, **kwargs: Any):
        if model is None:
            raise InvalidParameterError("model", "the Trainer's model in on_train_begin", None)
        if self.pruner is None or self.pruner.model is not model:
            self.pruner = Pruner(
                model, criterion=self.criterion, structure=self.structure, scope=self.scope,
                overrides=self._overrides, normalize=self.normalize, min_keep=self._min_keep, mode=self.mode,
                **self._selection,
            )
            for t in self.pruner.targets:
                self.structure.check(t)
            self._done = set()
        if callable(self._lth) or self._lth:
            self._lottery = LotteryTicket(self.pruner.targets)
        logger.info("PrunekitTrainerCallback: %d targets, %d events (%s)", len(self.pruner.targets),
                    self.schedule.num_events, self.schedule.unit)

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any):
        if self.schedule.unit == "epoch":
            self._maybe_prune(int(round(state.epoch or 0)))

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any):
        if self.schedule.unit == "step":
            self._maybe_prune(int(state.global_step))

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any):
        if not self._log_sparsity or self.pruner is None or logs is None:
            return
        value = round(self.sparsity_now(), 6)
        logs["sparsity"] = value
        history = getattr(state, "log_history", None)
        if history:
            last = history[-1]
            # Trainer.log appends a copy of these logs just before on_log
            if last.get("step") == state.global_step and all(last.get(k) == v for k, v in logs.items()
                                                              if k != "sparsity"):
                last["sparsity"] = value

    def on_train_end(self, args: Any, state: Any, control: Any, model: nn.Module | None = None, **kwargs: Any):
        if self.pruner is None:
            return
        logger.info("training ended at sparsity %.4f of the targets", self.sparsity_now())
        if self._make_permanent:
            make_permanent(self.pruner.model)

    # -- pruning -------------------------------------------------------------------

    def sparsity_now(self) -> float:
        """Fraction of the targets' entries pruned now (0 before ``on_train_begin``)."""
        if self.pruner is None:
            return 0.0
        stats = mask_stats(self.pruner.targets)
        return sum(z for z, _ in stats) / max(1, sum(n for _, n in stats))

    def _maybe_prune(self, t: int) -> None:
        if self.pruner is None or t in self._done:
            return
        level = self.schedule.sparsity_at(t)
        if level is None:
            return
        self._done.add(t)
        self.prune(None if self.structure.fixed_sparsity is not None else level)
        self.events.append((t, self.sparsity_now()))
        logger.info("pruned to %.4f at %s %d", self.events[-1][1], self.schedule.unit, t)
        if flag_at(self._lth, t) and self._lottery is not None:
            self._lottery.reset(self.pruner.targets, resample=self._resample)

    def prune(self, sparsity: Sparsity | None) -> None:
        """Prune the targets to ``sparsity`` now (rank 0's masks under torch.distributed)."""
        assert self.pruner is not None
        targets = self.pruner.targets
        self.criterion.prepare(self.pruner.model, targets)
        keeps = compute_keep_masks(targets, self.criterion, self.structure, sparsity, scope=self.scope,
                                   overrides=self._overrides, normalize=self.normalize, min_keep=self._min_keep)
        if self._sync:
            keeps = sync_keep_masks(keeps)
        description = f"{self.criterion!r} {self.structure.spec()} {self.scope} sparsity={sparsity}"
        apply_masks(targets, keeps, mode=self.mode, description=description, copy=False)
        self.pruner.steps += 1

    def __repr__(self) -> str:
        return (f"PrunekitTrainerCallback({self.schedule!r}, criterion={self.criterion!r}, "
                f"structure={self.structure.spec()!r}, scope={self.scope!r}, mode={self.mode!r})")
