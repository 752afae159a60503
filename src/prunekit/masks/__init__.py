"""Realising keep masks on a model: the realisation registry and its three entries.

An allocation decides, for every target tensor, which entries to keep (a bool
mask). A *realisation* makes the model compute with those masks; each is a
registered :class:`Realisation` (:mod:`.realisation` states the protocol):

* ``reparam`` (default, :mod:`.reparam`): the layout of ``torch.nn.utils.prune``;
* ``inplace`` (:mod:`.inplace`): zeros in place, a bool mask, every optimizer
  step re-masked (fused into SGD's update, :mod:`prunekit.fused_sgd`);
* ``permanent`` (:mod:`.permanent`): zeros written, no mask, no hook.

:func:`apply_masks` applies masks through one of them, all or nothing;
:func:`remove`, :func:`make_permanent` and :func:`reapply_masks` ask each
registered realisation which tensors it masks. ``mode=`` of
:func:`prunekit.prune` / :class:`prunekit.Pruner` names the realisation.

Realisations of another shape take units, not element masks, and are not
entries of this registry: physical surgery (:func:`prunekit.structural_prune`,
:func:`prunekit.prune_heads`, :func:`prunekit.prune_mlp_neurons`) removes
whole channel groups, heads or neurons and returns a smaller model; one-shot
pruning (:func:`prunekit.oneshot_prune`) reconstructs the weights of each
layer from calibration data while it prunes, then writes zeros
(``mode="permanent"``) or hands its element masks to :func:`apply_masks`
(``"inplace"``, ``"reparam"``). Both read masks made here (a masked
tensor is sliced with its mask; see :mod:`prunekit.surgery.slicing`).
"""

from __future__ import annotations

from typing import Any

from .apply import apply_masks, make_permanent, pruned_tensors, reapply_masks, remove
from .inplace import InPlace, InPlaceMask, track_inplace, untrack_inplace
from .permanent import Permanent
from ..deprecation import warn_once
from .realisation import (
    LAYOUTS,
    REALISATIONS,
    Realisation,
    create_realisation,
    list_realisations,
    realisation_of,
    register_realisation,
    unregister_realisation,
)
from .reparam import PrunekitMask, RefreshPruned, Reparam, link_consumers

__all__ = [
    "LAYOUTS",
    "REALISATIONS",
    "InPlace",
    "InPlaceMask",
    "Permanent",
    "PrunekitMask",
    "Realisation",
    "RefreshPruned",
    "Reparam",
    "apply_masks",
    "create_realisation",
    "link_consumers",
    "list_realisations",
    "make_permanent",
    "pruned_tensors",
    "realisation_of",
    "reapply_masks",
    "register_realisation",
    "remove",
    "track_inplace",
    "unregister_realisation",
    "untrack_inplace",
]


def __getattr__(name: str) -> Any:
    """``MODES`` (deprecated): the registered realisation names, read live; use :func:`list_realisations`."""
    if name == "MODES":
        warn_once("prunekit.masks.MODES", "prunekit.list_realisations()")
        return tuple(list_realisations())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
