"""A Lightning callback: everything ``lightning.pytorch.callbacks.ModelPruning`` does, plus prunekit.

``PrunekitPruning`` takes ``ModelPruning``'s arguments with their meaning,
so it can replace it line for line, and adds prunekit's criteria, structures,
scopes, per-tensor overrides, the lean in-place mode and schedules::

    from prunekit.integrations.lightning import PrunekitPruning

    # as ModelPruning: 30% of what remains, globally, at the end of every epoch
    trainer = Trainer(callbacks=[PrunekitPruning("l1_unstructured", amount=0.3)])

    # prunekit: 2:4 on every Linear, once at the start of training
    PrunekitPruning(criterion="magnitude", structure="2:4", schedule=OneShot(unit="epoch"))

    # prunekit: AGP to 90% between steps 100 and 1000, every 100 steps
    PrunekitPruning(schedule=AGP(final=0.9, start=100, end=1000, frequency=100, unit="step"))

``amount`` vs ``sparsity``: Lightning's (and torch's) ``amount`` is a
fraction *of the weights still unpruned*, pruned at each pruning point
(0.5 twice leaves 75% pruned); prunekit's ``sparsity`` is the fraction of the
tensor that is zero *afterwards* (0.5 twice leaves 50%). Pass one of them.
``amount`` is translated exactly: torch prunes ``round(amount × remaining)``
more units, so prunekit is asked for ``pruned + round(amount × remaining)``,
i.e. new_total = old_total + amount·(1 − old_total).

Drop-in: Lightning's own test file for ``ModelPruning`` passes with
``PrunekitPruning`` substituted (``benchmarks/lightning_suite.py`` runs it), except
where prunekit is deliberately different (see the class docstring). Bad
arguments raise :class:`PruningMisconfiguration`, both prunekit's
:class:`~prunekit.InvalidParameterError` and Lightning's
``MisconfigurationException``.

Importing this module needs Lightning (``pip install lightning``);
``import prunekit`` does not.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

try:  # Lightning 2.x ("lightning"), else the standalone "pytorch_lightning"
    from lightning.pytorch.callbacks import Callback
    from lightning.pytorch.utilities.exceptions import MisconfigurationException
except ImportError:  # pragma: no cover - exercised only without lightning
    try:
        from pytorch_lightning.callbacks import Callback  # type: ignore[no-redef]
        from pytorch_lightning.utilities.exceptions import MisconfigurationException  # type: ignore[no-redef]
    except ImportError as exc:
        raise ImportError(
            "prunekit.integrations.lightning needs Lightning, which is not installed. "
            "Fix: pip install lightning (or pip install 'prunekit[lightning]')."
        ) from exc

from ..allocation import Sparsity, check_sparsity
from ..controller import (
    LotteryTicket,
    PruningController,
    PruningEvent,
    distributed_world,
    flag_at,
    mask_stats,
    refresh_reparam,
    sync_keep_masks,
)
from ..errors import InvalidParameterError
from ..masks import make_permanent, pruned_tensors
from ..schedules import Schedule
from ..scores import Criterion
from ..structures import Element, Structure
from ..targets import select_targets
from ._common import ControllerViews, build_controller, check_context, check_flag, check_overrides, check_settings
from ._lightning_args import (
    PARAMETER_NAMES,
    TORCH_PRUNING_FUNCTIONS,
    AmountLike,
    check_amount,
    check_how_much,
    check_parameter_names,
    check_verbose,
    resolve_method,
    resolve_scope,
)
from ._lightning_compat import original_layers, sanitize_parameters_to_prune, sparsity_lines

__all__ = ["PrunekitPruning", "PruningMisconfiguration", "TORCH_PRUNING_FUNCTIONS"]

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


class PruningMisconfiguration(InvalidParameterError, MisconfigurationException):
    """A bad argument of :class:`PrunekitPruning`: both prunekit's
    :class:`~prunekit.InvalidParameterError` (``param``, ``expected``, ``got``, ``fix``)
    and Lightning's ``MisconfigurationException``, so code written for either catches it."""


