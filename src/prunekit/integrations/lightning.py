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

Importing this module needs Lightning (``pip install lightning``);
``import prunekit`` does not.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

try:  # Lightning 2.x ("lightning"), else the standalone "pytorch_lightning"
    from lightning.pytorch.callbacks import Callback
except ImportError:  # pragma: no cover - exercised only without lightning
    try:
        from pytorch_lightning.callbacks import Callback  # type: ignore[no-redef]
    except ImportError as exc:
        raise ImportError(
            "prunekit.integrations.lightning needs Lightning, which is not installed. "
            "Fix: pip install lightning (or pip install 'prunekit[lightning]')."
        ) from exc

from ..allocation import Sparsity, check_sparsity
from ..controller import (
    PruningController,
    PruningEvent,
    distributed_world,
    flag_at,
    mask_stats,
    refresh_reparam,
    sync_keep_masks,
)
from ..scores import Criterion
from ..errors import InvalidParameterError
from ..masks import make_permanent, pruned_tensors
from ..pruner import Pruner
from ..schedules import Schedule
from ..structures import Structure
from ..targets import select_targets
from ._common import ControllerViews, build_controller, check_context, check_flag, check_overrides, check_settings
from ._lightning_args import (
    TORCH_PRUNING_FUNCTIONS,
    AmountLike,
    amount_keeps,
    check_amount,
    check_how_much,
    resolve_method,
    resolve_scope,
)

__all__ = ["PrunekitPruning", "TORCH_PRUNING_FUNCTIONS"]

