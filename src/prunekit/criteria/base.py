"""The criterion interface and its registry.

A criterion scores every entry of a target tensor (same shape as the
parameter; higher = more important). A structure then reduces entry scores to
unit scores with :meth:`Criterion.reduce` (a sum by default).

Criteria may be called several times for the same target within one pruning
step (global selection streams over the targets more than once), so
``score`` must return the same values between two calls of ``prepare``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import InvalidParameterError
from ..registry import Registry
from ..targets import Target

__all__ = [
    "Criterion",
    "FunctionCriterion",
    "CRITERIA",
    "register_criterion",
    "create_criterion",
    "list_criteria",
]


class Criterion:
    """Base class: subclass and implement :meth:`score`.

    Attributes:
        requires: what :meth:`prepare` needs besides the model, for example
            ``("data",)``; empty for data-free criteria.
    """

    name: str = "criterion"
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
        """Called once per pruning step before any :meth:`score` call."""

    def score(self, target: Target) -> torch.Tensor:
        """Importance of each entry of ``target`` (same shape; higher = keep)."""
        raise NotImplementedError

    def reduce(self, scores: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
        """Combine entry scores of a unit over ``dims`` (default: sum)."""
        return scores.sum(dim=dims)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class FunctionCriterion(Criterion):
    """A criterion made from a function ``fn(target) -> Tensor``."""

    def __init__(self, fn: Callable[[Target], torch.Tensor], name: str | None = None) -> None:
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "function")

    def score(self, target: Target) -> torch.Tensor:
        return self.fn(target)

    def __repr__(self) -> str:
        return f"FunctionCriterion({self.name!r})"


CRITERIA: Registry[Criterion] = Registry("criterion")


def register_criterion(name: str, *, aliases: tuple[str, ...] = ()) -> Callable[[Any], Any]:
    """Register a :class:`Criterion` subclass or a function ``fn(target) -> scores``.

    Example::

        @prunekit.register_criterion("every_other")
        def every_other(target):
            s = torch.ones(target.numel)
            s[::2] = 0
            return s.view(target.shape)
    """

    def add(obj: Any) -> Any:
        if isinstance(obj, type) and issubclass(obj, Criterion):
            CRITERIA.register(name, obj, aliases=aliases)
        elif callable(obj):
            CRITERIA.register(name, lambda: FunctionCriterion(obj, name), aliases=aliases)
        else:
            raise InvalidParameterError(
                "criterion", "a Criterion subclass or a function target -> scores", obj
            )
        return obj

    return add


def create_criterion(criterion: str | Criterion | Callable[[Target], torch.Tensor], **kwargs: Any) -> Criterion:
    """A criterion from a registered spec (``"magnitude"``, ``"lnorm:3"``), an instance or a function."""
    if isinstance(criterion, Criterion):
        return criterion
    if isinstance(criterion, str):
        return CRITERIA.create(criterion, **kwargs)
    if isinstance(criterion, type) and issubclass(criterion, Criterion):
        return criterion(**kwargs)
    if callable(criterion):
        return FunctionCriterion(criterion)
    raise InvalidParameterError(
        "criterion",
        "a registered name, a Criterion instance or a function target -> scores",
        criterion,
        f"Fix: use one of {CRITERIA.names()}.",
    )


def list_criteria(pattern: str = "*") -> list[str]:
    """Names of registered criteria matching the wildcard ``pattern``."""
    return CRITERIA.names(pattern)
