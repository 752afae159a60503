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

from ..allocation import NORMALIZERS, SCOPES, Sparsity, check_sparsity, compute_keep_masks
from ..scores import Criterion, Magnitude, Random, as_criterion
from ..errors import InvalidParameterError, PrunekitError, check_choice
from ..masks import MODES, apply_masks, make_permanent, pruned_tensors
from ..pruner import Pruner
from ..schedules import Schedule
from ..structures import Channel, Element, Structure, create_structure
from ..targets import select_targets
from ._common import (
    LotteryTicket,
    amount_counts,
    check_amount,
    distributed_world,
    flag_at,
    mask_stats,
    refresh_reparam,
    sync_keep_masks,
)

__all__ = ["PrunekitPruning", "TORCH_PRUNING_FUNCTIONS"]

logger = logging.getLogger(__name__)

#: torch's pruners that ``pruning_fn`` accepts by name, function or class.
TORCH_PRUNING_FUNCTIONS = ("l1_unstructured", "random_unstructured", "ln_structured", "random_structured")

_TORCH_BY_OBJECT: dict[Any, str] = {
    torch_prune.l1_unstructured: "l1_unstructured",
    torch_prune.random_unstructured: "random_unstructured",
    torch_prune.ln_structured: "ln_structured",
    torch_prune.random_structured: "random_structured",
    torch_prune.L1Unstructured: "l1_unstructured",
    torch_prune.RandomUnstructured: "random_unstructured",
    torch_prune.LnStructured: "ln_structured",
    torch_prune.RandomStructured: "random_structured",
}

AmountLike = int | float | Callable[[int], int | float]


def _torch_name(pruning_fn: Any) -> str | None:
    if isinstance(pruning_fn, str):
        name = pruning_fn.lower()
        return name if name in TORCH_PRUNING_FUNCTIONS else None
    try:
        return _TORCH_BY_OBJECT.get(pruning_fn)
    except TypeError:  # unhashable
        return None


def _norm_p(pruning_norm: Any) -> float:
    if pruning_norm == "fro":
        return 2.0
    if isinstance(pruning_norm, bool) or not isinstance(pruning_norm, (int, float)) or not pruning_norm > 0:
        raise InvalidParameterError(
            "pruning_norm", "a positive norm order (1, 2, float('inf')) or 'fro'", pruning_norm,
            "Fix: pruning_norm=1 (L1) or 2 (L2) for ln_structured.",
        )
    return float(pruning_norm)


