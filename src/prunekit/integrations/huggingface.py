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

from ..allocation import SCOPES, Sparsity, check_sparsity
from ..controller import PruningController
from ..scores import Criterion, as_criterion
from ..errors import InvalidParameterError, check_choice
from ..masks import make_permanent
from ..schedules import OneShot, Schedule
from ..structures import Structure, create_structure
from ..targets import Target
from ._common import (
    ControllerViews,
    build_controller,
    check_context,
    check_flag,
    check_overrides,
    check_schedule,
    check_settings,
)

__all__ = ["PrunekitTrainerCallback"]

logger = logging.getLogger(__name__)


class PrunekitTrainerCallback(ControllerViews, TrainerCallback):
    """Prune a ``transformers.Trainer``'s model on a prunekit schedule.

    Args:
        schedule: a :class:`~prunekit.schedules.Schedule` in steps or epochs.
        sparsity: instead of a schedule: prune once, before the first step,
            to this level (prunekit meaning: fraction zero afterwards). For N:M
            structures neither is needed (they fix the level).
        criterion, structure, scope, overrides, normalize, min_keep, mode: as
            for :class:`prunekit.Pruner`.
        context: passed to the criterion at every event, for criteria that
            need data: ``{"data": [batch, ...], "loss_fn": ...}``.
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

    The Trainer's hooks drive a :class:`~prunekit.controller.PruningController`
    (made in ``on_train_begin``): ``on_epoch_begin`` -> ``on_epoch_begin(epoch)``,
    ``on_step_begin`` -> ``on_step_begin(state.global_step)``. Under
    ``torch.distributed`` (a multi-process ``Trainer`` started by ``torchrun``
    or ``accelerate launch``, on GPUs or on CPU processes with gloo) every rank
    computes its masks, then rank 0's masks and lottery-ticket values are
    broadcast, so every rank holds the same ones whatever the criterion (random
    ones too), also with ``ddp_broadcast_buffers=False``.

    Attributes:
        controller: the :class:`~prunekit.controller.PruningController`, made in ``on_train_begin``.
        pruner: its :class:`~prunekit.Pruner`.
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
        context: Mapping[str, Any] | None = None,
        use_lottery_ticket_hypothesis: bool | Callable[[int], bool] = False,
        resample_parameters: bool = False,
        make_pruning_permanent: bool = True,
        log_sparsity: bool = True,
    ) -> None:
        self.criterion = as_criterion(criterion)
        self.structure = create_structure(structure)
        self.scope = check_choice("scope", scope, SCOPES)
        self.normalize, self.mode = check_settings(normalize, mode)
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
        else:
            schedule = check_schedule(schedule)
        if fixed is not None and scope != "local":
            raise InvalidParameterError("scope", f"'local' for structure {self.structure.spec()!r}", scope)
        self.schedule = schedule
        self._selection: dict[str, Any] = {"types": types, "include": include, "exclude": exclude, "params": params}
        self._targets = targets
        self._overrides = check_overrides(overrides)
        self._min_keep = min_keep
        self._context = check_context(context)
        self._lth = check_flag("use_lottery_ticket_hypothesis", use_lottery_ticket_hypothesis, "t")
        self._resample = bool(resample_parameters)
        self._make_permanent = bool(make_pruning_permanent)
        self._log_sparsity = bool(log_sparsity)
        self._sync = True
        self.controller: PruningController | None = None

    # -- Trainer events ------------------------------------------------------------

    def on_train_begin(self, args: Any, state: Any, control: Any, model: nn.Module | None = None, **kwargs: Any):
        if model is None:
            raise InvalidParameterError("model", "the Trainer's model in on_train_begin", None)
        if self.controller is None or self.controller.pruner.model is not model:
            self.controller = build_controller(
                model, criterion=self.criterion, structure=self.structure, scope=self.scope,
                schedule=self.schedule, targets=self._targets, selection=self._selection, overrides=self._overrides,
                normalize=self.normalize, min_keep=self._min_keep, mode=self.mode, context=self._context,
                lottery=self._lth,
                resample=self._resample, sync=self._sync,
            )
        self.controller.begin()
        logger.info("PrunekitTrainerCallback: %d targets, %d events (%s)", len(self.controller.pruner.targets),
                    self.schedule.num_events, self.schedule.unit)

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any):
        if self.controller is not None:
            self.controller.on_epoch_begin(int(round(state.epoch or 0)))

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any):
        if self.controller is not None:
            self.controller.on_step_begin(int(state.global_step))

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any):
        if not self._log_sparsity or self.controller is None or logs is None:
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
        if self.controller is None:
            return
        logger.info("training ended at sparsity %.4f of the targets", self.sparsity_now())
        if self._make_permanent:
            make_permanent(self.controller.pruner.model)

    # -- pruning -------------------------------------------------------------------

    def sparsity_now(self) -> float:
        """Fraction of the targets' entries pruned now (0 before ``on_train_begin``)."""
        return 0.0 if self.controller is None else self.controller.sparsity()

    def prune(self, sparsity: Sparsity | None) -> None:
        """Prune the targets to ``sparsity`` now, outside the schedule (rank 0's masks under torch.distributed:
        a collective call, made on every rank)."""
        if self.controller is None:
            raise InvalidParameterError(
                "model", "a Trainer that has called on_train_begin before pruning", None,
                "Fix: let the Trainer call the callback, or call on_train_begin(args, state, control, model=model).",
            )
        self.controller.apply(sparsity)

    def __repr__(self) -> str:
        return (f"PrunekitTrainerCallback({self.schedule!r}, criterion={self.criterion!r}, "
                f"structure={self.structure.spec()!r}, scope={self.scope!r}, mode={self.mode!r})")
