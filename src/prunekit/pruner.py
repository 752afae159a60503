"""The object that ties targets, criterion, structure, allocation and masks together."""

from __future__ import annotations

import logging
import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .allocation.relative import absolute_counts, absolute_levels, check_level
from .allocation import NORMALIZERS, SCOPES, Sparsity, check_sparsity, compute_keep_masks
from .scores import Criterion, as_criterion, context_with_data
from .errors import InvalidParameterError, check_choice
from .masks import apply_masks, create_realisation, link_consumers
from .masks.apply import check_shared_tensors, duplicate_targets
from .masks import make_permanent as _make_permanent
from .measure.sparsity import SparsityReport, sparsity_report
from .params import PRUNE_PARAMS
from .structures import Structure, create_structure
from .targets import Target, select_targets
from .validation import checked_keywords, validate

__all__ = ["Pruner", "prune"]

logger = logging.getLogger(__name__)


class Pruner:
    """Prunes a fixed set of targets, one step at a time.

    Args:
        model: the network to prune (modified in place).
        criterion: a registered name (``"magnitude"``/``"l1"``, ``"l2"``,
            ``"lnorm:3"``, ``"random"``; see :func:`prunekit.list_scores` with ``unit_space="element"``), a
            :class:`~prunekit.Criterion` or a function ``target -> scores``.
        structure: ``"element"``, ``"2:4"`` (any N:M), ``"block:4x4"``,
            ``"kernel"``, ``"channel"`` (output dim) or ``"channel:<dim>"``, or a
            :class:`~prunekit.structures.Structure`.
        scope: ``"local"`` (each tensor to the sparsity), ``"global"`` (one
            ranking over all targets), ``"lamp"`` (one ranking of LAMP scores,
            Lee et al. 2021) or ``"erk"`` (per-tensor densities by the
            Erdős–Rényi-Kernel rule of RigL, Evci et al. 2020, then local
            selection); see :mod:`prunekit.allocation`.
        targets: explicit :class:`~prunekit.Target` list, or ``(module, name)``
            pairs as for ``torch.nn.utils.prune.global_unstructured``; otherwise
            chosen by ``types``, ``include``, ``exclude`` and ``params``
            (see :func:`prunekit.select_targets`).
        overrides: ``{name pattern: sparsity}`` pruned locally at their own level.
        normalize: per-target normalisation of unit scores before a global
            ranking: ``"none"``, ``"max"``, ``"sum"``, ``"mean"`` or ``"l2"``.
        min_keep: units of every tensor never pruned (0 allows emptying one).
        mode: the realisation of the masks: ``"reparam"`` (torch-compatible,
            default), ``"inplace"`` (lean zeros, re-masked at every optimizer
            step), ``"permanent"`` (plain zeros, nothing to remove) or any
            name registered with :func:`prunekit.register_realisation`
            (see :func:`prunekit.list_realisations`).
    """

    @checked_keywords
    def __init__(
        self,
        model: nn.Module,
        *,
        criterion: str | Criterion | Callable[[Target], torch.Tensor] = "magnitude",
        structure: str | Structure = "element",
        scope: str = "local",
        targets: Sequence[Target] | Sequence[tuple[nn.Module, str]] | None = None,
        types: Any = None,
        include: str | Iterable[str] | None = None,
        exclude: str | Iterable[str] | None = None,
        params: str | Iterable[str] = "weight",
        overrides: Mapping[str, Sparsity] | None = None,
        normalize: str = "none",
        min_keep: int = 1,
        mode: str = "reparam",
    ) -> None:
        if not isinstance(model, nn.Module):
            raise InvalidParameterError("model", "a torch.nn.Module", type(model).__name__)
        validate(PRUNE_PARAMS, {"criterion": criterion, "structure": structure, "scope": scope, "normalize": normalize,
                                "min_keep": min_keep, "mode": mode, "include": include, "exclude": exclude})
        self.model = model
        self.criterion = as_criterion(criterion)
        self.structure = create_structure(structure)
        self.scope = check_choice("scope", scope, SCOPES)
        self.normalize = check_choice("normalize", normalize, NORMALIZERS)
        self.mode = create_realisation(mode).name
        if isinstance(min_keep, bool) or not isinstance(min_keep, numbers.Integral) or min_keep < 0:
            raise InvalidParameterError("min_keep", "a non-negative int", min_keep, "Fix: 1 (default) or 0.")
        self.min_keep = int(min_keep)
        if overrides is not None and not isinstance(overrides, Mapping):
            raise InvalidParameterError("overrides", "a mapping {name pattern: sparsity}", overrides)
        self.overrides = dict(overrides or {})
        for pattern, value in self.overrides.items():
            check_sparsity(value, f"overrides[{pattern!r}]")
        if targets is not None:
            self.targets = _resolve_targets(model, targets)
        else:
            self.targets = select_targets(model, types=types, include=include, exclude=exclude, params=params)
        self.targets = _unique(self.targets)
        check_shared_tensors(model, self.targets, self.mode)
        self.steps = 0

    def step(self, sparsity: Sparsity | None = None, amount: float | int | None = None,
             **context: Any) -> list[torch.Tensor]:
        """Prune the targets to ``sparsity`` (fraction pruned afterwards, or a count), or by torch's ``amount``.

        ``amount`` is ``torch.nn.utils.prune``'s relative level: the fraction (or an int count) of the
        units still unpruned that this step prunes (entries, or channels/kernels/blocks of a
        structure, as ``ln_structured``; see :func:`prunekit.allocation.relative.absolute_levels`
        for the global scopes); give ``sparsity`` or ``amount``, not both.
        The three phases in order: :meth:`prepare` (scores), :meth:`allocate`
        (keep masks) and :meth:`realise` (masks on the model). ``context`` is
        passed to the criterion's ``prepare``: ``data=`` (batches or a loader),
        ``loss_fn=``, ... for criteria that need them. Returns the new keep
        masks. Nothing is changed if any check fails.
        """
        check_level(sparsity, amount)
        self.prepare(**context)
        keeps = self.allocate(sparsity, amount)
        self.realise(keeps, self.describe(sparsity if amount is None else f"amount={amount}"))
        return keeps

    def prepare(self, **context: Any) -> None:
        """Score phase: let the criterion read what it needs (``data=``, ``loss_fn=``, ...).

        Old names of ``data`` (``batches``, ``batch``, ``loader``, ``calibration``) are renamed with a
        warning, so a user's own criterion also receives ``data``."""
        self.criterion.prepare(self.model, self.targets, **context_with_data(context, "Pruner.prepare"))

    def allocate(self, sparsity: Sparsity | None, amount: float | int | None = None) -> list[torch.Tensor]:
        """Allocation phase: the new keep masks for ``sparsity`` (or torch's relative ``amount``);
        the model is not touched. A criterion that decides its masks itself (a torch pruning method,
        :class:`~prunekit.scores.torch_methods.TorchMethod`) gives them here."""
        check_level(sparsity, amount)
        if getattr(self.criterion, "decides_mask", False):
            return self._method_masks(sparsity, amount)
        if amount is not None:
            self._check_relative("amount")
            levels = absolute_levels(self.targets, amount, self.scope, self.structure)
            if self.scope == "local":
                return [self._keep_masks([t], level)[0] for t, level in zip(self.targets, levels)]
            return self._keep_masks(self.targets, levels[0])
        return self._keep_masks(self.targets, sparsity)

    def _keep_masks(self, targets: Sequence[Target], sparsity: Sparsity | None) -> list[torch.Tensor]:
        return compute_keep_masks(
            targets,
            self.criterion,
            self.structure,
            sparsity,
            scope=self.scope,
            overrides=self.overrides,
            normalize=self.normalize,
            min_keep=self.min_keep,
        )

    def _check_relative(self, param: str) -> None:
        """torch's relative ``amount`` counts the units still unpruned (entries, channels, kernels,
        blocks); a torch method used as criterion decides entries itself."""
        if param == "criterion" and self.structure.spec() != "element":
            raise InvalidParameterError(param, "structure='element' with a torch pruning method (it decides "
                                        "the mask of entries itself)", self.structure.spec(),
                                        "Fix: leave structure out (a structured torch method prunes slices itself).")
        if self.structure.fixed_sparsity is not None:
            raise InvalidParameterError(param, f"no level with structure {self.structure.spec()!r} (it fixes the "
                                        "sparsity itself)", "<amount given>", "Fix: leave amount out.")
        allowed = ("local", "global") if param == "criterion" else ("local", "global", "lamp", "erk")
        if self.scope not in allowed:
            raise InvalidParameterError("scope", f"one of {allowed} with {param}=", self.scope,
                                        "Fix: scope='global' (as torch's global_unstructured) or 'local'.")
        if self.overrides:
            raise InvalidParameterError("overrides", f"none with {param}=", self.overrides,
                                        "Fix: prune the overridden tensors in a second call.")

    def _method_masks(self, sparsity: Sparsity | None, amount: float | int | None) -> list[torch.Tensor]:
        self._check_relative("criterion")
        method = self.criterion
        if method.takes_amount and sparsity is not None:  # an absolute level, as counts of entries
            counts = absolute_counts(self.targets, 0, self.scope)  # entries pruned now
            wanted = absolute_counts(self.targets, 1.0, self.scope)  # all entries
            amount_list = []
            for now, total in zip(counts, wanted):
                level = sparsity if isinstance(sparsity, numbers.Integral) else round(float(sparsity) * total)
                if level < now:
                    raise InvalidParameterError(
                        "sparsity", f"at least the sparsity pruned already ({now} of {total} entries)", sparsity,
                        "Fix: a higher sparsity, or amount= (relative to what remains).")
                amount_list.append(int(level - now))
            return method.keep_masks(self.targets, self.scope,
                                     amount_list if self.scope == "local" else amount_list[0])
        return method.keep_masks(self.targets, self.scope, amount if amount is not None else sparsity)

    def realise(self, keeps: Sequence[torch.Tensor], description: str = "") -> None:
        """Realisation phase: apply ``keeps`` (one bool mask per target) to the model with the
        realisation ``mode`` (see :mod:`prunekit.masks`), all or nothing."""
        check_shared_tensors(self.model, self.targets, self.mode)
        apply_masks(self.targets, keeps, mode=self.mode, description=description, copy=False)
        link_consumers(self.model)
        self.steps += 1
        logger.info("pruned %d tensors: %s", len(self.targets), description)

    def describe(self, sparsity: Sparsity | str | None) -> str:
        """One line naming the criterion, structure, scope and the level asked for."""
        level = sparsity if isinstance(sparsity, str) else f"sparsity={sparsity}"
        return f"{self.criterion!r} {self.structure.spec()} {self.scope} {level}"

    def report(self) -> SparsityReport:
        """Sparsity of the targets and of the whole model."""
        report = sparsity_report(self.model)
        names = {t.name for t in self.targets}
        report.rows = [r for r in report.rows if r.name in names]
        return report

    def make_permanent(self) -> nn.Module:
        return _make_permanent(self.model)

    def __repr__(self) -> str:
        return (
            f"Pruner({len(self.targets)} targets, criterion={self.criterion!r}, structure={self.structure!r}, "
            f"scope={self.scope!r}, mode={self.mode!r})"
        )


