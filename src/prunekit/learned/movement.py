"""Movement pruning: scores learned during fine-tuning (Sanh, Wolf & Rush 2020,
"Movement Pruning: Adaptive Sparsity by Fine-Tuning", NeurIPS).

Every weight ``W`` gets a score ``S``; the network computes with
``W' = W ⊙ M(S)`` and both ``W`` and ``S`` train, ``S`` through the
straight-through estimator ``∂L/∂S = ∂L/∂W' ⊙ W``. A weight moving away
from zero (``W·∂L/∂W' < 0``) gains score; one moving towards zero loses it.

* ``method="hard"``: ``M = Top_v(S)``, the top ``v`` fraction of the scores
  of each layer (``scope="local"``, recomputed at every forward pass) or of
  all layers together (``scope="global"``, recomputed at each :meth:`step`).
  The sparsity ``1 − v`` follows the cubic schedule of Zhu & Gupta 2017 with a
  warm-up and a cool-down: ``s_i`` for ``t < t_w``, then
  ``s_t = s_f + (s_i − s_f)·(1 − (t − t_w)/(NΔt))³`` at ``t = t_w, t_w + Δt, …``
  up to ``t_w + NΔt``, then ``s_f`` (:class:`prunekit.schedules.AGP`).
  Each layer (or the whole, globally) is pruned to exactly
  ``round(s_t · n)`` entries.
* ``method="soft"``: ``M = 1[S > τ]`` with a penalty added to the loss that
  pushes scores down, so the sparsity is learned:
  ``λ · mean σ(S)`` (``penalty_kind="sigmoid"``, the regulariser of Sanh et
  al. up to the 1/n scaling, which makes ``λ`` independent of the model's
  size) or ``λ · mean S`` (``"linear"``).

Training-loop hook::

    mp = MovementPruning("hard", final_sparsity=0.9, warmup_steps=100, pruning_steps=900)
    mp.wrap(model)
    for t, (x, y) in enumerate(loader):
        mp.step(t)                                    # before the forward pass
        loss = loss_fn(model(x), y) + mp.penalty()    # penalty is 0 for "hard"
        ...
    mp.finalize()                                     # prunekit masks

With :func:`prunekit.fit`: ``fit(model, loader, loss_fn=mp.loss(classification_loss),
progress=mp.on_progress)`` (``on_progress`` steps the schedule after every step).
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Callable
from typing import Any

import torch

from ..errors import InvalidParameterError, check_choice
from ..schedules import AGP
from ..targets import Target
from .scores import ScoredWeight, ScoreWrapper, topk_mask

__all__ = ["MOVEMENT_METHODS", "MovementPruning"]

logger = logging.getLogger(__name__)

MOVEMENT_METHODS = ("hard", "soft")
PENALTIES = ("sigmoid", "linear")


def _nonnegative(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 0:
        raise InvalidParameterError(name, "a non-negative number", value)
    return float(value)


class MovementPruning(ScoreWrapper):
    """Hard or soft movement pruning (see the module docstring).

    Args:
        method: ``"hard"`` (top-k of the scores on a schedule) or ``"soft"``
            (threshold and penalty).
        final_sparsity: ``s_f`` (hard).
        initial_sparsity: ``s_i`` (hard), used during the warm-up.
        warmup_steps: ``t_w``, steps before the first pruning event (hard).
        pruning_steps: ``NΔt``, steps from the first event to the last (hard).
        frequency: ``Δt``, steps between events (hard); ``pruning_steps``
            must be a multiple of it.
        scope: ``"local"`` (top-k per layer) or ``"global"`` (hard).
        threshold: ``τ`` (soft).
        penalty: ``λ`` (soft).
        penalty_kind: ``"sigmoid"`` (λ·mean σ(S)) or ``"linear"`` (λ·mean S).
        score_init: initial scores: a constant or ``"magnitude"`` (|W|).
            Default: 0 for hard (constant, as Sanh et al.; leave a warm-up
            so the scores learn before the first pruning), ``τ + 1`` for
            soft (every weight kept at first).
        mode: how :meth:`finalize` stores the masks: ``"reparam"`` or ``"inplace"``.
    """

    def __init__(
        self,
        method: str = "hard",
        *,
        final_sparsity: float = 0.9,
        initial_sparsity: float = 0.0,
        warmup_steps: int = 0,
        pruning_steps: int = 1000,
        frequency: int = 1,
        scope: str = "local",
        threshold: float = 0.0,
        penalty: float = 0.0,
        penalty_kind: str = "sigmoid",
        score_init: float | str | None = None,
        mode: str = "reparam",
    ) -> None:
        if score_init is None:
            score_init = float(threshold) + 1.0 if method == "soft" and isinstance(threshold, numbers.Real) else 0.0
        super().__init__(score_init=score_init, mode=mode, freeze=False)
        self.method = check_choice("method", method, MOVEMENT_METHODS)
        self.scope = check_choice("scope", scope, ("local", "global"))
        self.schedule = AGP(
            final=final_sparsity, initial=initial_sparsity, start=warmup_steps, end=warmup_steps + pruning_steps,
            frequency=frequency, unit="step",
        )
        if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
            raise InvalidParameterError("threshold", "a number (the score threshold τ)", threshold)
        self.threshold = float(threshold)
        self.penalty_weight = _nonnegative("penalty", penalty)
        self.penalty_kind = check_choice("penalty_kind", penalty_kind, PENALTIES)
        if self.method == "soft" and self.scope != "local":
            raise InvalidParameterError("scope", "'local' for soft movement (one threshold for all)", scope)
        self.rule = "threshold" if self.method == "soft" else ("topk" if self.scope == "local" else "fixed")
        self.sparsity = 0.0
        self.t = 0

    def _make(self, target: Target, scores: torch.Tensor) -> ScoredWeight:
        return ScoredWeight(scores, self.rule, threshold=self.threshold)

    def wrap(self, model: torch.nn.Module, **selection: Any) -> torch.nn.Module:
        """Add scores to the targets of ``model`` (see :meth:`ScoreWrapper.wrap`) and apply step 0."""
        out = super().wrap(model, **selection)
        self.step(0)
        return out

    # -- schedule ------------------------------------------------------------
    def sparsity_at(self, t: int) -> float:
        """Hard movement's sparsity at step ``t``: ``s_i`` in the warm-up, the
        cubic schedule after (constant between events), ``s_f`` in the cool-down."""
        if t < self.schedule.start:
            return self.schedule.initial
        return self.schedule.current(t)

    @torch.no_grad()
    def step(self, t: int) -> float:
        """Set the masks for training step ``t`` (call before its forward pass).

        Hard: every layer (local) or all together (global) keeps exactly
        ``n − round(s_t·n)`` entries. Soft: nothing to do (the threshold is
        applied at every forward). Returns the scheduled sparsity (hard) or
        the current density's complement (soft).
        """
        self._check_wrapped()
        if isinstance(t, bool) or not isinstance(t, numbers.Integral) or t < 0:
            raise InvalidParameterError("t", "a non-negative int (the training step)", t)
        self.t = int(t)
        if self.method == "soft":
            self.sparsity = 1.0 - self.density()
            return self.sparsity
        self.sparsity = self.sparsity_at(self.t)
        if self.scope == "local":
            for w in self.wrapped:
                n = w.scored.scores.numel()
                w.scored.keep = n - round(self.sparsity * n)
        else:
            # the scores are trained, so they fit in memory together; one top-k over all of them
            device = self.wrapped[0].scored.scores.device
            flat = torch.cat([w.scored.scores.detach().reshape(-1).float().to(device) for w in self.wrapped])
            keep = topk_mask(flat, flat.numel() - round(self.sparsity * flat.numel()))
            for w, part in zip(self.wrapped, keep.split([w.scored.mask.numel() for w in self.wrapped])):
                w.scored.mask.copy_(part.reshape(w.scored.mask.shape))
        return self.sparsity

    def on_progress(self, progress: Any) -> None:
        """A :func:`prunekit.fit` ``progress`` callback: steps to ``progress.done``
        (the steps taken: the index of the next training step)."""
        self.step(int(progress.done))

    # -- penalty -------------------------------------------------------------
    def penalty(self) -> torch.Tensor:
        """The soft-movement regulariser ``λ·mean σ(S)`` or ``λ·mean S`` (0 for hard)."""
        self._check_wrapped()
        scores = [w.scored.scores for w in self.wrapped]
        if self.method == "hard" or self.penalty_weight == 0.0:
            return scores[0].new_zeros(())
        total = sum(s.numel() for s in scores)
        if self.penalty_kind == "sigmoid":
            value = sum(torch.sigmoid(s).sum() for s in scores)
        else:
            value = sum(s.sum() for s in scores)
        return self.penalty_weight * value / total

    def loss(self, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Callable[
        [torch.Tensor, torch.Tensor], torch.Tensor
    ]:
        """``loss_fn`` plus :meth:`penalty`, for :func:`prunekit.fit`'s ``loss_fn``."""

        def with_penalty(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            return loss_fn(logits, targets) + self.penalty()

        return with_penalty

    def finalize(self, apply: bool = True) -> dict[str, torch.Tensor]:
        """Turn the current masks (top-k at the current step's sparsity, or
        ``S > τ``) into prunekit masks; see :meth:`ScoreWrapper.finalize`."""
        if self.method == "hard" and self.wrapped and self.sparsity < self.schedule.final:
            logger.info("movement pruning finalized at step %d with sparsity %.4f, before the final %.4f",
                        self.t, self.sparsity, self.schedule.final)
        return super().finalize(apply)

    def __repr__(self) -> str:
        return (f"MovementPruning(method={self.method!r}, scope={self.scope!r}, "
                f"final={self.schedule.final}, sparsity now={self.sparsity:.4f})")
