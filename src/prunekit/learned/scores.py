"""Learned per-weight scores: the parametrisation shared by supermasks and
movement pruning, and the :class:`LearnedScores` criterion.

A wrapped tensor computes, in every forward pass,

    W' = W ⊙ m(S)

with ``S`` a trainable score tensor of ``W``'s shape and ``m`` a binary mask
drawn from the scores by one of four rules:

* ``"bernoulli"``: ``m ~ Bernoulli(σ(S))`` in training (Zhou et al. 2019,
  "Deconstructing Lottery Tickets", section 5); in eval mode ``σ(S) > 0.5``
  (``eval_mask="threshold"``) or the expected mask ``σ(S)`` itself
  (``eval_mask="expected"``, not binary).
* ``"topk"``: the ``keep`` highest scores of the tensor (Ramanujan et al. 2020,
  "What's Hidden in a Randomly Weighted Neural Network?", edge-popup; Sanh et
  al. 2020 hard movement pruning, per layer).
* ``"threshold"``: ``S > τ`` (Sanh et al. 2020 soft movement pruning).
* ``"fixed"``: a mask set from outside (hard movement pruning with one
  ranking over all layers, recomputed at each training step).

The scores learn through the straight-through estimator (Bengio, Léonard &
Courville 2013): the backward pass treats the binary mask as if it were
``S`` itself (or ``σ(S)`` for the Bernoulli rule), so

    ∂L/∂S = ∂L/∂W' ⊙ W            (topk, threshold, fixed)
    ∂L/∂S = ∂L/∂W' ⊙ W ⊙ σ'(S)    (bernoulli)

while ``∂L/∂W = ∂L/∂W' ⊙ m``. It is computed as ``m + (S − S.detach())``,
whose value is exactly ``m``.

The wrapping uses :mod:`torch.nn.utils.parametrize`, so it works for any
module that reads its weight as an attribute (Linear, ConvNd, Hugging Face
Conv1D, the ``out_proj`` of multi-head attention); while wrapped, the weight
lives at ``<module>.parametrizations.weight.original`` and the scores at
``<module>.parametrizations.weight.0.scores``. ``finalize`` removes the
parametrisations and turns the final binary masks into prunekit masks
(``reparam`` or ``inplace``), so sparsity reports and ``save_sparse`` work.
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..scores import MASK_SPACES, SCORES, Criterion
from ..errors import InvalidParameterError, check_choice
from ..masks import apply_masks, link_consumers, list_realisations
from ..targets import Target, select_targets

__all__ = ["RULES", "LearnedScores", "ScoreWrapper", "ScoredWeight", "topk_mask"]

logger = logging.getLogger(__name__)

RULES = ("bernoulli", "topk", "threshold", "fixed")
EVAL_MASKS = ("threshold", "expected")


def topk_mask(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """Bool mask of the ``keep`` highest entries of ``scores`` (ties: lower flat index first)."""
    flat = scores.detach().reshape(-1)
    mask = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    if keep >= flat.numel():
        mask.fill_(True)
    elif keep > 0:
        order = torch.argsort(flat, descending=True, stable=True)
        mask[order[:keep]] = True
    return mask.reshape(scores.shape)


class ScoredWeight(nn.Module):
    """The parametrisation ``W -> W ⊙ m(S)`` (see the module docstring)."""

    def __init__(self, scores: torch.Tensor, rule: str, *, keep: int | None = None, threshold: float = 0.0,
                 eval_mask: str = "threshold") -> None:
        super().__init__()
        self.rule = check_choice("rule", rule, RULES)
        self.eval_mask = check_choice("eval_mask", eval_mask, EVAL_MASKS)
        self.scores = nn.Parameter(scores.detach().clone())
        self.register_buffer("mask", torch.ones(scores.shape, dtype=torch.bool, device=scores.device))
        self.keep = scores.numel() if keep is None else int(keep)
        self.threshold = float(threshold)

    def hard_mask(self) -> torch.Tensor:
        """The deterministic binary mask (bool) of the current scores.

        Bernoulli: ``σ(S) > 0.5``, i.e. ``S > 0``; topk: the ``keep`` highest;
        threshold: ``S > τ``; fixed: the mask set from outside.
        """
        scores = self.scores.detach()
        if self.rule == "bernoulli":
            return scores > 0
        if self.rule == "topk":
            return topk_mask(scores, self.keep)
        if self.rule == "threshold":
            return scores > self.threshold
        return self.mask.clone()

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        scores = self.scores
        if self.rule == "bernoulli":
            prob = torch.sigmoid(scores)
            if self.training:
                hard = torch.bernoulli(prob.detach())
            elif self.eval_mask == "expected":
                return weight * prob
            else:
                hard = (scores.detach() > 0).to(scores.dtype)
            return weight * (hard + (prob - prob.detach()))
        hard = self.hard_mask() if self.rule != "fixed" else self.mask
        return weight * (hard.to(scores.dtype) + (scores - scores.detach()))

    def extra_repr(self) -> str:
        return f"rule={self.rule!r}, shape={tuple(self.scores.shape)}, keep={self.keep}"


@dataclass
class _Wrapped:
    target: Target
    scored: ScoredWeight


def _score_init_check(init: Any) -> None:
    if isinstance(init, str):
        check_choice("score_init", init, ("magnitude",))
    elif isinstance(init, bool) or not isinstance(init, numbers.Real):
        raise InvalidParameterError("score_init", "a number (constant scores) or 'magnitude' (|W|)", init)


def _score_init(target: Target, init: float | str) -> torch.Tensor:
    """Initial scores: a constant, or ``|W|`` for ``"magnitude"``."""
    weight = target.original.detach()
    if isinstance(init, str):
        return weight.abs().clone()
    return torch.full_like(weight, float(init))


class ScoreWrapper:
    """Base of :class:`~prunekit.learned.Supermask` and
    :class:`~prunekit.learned.MovementPruning`: wraps targets with
    :class:`ScoredWeight`, reads scores and masks, and finalises into prunekit masks.
    """

    rule = "fixed"

    def __init__(self, *, score_init: float | str = 0.0, mode: str = "reparam", freeze: bool = False) -> None:
        _score_init_check(score_init)
        self.score_init = score_init
        self.mode = check_choice("mode", mode, list_realisations())
        self.freeze = bool(freeze)
        self.model: nn.Module | None = None
        self.wrapped: list[_Wrapped] = []
        self._frozen: list[nn.Parameter] = []

    # -- wrapping ------------------------------------------------------------
    def _make(self, target: Target, scores: torch.Tensor) -> ScoredWeight:
        return ScoredWeight(scores, self.rule)

    def wrap(
        self,
        model: nn.Module,
        *,
        targets: Sequence[Target] | None = None,
        types: Any = None,
        include: str | Iterable[str] | None = None,
        exclude: str | Iterable[str] | None = None,
        params: str | Iterable[str] = "weight",
    ) -> nn.Module:
        """Give every target of ``model`` (chosen as by :func:`prunekit.select_targets`,
        or given) learned scores; returns the model, changed in place."""
        if self.model is not None:
            raise InvalidParameterError(
                "model", "one wrap() per object", type(model).__name__,
                "Fix: finalize() first, or create a new object for another model.",
            )
        if not isinstance(model, nn.Module):
            raise InvalidParameterError("model", "a torch.nn.Module", type(model).__name__)
        chosen = list(targets) if targets is not None else select_targets(
            model, types=types, include=include, exclude=exclude, params=params
        )
        for target in chosen:  # check all before changing anything
            if not isinstance(target, Target):
                raise InvalidParameterError("targets", "Target objects (prunekit.select_targets)", target)
            if target.state != "dense" or parametrize.is_parametrized(target.module, target.param_name):
                raise InvalidParameterError(
                    "targets", "unpruned (dense) tensors", f"{target.name} ({target.state})",
                    "Fix: prunekit.make_permanent(model) first (pruned weights stay zero in W, but their "
                    "scores may bring them back), or exclude the tensor.",
                )
            if not target.original.is_floating_point():
                raise InvalidParameterError("targets", "floating-point tensors", target.name)
        made = [self._make(t, _score_init(t, self.score_init)) for t in chosen]
        for target, scored in zip(chosen, made):
            parametrize.register_parametrization(target.module, target.param_name, scored, unsafe=True)
            self.wrapped.append(_Wrapped(target, scored))
        self.model = model
        if self.freeze:
            scores = {id(w.scored.scores) for w in self.wrapped}
            self._frozen = [p for p in model.parameters() if p.requires_grad and id(p) not in scores]
            for p in self._frozen:
                p.requires_grad_(False)
        logger.info("%s: learned scores on %d tensors", type(self).__name__, len(self.wrapped))
        return model

    def _check_wrapped(self) -> None:
        if self.model is None:
            raise InvalidParameterError(
                "model", "a model wrapped with wrap(model)", None, "Fix: call wrap(model) before training."
            )

    # -- reading -------------------------------------------------------------
    def score_parameters(self) -> list[nn.Parameter]:
        """The score tensors (for an optimizer of their own, e.g. another lr)."""
        return [w.scored.scores for w in self.wrapped]

    def scores(self) -> dict[str, torch.Tensor]:
        """Target name -> a copy of its current scores."""
        return {w.target.name: w.scored.scores.detach().clone() for w in self.wrapped}

    def masks(self) -> dict[str, torch.Tensor]:
        """Target name -> the deterministic bool mask the scores give now."""
        self._check_wrapped()
        return {w.target.name: w.scored.hard_mask() for w in self.wrapped}

    def density(self) -> float:
        """Fraction of the wrapped weights kept by :meth:`masks`."""
        masks = self.masks()
        return sum(int(m.sum()) for m in masks.values()) / max(1, sum(m.numel() for m in masks.values()))

    # -- ending --------------------------------------------------------------
    def finalize(self, apply: bool = True) -> dict[str, torch.Tensor]:
        """Remove the scores from the model and, with ``apply``, mask it.

        The final binary masks (:meth:`masks`) become prunekit masks in
        ``self.mode`` (``reparam``: ``weight_orig``/``weight_mask``; or
        ``inplace``). Frozen parameters become trainable again. Returns the
        final scores by target name (for :class:`LearnedScores`).
        """
        self._check_wrapped()
        masks = self.masks()
        scores = self.scores()
        model = self.model
        assert model is not None
        for w in self.wrapped:
            parametrize.remove_parametrizations(w.target.module, w.target.param_name, leave_parametrized=False)
        for p in self._frozen:
            p.requires_grad_(True)
        targets = [w.target for w in self.wrapped]
        if apply:
            keeps = [masks[t.name].to(t.original.device) for t in targets]
            apply_masks(targets, keeps, mode=self.mode, description=f"{type(self).__name__} learned mask")
            link_consumers(model)
        self.wrapped, self._frozen, self.model = [], [], None
        logger.info("%s: finalized %d tensors (masks %s)", type(self).__name__, len(targets),
                    "applied" if apply else "not applied")
        return scores


class LearnedScores(Criterion):
    """Scores learned elsewhere (movement pruning, supermasks, any training),
    used as a criterion: ``score(target)`` returns the stored tensor for the
    target's name. Any structure and allocation can then rank them::

        scores = movement.finalize(apply=False)
        prunekit.prune(model, 0.9, criterion=LearnedScores(scores), scope="global")

    The scores may also be passed per step: ``pruner.step(s, scores=...)``.
    """

    name = "learned"
    requires = ("scores",)

    def __init__(self, scores: Mapping[str, torch.Tensor] | None = None) -> None:
        self._scores = None if scores is None else _check_scores(scores)

    def prepare(self, model: nn.Module, targets: Sequence[Target], **context: Any) -> None:
        if context.get("scores") is not None:
            self._scores = _check_scores(context["scores"])
        for target in targets:
            self.score(target)

    def score(self, target: Target) -> torch.Tensor:
        if self._scores is None:
            raise InvalidParameterError(
                "scores", "learned scores {target name: tensor}", None,
                "Fix: LearnedScores(scores) or pruner.step(sparsity, scores=scores).",
            )
        tensor = self._scores.get(target.name)
        if tensor is None or tuple(tensor.shape) != tuple(target.shape):
            got = "<missing>" if tensor is None else f"<shape {tuple(tensor.shape)}>"
            raise InvalidParameterError(
                "scores", f"a tensor of shape {tuple(target.shape)} for {target.name}", got,
                "Fix: pass the scores learned for this model's targets (names as in select_targets).",
            )
        return tensor.detach().to(target.original.device)

    def __repr__(self) -> str:
        return f"LearnedScores({0 if self._scores is None else len(self._scores)} tensors)"


def _check_scores(scores: Any) -> dict[str, torch.Tensor]:
    if not isinstance(scores, Mapping) or not all(isinstance(v, torch.Tensor) for v in scores.values()):
        raise InvalidParameterError("scores", "a mapping {target name: score tensor}", f"<{type(scores).__name__}>")
    return dict(scores)


SCORES.register("learned", LearnedScores, unit_spaces=MASK_SPACES, needs="training", aliases=("learned_scores",),
                summary="Scores learned during training (movement pruning, supermasks), stored per target name.")