def _unique(targets: list[Target]) -> list[Target]:
    """``targets`` with each tensor once (the first name kept); a warning names the dropped ones."""
    pairs = duplicate_targets(targets)
    if not pairs:
        return targets
    dropped = {id(later) for later, _first in pairs}
    logger.warning("targets name %d tensors twice; each is pruned once: dropped %s", len(pairs),
                   ", ".join(f"{later.name} (= {first.name})" for later, first in pairs))
    return [t for t in targets if id(t) not in dropped]


def _resolve_targets(model: nn.Module, targets: Sequence[Any]) -> list[Target]:
    names = {id(m): n for n, m in model.named_modules()}
    out: list[Target] = []
    for item in targets:
        if isinstance(item, Target):
            out.append(item)
            continue
        if (
            isinstance(item, tuple)
            and len(item) == 2
            and isinstance(item[0], nn.Module)
            and isinstance(item[1], str)
        ):
            module, pname = item
            if id(module) not in names:
                raise InvalidParameterError(
                    "targets", "modules that belong to the model", type(module).__name__,
                    "Fix: pass (module, name) pairs taken from this model.",
                )
            if pname not in module._parameters and pname + "_orig" not in module._parameters:
                raise InvalidParameterError(
                    "targets",
                    f"a parameter name of {type(module).__name__} ({', '.join(module._parameters)})",
                    pname,
                )
            module_name = names[id(module)]
            qualified = f"{module_name}.{pname}" if module_name else pname
            out.append(Target(qualified, module_name, module, pname))
            continue
        raise InvalidParameterError(
            "targets", "Target objects or (module, parameter name) pairs", item,
            "Fix: e.g. targets=[(model.fc1, 'weight')].",
        )
    if not out:
        raise InvalidParameterError("targets", "at least one target", [], "Fix: pass some (module, name) pairs.")
    return out


