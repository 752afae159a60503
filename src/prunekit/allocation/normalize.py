"""Per-unit-set score normalisation before a global ranking, and LAMP scores.

A global ranking compares the units of different tensors (or groups, or
layers), whose score scales differ. ``normalize`` divides each set's finite
scores by a positive statistic of their absolute values first:

* ``"none"``: raw scores;
* ``"max"``: ``s / max|s|``;
* ``"sum"``: ``s / Σ|s|``;
* ``"mean"``: ``s / mean|s|``;
* ``"l2"``: ``s / ‖s‖₂``.

A statistic of zero leaves the scores as they are; ``-inf`` (dead units)
stays ``-inf``.

LAMP (Lee, Park, Mo, Ahn & Shin 2021, "Layer-adaptive sparsity for the
magnitude-based pruning", ICLR) is a normalisation of its own: with the unit
scores ``s`` of one set sorted ascending (index ``u``),
``lamp(u) = s_u² / Σ_{v ≥ u} s_v²``.
"""

from __future__ import annotations

import torch

from ..errors import InvalidParameterError

__all__ = ["NORMALIZERS", "lamp_scores", "normalise"]

NORMALIZERS = ("none", "max", "sum", "mean", "l2")


def normalise(scores: torch.Tensor, how: str) -> torch.Tensor:
    """``scores`` divided by the statistic ``how`` (one of :data:`NORMALIZERS`) of their finite entries."""
    if how == "none":
        return scores
    alive = torch.isfinite(scores)
    values = scores[alive].abs()
    if values.numel() == 0:
        return scores
    if how == "max":
        stat = values.max()
    elif how == "sum":
        stat = values.sum()
    elif how == "mean":
        stat = values.mean()
    else:
        stat = torch.linalg.vector_norm(values)
    if float(stat) == 0.0:
        return scores
    return torch.where(alive, scores / stat, scores)


def lamp_scores(scores: torch.Tensor, where: str = "the target") -> torch.Tensor:
    """LAMP scores (Lee et al. 2021) of one tensor's flat unit scores, as float64.

    With the finite scores sorted ascending, ``lamp(u) = s_u² / Σ_{v ≥ u} s_v²``
    (ties in flat-index order); ``-inf`` (dead units) stays ``-inf``. A zero
    score gets 0 unless every score is zero.
    """
    out = scores.to(torch.float64)
    alive = torch.isfinite(out)
    values = out[alive]
    if values.numel() == 0:
        return out
    if bool((values < 0).any()):
        raise InvalidParameterError(
            "scope",
            f"a criterion with non-negative scores for scope='lamp' (LAMP squares them); {where} has negative ones",
            "lamp",
            "Fix: use a magnitude-like criterion (magnitude, l2, obd, large_init...) or scope='global'.",
        )
    squares = values.square()
    order = torch.argsort(squares, stable=True)
    ranked = squares[order]
    tail = ranked.flip(0).cumsum(0).flip(0)
    lamp = torch.where(tail > 0, ranked / tail.clamp_min(torch.finfo(torch.float64).tiny), torch.ones_like(ranked))
    values = torch.empty_like(values)
    values[order] = lamp
    out[alive] = values
    return out
