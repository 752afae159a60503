"""The one call of the score protocol: unit scores of a model for any unit space.

:func:`score_units` returns one tensor of unit scores (higher = more
important) per scored thing, whatever the unit space:

============================================  ===================================================
unit space                                    keys and shapes
============================================  ===================================================
``element``, ``nm``, ``block``, ``kernel``,   one entry per target tensor (qualified name), a flat
``channel``                                   tensor of its units (a structure reduces the entry
                                              scores of a :class:`~prunekit.scores.Criterion`)
``group``                                     one entry per coupled channel group
                                              (:func:`prunekit.coupling.find_groups`), one score per
                                              channel (:class:`~prunekit.scores.GroupCriterion`)
``head``, ``neuron``                          one entry per attention / MLP layer, one score per
                                              head or hidden neuron (:mod:`prunekit.scores.heads`)
============================================  ===================================================

The same name means the same thing in every space: ``magnitude`` is the L1
norm ``Σ|w|`` of a unit's weights, ``l2`` its L2 norm ``(Σ w²)^½``, whether the
unit is an entry, a channel of one tensor, a coupled channel group (its rows,
norm parameters and the consumers' columns) or a head. Allocation
(:func:`prunekit.allocation.allocate`) takes these tensors as they are.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..coupling.groups import find_groups
from ..errors import InvalidParameterError, check_choice
from ..losses import LogitLoss
from ..structures import Structure, create_structure
from ..targets import Target, select_targets
from .element import as_criterion
from .groups import GroupCriterion
from .heads import score_heads, score_mlp_neurons
from .registry import MASK_SPACES, SCORES, UNIT_SPACES, create_score, list_scores, score_entry

__all__ = ["score_units", "group_score_factory"]

logger = logging.getLogger(__name__)

#: The structure a mask-like unit space means when none is given (N:M and blocks need their sizes).
_DEFAULT_STRUCTURES = {"element": "element", "kernel": "kernel", "channel": "channel"}


def group_score_factory(criterion: str | GroupCriterion, data: Any, loss_fn: Any,
                        options: Mapping[str, Any]) -> Callable[[], GroupCriterion]:
    """A function building the channel-group score ``criterion`` (data-driven ones get ``data``
    and ``loss_fn``); the first build happens now, so bad arguments fail before anything changes."""
    if isinstance(criterion, GroupCriterion):
        return lambda: criterion
    if not isinstance(criterion, str):
        raise InvalidParameterError("criterion", f"a name among {list_scores(unit_space='group')} or a GroupCriterion",
                                    f"<{type(criterion).__name__}>")
    factory = SCORES.factory(criterion, "group")
    kwargs = dict(options)
    if score_entry(criterion).needs["group"] != "nothing":
        kwargs["data"] = list(data) if data is not None else None
        if loss_fn is not None and "loss_fn" in inspect.signature(factory).parameters:
            kwargs["loss_fn"] = loss_fn
    elif data is not None:
        logger.info("criterion %r uses no data; data is ignored", criterion)
    create_score(criterion, "group", **kwargs)
    return lambda: create_score(criterion, "group", **kwargs)


def _mask_space_scores(model: nn.Module, score: Any, unit_space: str, structure: str | Structure | None,
                       targets: Sequence[Target] | None, data: Any, loss_fn: LogitLoss | None) -> dict[str, torch.Tensor]:
    if structure is None:
        if unit_space not in _DEFAULT_STRUCTURES:
            raise InvalidParameterError(
                "structure", f"the {unit_space} structure's sizes for unit_space={unit_space!r}", None,
                "Fix: e.g. structure='2:4' or structure='block:4x4'.")
        structure = _DEFAULT_STRUCTURES[unit_space]
    made = create_structure(structure) if isinstance(structure, str) else structure
    if isinstance(score, str):
        SCORES.factory(score, unit_space)  # names the spaces the score serves if not this one
    criterion = as_criterion(score)
    chosen = list(targets) if targets is not None else select_targets(model)
    context = {k: v for k, v in (("data", data), ("loss_fn", loss_fn)) if v is not None}
    criterion.prepare(model, chosen, **context)
    out = {}
    for target in chosen:
        made.check(target)
        out[target.name] = made.unit_scores(criterion.score(target).detach(), target, criterion.reduce)
    return out


def score_units(
    model: nn.Module,
    score: Any = "magnitude",
    unit_space: str = "element",
    *,
    data: Iterable[Any] | None = None,
    loss_fn: Callable[..., torch.Tensor] | None = None,
    example_inputs: Any = None,
    structure: str | Structure | None = None,
    targets: Sequence[Target] | None = None,
    options: Mapping[str, Any] | None = None,
) -> dict[Any, torch.Tensor]:
    """Unit scores of ``model`` in ``unit_space`` by the registered score ``score`` (see the module doc).

    Args:
        model: the network (not changed).
        score: a name of :data:`~prunekit.scores.SCORES` serving ``unit_space``, or a score object
            of that space (a :class:`~prunekit.scores.Criterion` or a
            :class:`~prunekit.scores.GroupCriterion`).
        unit_space: one of :data:`~prunekit.scores.UNIT_SPACES`.
        data: batches for scores that need them (gradients, activations); ``loss_fn`` their loss.
        example_inputs: one forward pass's inputs, to trace the channel groups (``group``).
        structure: for ``nm`` and ``block``, the spec with its sizes (``"2:4"``, ``"block:4x4"``).
        targets: for the mask-like spaces, the tensors to score (default: every Linear/Conv weight).
        options: keyword arguments of a group score (``{"roles": ("out",)}``).

    Returns:
        ``{key: Tensor}``: per target name, group name or layer (module doc).
    """
    check_choice("unit_space", unit_space, UNIT_SPACES)
    if unit_space in MASK_SPACES:
        return _mask_space_scores(model, score, unit_space, structure, targets, data, loss_fn)
    if unit_space == "group":
        if example_inputs is None:
            raise InvalidParameterError("example_inputs", "inputs of one forward pass (to trace the channel groups)",
                                        None, "Fix: score_units(model, 'magnitude', 'group', example_inputs=x).")
        make = group_score_factory(score, data, loss_fn, options or {})
        return make().score(model, find_groups(model, example_inputs))
    if unit_space in ("head", "neuron"):
        if not isinstance(score, str):
            raise InvalidParameterError("score", f"a registered {unit_space} score name", score,
                                        f"Fix: one of {list_scores(unit_space=unit_space)}.")
        SCORES.factory(score, unit_space)
        scorer = score_heads if unit_space == "head" else score_mlp_neurons
        return scorer(model, score, data=data, loss_fn=loss_fn)
    SCORES.factory(score, unit_space)  # no score serves this space yet: the error says so
    raise InvalidParameterError("unit_space", "a unit space with a scoring path", unit_space)