def _lightning_errors(method: F) -> F:
    """Re-raise prunekit's :class:`InvalidParameterError` as :class:`PruningMisconfiguration`."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except PruningMisconfiguration:
            raise
        except InvalidParameterError as exc:
            raise PruningMisconfiguration(exc.param, exc.expected, exc.got, exc.fix) from exc.__cause__

    return wrapper  # type: ignore[return-value]


class PrunekitPruning(ControllerViews, Callback):
    """Prune during ``Trainer.fit``: ``ModelPruning``'s arguments, and prunekit's.

    Lightning's arguments (same names, same meaning):

    Args:
        pruning_fn: ``"l1_unstructured"``, ``"random_unstructured"``,
            ``"ln_structured"`` (needs ``pruning_dim`` and ``pruning_norm``),
            ``"random_structured"`` (needs ``pruning_dim``), or those functions /
            ``BasePruningMethod`` classes of ``torch.nn.utils.prune`` (all four
            run through prunekit with torch's semantics); a prunekit criterion
            name (``"magnitude"``, ``"l2"``, ``"random"``, ...) or instance; any
            other ``BasePruningMethod`` subclass (as a
            :class:`~prunekit.scores.torch_methods.TorchMethod`: torch's masks,
            global as in Lightning or with ``scope="local"``; its ``__init__``
            gets ``amount`` only if it takes one, as Lightning filters by
            signature), or a function ``fn(module, name=, amount=)`` like torch's
            functional pruners (run by torch on each target).
            Default (None): ``criterion``, else magnitude.
        parameters_to_prune: ``(module, name)`` pairs. Default: the
            ``parameter_names`` of every Linear/Conv module (prunekit's
            :data:`~prunekit.DEFAULT_TYPES`, narrowed by ``types``, ``include``
            and ``exclude``). Lightning's own default takes every leaf module
            (norms, embeddings too); to get it, pass ``types="all"``.
        parameter_names: ``"weight"`` and/or ``"bias"`` (checked here, as in
            Lightning), or glob patterns (``"*_weight"``) for other names.
            Default ``["weight", "bias"]`` (as Lightning) for unstructured
            pruning, ``["weight"]`` for structures.
        use_global_unstructured: True: one global ranking (``scope="global"``);
            False: each tensor on its own. With Lightning's rules: True refuses
            structured pruning, False refuses a custom ``BasePruningMethod``
            (prunekit's ``scope`` allows both). Default: global for unstructured
            pruning, local for structures (Lightning's default is True and
            refuses structures).
        amount: as in Lightning/torch, the fraction (float in [0, 1]) *of the
            still unpruned* units to prune at each pruning point, or an int count
            of more units, or a function ``epoch -> amount``. Default 0.5 when
            neither ``amount``, ``sparsity`` nor ``schedule`` is given.
        apply_pruning: bool, or function ``epoch -> bool`` (whether to prune now).
        make_pruning_permanent: fold the masks into the weights at the end of
            training, and save permanent weights in checkpoints.
        use_lottery_ticket_hypothesis: bool or ``epoch -> bool``: after
            pruning, reset the unpruned weights to their values at the start of
            training (Frankle & Carbin 2019). True by default, as in Lightning.
        resample_parameters: with the lottery ticket, draw new values with the
            layers' ``reset_parameters()`` instead.
        pruning_dim: tensor dimension of ``ln_structured``/``random_structured``.
        pruning_norm: norm order of ``ln_structured``.
        verbose: 0 silent, 1 log the total sparsity after each pruning, 2 per
            tensor too (through ``logging``, on global rank 0).
        prune_on_train_epoch_end: prune in ``on_train_epoch_end`` (True) or
            ``on_validation_epoch_end`` (False).

    prunekit's arguments (keyword only):

    Args:
        sparsity: prunekit's level: the fraction of the targets zero
            *afterwards* (or an int count of units), or ``epoch -> sparsity``.
            Exclusive with ``amount`` and ``schedule``.
        criterion: a registered criterion (:func:`prunekit.list_scores` with ``unit_space="element"``), a
            :class:`~prunekit.Criterion` or a function ``target -> scores``.
        structure: ``"element"``, ``"2:4"`` (any N:M; needs no sparsity),
            ``"block:4x4"``, ``"kernel"``, ``"channel"``, ``"channel:<dim>"``.
        scope: ``"local"`` or ``"global"`` (overrides ``use_global_unstructured``).
        types, include, exclude: narrow the default selection
            (see :func:`prunekit.select_targets`).
        overrides: ``{name pattern: sparsity}`` (prunekit meaning; needs
            ``sparsity`` or ``schedule``).
        normalize: per-target normalisation of global rankings.
        min_keep: units of each tensor never pruned. Default: 0 with ``amount``
            (torch and Lightning may empty a tensor), 1 with ``sparsity`` or
            ``schedule`` (prunekit's guard against removing a layer).
        mode: ``"reparam"`` (torch's layout, as ``ModelPruning``) or ``"inplace"``.
        schedule: a :class:`~prunekit.schedules.Schedule`. ``unit="epoch"``:
            event ``t`` prunes in ``on_train_epoch_start`` of epoch ``t``
            (as :func:`prunekit.training.fit`); ``unit="step"``: in
            ``on_train_batch_start`` when ``trainer.global_step`` is ``t``.
            ``amount``, ``sparsity`` and ``prune_on_train_epoch_end`` are then unused.
        context: passed to the criterion at every pruning, for criteria that
            need data: ``{"data": [batch, ...], "loss_fn": ...}``.

    Distributed training: when a ``torch.distributed`` process group is
    initialised (DDP and the like), every rank computes the masks, then rank
    0's are broadcast and applied everywhere, so all ranks hold the same masks
    whatever the criterion (random too); lottery-ticket resets are broadcast
    from rank 0 as well.

    Lightning's names: every pruning point of Lightning's kind (no ``schedule``)
    calls :meth:`apply_pruning` then, when due, :meth:`apply_lottery_ticket_hypothesis`,
    so subclasses overriding them work as with ``ModelPruning``;
    :meth:`sanitize_parameters_to_prune` and :meth:`_is_pruning_method` are
    there; after ``setup`` ``_parameters_to_prune`` holds the pairs and
    ``_original_layers`` the saved lottery-ticket values in Lightning's layout.
    ``verbose`` logs Lightning's lines (``Applied `L1Unstructured`. Pruned: ...``;
    per tensor ``to `Linear(...).weight```, then prunekit's qualified name).

    Where prunekit deliberately differs from Lightning 2.6.6:

    * lottery ticket: Lightning's reset makes the weight share storage with
      its saved copy, so the copy trains along and later resets are no-ops;
      prunekit copies the saved values in, and every reset is exact;
    * distributed training: Lightning's random masks differ across ranks;
      prunekit broadcasts rank 0's masks (above).

    Every pruning goes through a :class:`~prunekit.controller.PruningController`
    made in ``setup``: with a schedule, Lightning's hooks drive it
    (``on_train_epoch_start`` -> ``on_epoch_begin``, ``on_train_batch_start`` ->
    ``on_step_begin``); without one, each pruning point is an event of it at the epoch.

    Attributes:
        controller: the :class:`~prunekit.controller.PruningController`, set in ``setup``.
        pruner: its :class:`~prunekit.Pruner` (its ``targets``).
        events: ``(epoch or step, sparsity after)`` of every pruning done.
    """

    PARAMETER_NAMES = PARAMETER_NAMES

    @_lightning_errors
    def __init__(
        self,
        pruning_fn: str | Callable[..., Any] | Criterion | None = None,
        parameters_to_prune: Sequence[tuple[nn.Module, str]] = (),
        parameter_names: Sequence[str] | None = None,
        use_global_unstructured: bool | None = None,
        amount: AmountLike | None = None,
        apply_pruning: bool | Callable[[int], bool] = True,
        make_pruning_permanent: bool = True,
        use_lottery_ticket_hypothesis: bool | Callable[[int], bool] = True,
        resample_parameters: bool = False,
        pruning_dim: int | None = None,
        pruning_norm: int | float | str | None = None,
        verbose: int = 0,
        prune_on_train_epoch_end: bool = True,
        *,
        sparsity: Sparsity | Callable[[int], Sparsity] | None = None,
        criterion: str | Criterion | Callable[..., torch.Tensor] | None = None,
        structure: str | Structure | None = None,
        scope: str | None = None,
        types: Any = None,
        include: str | Sequence[str] | None = None,
        exclude: str | Sequence[str] | None = None,
        overrides: Mapping[str, Sparsity] | None = None,
        normalize: str = "none",
        min_keep: int | None = None,
        mode: str = "reparam",
        schedule: Schedule | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if parameter_names is not None:
            parameter_names = check_parameter_names(parameter_names)
        method = resolve_method(pruning_fn, criterion, structure, pruning_dim, pruning_norm)
        self.criterion = method.criterion
        self.structure = method.structure
        self._custom_fn = method.custom
        self._method = method
        self.scope = resolve_scope(method, scope, use_global_unstructured)
        self._method_name = method.logged_name(self.scope)
        self._pruning_method_name = self._method_name  # Lightning's attribute
        self._use_global_unstructured = self.scope == "global"
        self.amount = check_how_much(method, amount, sparsity, schedule)
        self.sparsity = sparsity
        self.schedule = schedule
        if overrides is not None and self.amount is not None:
            raise InvalidParameterError(
                "overrides", "used with sparsity= or schedule= (overrides are prunekit sparsities)", dict(overrides),
                "Fix: pass sparsity= instead of amount=.",
            )
        self.normalize, self.mode = check_settings(normalize, mode)
        if self._custom_fn is not None and self.mode != "reparam":
            raise InvalidParameterError("mode", "'reparam' with a torch pruner", mode)
        self._verbose = check_verbose(verbose)
        self._apply_pruning = check_flag("apply_pruning", apply_pruning)
        self._use_lottery_ticket_hypothesis = check_flag("use_lottery_ticket_hypothesis",
                                                         use_lottery_ticket_hypothesis)
        if parameters_to_prune and any(v is not None for v in (types, include, exclude)):
            raise InvalidParameterError(
                "parameters_to_prune", "empty when types/include/exclude select the targets", "<both given>",
                "Fix: pass either explicit (module, name) pairs or a selection.",
            )
        self._given_parameters_to_prune = list(parameters_to_prune or ())
        self._parameters_to_prune: list[tuple[nn.Module, str]] = list(self._given_parameters_to_prune)
        if parameter_names is None:
            parameter_names = list(PARAMETER_NAMES) if isinstance(self.structure, Element) else ["weight"]
        self._parameter_names = list(parameter_names)
        self._selection = {"types": types, "include": include, "exclude": exclude}
        self._overrides = check_overrides(overrides)
        if min_keep is None:
            min_keep = 0 if self.amount is not None else 1
        self._min_keep = min_keep
        self._context = check_context(context)
        self._make_pruning_permanent = make_pruning_permanent
        self._resample_parameters = bool(resample_parameters)
        self._prune_on_train_epoch_end = prune_on_train_epoch_end
        self._sync = True  # broadcast rank 0's masks under torch.distributed (tests turn it off)
        self._ticket: LotteryTicket | None = None
        self.controller: PruningController | None = None
        self._model: nn.Module | None = None

    # -- Lightning-compatible hooks and methods ---------------------------------

    @staticmethod
    def _is_pruning_method(method: Any) -> bool:
        """Whether ``method`` is a ``torch.nn.utils.prune.BasePruningMethod`` subclass (as Lightning)."""
        return isinstance(method, type) and issubclass(method, torch_prune.BasePruningMethod)

    @staticmethod
    def sanitize_parameters_to_prune(
        pl_module: nn.Module,
        parameters_to_prune: Sequence[tuple[nn.Module, str]] = (),
        parameter_names: Sequence[str] = (),
    ) -> list[tuple[nn.Module, str]]:
        """Lightning's selection: without pairs, every ``nn.Parameter`` named in ``parameter_names``
        (default weight and bias) of every leaf module; with pairs, a check that each exists in
        ``pl_module`` (:class:`PruningMisconfiguration` otherwise)."""
        try:
            return sanitize_parameters_to_prune(pl_module, parameters_to_prune, parameter_names)
        except InvalidParameterError as exc:
            raise PruningMisconfiguration(exc.param, exc.expected, exc.got, exc.fix) from None

    def filter_parameters_to_prune(self, parameters_to_prune: Sequence[tuple[nn.Module, str]] = ()
                                   ) -> Sequence[tuple[nn.Module, str]]:
        """Override to control which ``(module, name)`` pairs are pruned (as in Lightning)."""
        return parameters_to_prune

    @_lightning_errors
    def setup(self, trainer: Any, pl_module: nn.Module, stage: str) -> None:
        if self.controller is not None and self._model is pl_module:
            return
        if self._given_parameters_to_prune:
            pairs = self.sanitize_parameters_to_prune(pl_module, self._given_parameters_to_prune,
                                                      self._parameter_names)
        else:
            pairs = [
                (t.module, t.param_name)
                for t in select_targets(pl_module, params=self._parameter_names, **self._selection)
            ]
        self._parameters_to_prune = list(self.filter_parameters_to_prune(pairs))
        self.controller = build_controller(
            pl_module, criterion=self.criterion, structure=self.structure, scope=self.scope,
            schedule=self.schedule, targets=self._parameters_to_prune,
            overrides=self._overrides, normalize=self.normalize, min_keep=self._min_keep, mode=self.mode,
            context=self._context, enabled=self._apply_pruning, sync=self._sync,
        )
        self._ticket = None
        self._model = pl_module

    def on_train_start(self, trainer: Any, pl_module: nn.Module) -> None:
        # after the strategy has wrapped the model (DDP has synchronised the weights)
        if self.controller is not None:
            self.controller.begin()
            lottery = self._use_lottery_ticket_hypothesis
            if self._ticket is None and (callable(lottery) or lottery):
                self._ticket = LotteryTicket(self.controller.pruner.targets)

    def on_train_epoch_start(self, trainer: Any, pl_module: nn.Module) -> None:
        if self.controller is not None and self.schedule is not None:
            self._logged(self.controller.on_epoch_begin, trainer.current_epoch)

    def on_train_batch_start(self, trainer: Any, pl_module: nn.Module, batch: Any, batch_idx: int) -> None:
        # a step already handled (gradient accumulation) is not pruned twice: the controller remembers it
        if self.controller is not None and self.schedule is not None:
            self._logged(self.controller.on_step_begin, trainer.global_step, trainer.current_epoch)

    def on_train_epoch_end(self, trainer: Any, pl_module: nn.Module) -> None:
        if self.schedule is None and self._prune_on_train_epoch_end:
            self._run_pruning(pl_module.current_epoch)

    def on_validation_epoch_end(self, trainer: Any, pl_module: nn.Module) -> None:
        if self.schedule is None and not self._prune_on_train_epoch_end and not trainer.sanity_checking:
            self._run_pruning(pl_module.current_epoch)

    def on_train_end(self, trainer: Any, pl_module: nn.Module) -> None:
        if self._make_pruning_permanent:
            self.make_pruning_permanent(pl_module)

    def on_save_checkpoint(self, trainer: Any, pl_module: nn.Module, checkpoint: dict[str, Any]) -> None:
        if self._make_pruning_permanent and "state_dict" in checkpoint:
            # fold the masks into a copy of the state dict; training goes on with its masks
            checkpoint["state_dict"] = self._permanent_state_dict(pl_module, checkpoint["state_dict"])

    def make_pruning_permanent(self, module: nn.Module) -> None:
        """Fold every mask of ``module`` into its weights; drop masks and hooks."""
        make_permanent(module)

    def apply_pruning(self, amount: int | float | None = None, *, sparsity: Sparsity | None = None) -> None:
        """Prune the targets now: ``amount`` (torch's meaning) or ``sparsity`` (prunekit's)."""
        controller = self._controller()
        if amount is not None and sparsity is not None:
            raise InvalidParameterError(
                "sparsity", "None when amount is given", sparsity, "Fix: pass amount (torch's) or sparsity (prunekit's).",
            )
        targets = controller.pruner.targets
        prev = mask_stats(targets) if self._verbose else None
        if self._custom_fn is not None:
            self._apply_custom(amount)
        elif amount is not None:
            # as Lightning, a custom BasePruningMethod receives amount only when its __init__ takes it
            relative = amount if getattr(self.criterion, "takes_amount", True) else None
            controller.apply(None, description=controller.pruner.describe(f"amount={amount}"),
                             allocate=lambda p: p.allocate(None, relative))  # type: ignore[attr-defined]
        else:
            controller.apply(sparsity)
        if prev is not None:
            how = f"amount={amount}" if amount is not None else f"sparsity={sparsity}"
            self._log_sparsity_stats(prev, mask_stats(targets), how)

    def apply_lottery_ticket_hypothesis(self) -> None:
        """Reset the target weights to their values at the start of training (pruned ones stay zero),
        or with ``resample_parameters`` to a fresh draw of each layer's ``reset_parameters()``."""
        if self.controller is not None and self._ticket is not None:
            self._ticket.reset(self.controller.pruner.targets, resample=self._resample_parameters)

    @property
    def _original_layers(self) -> dict[int, dict[str, Any]] | None:
        """The saved lottery-ticket values in ``ModelPruning._original_layers``' layout (a view)."""
        if self._ticket is None or self.controller is None:
            return None
        return original_layers(self._parameters_to_prune, self.controller.pruner.targets, self._ticket.initial)

    def sparsity_now(self) -> float:
        """Fraction of the targets' entries pruned now (from the masks)."""
        return 0.0 if self.controller is None else self.controller.sparsity()

    # -- internals -------------------------------------------------------------------

    def _controller(self) -> PruningController:
        if self.controller is None:
            raise InvalidParameterError(
                "trainer", "a fit that has run setup() before pruning", None,
                "Fix: let the Trainer call the callback, or call setup(trainer, model, 'fit') first.",
            )
        return self.controller

    def _reset_if_due(self, epoch: int) -> bool:
        """Lightning's step 4 after a pruning at ``epoch``, when ``use_lottery_ticket_hypothesis`` says so."""
        if self._ticket is None or not flag_at(self._use_lottery_ticket_hypothesis, epoch):
            return False
        self.apply_lottery_ticket_hypothesis()
        return True

    def _mark_reset(self) -> None:
        controller = self._controller()
        if controller.events:
            controller.events[-1] = dataclasses.replace(controller.events[-1], reset=True)

    def _logged(self, hook: Callable[..., PruningEvent | None], *args: int) -> None:
        """Run a controller hook; reset the ticket if due; with ``verbose``, log the sparsity before and after."""
        targets = self._controller().pruner.targets
        prev = mask_stats(targets) if self._verbose else None
        event = hook(*args)
        if event is None:
            return
        if prev is not None:
            self._log_sparsity_stats(prev, mask_stats(targets), f"sparsity={event.level}")
        if self._reset_if_due(args[-1]):
            self._mark_reset()

    def _run_pruning(self, epoch: int) -> None:
        """A pruning point without a schedule (end of epoch ``epoch``): ``amount`` or ``sparsity``."""
        if not flag_at(self._apply_pruning, epoch):
            return
        level: Sparsity | None
        if self.amount is not None:
            amount = self.amount(epoch) if callable(self.amount) else self.amount
            if not amount:  # as Lightning: 0 or None skips
                return
            self.apply_pruning(check_amount(amount))
            level, how = None, f"amount={amount}"
        else:
            sparsity = self.sparsity(epoch) if callable(self.sparsity) else self.sparsity
            if sparsity is None and self.structure.fixed_sparsity is None or sparsity == 0:
                return
            level = None if sparsity is None else check_sparsity(sparsity)
            self.apply_pruning(sparsity=level)
            how = f"sparsity={level}"
        reset = self._reset_if_due(epoch)
        self._controller().record(epoch, level, epoch=epoch, unit="epoch", description=how)
        if reset:
            self._mark_reset()

    def _apply_custom(self, amount: int | float | None) -> None:
        """A functional torch pruner prunes each target itself; rank 0's masks are broadcast."""
        controller = self._controller()
        targets = controller.pruner.targets
        assert self._custom_fn is not None
        for t in targets:
            self._custom_fn(t.module, name=t.param_name, amount=amount)
        if controller.sync and distributed_world()[1] > 1:
            keeps = [t.keep_mask() for t in targets]
            keeps = sync_keep_masks([k for k in keeps if k is not None])
            masked = [t for t in targets if t.keep_mask() is not None]
            with torch.no_grad():
                for t, keep in zip(masked, keeps):
                    buf = t.module._buffers[t.param_name + "_mask"]
                    buf.copy_(keep.to(buf.dtype))
                    refresh_reparam(t)

    def _log_sparsity_stats(self, prev: list[tuple[int, int]], curr: list[tuple[int, int]], how: str) -> None:
        if distributed_world()[0] != 0:
            return
        targets = self._controller().pruner.targets
        for line in sparsity_lines(self._method_name, targets, prev, curr, how, self._verbose == 2):
            logger.info("%s", line)

    @staticmethod
    def _permanent_state_dict(pl_module: nn.Module, state_dict: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(state_dict)
        for qualified, _module, _name, state in pruned_tensors(pl_module):
            mask = out.pop(qualified + "_mask", None)
            if mask is None:
                continue
            if state == "reparam" and qualified + "_orig" in out:
                orig = out.pop(qualified + "_orig")
                out[qualified] = orig * mask.to(orig.dtype)
            elif qualified in out:
                out[qualified] = out[qualified] * mask.to(out[qualified].dtype)
        return out

    def __repr__(self) -> str:
        how = (f"amount={self.amount!r}" if self.amount is not None else
               f"sparsity={self.sparsity!r}" if self.sparsity is not None else f"schedule={self.schedule!r}")
        return (f"PrunekitPruning({self._method_name}, {how}, structure={self.structure.spec()!r}, "
                f"scope={self.scope!r}, mode={self.mode!r})")
