"""One call for structural pruning: groups -> criterion -> allocation -> removal.

    result = prunekit.structural_prune(model, torch.randn(1, 3, 32, 32), macs_target=0.5, criterion="l2")
    result.macs_ratio, result.params_ratio   # about 0.5 and what that cost in parameters

Each of ``steps`` steps finds the dependency groups again
(:func:`prunekit.surgery.find_groups`), scores their channels with the group
criterion (a ``group`` score, :mod:`prunekit.scores.groups`), decides how many each keeps
(:mod:`prunekit.surgery.allocate`) and removes the rest
(:func:`prunekit.surgery.prune_groups`). Step ``i`` of ``k`` reaches
``sparsity · i / k`` of the original channels, or MACs of
``1 - (1 - macs_target) · i / k`` of the original; ``finetune(model, i)`` runs
between steps.

A MACs target is met by bisection on the channel ratio
(:func:`prunekit.surgery.macs_search.ratio_for_macs`): the MACs of each
candidate follow from one :func:`prunekit.measure.count_macs` pass and the
channels each group keeps, without pruning copies; the smallest ratio whose
MACs are at most the target is used (to one channel per group).

``allocation="latency"`` spends the MACs (or latency) budget where the
machine saves time: a greedy latency-saliency allocation
(:func:`prunekit.surgery.allocate.latency_keep_counts`, after HALP, Shen et
al. 2022) on the layer latency model of :mod:`prunekit.surgery.latency`,
measured on this machine's CPU at ``latency_table``'s batch and threads (a model on
another device is told so in a warning: pass ``LatencyTable(timer=...)`` to time there); with
``macs_target`` it stops at the MACs target (counted on the Conv2d/Linear
layers, the rest of the network's MACs held fixed), with ``latency_target`` at
that fraction of the modelled latency.
"""

from __future__ import annotations

import logging
import numbers
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import InvalidParameterError
from ..params import STRUCTURAL_PARAMS
from ..progress import ProgressArg, ProgressEvent, check_progress, nested, progress_reporter
from ..validation import checked_keywords, validate
from ..measure.macs import count_macs
from ..allocation import ALLOCATIONS, allocate_channels as allocate, check_sparsity
from ..allocation import keep_counts, latency_keep_counts, select_channels
from ..coupling.groups import find_groups, find_groups_traced
from ..deprecation import renamed_argument
from ..scores.groups import GroupCriterion
from ..scores.units import group_score_factory
from ..measure.layer_latency import LatencyTable, layer_sites, predict_latency
from .group_checks import approximate_hint, check_found_groups
from .macs_search import MacsModel, count_dense_macs as _macs, macs_from_trace, ratio_for_macs, total_macs
from .remove import prune_groups
from .slicing import SurgeryRecord

__all__ = ["ALLOCATIONS", "StructuralPruneResult", "structural_prune"]

logger = logging.getLogger(__name__)


@dataclass
class StructuralPruneResult:
    """What :func:`structural_prune` did: sizes before/after, per-group channels, the records."""

    criterion: str
    scope: str
    params_before: int | None
    params_after: int | None
    macs_before: int | None
    macs_after: int | None
    channels_before: dict[str, int]
    channels_after: dict[str, int]
    records: list[SurgeryRecord] = field(default_factory=list)
    seconds: float = 0.0
    latency_model_ms: tuple[float, float] | None = None  # allocation="latency": modelled (before, after)

    @property
    def params_ratio(self) -> float | None:
        """Parameters after / before (None when not measured)."""
        if self.params_before is None or self.params_after is None:
            return None
        return self.params_after / self.params_before if self.params_before else 1.0

    @property
    def macs_ratio(self) -> float | None:
        """MACs after / before (None when not measured)."""
        if self.macs_before is None or self.macs_after is None:
            return None
        return self.macs_after / self.macs_before if self.macs_before else 1.0

    @property
    def groups_pruned(self) -> list[str]:
        return [n for n, c in self.channels_after.items() if c < self.channels_before.get(n, c)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "criterion": self.criterion, "scope": self.scope,
            "params_before": self.params_before, "params_after": self.params_after, "params_ratio": self.params_ratio,
            "macs_before": self.macs_before, "macs_after": self.macs_after, "macs_ratio": self.macs_ratio,
            "channels_before": dict(self.channels_before), "channels_after": dict(self.channels_after),
            "steps": len(self.records), "seconds": self.seconds,
            "latency_model_ms": list(self.latency_model_ms) if self.latency_model_ms else None,
        }

    def __str__(self) -> str:
        head = f"structural_prune({self.criterion}, {self.scope}): {len(self.groups_pruned)} groups pruned"
        if self.params_ratio is None or self.macs_ratio is None:
            return head + " (not measured)"
        return (f"{head}, params {self.params_before:,} -> {self.params_after:,} ({self.params_ratio:.3f}x), "
                f"MACs {self.macs_before:,} -> {self.macs_after:,} ({self.macs_ratio:.3f}x)")


