"""Mask criteria that compare initial and final weights.

Zhou, Lan, Liu & Yosinski 2019, "Deconstructing Lottery Tickets: Zeros,
Signs, and the Supermask" (NeurIPS), section 2 and figure 2: with ``w_i`` the
weights at initialisation and ``w_f`` after training, keep the entries that
score highest under

=========================  =======================================
``large_final``            ``|w_f|`` (the lottery ticket's criterion)
``small_final``            ``−|w_f|``
``large_init``             ``|w_i|``
``small_init``             ``−|w_i|``
``magnitude_increase``     ``|w_f| − |w_i|``
``movement``               ``|w_f − w_i|``
``large_init_large_final`` large in both (see :class:`LargeInitLargeFinal`)
``random``                 uniform noise (:class:`~prunekit.scores.magnitude.Random`)
=========================  =======================================

``w_f`` is the current (masked) weight of the target; ``w_i`` comes from a
state dict or a model given as ``initial``, when the criterion is created
(``create_criterion("large_init", initial=theta0)``) or at each pruning step
(``pruner.step(0.8, initial=theta0)``). A state dict may be of a dense model
or of a pruned one (``<name>_orig``/``<name>_mask`` or in-place masks: the
unmasked original values are read).

These criteria compare weights, so their unit score for structured pruning is
the sum of the entry scores (:meth:`Criterion.reduce`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import InvalidParameterError, check_choice
from ..targets import Target, logical_tensors
from .base import Criterion
from .registry import MASK_SPACES, SCORES

__all__ = [
    "DECONSTRUCTING_CRITERIA",
    "InitialWeightsCriterion",
    "LargeFinal",
    "LargeInit",
    "LargeInitLargeFinal",
    "MagnitudeIncrease",
    "Movement",
    "SmallFinal",
    "SmallInit",
]

Initial = Mapping[str, torch.Tensor] | nn.Module


def _initial_tensors(initial: Any) -> dict[str, torch.Tensor]:
    """Logical tensors (name -> unmasked values) of a state dict or a model."""
    if isinstance(initial, nn.Module):
        initial = initial.state_dict()
    if not isinstance(initial, Mapping) or not all(isinstance(v, torch.Tensor) for v in initial.values()):
        raise InvalidParameterError(
            "initial",
            "a state dict {name: tensor} or a model holding the initial weights",
            f"<{type(initial).__name__}>",
            "Fix: save theta0 = copy.deepcopy(model.state_dict()) before training and pass initial=theta0.",
        )
    return {name: tensor for name, (_state, tensor, _mask) in logical_tensors(initial).items()}


class _FinalOnly(Criterion):
    """Criteria that read only the final weights (no ``initial`` needed)."""

    fresh_scores = True
    finite_scores = True

    def __init__(self, initial: Initial | None = None) -> None:
        """``initial`` is accepted and not needed, so every criterion of the
        family can be created and stepped the same way."""


class LargeFinal(_FinalOnly):
    """Large final ``|w_f|``: keep the weights largest after training (Frankle & Carbin 2019)."""

    name = "large_final"
    nonnegative = True

    def score(self, target: Target) -> torch.Tensor:
        return target.effective().abs()


class SmallFinal(_FinalOnly):
    """Small final ``−|w_f|``: keep the weights smallest after training (a control; Zhou et al. 2019)."""

    name = "small_final"

    def score(self, target: Target) -> torch.Tensor:
        return target.effective().abs().neg_()


class InitialWeightsCriterion(Criterion):
    """Base of the criteria that need the initial weights ``w_i``.

    Args:
        initial: a state dict or model with the initial weights; may instead
            be passed to :meth:`prepare` (``pruner.step(s, initial=theta0)``),
            which replaces it for that step and the following ones.
    """

    needs = "training"
    requires = ("initial",)
    fresh_scores = True

    def __init__(self, initial: Initial | None = None) -> None:
        self._initial = None if initial is None else _initial_tensors(initial)

    def prepare(self, model: nn.Module, targets: Sequence[Target], **context: Any) -> None:
        if context.get("initial") is not None:
            self._initial = _initial_tensors(context["initial"])
        if self._initial is None:
            raise InvalidParameterError(
                "initial",
                f"the initial weights for criterion {self.name!r}",
                None,
                f"Fix: create_criterion({self.name!r}, initial=theta0) or pruner.step(sparsity, initial=theta0), "
                "with theta0 = copy.deepcopy(model.state_dict()) saved before training.",
            )
        for target in targets:
            self.initial_of(target)  # check every target before any score is used

    def initial_of(self, target: Target) -> torch.Tensor:
        """``w_i`` of ``target`` (same shape and device as its weight)."""
        if self._initial is None:
            self.prepare(target.module, [target])
        assert self._initial is not None
        tensor = self._initial.get(target.name)
        if tensor is None:
            known = ", ".join(list(self._initial)[:8])
            raise InvalidParameterError(
                "initial",
                f"a state dict with an entry for {target.name}",
                f"<entries {known}{', …' if len(self._initial) > 8 else ''}>",
                "Fix: pass the state dict of the same model before training.",
            )
        if tuple(tensor.shape) != tuple(target.shape):
            raise InvalidParameterError(
                "initial",
                f"{target.name} of shape {tuple(target.shape)}",
                f"<shape {tuple(tensor.shape)}>",
                "Fix: pass the initial weights of this model.",
            )
        return tensor.detach().to(device=target.original.device, dtype=target.original.dtype)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class LargeInit(InitialWeightsCriterion):
    """Large init ``|w_i|``: keep the weights largest at initialisation (Zhou et al. 2019)."""

    name = "large_init"
    nonnegative = True

    def score(self, target: Target) -> torch.Tensor:
        return self.initial_of(target).abs()


class SmallInit(InitialWeightsCriterion):
    """Small init ``−|w_i|``: keep the weights smallest at initialisation (Zhou et al. 2019)."""

    name = "small_init"

    def score(self, target: Target) -> torch.Tensor:
        return self.initial_of(target).abs().neg_()


class MagnitudeIncrease(InitialWeightsCriterion):
    """Magnitude increase ``|w_f| − |w_i|``: keep the weights that grew most in training (Zhou et al. 2019)."""

    name = "magnitude_increase"

    def score(self, target: Target) -> torch.Tensor:
        return target.effective().abs().sub_(self.initial_of(target).abs())


class Movement(InitialWeightsCriterion):
    """Movement ``|w_f − w_i|``: keep the weights that moved farthest in training (Zhou et al. 2019).

    (Zhou et al.'s "movement" mask of trained weights; for *learned* movement
    scores during fine-tuning see :class:`prunekit.learned.MovementPruning`.)
    """

    name = "movement"
    nonnegative = True

    def score(self, target: Target) -> torch.Tensor:
        return target.effective().sub(self.initial_of(target)).abs_()


def _quantile_ranks(values: torch.Tensor) -> torch.Tensor:
    """Rank of every entry within its tensor, scaled to [0, 1] (ties by position)."""
    flat = values.reshape(-1)
    n = flat.numel()
    ranks = torch.empty(n, dtype=torch.float64, device=flat.device)
    order = torch.argsort(flat, stable=True)
    ranks[order] = torch.arange(n, dtype=torch.float64, device=flat.device) / max(n - 1, 1)
    return ranks.reshape(values.shape)


class LargeInitLargeFinal(InitialWeightsCriterion):
    """Large init and large final: keep the weights large both before and after training (Zhou et al. 2019).

    ``how="quantile"`` (default): score ``min(q_i, q_f)`` where ``q_i`` and
    ``q_f`` are the ranks of ``|w_i|`` and ``|w_f|`` within the tensor scaled
    to [0, 1]. Keeping the ``k`` highest scores is keeping the entries in the
    top ``q`` quantile of *both* magnitudes, with the one ``q`` that keeps
    ``k`` entries: the intersection of the large_init and large_final masks
    of figure 2 of Zhou et al. 2019. Being ranks, the scores are on the same
    scale in every layer, so a global ranking prunes every layer by about the
    same fraction.

    ``how="magnitude"``: score ``min(|w_i|, |w_f|)`` (both above one
    magnitude threshold; comparable across layers but mixes the scales of
    ``w_i`` and ``w_f``).
    """

    name = "large_init_large_final"
    nonnegative = True

    def __init__(self, initial: Initial | None = None, how: str = "quantile") -> None:
        super().__init__(initial)
        self.how = check_choice("how", how, ("quantile", "magnitude"))

    def score(self, target: Target) -> torch.Tensor:
        final = target.effective().abs()
        init = self.initial_of(target).abs()
        if self.how == "magnitude":
            return torch.minimum(init, final)
        return torch.minimum(_quantile_ranks(init), _quantile_ranks(final))

    def __repr__(self) -> str:
        return f"LargeInitLargeFinal(how={self.how!r})"


#: name -> class of the criteria of Zhou et al. 2019 registered here ("random" is the existing Random).
DECONSTRUCTING_CRITERIA: dict[str, type[Criterion]] = {
    "large_final": LargeFinal,
    "small_final": SmallFinal,
    "large_init": LargeInit,
    "small_init": SmallInit,
    "magnitude_increase": MagnitudeIncrease,
    "movement": Movement,
    "large_init_large_final": LargeInitLargeFinal,
}

for _name, _cls in DECONSTRUCTING_CRITERIA.items():
    # large_final / small_final read only the final weights; the others the initial ones too
    SCORES.register(_name, _cls, unit_spaces=MASK_SPACES, needs=_cls.needs)
