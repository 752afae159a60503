"""Criteria (element-like scores) from names, instances, classes or functions.

The element-like scores live in :data:`~prunekit.scores.SCORES` with the other
unit spaces; this module gives the pruner what it needs from them:

* :func:`as_criterion` turns ``criterion=`` (a registered spec such as
  ``"magnitude"`` or ``"lnorm:3"``, a :class:`Criterion` instance or class, or
  a function ``target -> scores``) into a :class:`Criterion`;
* :func:`criterion_names` lists the registered scores usable that way;
* :func:`register_criterion` and :data:`CRITERIA` keep the registry API of the
  former ``prunekit.criteria`` working on top of ``SCORES`` (a criterion
  registered there is a score of every space in :data:`MASK_SPACES`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch

from ..errors import InvalidParameterError, did_you_mean
from ..registry import parse_spec
from ..targets import Target
from .base import Criterion, FunctionCriterion
from .registry import MASK_SPACES, SCORES, register_score
from .torch_methods import TorchMethod, is_torch_method

__all__ = ["CRITERIA", "CriterionRegistry", "as_criterion", "criterion_names", "register_criterion"]


def _builds_criterion(name: str) -> bool:
    """Whether the element factory of ``name`` builds a :class:`Criterion` (calibration
    scores such as Wanda serve the ``element`` space of one-shot pruning only)."""
    factory = SCORES.factory(name, "element")
    if is_torch_method(factory):
        return True
    return not (isinstance(factory, type) and not issubclass(factory, Criterion))


def criterion_names(pattern: str = "*") -> list[str]:
    """Names of the registered scores usable as ``criterion=`` of the pruner (element space)."""
    return [n for n in SCORES.names(pattern, unit_space="element") if _builds_criterion(n)]


def as_criterion(criterion: str | Criterion | Callable[[Target], torch.Tensor], **kwargs: Any) -> Criterion:
    """A criterion from a registered spec (``"magnitude"``, ``"lnorm:3"``), an instance, a class or a function."""
    if isinstance(criterion, Criterion):
        return criterion
    if isinstance(criterion, str):
        name, _ = parse_spec(criterion)
        if name not in SCORES or "element" not in SCORES.entry(name).factories:
            raise InvalidParameterError(
                "criterion", f"a registered criterion name ({', '.join(criterion_names())})", criterion,
                ("Fix: use one of the registered names (`prunekit list scores` on the command line)."
                 + did_you_mean(name, criterion_names())).strip(),
            )
        factory = SCORES.factory(name, "element")
        if is_torch_method(factory):  # a torch pruning method decides its masks itself
            return TorchMethod(factory, SCORES.resolve(name), args=parse_spec(criterion)[1], **kwargs)
        made = SCORES.create(criterion, "element", **kwargs)
        if not isinstance(made, Criterion):
            raise InvalidParameterError(
                "criterion", f"a score that masks tensors ({', '.join(criterion_names())})", criterion,
                f"Fix: {name!r} scores layers from calibration statistics; "
                f"use prunekit.oneshot_prune(model, sparsity, method={name!r}).",
            )
        return made
    if isinstance(criterion, type) and issubclass(criterion, Criterion):
        return criterion(**kwargs)
    if is_torch_method(criterion):
        return TorchMethod(criterion, **kwargs)
    if callable(criterion):
        return FunctionCriterion(criterion)
    raise InvalidParameterError(
        "criterion",
        "a registered name, a Criterion instance or a function target -> scores",
        criterion,
        f"Fix: use one of {criterion_names()}.",
    )


def register_criterion(name: str, *, aliases: tuple[str, ...] = ()) -> Callable[[Any], Any]:
    """Register a :class:`Criterion` subclass, a ``torch.nn.utils.prune.BasePruningMethod``
    subclass (it decides its masks; see :class:`~prunekit.scores.torch_methods.TorchMethod`)
    or a function ``fn(target) -> scores`` as a score of the element-like unit spaces (what the class declares in
    ``needs``; ``"nothing"`` for a function). Same as
    ``register_score(name, unit_spaces=MASK_SPACES, needs=...)``."""

    def add(obj: Any) -> Any:
        if not (isinstance(obj, type) and issubclass(obj, Criterion)) and not callable(obj):
            raise InvalidParameterError(
                "criterion", "a Criterion subclass or a function target -> scores", obj
            )
        if is_torch_method(obj):
            return register_score(name, unit_spaces=("element",), aliases=aliases)(obj)
        if isinstance(obj, type) and issubclass(obj, Criterion):
            return register_score(name, unit_spaces=MASK_SPACES, needs=obj.needs, aliases=aliases)(obj)
        SCORES.register(name, lambda: FunctionCriterion(obj, name), unit_spaces=MASK_SPACES, aliases=aliases,
                        summary=(obj.__doc__ or "").strip().split("\n")[0])
        return obj

    return add


class CriterionRegistry:
    """The element-like scores of :data:`SCORES`, with the API of the former criterion registry."""

    kind = "criterion"

    def register(self, name: str, factory: Callable[..., Any] | None = None, *,
                 aliases: tuple[str, ...] = ()) -> Any:
        """Register ``factory`` (a :class:`Criterion` class or a factory of one); usable as a decorator."""

        def add(obj: Callable[..., Any]) -> Callable[..., Any]:
            needs = obj.needs if isinstance(obj, type) and issubclass(obj, Criterion) else "nothing"
            SCORES.register(name, obj, unit_spaces=MASK_SPACES, needs=needs, aliases=aliases)
            return obj

        return add(factory) if factory is not None else add

    def unregister(self, name: str) -> None:
        """Remove ``name`` from the element-like unit spaces (the entry goes when no space is left)."""
        SCORES.unregister(name, MASK_SPACES)

    def resolve(self, name: str) -> str:
        return SCORES.resolve(name)

    def get(self, name: str) -> Callable[..., Any]:
        return SCORES.factory(name, "element")

    def create(self, spec: str, **kwargs: Any) -> Criterion:
        return as_criterion(spec, **kwargs)

    def names(self, pattern: str = "*") -> list[str]:
        return criterion_names(pattern)

    def __contains__(self, name: object) -> bool:
        if name not in SCORES:
            return False
        key = SCORES.resolve(str(name))
        return "element" in SCORES.entry(key).factories and _builds_criterion(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())


#: The former criterion registry, now a view of the element-like entries of :data:`SCORES`.
CRITERIA = CriterionRegistry()