class PrunekitPruning(Callback):
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

    Distributed training: when a ``torch.distributed`` process group is
    initialised (DDP and the like), every rank computes the masks, then rank
    0's are broadcast and applied everywhere, so all ranks hold the same masks
    whatever the criterion (random too); lottery-ticket resets are broadcast
    from rank 0 as well.

    Attributes:
        pruner: the :class:`~prunekit.Pruner` (its ``targets``), set in ``setup``.
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
    ) -> None:
        super().__init__()
        self._custom_fn: Callable[..., Any] | None = None
        self._custom_is_method = False
        self._method_name = "prunekit"

        # -- what scores and which units: pruning_fn / criterion / structure --
        torch_name = _torch_name(pruning_fn)
        if pruning_fn is not None and (criterion is not None or structure is not None) and (
            torch_name is not None or not isinstance(pruning_fn, (str, Criterion))
        ):
            raise InvalidParameterError(
                "pruning_fn", "no criterion= or structure= next to a torch pruner (it fixes both)", pruning_fn,
                "Fix: pass either pruning_fn (Lightning style) or criterion=/structure= (prunekit style).",
            )
        if torch_name is not None:
            self._method_name = torch_name
            if torch_name.endswith("_structured"):
                if pruning_dim is None:
                    raise InvalidParameterError(
                        "pruning_dim", f"the tensor dimension to prune along, for {torch_name!r}", None,
                        "Fix: e.g. pruning_dim=0 (output channels).",
                    )
                structure_obj: Structure = Channel(pruning_dim)
                crit: Criterion = Random() if torch_name == "random_structured" else None  # type: ignore[assignment]
                if torch_name == "ln_structured":
                    if pruning_norm is None:
                        raise InvalidParameterError(
                            "pruning_norm", "the norm order for 'ln_structured'", None, "Fix: e.g. pruning_norm=2.",
                        )
                    crit = Magnitude(p=_norm_p(pruning_norm))
            else:
                structure_obj = Element()
                crit = Magnitude(p=1) if torch_name == "l1_unstructured" else Random()
        elif isinstance(pruning_fn, (str, Criterion)):
            if criterion is not None:
                raise InvalidParameterError(
                    "criterion", "None when pruning_fn already names a criterion", criterion,
                    "Fix: pass the criterion once, as pruning_fn or as criterion=.",
                )
            try:
                crit = as_criterion(pruning_fn)
            except PrunekitError as exc:
                raise InvalidParameterError(
                    "pruning_fn",
                    f"one of torch's pruners {list(TORCH_PRUNING_FUNCTIONS)} or a prunekit criterion name",
                    pruning_fn,
                    f"Fix: see prunekit.list_scores(unit_space='element') ({exc}).",
                ) from exc
            self._method_name = str(pruning_fn) if isinstance(pruning_fn, str) else repr(crit)
            structure_obj = create_structure(structure if structure is not None else "element")
        elif pruning_fn is not None:
            if not callable(pruning_fn):
                raise InvalidParameterError(
                    "pruning_fn",
                    "a torch pruner name, a prunekit criterion, a BasePruningMethod subclass or a function "
                    "fn(module, name=, amount=)",
                    pruning_fn,
                    "Fix: e.g. pruning_fn='l1_unstructured'.",
                )
            if isinstance(pruning_fn, torch_prune.BasePruningMethod):
                raise InvalidParameterError(
                    "pruning_fn", "a BasePruningMethod subclass, not an instance", pruning_fn,
                    f"Fix: pass {type(pruning_fn).__name__} itself.",
                )
            self._custom_fn = pruning_fn
            self._custom_is_method = isinstance(pruning_fn, type) and issubclass(
                pruning_fn, torch_prune.BasePruningMethod
            )
            self._method_name = getattr(pruning_fn, "__name__", repr(pruning_fn))
            crit = as_criterion("magnitude")  # unused; keeps Pruner's checks happy
            structure_obj = Element()
        else:
            crit = as_criterion(criterion if criterion is not None else "magnitude")
            structure_obj = create_structure(structure if structure is not None else "element")
            self._method_name = repr(crit) if structure_obj.spec() == "element" else f"{crit!r} {structure_obj.spec()}"
        self.criterion = crit
        self.structure = structure_obj

        # -- scope ------------------------------------------------------------
        if scope is not None:
            scope = check_choice("scope", scope, SCOPES)
            if use_global_unstructured is not None and bool(use_global_unstructured) != (scope == "global"):
                raise InvalidParameterError(
                    "use_global_unstructured", f"{scope == 'global'} or None with scope={scope!r}",
                    use_global_unstructured, "Fix: pass only one of scope and use_global_unstructured.",
                )
        elif use_global_unstructured is not None:
            scope = "global" if use_global_unstructured else "local"
        else:
            scope = "global" if isinstance(self.structure, Element) else "local"
        if scope == "global" and self.structure.fixed_sparsity is not None:
            raise InvalidParameterError(
                "scope", f"'local' for structure {self.structure.spec()!r} (it selects within each group)", scope,
                "Fix: leave scope and use_global_unstructured out.",
            )
        self.scope = scope
        if self._custom_fn is not None and not self._custom_is_method and scope == "global":
            raise InvalidParameterError(
                "use_global_unstructured", "False for a functional pruner fn(module, name=, amount=)", True,
                "Fix: pass use_global_unstructured=False, or a BasePruningMethod subclass for global pruning.",
            )

        # -- how much: amount / sparsity / schedule -------------------------
        given = [n for n, v in (("amount", amount), ("sparsity", sparsity), ("schedule", schedule)) if v is not None]
        if len(given) > 1:
            raise InvalidParameterError(
                given[1], f"not given together with {given[0]}", "<both given>",
                "Fix: amount is Lightning's fraction of what remains, sparsity prunekit's fraction zero afterwards, "
                "schedule a prunekit Schedule; pass exactly one.",
            )
        if not given and self.structure.fixed_sparsity is None:
            amount = 0.5  # Lightning's default
        if amount is not None:
            if self.structure.fixed_sparsity is not None:
                raise InvalidParameterError(
                    "amount", f"None with structure {self.structure.spec()!r} (it fixes the sparsity)", amount,
                    "Fix: leave amount out.",
                )
            if not callable(amount):
                check_amount(amount)
        if sparsity is not None:
            if not callable(sparsity):
                check_sparsity(sparsity)
            if self._custom_fn is not None:
                raise InvalidParameterError(
                    "sparsity", "None with a custom torch pruner (it takes amount)", sparsity,
                    "Fix: pass amount=, or use a prunekit criterion.",
                )
        if schedule is not None:
            if not isinstance(schedule, Schedule):
                raise InvalidParameterError(
                    "schedule", "a prunekit Schedule (prunekit.create_schedule('agp', final=0.9, ...))", schedule,
                )
            if self._custom_fn is not None:
                raise InvalidParameterError(
                    "schedule", "None with a custom torch pruner", "<Schedule>", "Fix: use a prunekit criterion.",
                )
        self.amount = amount
        self.sparsity = sparsity
        self.schedule = schedule

        # -- the rest -------------------------------------------------------
        if overrides is not None and amount is not None:
            raise InvalidParameterError(
                "overrides", "used with sparsity= or schedule= (overrides are prunekit sparsities)", dict(overrides),
                "Fix: pass sparsity= instead of amount=.",
            )
        self.mode = check_choice("mode", mode, MODES)
        if self._custom_fn is not None and self.mode != "reparam":
            raise InvalidParameterError("mode", "'reparam' with a torch pruner", mode)
        self.normalize = check_choice("normalize", normalize, NORMALIZERS)
        if verbose not in (0, 1, 2) or isinstance(verbose, bool):
            raise InvalidParameterError("verbose", "0, 1 or 2", verbose)
        for name, value in (("apply_pruning", apply_pruning), ("use_lottery_ticket_hypothesis",
                                                              use_lottery_ticket_hypothesis)):
            if not (isinstance(value, bool) or callable(value)):
                raise InvalidParameterError(name, "a bool or a function epoch -> bool", value)
        if parameters_to_prune and any(v is not None for v in (types, include, exclude)):
            raise InvalidParameterError(
                "parameters_to_prune", "empty when types/include/exclude select the targets", "<both given>",
                "Fix: pass either explicit (module, name) pairs or a selection.",
            )
        self._parameters_to_prune = list(parameters_to_prune or ())
        self._parameter_names = list(parameter_names) if parameter_names else ["weight"]
        self._selection = {"types": types, "include": include, "exclude": exclude}
        self._overrides = dict(overrides) if overrides else None
        self._min_keep = min_keep
        self._apply_pruning = apply_pruning
        self._make_pruning_permanent = make_pruning_permanent
        self._use_lottery_ticket_hypothesis = use_lottery_ticket_hypothesis
        self._resample_parameters = bool(resample_parameters)
        self._prune_on_train_epoch_end = prune_on_train_epoch_end
        self._verbose = verbose
        self._sync = True  # broadcast rank 0's masks under torch.distributed (tests turn it off)

        self.pruner: Pruner | None = None
        self.events: list[tuple[int, float]] = []
        self._model: nn.Module | None = None
        self._lottery: LotteryTicket | None = None
        self._last_step: int | None = None

    # -- Lightning-compatible hooks and methods ---------------------------------

    def filter_parameters_to_prune(self, parameters_to_prune: Sequence[tuple[nn.Module, str]] = ()
                                   ) -> Sequence[tuple[nn.Module, str]]:
        """Override to control which ``(module, name)`` pairs are pruned (as in Lightning)."""
        return parameters_to_prune

    def setup(self, trainer: Any, pl_module: nn.Module, stage: str) -> None:
        if self.pruner is not None and self._model is pl_module:
            return
        if self._parameters_to_prune:
            pairs = list(self._parameters_to_prune)
        else:
            pairs = [
                (t.module, t.param_name)
                for t in select_targets(pl_module, params=self._parameter_names, **self._selection)
            ]
        pairs = list(self.filter_parameters_to_prune(pairs))
        self.pruner = Pruner(
            pl_module,
            criterion=self.criterion,
            structure=self.structure,
            scope=self.scope,
            targets=pairs,
            overrides=self._overrides,
            normalize=self.normalize,
            min_keep=self._min_keep,
            mode=self.mode,
        )
        for t in self.pruner.targets:
            self.structure.check(t)
        self._model = pl_module
        logger.debug("PrunekitPruning: %d targets: %s", len(self.pruner.targets),
                     ", ".join(t.name for t in self.pruner.targets))

    def on_train_start(self, trainer: Any, pl_module: nn.Module) -> None:
        # after the strategy has wrapped the model (DDP has synchronised the weights)
        uses_lth = self._use_lottery_ticket_hypothesis
        if self.pruner is not None and (callable(uses_lth) or uses_lth):
            self._lottery = LotteryTicket(self.pruner.targets)

    def on_train_epoch_start(self, trainer: Any, pl_module: nn.Module) -> None:
        if self.schedule is not None and self.schedule.unit == "epoch":
            self._scheduled(trainer.current_epoch, trainer.current_epoch)

    def on_train_batch_start(self, trainer: Any, pl_module: nn.Module, batch: Any, batch_idx: int) -> None:
        if self.schedule is not None and self.schedule.unit == "step":
            step = trainer.global_step
            if step != self._last_step:  # once per optimizer step (gradient accumulation)
                self._last_step = step
                self._scheduled(step, trainer.current_epoch)

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
        if self.pruner is None:
            raise InvalidParameterError(
                "trainer", "a fit that has run setup() before pruning", None,
                "Fix: let the Trainer call the callback, or call setup(trainer, model, 'fit') first.",
            )
        if amount is not None and sparsity is not None:
            raise InvalidParameterError(
                "sparsity", "None when amount is given", sparsity, "Fix: pass amount (torch's) or sparsity (prunekit's).",
            )
        targets = self.pruner.targets
        prev = mask_stats(targets) if self._verbose else None
        if self._custom_fn is not None:
            self._apply_custom(amount)
        else:
            self.criterion.prepare(self.pruner.model, targets)
            if amount is not None:
                request = amount_counts(targets, self.structure, amount, self.scope)
                if isinstance(request, list):
                    keeps = []
                    for t, count in zip(targets, request):
                        keeps += compute_keep_masks([t], self.criterion, self.structure, count, scope="local",
                                                    min_keep=self._min_keep)
                else:
                    scope = self.scope if self.scope in ("lamp", "erk") else "global"
                    keeps = compute_keep_masks(targets, self.criterion, self.structure, request, scope=scope,
                                               normalize=self.normalize, min_keep=self._min_keep)
                what = f"amount={amount}"
            else:
                keeps = compute_keep_masks(targets, self.criterion, self.structure, sparsity, scope=self.scope,
                                           overrides=self._overrides, normalize=self.normalize,
                                           min_keep=self._min_keep)
                what = f"sparsity={sparsity}"
            if self._sync:
                keeps = sync_keep_masks(keeps)
            description = f"{self.criterion!r} {self.structure.spec()} {self.scope} {what}"
            apply_masks(targets, keeps, mode=self.mode, description=description, copy=False)
            self.pruner.steps += 1
        if prev is not None:
            how = f"amount={amount}" if amount is not None else f"sparsity={sparsity}"
            self._log_sparsity_stats(prev, mask_stats(targets), how)

    def apply_lottery_ticket_hypothesis(self) -> None:
        """Reset the unpruned target weights to their values at the start of training."""
        if self._lottery is None or self.pruner is None:
            return
        self._lottery.reset(self.pruner.targets, resample=self._resample_parameters)

    def sparsity_now(self) -> float:
        """Fraction of the targets' entries pruned now (from the masks)."""
        if self.pruner is None:
            return 0.0
        stats = mask_stats(self.pruner.targets)
        return sum(z for z, _ in stats) / max(1, sum(n for _, n in stats))

    # -- internals -------------------------------------------------------------------

    def _run_pruning(self, epoch: int) -> None:
        if not flag_at(self._apply_pruning, epoch):
            return
        if self.amount is not None:
            amount = self.amount(epoch) if callable(self.amount) else self.amount
            if not amount:  # as Lightning: 0 or None skips
                return
            self.apply_pruning(check_amount(amount))
        else:
            sparsity = self.sparsity(epoch) if callable(self.sparsity) else self.sparsity
            if sparsity is None and self.structure.fixed_sparsity is None or sparsity == 0:
                return
            self.apply_pruning(sparsity=None if sparsity is None else check_sparsity(sparsity))
        self.events.append((epoch, self.sparsity_now()))
        if flag_at(self._use_lottery_ticket_hypothesis, epoch):
            self.apply_lottery_ticket_hypothesis()

    def _scheduled(self, t: int, epoch: int) -> None:
        assert self.schedule is not None
        level = self.schedule.sparsity_at(t)
        if level is None or not flag_at(self._apply_pruning, epoch):
            return
        fixed = self.structure.fixed_sparsity
        self.apply_pruning(sparsity=None if fixed is not None else level)
        self.events.append((t, self.sparsity_now()))
        logger.info("pruned to %.4f at %s %d", level, self.schedule.unit, t)
        if flag_at(self._use_lottery_ticket_hypothesis, epoch):
            self.apply_lottery_ticket_hypothesis()

    def _apply_custom(self, amount: int | float | None) -> None:
        assert self.pruner is not None and self._custom_fn is not None
        pairs = [(t.module, t.param_name) for t in self.pruner.targets]
        if self._custom_is_method and self.scope == "global":
            torch_prune.global_unstructured(pairs, pruning_method=self._custom_fn, amount=amount)
        elif self._custom_is_method:
            for module, name in pairs:
                self._custom_fn.apply(module, name, amount=amount)  # type: ignore[attr-defined]
        else:
            for module, name in pairs:
                self._custom_fn(module, name=name, amount=amount)
        if self._sync and distributed_world()[1] > 1:
            keeps = [t.keep_mask() for t in self.pruner.targets]
            keeps = sync_keep_masks([k for k in keeps if k is not None])
            masked = [t for t in self.pruner.targets if t.keep_mask() is not None]
            with torch.no_grad():
                for t, keep in zip(masked, keeps):
                    buf = t.module._buffers[t.param_name + "_mask"]
                    buf.copy_(keep.to(buf.dtype))
                    refresh_reparam(t)

    def _log_sparsity_stats(self, prev: list[tuple[int, int]], curr: list[tuple[int, int]], how: str) -> None:
        if distributed_world()[0] != 0:
            return
        assert self.pruner is not None
        total = sum(n for _, n in curr)
        before = sum(z for z, _ in prev)
        after = sum(z for z, _ in curr)
        logger.info(
            "Applied `%s`. Pruned: %d/%d (%.2f%%) -> %d/%d (%.2f%%)",
            self._method_name, before, total, 100 * before / total, after, total, 100 * after / total,
        )
        if self._verbose == 2:
            for t, (z0, n0), (z1, _n1) in zip(self.pruner.targets, prev, curr):
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
