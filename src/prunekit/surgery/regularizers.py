"""Sparsity regularisers to train with before structural pruning.

Network slimming (Liu, Li, Shen, Huang, Yan & Zhang 2017, "Learning Efficient
Convolutional Networks through Network Slimming", ICCV) adds an L1 penalty on
the BatchNorm scaling factors to the training loss,

    L = L_task + λ · Σ_{BN layers} Σ_c |γ_c|        (eq. 1; λ = 1e-4 … 1e-5 in the paper),

so that unimportant channels get γ near zero and are pruned by
``criterion="slimming"`` (:class:`prunekit.scores.groups.BNScaling`).

* :func:`bn_l1_penalty` gives ``λ·Σ|γ|`` to add to a loss in your own loop;
* :func:`slimming_loss` wraps a ``loss_fn(logits, targets)`` so that
  :func:`prunekit.fit` trains with the penalty: ``fit(model, loader, loss_fn=slimming_loss(model, 1e-4))``.
"""

from __future__ import annotations

import numbers

import torch
from torch import nn

from ..losses import LossFn, classification_loss
from ..errors import InvalidParameterError

__all__ = ["bn_l1_penalty", "slimming_loss", "bn_layers"]



def bn_layers(model: nn.Module) -> list[nn.modules.batchnorm._NormBase]:
    """The model's BatchNorm layers that have a learnable scale ``γ`` (``affine=True``)."""
    return [m for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._NormBase) and m.weight is not None]


def _check_lambda(lam: float) -> float:
    if isinstance(lam, bool) or not isinstance(lam, numbers.Real) or not lam >= 0:
        raise InvalidParameterError("lam", "a non-negative float (1e-5 to 1e-4 in Liu et al. 2017)", lam,
                                    "Fix: e.g. lam=1e-4.")
    return float(lam)


def bn_l1_penalty(model: nn.Module, lam: float = 1e-4) -> torch.Tensor:
    """``λ · Σ_{BN layers} Σ_c |γ_c|`` (Liu et al. 2017, eq. 1), differentiable (its
    subgradient ``λ·sign(γ)`` is the paper's update). Zero when the model has no BatchNorm."""
    lam = _check_lambda(lam)
    layers = bn_layers(model)
    if not layers:
        return torch.zeros((), device=next((p.device for p in model.parameters()), None))
    return lam * sum(m.weight.abs().sum() for m in layers)


def slimming_loss(model: nn.Module, lam: float = 1e-4, base: LossFn = classification_loss) -> LossFn:
    """A ``loss_fn(logits, targets)`` for :func:`prunekit.fit`: ``base(logits, targets) +
    bn_l1_penalty(model, lam)``."""
    lam = _check_lambda(lam)

    def loss_fn(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return base(logits, targets) + bn_l1_penalty(model, lam).to(logits.device)

    return loss_fn