logger = logging.getLogger(__name__)


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
            other ``BasePruningMethod`` subclass (run by torch, global scope as in
            Lightning, or local), or a function ``fn(module, name=, amount=)``
            like torch's functional pruners (run by torch on each target).
            Default (None): ``criterion``, else magnitude.
        parameters_to_prune: ``(module, name)`` pairs. Default: the
            ``parameter_names`` of every Linear/Conv module (prunekit's
            :data:`~prunekit.DEFAULT_TYPES`, narrowed by ``types``, ``include``
            and ``exclude``). Lightning's own default also takes biases and the
            weights of every other leaf module (norms, embeddings); to get it,
            pass ``types="all", parameter_names=["weight", "bias"]``.
        parameter_names: parameter names (or globs) of the default selection;
            default ``["weight"]``.
        use_global_unstructured: True: one global ranking (``scope="global"``);
            False: each tensor on its own. Default: global for unstructured
            pruning, local for structures (Lightning's default is True).
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
        min_keep: units of each tensor never pruned (0 lets a tensor empty, as torch does).
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

    Every pruning goes through a :class:`~prunekit.controller.PruningController`
    made in ``setup``: with a schedule, Lightning's hooks drive it
    (``on_train_epoch_start`` -> ``on_epoch_begin``, ``on_train_batch_start`` ->
    ``on_step_begin``); without one, each pruning point is an event of it at the epoch.

    Attributes:
        controller: the :class:`~prunekit.controller.PruningController`, set in ``setup``.
        pruner: its :class:`~prunekit.Pruner` (its ``targets``).
        events: ``(epoch or step, sparsity after)`` of every pruning done.
    """

    PARAMETER_NAMES = ("weight", "bias")

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
        min_keep: int = 1,
        mode: str = "reparam",
        schedule: Schedule | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        method = resolve_method(pruning_fn, criterion, structure, pruning_dim, pruning_norm)
        self.criterion = method.criterion
        self.structure = method.structure
        self._method_name = method.name
        self._custom_fn = method.custom
        self._custom_is_method = method.custom_is_method
        self.scope = resolve_scope(method, scope, use_global_unstructured)
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
        if verbose not in (0, 1, 2) or isinstance(verbose, bool):
            raise InvalidParameterError("verbose", "0, 1 or 2", verbose)
        self._apply_pruning = check_flag("apply_pruning", apply_pruning)
        self._use_lottery_ticket_hypothesis = check_flag("use_lottery_ticket_hypothesis",
                                                         use_lottery_ticket_hypothesis)
        if parameters_to_prune and any(v is not None for v in (types, include, exclude)):
            raise InvalidParameterError(
                "parameters_to_prune", "empty when types/include/exclude select the targets", "<both given>",
                "Fix: pass either explicit (module, name) pairs or a selection.",
            )
        self._parameters_to_prune = list(parameters_to_prune or ())
        self._parameter_names = list(parameter_names) if parameter_names else ["weight"]
        self._selection = {"types": types, "include": include, "exclude": exclude}
        self._overrides = check_overrides(overrides)
        self._min_keep = min_keep
        self._context = check_context(context)
        self._make_pruning_permanent = make_pruning_permanent
        self._resample_parameters = bool(resample_parameters)
        self._prune_on_train_epoch_end = prune_on_train_epoch_end
        self._verbose = verbose
        self._sync = True  # broadcast rank 0's masks under torch.distributed (tests turn it off)
        self.controller: PruningController | None = None
        self._model: nn.Module | None = None

    # -- Lightning-compatible hooks and methods ---------------------------------

    def filter_parameters_to_prune(self, parameters_to_prune: Sequence[tuple[nn.Module, str]] = ()
                                   ) -> Sequence[tuple[nn.Module, str]]:
        """Override to control which ``(module, name)`` pairs are pruned (as in Lightning)."""
        return parameters_to_prune

    def setup(self, trainer: Any, pl_module: nn.Module, stage: str) -> None:
        if self.controller is not None and self._model is pl_module:
            return
        if self._parameters_to_prune:
            pairs = list(self._parameters_to_prune)
        else:
            pairs = [
                (t.module, t.param_name)
                for t in select_targets(pl_module, params=self._parameter_names, **self._selection)
            ]
        self.controller = build_controller(
            pl_module, criterion=self.criterion, structure=self.structure, scope=self.scope,
            schedule=self.schedule, targets=list(self.filter_parameters_to_prune(pairs)),
            overrides=self._overrides, normalize=self.normalize, min_keep=self._min_keep, mode=self.mode,
            context=self._context, lottery=self._use_lottery_ticket_hypothesis,
            resample=self._resample_parameters,
            enabled=self._apply_pruning, sync=self._sync,
        )
        self._model = pl_module

    def on_train_start(self, trainer: Any, pl_module: nn.Module) -> None:
        # after the strategy has wrapped the model (DDP has synchronised the weights)
        if self.controller is not None:
            self.controller.begin()

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
            pruner: Pruner = controller.pruner  # type: ignore[assignment]
            controller.apply(None, description=pruner.describe(f"amount={amount}"),
                             allocate=lambda p: amount_keeps(pruner, amount, self.scope, self.normalize,
                                                             self._min_keep))
        else:
            controller.apply(sparsity)
        if prev is not None:
            how = f"amount={amount}" if amount is not None else f"sparsity={sparsity}"
            self._log_sparsity_stats(prev, mask_stats(targets), how)

    def apply_lottery_ticket_hypothesis(self) -> None:
        """Reset the unpruned target weights to their values at the start of training."""
        if self.controller is not None:
            self.controller.reset_ticket()

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

    def _logged(self, hook: Callable[..., PruningEvent | None], *args: int) -> None:
        """Run a controller hook; with ``verbose``, log the sparsity before and after its event."""
        targets = self._controller().pruner.targets
        prev = mask_stats(targets) if self._verbose else None
        event = hook(*args)
        if event is not None and prev is not None:
            self._log_sparsity_stats(prev, mask_stats(targets), f"sparsity={event.level}")

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
        self._controller().record(epoch, level, epoch=epoch, unit="epoch", description=how)

    def _apply_custom(self, amount: int | float | None) -> None:
        """A custom torch pruner prunes by itself (torch's allocation); rank 0's masks are broadcast."""
        controller = self._controller()
        targets = controller.pruner.targets
        assert self._custom_fn is not None
        pairs = [(t.module, t.param_name) for t in targets]
        if self._custom_is_method and self.scope == "global":
            torch_prune.global_unstructured(pairs, pruning_method=self._custom_fn, amount=amount)
        elif self._custom_is_method:
            for module, name in pairs:
                self._custom_fn.apply(module, name, amount=amount)  # type: ignore[attr-defined]
        else:
            for module, name in pairs:
                self._custom_fn(module, name=name, amount=amount)
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
        total = sum(n for _, n in curr)
        before = sum(z for z, _ in prev)
        after = sum(z for z, _ in curr)
        logger.info(
            "Applied `%s`. Pruned: %d/%d (%.2f%%) -> %d/%d (%.2f%%)",
            self._method_name, before, total, 100 * before / total, after, total, 100 * after / total,
        )
        if self._verbose == 2:
            for t, (z0, n0), (z1, _n1) in zip(targets, prev, curr):
                logger.info(
                    "Applied `%s` to `%s` with %s. Pruned: %d (%.2f%%) -> %d (%.2f%%)",
                    self._method_name, t.name, how,
                    z0, 100 * z0 / n0, z1, 100 * z1 / n0,
                )

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
