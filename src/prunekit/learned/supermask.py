"""Supermasks: masks learned on frozen (random) weights.

Zhou, Lan, Liu & Yosinski 2019, "Deconstructing Lottery Tickets: Zeros,
Signs, and the Supermask", section 5: the weights ``W`` stay at their
(random) values; each weight gets a score ``s`` and the network computes with
``W ⊙ m``, ``m ~ Bernoulli(σ(s))`` sampled at every forward pass in training;
``s`` learns through the straight-through estimator,
``∂L/∂s = ∂L/∂W' ⊙ W ⊙ σ'(s)``. The sparsity is not set: it is what the
scores settle on.

``method="topk"`` is the edge-popup variant of Ramanujan, Wortsman,
Kembhavi, Farhadi & Rastegari 2020 ("What's Hidden in a Randomly Weighted
Neural Network?"): keep the top ``1 − sparsity`` of the scores of every
layer, ``∂L/∂s = ∂L/∂W' ⊙ W``.

Evaluation (``model.eval()``) is deterministic: the Bernoulli mask becomes
``σ(s) > 0.5`` (``eval_mask="threshold"``, the mask that is exported) or the
expected mask ``σ(s)`` (``eval_mask="expected"``: the weights scaled by their
keep probability; not a binary mask, so the exported mask differs from it).

Example with prunekit's training loop (only the scores train)::

    sm = Supermask()
    sm.wrap(model)                        # weights and biases frozen
    prunekit.fit(model, loader, epochs=5, optimizer="adam", lr=0.01)
    sm.finalize()                         # prunekit masks: report, save_sparse
"""

from __future__ import annotations

import numbers

import torch

from ..allocation import check_sparsity, units_to_prune
from ..errors import InvalidParameterError, check_choice
from ..targets import Target
from .scores import EVAL_MASKS, ScoredWeight, ScoreWrapper

__all__ = ["SUPERMASK_METHODS", "Supermask"]

SUPERMASK_METHODS = ("bernoulli", "topk")


class Supermask(ScoreWrapper):
    """A learned mask over frozen weights (see the module docstring).

    Args:
        method: ``"bernoulli"`` (Zhou et al. 2019) or ``"topk"`` (edge-popup,
            Ramanujan et al. 2020).
        sparsity: the fraction pruned per tensor, for ``"topk"`` only.
        eval_mask: ``"threshold"`` (σ(s) > 0.5) or ``"expected"`` (σ(s)),
            the Bernoulli mask in eval mode.
        score_init: initial scores: a constant (default 0 for Bernoulli:
            every weight kept with probability ½) or ``"magnitude"``
            (``|W|``, the default for top-k).
        freeze: freeze every other parameter of the model (weights, biases,
            norms) while wrapped, so any optimizer over
            ``model.parameters()`` with ``requires_grad`` trains the scores
            only; :meth:`finalize` unfreezes them.
        mode: how :meth:`finalize` stores the masks: ``"reparam"`` or ``"inplace"``.
        signed_constant: replace every wrapped weight by ``sign(W)·σ``, with
            ``σ`` the standard deviation of that tensor at wrap time (Zhou et
            al.'s "signed constant" initialisation, their best supermasks).
            Off by default: the weights are left as they are.
    """

    def __init__(
        self,
        method: str = "bernoulli",
        *,
        sparsity: float | None = None,
        eval_mask: str = "threshold",
        score_init: float | str | None = None,
        freeze: bool = True,
        mode: str = "reparam",
        signed_constant: bool = False,
    ) -> None:
        self.signed_constant = bool(signed_constant)
        self.method = check_choice("method", method, SUPERMASK_METHODS)
        self.eval_mask = check_choice("eval_mask", eval_mask, EVAL_MASKS)
        if self.method == "topk":
            if sparsity is None:
                raise InvalidParameterError(
                    "sparsity", "a float in [0, 1] for method='topk'", None, "Fix: e.g. Supermask('topk', sparsity=0.5)."
                )
            sparsity = check_sparsity(sparsity)
            if isinstance(sparsity, numbers.Integral):
                raise InvalidParameterError("sparsity", "a float in [0, 1] (fraction of each tensor)", sparsity)
        elif sparsity is not None:
            raise InvalidParameterError(
                "sparsity", "None for method='bernoulli' (the scores set the sparsity)", sparsity,
                "Fix: leave sparsity out, or use method='topk'.",
            )
        self.sparsity = sparsity
        if score_init is None:
            score_init = "magnitude" if self.method == "topk" else 0.0
        super().__init__(score_init=score_init, mode=mode, freeze=freeze)
        self.rule = self.method

    def _make(self, target: Target, scores: torch.Tensor) -> ScoredWeight:
        if self.signed_constant:
            with torch.no_grad():
                weight = target.original
                weight.copy_(weight.sign() * weight.float().std().to(weight.dtype))
        keep = None
        if self.sparsity is not None:
            keep = target.numel - units_to_prune(self.sparsity, target.numel, target.name)
        return ScoredWeight(scores, self.rule, keep=keep, eval_mask=self.eval_mask)

    def expected_density(self) -> float:
        """Mean keep probability σ(s) over the wrapped weights (Bernoulli), or the top-k density."""
        self._check_wrapped()
        if self.method == "topk":
            return self.density()
        total = sum(w.scored.scores.numel() for w in self.wrapped)
        return sum(float(torch.sigmoid(w.scored.scores.detach()).sum()) for w in self.wrapped) / max(total, 1)

    def __repr__(self) -> str:
        return f"Supermask(method={self.method!r}, sparsity={self.sparsity}, eval_mask={self.eval_mask!r})"
