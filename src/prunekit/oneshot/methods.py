"""The registered one-shot methods: what statistics each needs and how it prunes one layer.

A method maps ``(weight (out, in) float32, InputStats, sparsity, NM or None,
options)`` to ``(new_weight or None, keep)``; ``new_weight`` is None when the
kept weights are left as they are.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..registry import Registry
from ..structures import NM
from .magnitude import magnitude_keep
from .sparsegpt import sparsegpt_prune
from .stats import InputStats
from .wanda import wanda_keep

__all__ = ["ONESHOT_METHODS", "OneShotMethod", "list_oneshot_methods"]

PruneLayer = Callable[[torch.Tensor, "InputStats | None", float, "NM | None", dict[str, Any], str],
                      tuple["torch.Tensor | None", torch.Tensor]]


@dataclass(frozen=True)
class OneShotMethod:
    """A one-shot method: ``norms``/``hessian`` say which input statistics it needs."""

    name: str
    norms: bool
    hessian: bool
    prune_layer: PruneLayer


def _magnitude(w: torch.Tensor, stats: InputStats | None, s: float, nm: NM | None, opts: dict[str, Any],
               name: str) -> tuple[None, torch.Tensor]:
    return None, magnitude_keep(w, s, nm)


def _wanda(w: torch.Tensor, stats: InputStats | None, s: float, nm: NM | None, opts: dict[str, Any],
           name: str) -> tuple[None, torch.Tensor]:
    return None, wanda_keep(w, stats.norms(), s, nm)  # type: ignore[union-attr]


def _sparsegpt(w: torch.Tensor, stats: InputStats | None, s: float, nm: NM | None, opts: dict[str, Any],
               name: str) -> tuple[torch.Tensor, torch.Tensor]:
    return sparsegpt_prune(w, stats.take_hessian(), s, nm, blocksize=opts["blocksize"],  # type: ignore[union-attr]
                           percdamp=opts["percdamp"], name=name, copy_hessian=False)  # H is ours to overwrite


ONESHOT_METHODS: Registry[OneShotMethod] = Registry("method")
ONESHOT_METHODS.register("magnitude", lambda: OneShotMethod("magnitude", False, False, _magnitude))
ONESHOT_METHODS.register("wanda", lambda: OneShotMethod("wanda", True, False, _wanda))
ONESHOT_METHODS.register("sparsegpt", lambda: OneShotMethod("sparsegpt", False, True, _sparsegpt))


def list_oneshot_methods(pattern: str = "*") -> list[str]:
    """Names of the registered one-shot methods."""
    return ONESHOT_METHODS.names(pattern)