def _params(model: nn.Module) -> int:
    """Parameters of ``model``, each counted once (``count_parameters(model).params``)."""
    return sum(p.numel() for p in model.parameters())


def _check_latency_options(allocation: str, sparsity: Any, macs_target: Any, latency_target: Any,
                           latency_table: Any) -> LatencyTable | None:
    """The latency table to allocate with (None for ``allocation="ranking"``), after checking the
    options that go with each allocation."""
    if allocation == "ranking":
        for name, value in (("latency_target", latency_target), ("latency_table", latency_table)):
            if value is not None:
                raise InvalidParameterError(name, "None with allocation='ranking'", value,
                                            f"Fix: allocation='latency' to use {name}.")
        return None
    if sparsity is not None:
        raise InvalidParameterError("sparsity", "None with allocation='latency' (it allocates to a target)", sparsity,
                                    "Fix: macs_target=0.5 or latency_target=0.5 instead.")
    if (macs_target is None) == (latency_target is None):
        raise InvalidParameterError(
            "macs_target", "exactly one of macs_target= and latency_target= with allocation='latency'",
            f"<macs_target={macs_target}, latency_target={latency_target}>",
            "Fix: e.g. macs_target=0.5 (half the MACs) or latency_target=0.5 (half the modelled latency).")
    if latency_target is not None and (isinstance(latency_target, bool) or not isinstance(latency_target, numbers.Real)
                                       or not 0.0 < float(latency_target) <= 1.0):
        raise InvalidParameterError("latency_target", "a float in (0, 1] (modelled latency after / before)",
                                    latency_target, "Fix: e.g. latency_target=0.5.")
    if latency_table is not None and not isinstance(latency_table, LatencyTable):
        raise InvalidParameterError("latency_table", "None or a prunekit.surgery.latency.LatencyTable",
                                    f"<{type(latency_table).__name__}>")
    if latency_table is None:
        latency_table = LatencyTable()
        logger.info("allocation='latency': timing layers at batch 1 with %d threads", latency_table.threads)
    return latency_table


def _step_figures(keep: Mapping[str, torch.Tensor], current: Mapping[str, int], base: Mapping[str, int],
                  macs: int | None) -> dict[str, float]:
    """The figures of a step's progress event."""
    figures: dict[str, float] = {"groups_pruned": len(keep),
                                 "channels_kept": sum(current.values()) / max(1, sum(base[n] for n in current))}
    if macs is not None:
        figures["macs"] = macs
    return figures