@checked_keywords
def prune(
    model: nn.Module,
    sparsity: Sparsity | None = None,
    *,
    amount: float | int | None = None,
    criterion: str | Criterion | Callable[[Target], torch.Tensor] = "magnitude",
    structure: str | Structure = "element",
    scope: str = "local",
    mode: str = "reparam",
    context: Mapping[str, Any] | None = None,
    targets: Sequence[Target] | Sequence[tuple[nn.Module, str]] | None = None,
    types: Any = None,
    include: str | Iterable[str] | None = None,
    exclude: str | Iterable[str] | None = None,
    params: str | Iterable[str] = "weight",
    overrides: Mapping[str, Sparsity] | None = None,
    normalize: str = "none",
    min_keep: int = 1,
) -> nn.Module:
    """Prune ``model`` in one call and return it.

    ``sparsity`` is the fraction of each target (``scope="local"``) or of all
    targets together (``scope="global"``, ``"lamp"`` or ``"erk"``) that is
    zero afterwards, or an int count of units (not for ``"erk"``). ``"lamp"``
    ranks LAMP scores over all targets (Lee et al. 2021); ``"erk"`` gives each
    target the Erdős–Rényi-Kernel density (RigL, Evci et al. 2020) and prunes
    it locally. Criteria that need more than the model get it through
    ``context``: ``{"data": loader}`` (batches), ``{"loss_fn": ...}``,
    ``{"initial": theta0}`` (initial weights), passed to :meth:`Pruner.step`. Unlike
    ``torch.nn.utils.prune``'s ``amount`` it is not
    relative to what remains: ``prune(m, 0.5)`` then ``prune(m, 0.75)`` leaves
    75% pruned, not 87.5%. ``amount`` is torch's relative level instead (the fraction, or an int
    count, of the units still unpruned that this call prunes: entries, or the channels/kernels/blocks
    of ``structure`` as torch's ``ln_structured``; local, global, lamp or erk scope): ``prune(m, amount=0.5)`` twice leaves 75% pruned. Give ``sparsity`` or ``amount``, not both. ``mode`` names the realisation of the masks
    (``"reparam"``, ``"inplace"``, ``"permanent"`` or a registered one; see
    :func:`prunekit.list_realisations`). ``targets``, ``types``, ``include``,
    ``exclude``, ``params``, ``overrides``, ``normalize`` and ``min_keep`` are those of
    :class:`Pruner`.

    Example::

        prunekit.prune(model, 0.8, criterion="magnitude", scope="global")
        prunekit.prune(model, 0.5, criterion="l2", structure="channel", include="features.*")
        prunekit.prune(model, structure="2:4", types=[nn.Linear])
        prunekit.prune(model, 0.95, scope="lamp")
        prunekit.prune(model, 0.5, mode="permanent")  # plain zeros, no mask kept
        prunekit.prune(model, 0.9, criterion="obd", scope="erk", context={"data": loader})
    """
    if context is not None and not isinstance(context, Mapping):
        raise InvalidParameterError("context", "a mapping such as {'data': loader}", context,
                                    "Fix: prune(model, 0.9, criterion='obd', context={'data': loader}).")
    Pruner(model, criterion=criterion, structure=structure, scope=scope, mode=mode, targets=targets, types=types,
           include=include, exclude=exclude, params=params, overrides=overrides, normalize=normalize,
           min_keep=min_keep).step(
        sparsity, amount, **dict(context or {})
    )
    return model
