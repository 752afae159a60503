"""One-shot methods: the registered scores that can prune a linear layer from calibration statistics.

A one-shot method is a name of :data:`prunekit.scores.SCORES` whose element
factory builds a :class:`~prunekit.scores.calibration.LayerScore` (a class
with ``score_layer``): ``magnitude``, ``wanda`` and ``sparsegpt`` as shipped,
and any score a user registers with that protocol. :data:`ONESHOT_METHODS`
is the filtered view of ``SCORES`` that the one-shot engine resolves names
through. For the engine, a method maps ``(weight (out, in) float32,
InputStats, sparsity, NM or None, options, layer name)`` to
``(new_weight or None, keep)``; ``new_weight`` is None when the kept weights
are left as they are.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import InvalidParameterError, did_you_mean
from ..params import is_layer_score as _is_layer_score
from ..scores.calibration import InputStats
from ..scores.registry import SCORES
from ..structures import NM
from . import sparsegpt as _sparsegpt  # noqa: F401  (registers the "sparsegpt" score)
from ..allocation.rows import keep_nm, keep_per_matrix, keep_per_row

__all__ = ["ONESHOT_METHODS", "OneShotMethod", "OneShotMethods", "list_oneshot_methods", "oneshot_method"]

PruneLayer = Callable[[torch.Tensor, "InputStats | None", float, "NM | None", dict[str, Any], str],
                      tuple["torch.Tensor | None", torch.Tensor]]


@dataclass(frozen=True)
class OneShotMethod:
    """A one-shot method: ``norms``/``hessian`` say which input statistics it needs."""

    name: str
    norms: bool
    hessian: bool
    prune_layer: PruneLayer


def _options_for(factory: Callable[..., Any], options: dict[str, Any]) -> dict[str, Any]:
    """The ``options`` that the score's constructor accepts (``blocksize``, ``percdamp`` ...)."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return {}
    return {k: v for k, v in options.items() if k in params}


def _select(scores: torch.Tensor, compare: str, sparsity: float, nm: NM | None) -> torch.Tensor:
    if nm is not None:
        return keep_nm(scores, nm)
    return keep_per_row(scores, sparsity) if compare == "row" else keep_per_matrix(scores, sparsity)


def oneshot_method(name: str) -> OneShotMethod:
    """The one-shot method of the registered score ``name`` (``"wanda"``, ``"sparsegpt"``, ``"magnitude"``)."""
    key = ONESHOT_METHODS.resolve(name)
    factory = SCORES.factory(key, "element")
    needs = SCORES.entry(key).needs["element"]

    def prune_layer(weight: torch.Tensor, stats: InputStats | None, sparsity: float, nm: NM | None,
                    options: dict[str, Any], layer: str) -> tuple[torch.Tensor | None, torch.Tensor]:
        score = factory(**_options_for(factory, options))
        if getattr(score, "updates_weights", False):
            return score.prune_layer(weight, stats, sparsity, nm, name=layer)
        return None, _select(score.score_layer(weight, stats), getattr(score, "compare", "matrix"), sparsity, nm)

    return OneShotMethod(key, needs == "activations", needs == "hessian", prune_layer)


class OneShotMethods:
    """The scores of :data:`SCORES` usable by one-shot pruning, with the API of a registry."""

    kind = "method"

    def names(self, pattern: str = "*") -> list[str]:
        """Names of the registered one-shot methods matching the wildcard ``pattern``."""
        return [n for n in SCORES.names(pattern, unit_space="element") if _is_layer_score(n)]

    def resolve(self, name: str) -> str:
        """The canonical name of the method ``name`` (an alias allowed), or an error with a suggestion."""
        key = str(name).lower()
        if key in SCORES and _is_layer_score(key):
            return SCORES.resolve(key)
        raise InvalidParameterError(
            "method", f"a one-shot method ({', '.join(self.names())})", name,
            ("Fix: use one of the listed methods." + did_you_mean(str(name), self.names())).strip(),
        )

    def get(self, name: str) -> Callable[[], OneShotMethod]:
        """A factory of the method ``name`` (``ONESHOT_METHODS.get("wanda")()``)."""
        key = self.resolve(name)
        return lambda: oneshot_method(key)

    def __contains__(self, name: object) -> bool:
        key = str(name).lower()
        return key in SCORES and _is_layer_score(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())


#: The one-shot methods: a view of the layer scores registered in :data:`SCORES`.
ONESHOT_METHODS = OneShotMethods()


def list_oneshot_methods(pattern: str = "*") -> list[str]:
    """Names of the registered one-shot methods (the scores of ``SCORES`` that score linear layers)."""
    return ONESHOT_METHODS.names(pattern)
