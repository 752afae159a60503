"""Per-layer sparsities from sensitivity curves (Distiller's threshold on the curves).

Each layer ``l`` has a drop curve ``[(s, drop_l(s)), …]``: how much the metric
falls when ``l`` alone is pruned to ``s`` (made non-decreasing by a running
maximum and read between points by linear interpolation). Every layer gets the
largest sparsity ``s_l(δ)`` whose drop stays within one threshold ``δ``; ``δ``
is found by bisection as the smallest threshold for which the size-weighted
sparsity ``Σ w_l·s_l / Σ w_l`` reaches the target. Where several layers reach a
flat part of their curves at the same ``δ`` the jump is shared between them so
that the target is met exactly. No layer gets more than the top of its curve.

The curves come from :func:`prunekit.analysis.sensitivity_analysis`
(:meth:`~prunekit.analysis.SensitivityResult.allocate` calls
:func:`sensitivity_sparsities`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

from ..errors import InvalidParameterError

__all__ = ["largest_within", "monotone", "sensitivity_sparsities"]

logger = logging.getLogger(__name__)

#: Iterations of the bisection on the drop threshold (each halves the interval).
_BISECTION_STEPS = 200

Curve = tuple[Sequence[float], Sequence[float]]


def sensitivity_sparsities(
    drops: Mapping[str, Curve],
    layer_weights: Mapping[str, float],
    target_sparsity: float,
    max_drop: float | None = None,
    *,
    decimals: int = 6,
) -> dict[str, float]:
    """Per-layer sparsities reaching ``target_sparsity`` (module docstring).

    Args:
        drops: ``{layer: (sparsities, drops)}``, sparsities ascending, starting at 0.
        layer_weights: ``{layer: weight}`` (its number of entries) of the global sparsity.
        target_sparsity: global fraction in [0, 1] to reach (checked by the caller).
        max_drop: largest allowed drop of any single layer; a target that cannot be
            reached within it raises :class:`InvalidParameterError` naming
            ``target_sparsity`` and the highest reachable value.
        decimals: rounding of the returned sparsities.
    """
    names = list(drops)
    target = float(target_sparsity)
    weights = [float(layer_weights[n]) for n in names]
    total = sum(weights)
    curves = [monotone(*drops[n]) for n in names]

    def global_sparsity(delta: float) -> tuple[float, list[float]]:
        values = [largest_within(xs, ys, delta) for xs, ys in curves]
        return sum(w * s for w, s in zip(weights, values)) / total, values

    finite = [y for _, ys in curves for y in ys if math.isfinite(y)]
    lo = min(finite, default=0.0) - 1.0
    hi = max(finite, default=0.0)
    if max_drop is not None:
        hi = min(hi, float(max_drop))
    reach, at_hi = global_sparsity(hi)
    if reach < target - 1e-12:
        ladder_top = sum(w * xs[-1] for w, (xs, _) in zip(weights, curves)) / total
        if max_drop is not None and reach < ladder_top - 1e-12:
            raise InvalidParameterError(
                "target_sparsity",
                f"at most {reach:.4f}, the highest global sparsity whose per-layer drops all stay "
                f"within max_drop={float(max_drop):g}",
                target_sparsity,
                f"Fix: lower target_sparsity to {reach:.4f} or less, or raise max_drop.",
            )
        raise InvalidParameterError(
            "target_sparsity",
            f"at most {reach:.4f}, the highest global sparsity the ladder covers "
            f"(the analysis stopped at {max(xs[-1] for xs, _ in curves):g} per layer"
            + (", finite metrics only" if reach < ladder_top - 1e-12 else "")
            + ")",
            target_sparsity,
            "Fix: lower target_sparsity, or rerun sensitivity_analysis with a ladder reaching higher sparsities.",
        )
    low_reach, at_lo = global_sparsity(lo)
    if low_reach >= target:
        chosen, delta = at_lo, lo
    else:
        for _ in range(_BISECTION_STEPS):
            mid = 0.5 * (lo + hi)
            if not lo < mid < hi:
                break
            value, at_mid = global_sparsity(mid)
            if value >= target:
                hi, reach, at_hi = mid, value, at_mid
            else:
                lo, low_reach, at_lo = mid, value, at_mid
        # share the last step (a jump where curves are flat) so the target is met exactly
        t = 1.0 if reach <= low_reach else (target - low_reach) / (reach - low_reach)
        chosen = [a + t * (b - a) for a, b in zip(at_lo, at_hi)]
        delta = hi
    result = {n: round(min(max(s, 0.0), 1.0), int(decimals)) for n, s in zip(names, chosen)}
    logger.info(
        "allocated %d layers to global sparsity %.4f (target %.4f) with per-layer drop threshold %.6g",
        len(names), sum(w * result[n] for w, n in zip(weights, names)) / total, target, delta,
    )
    return result


def monotone(xs: Sequence[float], ys: Sequence[float]) -> tuple[list[float], list[float]]:
    """Running maximum of the drops: a layer never counts as recovering with more pruning."""
    out, best = [], -math.inf
    for y in ys:
        best = max(best, y)
        out.append(best)
    return list(xs), out


def largest_within(xs: Sequence[float], ys: Sequence[float], delta: float) -> float:
    """Largest sparsity whose (non-decreasing, interpolated) drop is ≤ ``delta``."""
    if ys[0] > delta:
        return xs[0]
    for i in range(1, len(xs)):
        if ys[i] > delta:
            y0, y1 = ys[i - 1], ys[i]
            if not math.isfinite(y1):
                return xs[i - 1]
            return xs[i - 1] + (xs[i] - xs[i - 1]) * (delta - y0) / (y1 - y0)
    return xs[-1]
