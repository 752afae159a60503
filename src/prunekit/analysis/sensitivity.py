"""Sensitivity analysis: how much each layer alone tolerates pruning (as in Distiller).

:func:`sensitivity_analysis` prunes one target at a time to every sparsity of
a ladder (``0.0, 0.1, …, 0.9`` by default), evaluates the model after each
step with a function ``evaluate(model) -> float`` and restores the target
bit-exactly before moving on. The result holds one curve per target,
``[(sparsity, metric), …]``, and the dense ``baseline``.

``evaluate`` must return a number where **higher is better** (accuracy, BLEU,
…). For a loss or a perplexity either return its negation
(``lambda m: -evaluate_perplexity(m, loader).perplexity``) or pass
``higher_is_better=False``; the drop of a point is then ``metric - baseline``.

:meth:`SensitivityResult.allocate` turns the curves into per-layer sparsities
that reach a global target sparsity while keeping every layer's own metric
drop under one common threshold (Distiller's threshold on the sensitivity
curves; :func:`prunekit.allocation.sensitivity_sparsities`). The returned ``{layer: sparsity}`` plugs into
``prunekit.prune(model, 0.0, overrides=allocation)``.

Each point measures a layer pruned *alone*: the drops of several layers pruned
together usually add up to more than either, so treat an allocation as a
starting point for pruning followed by fine-tuning, not as a guarantee.
"""

from __future__ import annotations

import copy as copy_module
import inspect
import logging
import math
import numbers
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..allocation import compute_keep_masks, sensitivity_sparsities
from ..scores import Criterion, as_criterion, context_with_data
from ..deprecation import warn_once
from ..errors import InvalidParameterError
from ..progress import ProgressArg, ProgressCallback, ProgressEvent, check_progress, progress_reporter
from ..measure._results import dump_json, table_lines
from ..measure.plots import plot_sensitivity_curves
from ..pruner import _resolve_targets
from ..structures import Structure, create_structure
from ..targets import Target, find_reparam_hook, select_targets

__all__ = [
    "DEFAULT_SPARSITIES",
    "SensitivityResult",
    "sensitivity_analysis",
    "plot_sensitivity",
]

logger = logging.getLogger(__name__)

#: The default ladder: 0.0, 0.1, …, 0.9.
DEFAULT_SPARSITIES: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(10))

#: The deprecated callback shape: ``progress(done, total, layer, sparsity, metric)``.
Progress = Callable[[int, int, str, float, float], Any]


