"""The score protocol for element-like unit spaces: :class:`Criterion`.

A criterion scores every entry of a target tensor (same shape as the
parameter; higher = more important). A structure then reduces entry scores to
the scores of its units with :meth:`Criterion.reduce` (a sum by default), so
one criterion serves every unit space of :data:`~prunekit.scores.MASK_SPACES`
(``element``, ``nm``, ``block``, ``kernel``, ``channel``).

The protocol, in the order the pruner uses it:

``needs`` / ``requires``
    declared on the class: ``needs`` is one of :data:`~prunekit.scores.NEEDS`
    (what the score costs: ``nothing``, ``gradients``, ``training`` ...), and
    ``requires`` names the keyword arguments :meth:`~Criterion.prepare` must
    receive (``("data",)``, ``("initial",)``; empty for data-free criteria).
``prepare(model, targets, data=..., **context)``
    called once per pruning step before any :meth:`~Criterion.score` call
    (gradient criteria run their backward passes here). The data entry is
    named ``data``; :func:`context_with_data` still accepts its old names
    (``batches``, ``batch``, ``loader``, ``calibration``) with a warning.
``score(target) -> tensor``
    the importance of each entry of ``target``, same shape.
``reduce(scores, dims) -> tensor``
    the score of a unit from its entries' scores (sum by default; the L_p
    norm for :class:`~prunekit.scores.magnitude.Magnitude`).

Criteria may be called several times for the same target within one pruning
step (global selection streams over the targets more than once), so
``score`` must return the same values between two calls of ``prepare``.

A plain function ``fn(target) -> tensor`` is a criterion too
(:class:`FunctionCriterion`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..deprecation import renamed_argument
from ..targets import Target

__all__ = ["OLD_DATA_KEYS", "Criterion", "FunctionCriterion", "context_with_data", "is_score_function"]

#: Deprecated names of the ``data`` entry of a criterion's ``prepare`` context.
OLD_DATA_KEYS = ("batches", "batch", "loader", "calibration")


def context_with_data(context: Mapping[str, Any], where: str = "Criterion.prepare") -> dict[str, Any]:
    """A copy of a ``prepare`` context whose data is under ``data``.

    An old key of :data:`OLD_DATA_KEYS` is renamed to ``data`` with a
    :class:`FutureWarning` (once per key); an old key together with ``data``
    (or two old keys) is an :class:`~prunekit.InvalidParameterError`.
    """
    out = dict(context)
    data = out.get("data")
    for old in OLD_DATA_KEYS:
        data = renamed_argument(out, old, "data", where, new_value=data)
    if data is not None:
        out["data"] = data
    return out


class Criterion:
    """Score protocol for element-like unit spaces: subclass and implement :meth:`score`.

    Attributes:
        needs: what the score needs besides the weights, one of
            :data:`prunekit.scores.NEEDS` (``"nothing"`` by default).
        requires: what :meth:`prepare` needs besides the model, for example
            ``("data",)``; empty for data-free criteria.
    """

    name: str = "criterion"
    needs: str = "nothing"
    requires: tuple[str, ...] = ()
    #: True when :meth:`score` returns a new tensor at each call that the
    #: caller may modify; otherwise the allocation copies the scores first.
    fresh_scores: bool = False
    #: True when scores are never negative (magnitudes), which speeds up ranking.
    nonnegative: bool = False
    #: True when scores are finite whenever the weights are (checked already),
    #: which spares a pass over the scores.
    finite_scores: bool = False

    def prepare(self, model: nn.Module, targets: Sequence[Target], **context: Any) -> None:
        """Called once per pruning step before any :meth:`score` call.

        ``context`` carries what the step was given: ``data`` (batches),
        ``loss_fn``, ``initial`` (initial weights) ...
        """

    def score(self, target: Target) -> torch.Tensor:
        """Importance of each entry of ``target`` (same shape; higher = keep)."""
        raise NotImplementedError

    def reduce(self, scores: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
        """Combine entry scores of a unit over ``dims`` (default: sum)."""
        return scores.sum(dim=dims)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class FunctionCriterion(Criterion):
    """A criterion made from a function ``fn(target) -> Tensor`` (same shape, higher = keep)."""

    def __init__(self, fn: Callable[[Target], torch.Tensor], name: str | None = None) -> None:
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "function")

    def score(self, target: Target) -> torch.Tensor:
        return self.fn(target)

    def __repr__(self) -> str:
        return f"FunctionCriterion({self.name!r})"


def is_score_function(obj: Any) -> bool:
    """True for a function ``fn(target) -> tensor`` (one required positional parameter),
    as opposed to a class or a factory called without arguments."""
    if isinstance(obj, type) or not callable(obj):
        return False
    try:
        params = inspect.signature(obj).parameters.values()
    except (TypeError, ValueError):
        return False
    required = [
        p for p in params
        if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    return len(required) == 1