@checked_keywords
def structural_prune(
    model: nn.Module,
    example_inputs: Any,
    *,
    sparsity: float | None = None,
    macs_target: float | None = None,
    criterion: str | GroupCriterion = "magnitude",
    scope: str = "local",
    normalize: str | None = None,
    max_layer_ratio: float | None = None,
    round_to: int | None = None,
    steps: int = 1,
    data: Iterable[Any] | None = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    exclude: str | Iterable[str] = (),
    extra_groups: Sequence[Sequence[Sequence[Any]]] = (),
    finetune: Callable[[nn.Module, int], None] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    criterion_options: Mapping[str, Any] | None = None,
    measure: bool = True,
    allocation: str = "ranking",
    latency_target: float | None = None,
    latency_table: LatencyTable | None = None,
    ratio: float | None = None,
    batches: Iterable[Any] | None = None,
    approximate: bool = False,
    progress: ProgressArg = None,
) -> StructuralPruneResult:
    """Physically remove channels from ``model`` (in place) and return what changed.

    Args:
        model: the network; ``example_inputs`` a tensor or tuple for one forward pass (tracing, MACs).
        sparsity: fraction of each group's channels removed (local), or of all channels (global).
        macs_target: instead of ``sparsity``: MACs after / before to reach (e.g. 0.5), by bisection.
        criterion: a ``group`` score of :data:`prunekit.scores.SCORES` (``magnitude`` = L1, alias
            ``l1``; ``l2``, ``slimming``, ``taylor``, ``hrank``, ``thinet``, ``random``) or a
            :class:`~prunekit.scores.groups.GroupCriterion`.
        scope, normalize, max_layer_ratio, round_to: see :mod:`prunekit.surgery.allocate`;
            ``normalize=None`` means ``"mean"`` for ``allocation="ranking"`` and ``"sum"`` for
            ``allocation="latency"`` (each group's scores divided by their sum and counted once per
            layer the group sets, so that a move's cost is the fraction of its group's importance it
            removes, times the layers it thins; then pairwise exchanges, see the module).
        steps: prune in this many increments, scoring again each time.
        data: ``(inputs, targets)`` batches for ``taylor``, ``hrank`` and ``thinet``;
            ``loss_fn(logits, targets)`` for ``taylor`` (cross-entropy by default).
        exclude, extra_groups: passed to :func:`prunekit.surgery.find_groups`.
        finetune: ``finetune(model, step)`` called after each step but the last.
        optimizer: its state is carried over to the smaller parameters.
        criterion_options: extra keyword arguments of the criterion (e.g. ``{"roles": ("out",)}``).
        measure: count parameters and MACs before and after (``False`` skips the two forward
            passes of the count when only ``sparsity`` is given; the counts are then None).
        allocation: ``"ranking"`` (``scope``'s local or global ranking) or ``"latency"``: the
            greedy latency-saliency allocation (module docstring), which needs ``macs_target`` or
            ``latency_target`` and a criterion whose scores compare across groups; ``scope`` is
            then not used, ``normalize``, ``max_layer_ratio`` and ``round_to`` are.
        latency_target: with ``allocation="latency"``, instead of ``macs_target``: modelled
            latency after / before to reach, in (0, 1].
        latency_table: the :class:`~prunekit.surgery.latency.LatencyTable` to use (its batch,
            threads and cache file); default ``LatencyTable()``: batch 1, the current threads.
        ratio, batches: deprecated names of ``sparsity`` and ``data`` (giving both is an error).
        approximate: also prune channels that a normalisation over channels (LayerNorm, RMSNorm,
            statistics along channels, as in ConvNeXt and MobileViT blocks) keeps, slicing its weights
            with them, as Torch-Pruning does: the kept channels' values change, so fine-tune afterwards.
            Off by default (removal is exact); when nothing can be pruned exactly, the error names it.
        progress: ``True`` for a progress bar on stderr, or a callable receiving a
            :class:`~prunekit.progress.ProgressEvent` before the first and after each step
            (stage ``"search"``, ``done`` steps of ``total`` = ``steps``, ``figures``
            ``groups_pruned`` and ``channels_kept`` (a fraction), and ``macs`` where known),
            and, with ``macs_target``, after each bisection of the channel ratio (stage
            ``"macs-search"``, parent ``"search"``, ``figures`` ``ratio``). Default: logged at
            DEBUG only.

    Raises:
        InvalidParameterError: for bad arguments, before anything is changed; when the model has
            no channel group to prune (nothing would change).
    """
    old = {k: v for k, v in (("ratio", ratio), ("batches", batches)) if v is not None}
    sparsity = renamed_argument(old, "ratio", "sparsity", "structural_prune", new_value=sparsity)
    data = renamed_argument(old, "batches", "data", "structural_prune", new_value=data)
    declared = validate(STRUCTURAL_PARAMS, {
        "sparsity": sparsity, "macs_target": macs_target, "latency_target": latency_target, "criterion": criterion,
        "scope": scope, "max_layer_ratio": max_layer_ratio, "round_to": round_to, "allocation": allocation,
        "steps": steps, "exclude": exclude, "normalize": normalize, "approximate": approximate})
    allocation, steps = declared["allocation"], declared["steps"]
    if normalize is None:
        normalize = "sum" if allocation == "latency" else "mean"
    table = _check_latency_options(allocation, sparsity, macs_target, latency_target, latency_table)
    off_cpu = sorted({str(p.device) for p in model.parameters() if p.device.type != "cpu"})
    if table is not None and table.timer is None and off_cpu:
        logger.warning("structural_prune: allocation='latency' times single layers on the CPU (LatencyTable), "
                       "not on %s where the model is; pass latency_table=LatencyTable(timer=...) to time there",
                       ", ".join(off_cpu))
    if allocation == "ranking" and (sparsity is None) == (macs_target is None):
        raise InvalidParameterError(
            "sparsity", "exactly one of sparsity= and macs_target=", f"<sparsity={sparsity}, macs_target={macs_target}>",
            "Fix: e.g. sparsity=0.3 (remove 30% of the channels) or macs_target=0.5 (keep half the MACs).",
        )
    if sparsity is not None:
        sparsity = check_sparsity(sparsity, "sparsity", allow_count=False, allow_full=False)
    if not isinstance(measure, bool):
        raise InvalidParameterError("measure", "True or False", measure)
    check_progress(progress)
    measure = measure or macs_target is not None  # a MACs target needs the counts anyway
    if finetune is not None and not callable(finetune):
        raise InvalidParameterError("finetune", "None or a callable finetune(model, step)", finetune)
    make = group_score_factory(criterion, data, loss_fn, criterion_options or {})
    if scope == "global" and allocation == "ranking" and not make().comparable:
        raise InvalidParameterError(
            "scope", f"'local' for criterion {make().name!r} (its scores are per-group ranks)", scope,
            "Fix: scope='local', or a criterion such as 'l2' or 'taylor'.",
        )
    if allocation == "latency" and not make().comparable:
        raise InvalidParameterError(
            "allocation", f"'ranking' for criterion {make().name!r} (its scores are per-group ranks)", allocation,
            "Fix: a criterion whose scores compare across groups, such as 'l2' or 'taylor'.",
        )
    # one dry allocation on the unchanged model validates scope/normalize/caps/round_to
    t0 = time.perf_counter()
    groups, traced = find_groups_traced(model, example_inputs, exclude=exclude, extra_groups=extra_groups,
                                        approximate=approximate)
    check_found_groups(model, example_inputs, groups, exclude=exclude, extra_groups=extra_groups, approximate=approximate)
    allocate(groups, {g.name: torch.zeros(g.size) for g in groups}, 0.0, scope=scope, normalize=normalize,
             max_layer_ratio=max_layer_ratio, round_to=round_to)
    params_before = _params(model) if measure else None
    # the MACs per layer, read from the trace's shapes where they tell them all, else counted
    report = (macs_from_trace(model, traced) or count_macs(model, example_inputs, norms=False)) if measure else None
    macs_before = total_macs(report) if report is not None else None
    macs_after: int | None = None
    base_sizes = {g.name: g.size for g in groups}
    records: list[SurgeryRecord] = []
    crit = make()
    current: dict[str, int] = dict(base_sizes)
    modelled: tuple[float, float] | None = None
    with progress_reporter(progress) as tell:
        tell(ProgressEvent("search", 0, steps, {}, "step 1"))
        for i in range(1, steps + 1):
            if i > 1:
                groups = find_groups(model, example_inputs, exclude=exclude, extra_groups=extra_groups,
                                     approximate=approximate)
                crit = make()
            for g in groups:
                base_sizes.setdefault(g.name, g.size)
            scores = crit(model, groups)
            if measure and (i == 1 or macs_target is not None):
                macs_model = MacsModel(model, groups, report if i == 1 else count_macs(model, example_inputs, norms=False))
            else:
                macs_model = None

            def alloc(r: float) -> dict[str, torch.Tensor]:
                return allocate(groups, scores, r, scope=scope, normalize=normalize, max_layer_ratio=max_layer_ratio,
                                round_to=round_to, base_sizes=base_sizes)

            if table is not None:
                options = dict(normalize=normalize, max_layer_ratio=max_layer_ratio, round_to=round_to,
                               base_sizes=base_sizes)
                sites = layer_sites(model, example_inputs, groups)
                if macs_target is not None:
                    offset = (macs_model.total if macs_model is not None else _macs(model, example_inputs)) \
                        - sum(s.macs({}) for s in sites)

                    def goals(j: int) -> dict[str, Any]:
                        return {"macs_goal": int((macs_before or 0) * (1 - (1 - float(macs_target)) * j / steps)) - offset}
                else:
                    if i == 1:
                        latency_dense = predict_latency(sites, {}, table)

                    def goals(j: int) -> dict[str, Any]:
                        return {"latency_goal_ms": latency_dense * (1 - (1 - float(latency_target)) * j / steps)}
                if i == 1 and steps > 1:  # the final target must be reachable before anything changes
                    latency_keep_counts(groups, scores, sites, table, **goals(steps), **options)
                decided = latency_keep_counts(groups, scores, sites, table, **goals(i), **options,
                                              progress=nested(tell, "search"))
                modelled = (modelled[0] if modelled else decided.latency_before_ms, decided.latency_after_ms)
                keep = select_channels(groups, scores, decided.counts)
            elif sparsity is not None:
                keep = alloc(sparsity * i / steps)
            else:
                goal = int((macs_before or 0) * (1 - (1 - float(macs_target)) * i / steps))

                def counts(r: float) -> dict[str, int]:
                    return keep_counts(groups, scores, r, scope=scope, normalize=normalize,
                                       max_layer_ratio=max_layer_ratio, round_to=round_to, base_sizes=base_sizes)

                try:
                    keep = alloc(ratio_for_macs(model, groups, goal, example_inputs, alloc, macs_model=macs_model,
                                                counts=counts, progress=nested(tell, "search")))
                except InvalidParameterError as error:
                    hint = approximate_hint(model, example_inputs, groups, exclude=exclude, extra_groups=extra_groups,
                                            approximate=approximate)
                    if hint is None:
                        raise
                    raise InvalidParameterError(error.param, error.expected, error.got, f"{error.fix} Or: {hint}.") from None
            keep = {g.name: keep[g.name] for g in groups if keep[g.name].numel() < g.size}
            # MACs after this step follow from the kept channels when every counted MAC scales with them
            macs_after = macs_model.after(keep) if macs_model is not None and macs_model.exact else None
            crit.after_selection(model, groups, keep)
            records.append(prune_groups(model, keep, groups, optimizer=optimizer))
            for g in groups:
                current[g.name] = int(keep[g.name].numel()) if g.name in keep else g.size
            logger.info("structural_prune step %d/%d: %d groups pruned", i, steps, len(keep))
            tell(ProgressEvent("search", i, steps, _step_figures(keep, current, base_sizes, macs_after), f"step {i}"))
            if finetune is not None and i < steps:
                finetune(model, i)
    result = StructuralPruneResult(
        criterion=getattr(crit, "name", type(crit).__name__), scope="latency" if table is not None else scope,
        params_before=params_before, params_after=_params(model) if measure else None,
        macs_before=macs_before, macs_after=(macs_after if macs_after is not None else _macs(model, example_inputs))
        if measure else None,
        channels_before={n: base_sizes[n] for n in current}, channels_after=current, records=records,
        seconds=time.perf_counter() - t0, latency_model_ms=modelled,
    )
    if table is not None:
        table.save()
    logger.info("%s", result)
    return result