def _takes_five(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` is the old five-argument callback: it accepts five positional arguments.

    A callable taking one event (``def f(event)``, ``list.append``) is the new form; one that
    also accepts five (``lambda *a: ...``, ``def f(done, total, layer, sparsity, metric)``) is
    taken for the old one, the only way such a callback could have been written before.
    """
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # no signature to read (some builtins): the new form
        return False
    try:
        signature.bind(0, 0, "", 0.0, 0.0)
    except TypeError:
        return False
    return True


def _adapt(progress: ProgressArg) -> ProgressArg:
    """``progress`` itself, or for the old five-argument form an adapter (deprecated, warns once)."""
    if progress is None or isinstance(progress, bool) or not _takes_five(progress):
        return progress
    warn_once("sensitivity_analysis(progress=f) with f(done, total, layer, sparsity, metric)",
              "f(event) receiving a prunekit.progress.ProgressEvent (event.done, event.total, event.detail = "
              "the layer, event.figures['sparsity'], event.figures['metric'])", stacklevel=4)
    old = progress

    def adapter(event: ProgressEvent) -> None:
        old(event.done, event.total, event.detail, event.figures["sparsity"], event.figures["metric"])
    return adapter


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_ladder(sparsities: Any) -> tuple[float, ...]:
    expected = "a non-empty sequence of distinct floats in [0, 1] (fractions of each tensor pruned)"
    if isinstance(sparsities, (str, bytes)) or not isinstance(sparsities, Iterable):
        raise InvalidParameterError("sparsities", expected, sparsities, "Fix: e.g. sparsities=(0.0, 0.25, 0.5, 0.75).")
    values = list(sparsities)
    if not values:
        raise InvalidParameterError("sparsities", expected, values, "Fix: e.g. sparsities=(0.0, 0.25, 0.5, 0.75).")
    for value in values:
        if not _is_real(value) or isinstance(value, numbers.Integral) and value not in (0, 1):
            raise InvalidParameterError(
                "sparsities", expected, value, "Fix: pass fractions such as 0.5 (counts of units are not supported)."
            )
        if not 0.0 <= float(value) <= 1.0:
            raise InvalidParameterError("sparsities", expected, value, "Fix: keep every value within [0, 1].")
    ladder = sorted({float(v) for v in values})
    if len(ladder) != len(values):
        raise InvalidParameterError("sparsities", expected, values, "Fix: remove the repeated values.")
    return tuple(ladder)


def _resolve(model: nn.Module, targets: Any, types: Any, include: Any, exclude: Any, params: Any) -> list[Target]:
    if targets is None:
        return select_targets(model, types=types, include=include, exclude=exclude, params=params)
    return _resolve_targets(model, targets)


def _on_copy(original: Sequence[Target], work: nn.Module) -> list[Target]:
    modules = dict(work.named_modules())
    return [Target(t.name, t.module_name, modules[t.module_name], t.param_name) for t in original]


def _as_metric(value: Any, higher_is_better: bool, where: str) -> float:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if not _is_real(value):
        raise InvalidParameterError(
            "evaluate",
            "a function model -> float (one number, higher is better unless higher_is_better=False)",
            f"<{type(value).__name__} returned {where}>",
            "Fix: return e.g. evaluate_accuracy(model, loader).accuracy.",
        )
    value = float(value)
    if math.isnan(value):
        logger.warning("evaluate returned NaN %s; counted as the worst possible value", where)
        return -math.inf if higher_is_better else math.inf
    return value


def sensitivity_analysis(
    model: nn.Module,
    evaluate: Callable[[nn.Module], float],
    *,
    sparsities: Sequence[float] = DEFAULT_SPARSITIES,
    criterion: str | Criterion | Callable[[Target], torch.Tensor] = "magnitude",
    structure: str | Structure = "element",
    targets: Sequence[Target] | Sequence[tuple[nn.Module, str]] | None = None,
    types: Any = None,
    include: str | Iterable[str] | None = None,
    exclude: str | Iterable[str] | None = None,
    params: str | Iterable[str] = "weight",
    higher_is_better: bool = True,
    min_keep: int = 1,
    copy: bool = True,
    context: Mapping[str, Any] | None = None,
    progress: ProgressArg = None,
) -> SensitivityResult:
    """Prune each target alone at each sparsity of a ladder and evaluate the model.

    Args:
        model: the network; it is the same afterwards, bit for bit.
        evaluate: ``evaluate(model) -> float``, called once for the baseline
            and once per (target, sparsity) point whose mask differs from the
            baseline's. Higher is better unless ``higher_is_better=False``.
            It should put the model in eval mode and disable gradients itself
            (as :func:`~prunekit.measure.evaluate_accuracy` does). A point
            whose mask equals the unpruned one (sparsity 0 of a dense tensor)
            reuses the baseline instead of evaluating again.
        sparsities: the ladder, fractions in [0, 1] of each tensor pruned.
        criterion, structure: as in :func:`prunekit.prune` (N:M structures,
            which fix their own sparsity, have no ladder and are refused).
        targets, types, include, exclude, params: what to analyse, as in
            :func:`prunekit.prune` (by default the weights of Linear and ConvNd).
        higher_is_better: False for losses and perplexities.
        min_keep: units of every tensor never pruned (0 allows emptying one).
        copy: work on a ``copy.deepcopy`` of the model (default; ``evaluate``
            receives the copy). With ``copy=False`` the model itself is pruned
            temporarily and restored after each point, also after an error;
            use it when the model is too large to copy.
        context: keyword arguments for the criterion's ``prepare`` (``data``, ``loss_fn``,
            … for criteria that need them), called once; the old names of ``data``
            (``batches``, ``batch``, ``loader``, ``calibration``) are deprecated.
        progress: ``True`` for a progress bar on stderr, or a callable
            receiving a :class:`~prunekit.progress.ProgressEvent` after each
            point (stage ``"sensitivity"``, ``done`` points of ``total`` =
            targets × sparsities, ``detail`` the target, ``figures``
            ``sparsity`` and ``metric``). Default: logged at DEBUG only, nothing
            printed. The old ``progress(done, total, layer, sparsity, metric)``
            still works for one release (deprecated, warns).

    Returns:
        :class:`SensitivityResult`.
    """
    if not isinstance(model, nn.Module):
        raise InvalidParameterError("model", "a torch.nn.Module", type(model).__name__)
    if not callable(evaluate):
        raise InvalidParameterError(
            "evaluate", "a function model -> float", type(evaluate).__name__,
            "Fix: e.g. evaluate=lambda m: prunekit.measure.evaluate_accuracy(m, loader).accuracy.",
        )
    check_progress(progress)
    for flag, value in (("higher_is_better", higher_is_better), ("copy", copy)):
        if not isinstance(value, bool):
            raise InvalidParameterError(flag, "True or False", value)
    if isinstance(min_keep, bool) or not isinstance(min_keep, numbers.Integral) or min_keep < 0:
        raise InvalidParameterError("min_keep", "a non-negative int", min_keep, "Fix: 1 (default) or 0.")
    if context is not None and not isinstance(context, Mapping):
        raise InvalidParameterError("context", "None or a mapping of keyword arguments", context)
    ladder = _check_ladder(sparsities)
    crit = as_criterion(criterion)
    struct = create_structure(structure)
    if struct.fixed_sparsity is not None:
        raise InvalidParameterError(
            "structure",
            "a structure whose sparsity can vary (element, block, kernel, channel)",
            struct.spec(),
            f"Fix: {struct.spec()} fixes the sparsity at {struct.fixed_sparsity:g}; there is no ladder to scan.",
        )
    chosen = _resolve(model, targets, types, include, exclude, params)
    names = [t.name for t in chosen]
    if len(set(names)) != len(names):
        raise InvalidParameterError("targets", "distinct tensors", names, "Fix: list every tensor once.")

    work = copy_module.deepcopy(model) if copy else model
    work_targets = _on_copy(chosen, work) if copy else chosen
    training = None if copy else [(m, m.training) for m in model.modules()]
    try:
        with progress_reporter(_adapt(progress)) as report:
            return _analyse(work, work_targets, evaluate, ladder, crit, struct, int(min_keep), higher_is_better,
                            context, report)
    finally:
        for module, flag in training or ():
            module.training = flag


def _analyse(
    work: nn.Module,
    work_targets: list[Target],
    evaluate: Callable[[nn.Module], float],
    ladder: tuple[float, ...],
    crit: Criterion,
    struct: Structure,
    min_keep: int,
    higher_is_better: bool,
    context: Mapping[str, Any] | None,
    report: ProgressCallback,
) -> SensitivityResult:
    # Check every target at the top of the ladder before any evaluation, so a
    # sparsity that cannot be reached fails in seconds, not after an hour.
    crit.prepare(work, work_targets, **context_with_data(context or {}))
    for target in work_targets:
        compute_keep_masks([target], crit, struct, ladder[-1], scope="local", min_keep=min_keep)

    baseline = _as_metric(evaluate(work), higher_is_better, "for the unpruned model")
    logger.info("sensitivity analysis: baseline %.6g, %d targets × %d sparsities",
                baseline, len(work_targets), len(ladder))
    curves: dict[str, list[tuple[float, float]]] = {}
    sizes: dict[str, int] = {}
    total = len(work_targets) * len(ladder)
    done = 0
    for target in work_targets:
        tensor = target.original
        saved = tensor.detach().clone()
        before = target.keep_mask()
        curve: list[tuple[float, float]] = []
        try:
            for sparsity in ladder:
                keep = compute_keep_masks([target], crit, struct, sparsity, scope="local", min_keep=min_keep)[0]
                unchanged = bool(keep.all()) if before is None else torch.equal(keep, before)
                if unchanged:
                    metric = baseline
                else:
                    with torch.no_grad():
                        tensor.mul_(keep.to(dtype=tensor.dtype, device=tensor.device))
                        _refresh(target)
                    try:
                        metric = _as_metric(evaluate(work), higher_is_better, f"for {target.name} at {sparsity:g}")
                    finally:
                        with torch.no_grad():
                            tensor.copy_(saved)
                            _refresh(target)
                curve.append((sparsity, metric))
                done += 1
                logger.debug("%s at sparsity %g: %.6g", target.name, sparsity, metric)
                report(ProgressEvent("sensitivity", done, total, {"sparsity": sparsity, "metric": metric},
                                     target.name))
        finally:
            with torch.no_grad():
                tensor.copy_(saved)
                _refresh(target)
        curves[target.name] = curve
        sizes[target.name] = target.numel
    settings = {
        "criterion": repr(crit),
        "structure": struct.spec(),
        "sparsities": list(ladder),
        "min_keep": min_keep,
    }
    return SensitivityResult(curves, baseline, higher_is_better, sizes, settings)


def _refresh(target: Target) -> None:
    """Recompute ``module.<name>`` from ``<name>_orig`` in the reparam layout.

    The reparam hook recomputes it at every forward pass anyway; this keeps
    the attribute right for code that reads it without a forward pass.
    """
    if target.state == "reparam":
        hook = find_reparam_hook(target.module, target.param_name)
        if hook is not None:
            setattr(target.module, target.param_name, hook.apply_mask(target.module))


# -- the result ----------------------------------------------------------------------


@dataclass
class SensitivityResult:
    """Per-target curves ``[(sparsity, metric), …]`` and the unpruned ``baseline``.

    Attributes:
        curves: ``{target name: [(sparsity, metric), …]}`` in ladder order.
        baseline: the metric of the unpruned model.
        higher_is_better: how to read the metric (drop = baseline - metric,
            or metric - baseline when False).
        params: ``{target name: number of entries}``, the weights of the
            global sparsity in :meth:`allocate`.
        settings: criterion, structure, ladder and ``min_keep`` used.
    """

    curves: dict[str, list[tuple[float, float]]]
    baseline: float
    higher_is_better: bool = True
    params: dict[str, int] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    # -- serialisation ---------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data (the ``"sensitivity"`` section of a report)."""
        return {
            "baseline": self.baseline,
            "higher_is_better": self.higher_is_better,
            "curves": {name: [[s, m] for s, m in curve] for name, curve in self.curves.items()},
            "params": dict(self.params),
            "settings": dict(self.settings),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SensitivityResult:
        """Rebuild a result from :meth:`to_dict`'s output (or a report's section)."""
        if not isinstance(data, Mapping):
            raise InvalidParameterError("data", "a mapping as written by SensitivityResult.to_dict()", data)
        for key in ("baseline", "curves"):
            if key not in data:
                raise InvalidParameterError(
                    f"data[{key!r}]", "present (baseline and curves are required)", "<missing>",
                    "Fix: pass the dict written by SensitivityResult.to_dict().",
                )
        if not _is_real(data["baseline"]):
            raise InvalidParameterError("data['baseline']", "a number", data["baseline"])
        curves_in = data["curves"]
        if not isinstance(curves_in, Mapping):
            raise InvalidParameterError("data['curves']", "a mapping {layer: [[sparsity, metric], …]}", curves_in)
        curves: dict[str, list[tuple[float, float]]] = {}
        for name, points in curves_in.items():
            try:
                curves[str(name)] = [(float(s), float(m)) for s, m in points]
            except (TypeError, ValueError):
                raise InvalidParameterError(
                    f"data['curves'][{name!r}]", "a list of [sparsity, metric] pairs", points
                ) from None
        params = {str(k): int(v) for k, v in dict(data.get("params") or {}).items()}
        return cls(
            curves,
            float(data["baseline"]),
            bool(data.get("higher_is_better", True)),
            params,
            dict(data.get("settings") or {}),
        )

    def to_json(self, path: str | os.PathLike[str] | None = None, indent: int = 2) -> str:
        """The result as JSON; written atomically to ``path`` when given."""
        return dump_json(self.to_dict(), path, indent)

    def table(self) -> str:
        """Plain text: one row per target, one column per ladder sparsity."""
        ladder = sorted({s for curve in self.curves.values() for s, _ in curve})
        header = ["layer", *(f"{s:g}" for s in ladder)]
        rows = []
        for name, curve in self.curves.items():
            values = dict(curve)
            rows.append([name, *(f"{values[s]:.4g}" if s in values else "-" for s in ladder)])
        lines = table_lines(header, rows)
        lines.append(f"baseline: {self.baseline:.6g} ({'higher' if self.higher_is_better else 'lower'} is better)")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    # -- drops ---------------------------------------------------------------------

    def drop(self, layer: str, sparsity: float) -> float:
        """Metric drop of ``layer`` pruned alone to ``sparsity`` (linear between ladder points).

        Positive means worse than the baseline. Outside the ladder the nearest
        end point's value is returned.
        """
        if layer not in self.curves:
            raise InvalidParameterError("layer", "one of the analysed layers", layer, _layers_fix(self.curves))
        xs, ys = self._raw_drops(layer)
        return _interp(float(sparsity), xs, ys)

    def _raw_drops(self, layer: str) -> tuple[list[float], list[float]]:
        sign = 1.0 if self.higher_is_better else -1.0
        points = sorted(self.curves[layer])
        xs = [s for s, _ in points]
        ys = [sign * (self.baseline - m) for _, m in points]
        if not xs or xs[0] > 0.0:
            xs.insert(0, 0.0)  # unpruned = the baseline
            ys.insert(0, 0.0)
        return xs, ys

    # -- allocation ------------------------------------------------------------------

    def allocate(
        self,
        target_sparsity: float,
        max_drop: float | None = None,
        *,
        layers: Iterable[str] | None = None,
        decimals: int = 6,
    ) -> dict[str, float]:
        """Per-layer sparsities reaching ``target_sparsity`` over the analysed layers.

        Every layer gets the largest sparsity whose (running-maximum,
        linearly interpolated) drop stays within one threshold ``δ``; ``δ`` is
        found by bisection as the smallest threshold for which the
        size-weighted sparsity ``Σ params·s / Σ params`` reaches the target.
        Where several layers reach a flat part of their curves at the same
        ``δ`` the jump is shared between them so that the target is met exactly.
        No layer gets more than the top of the ladder.

        Args:
            target_sparsity: global fraction (of the layers' entries together) to prune.
            max_drop: largest allowed drop of any single layer's curve (in the
                metric's units, e.g. 0.01 = one point of accuracy); when the
                target cannot be reached within it, :class:`InvalidParameterError`
                says which sparsity can.
            layers: restrict to these layers (default: every analysed layer).
            decimals: rounding of the returned sparsities.

        Returns:
            ``{layer: sparsity}``: pass it as ``overrides`` to
            :func:`prunekit.prune`, e.g. ``prunekit.prune(model, 0.0, overrides=allocation)``
            (the positional sparsity applies to the targets not in the allocation;
            pass the criterion and structure the analysis used).
            For structured pruning each layer is rounded to whole units, so the
            global sparsity reached differs slightly from the target.
        """
        is_count = isinstance(target_sparsity, numbers.Integral) and target_sparsity not in (0, 1)
        if not _is_real(target_sparsity) or is_count:
            raise InvalidParameterError(
                "target_sparsity", "a float in [0, 1] (global fraction pruned)", target_sparsity, "Fix: e.g. 0.7."
            )
        target = float(target_sparsity)
        if not 0.0 <= target <= 1.0:
            raise InvalidParameterError("target_sparsity", "a float in [0, 1]", target_sparsity, "Fix: e.g. 0.7.")
        if max_drop is not None and (not _is_real(max_drop) or math.isnan(float(max_drop)) or float(max_drop) < 0):
            raise InvalidParameterError(
                "max_drop", "None or a non-negative number (metric units)", max_drop, "Fix: e.g. max_drop=0.01."
            )
        if isinstance(decimals, bool) or not isinstance(decimals, numbers.Integral) or decimals < 0:
            raise InvalidParameterError("decimals", "a non-negative int", decimals)
        names = list(self.curves) if layers is None else [layers] if isinstance(layers, str) else list(layers)
        if not names:
            raise InvalidParameterError("layers", "at least one analysed layer", names, _layers_fix(self.curves))
        for name in names:
            if name not in self.curves:
                raise InvalidParameterError("layers", "names of analysed layers", name, _layers_fix(self.curves))
            if not self.curves[name]:
                raise InvalidParameterError("curves", f"at least one point for {name}", [], "Fix: rerun the analysis.")
        missing = [n for n in names if n not in self.params]
        if missing and len(names) > 1:
            logger.warning("no parameter counts for %s; weighting those layers as 1", missing)
        return sensitivity_sparsities(
            {n: self._raw_drops(n) for n in names},
            {n: float(self.params.get(n, 1)) for n in names},
            target,
            max_drop,
            decimals=int(decimals),
        )


def _layers_fix(curves: Mapping[str, Any]) -> str:
    shown = ", ".join(list(curves)[:20]) + ("…" if len(curves) > 20 else "")
    return f"Fix: the analysed layers are {shown}."


def _interp(x: float, xs: Sequence[float], ys: Sequence[float]) -> float:
    if x <= xs[0]:
        return ys[0]
    for i in range(1, len(xs)):
        if x <= xs[i]:
            x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
            if not (math.isfinite(y0) and math.isfinite(y1)):
                return y1 if x == x1 else max(y0, y1)
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return ys[-1]


def plot_sensitivity(
    result: SensitivityResult,
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
    metric_name: str = "metric",
) -> Path:
    """Write the curves of ``result`` as a PNG at ``path`` (atomically); return the path."""
    if not isinstance(result, SensitivityResult):
        raise InvalidParameterError(
            "result", "a SensitivityResult", type(result).__name__,
            "Fix: pass what sensitivity_analysis() returned, or SensitivityResult.from_dict(data).",
        )
    return plot_sensitivity_curves(
        result.curves,
        path,
        baseline=result.baseline,
        metric_name=metric_name,
        higher_is_better=result.higher_is_better,
        title=title,
    )
