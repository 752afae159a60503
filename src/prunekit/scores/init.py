"""Pruning-at-initialisation criteria: SNIP, GraSP and SynFlow.

All three score the weights of an (untrained) network from one or a few
gradient computations and leave the model as it was: weights, buffers (BN
running statistics) and every module's train/eval mode are restored, and no
``.grad`` is written (gradients are taken with :func:`torch.autograd.grad`).

Scores follow prunekit's convention, **higher = keep**:

* ``snip`` (Lee et al. 2019, "SNIP: Single-shot Network Pruning based on
  Connection Sensitivity"): ``|∂L/∂c|`` at ``c = 1`` for a mask ``c`` that
  multiplies the weights, which is ``|g ⊙ w|`` with ``g = ∂L/∂w`` of the mean
  loss over the batches given.
* ``grasp`` (Wang et al. 2020, "Picking Winning Tickets Before Training by
  Preserving Gradient Flow"): the paper scores ``S(−θ) = −θ ⊙ Hg`` (``H`` the
  Hessian of the loss, ``g`` its gradient, both with the logits divided by a
  temperature ``T``, 200 in the paper) and removes the *highest* ``S``.
  prunekit's score is therefore ``θ ⊙ Hg = −S``: keeping the highest
  ``θ ⊙ Hg`` is removing the highest ``−θ ⊙ Hg``. ``Hg`` comes from double
  back-propagation: ``Hg = ∂(g · stop(g))/∂θ``.
* ``synflow`` (Tanaka et al. 2020, "Pruning neural networks without any data
  by iteratively conserving synaptic flow"): data-free. Every parameter and
  floating buffer is replaced by its absolute value (sign linearisation) in
  float64, the network runs in eval mode on an all-ones input of the data's
  shape (batch of one), ``R = Σ outputs`` and the score is
  ``|θ ⊙ ∂R/∂θ|``. The model's own tensors are never modified: the forward
  pass runs on float64 copies through :func:`torch.func.functional_call`.

With masks in place (iterative pruning) every score is of the masked network:
the gradient taken with respect to ``weight_orig`` is the mask times the
gradient with respect to the effective weight, so pruned entries score 0
(and the allocation keeps them pruned anyway).

Data criteria take ``data=`` in :meth:`Criterion.prepare` (``Pruner.step(s,
data=...)``): one ``(inputs, targets)`` batch or a sequence of them, and an
optional ``loss_fn(logits, targets)`` (mean cross-entropy by default).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..errors import InvalidParameterError
from ..targets import Target, check_materialised
from .base import Criterion, context_with_data
from .gradients import (
    as_batches,
    check_input_shape,
    check_positive,
    hessian_gradient_product,
    input_shape_of,
    loss_gradients,
    synaptic_flow,
)
from .registry import MASK_SPACES, SCORES

__all__ = ["SNIP", "GraSP", "SynFlow"]


# -- the criteria -------------------------------------------------------------------------------


class _CachedScores(Criterion):
    """Scores computed for all targets in :meth:`prepare`, looked up by name."""

    def __init__(self) -> None:
        self._scores: dict[str, torch.Tensor] = {}

    def score(self, target: Target) -> torch.Tensor:
        if target.name not in self._scores:
            raise InvalidParameterError(
                "target", f"one of the targets {self.name} was prepared for", target.name,
                "Fix: call prepare(model, targets, ...) with this target first (Pruner.step does).",
            )
        return self._scores[target.name]


class SNIP(_CachedScores):
    """SNIP connection sensitivity ``|g ⊙ w|``, ``g`` the loss gradient on data (Lee et al. 2019).

    ``g`` is the gradient of the mean loss over the batches in ``data``; the
    score equals ``|∂L/∂c|`` at ``c = 1`` for a mask ``c`` multiplying the weights.
    """

    name = "snip"
    needs = "gradients"
    requires = ("data",)
    nonnegative = True

    def prepare(self, model: nn.Module, targets: Sequence[Target], **context: Any) -> None:
        check_materialised(targets)
        context = context_with_data(context)
        batches = as_batches(context.get("data"))
        grads = loss_gradients(model, [t.original for t in targets], batches, context.get("loss_fn"))
        self._scores = {t.name: (g * t.effective()).abs() for t, g in zip(targets, grads)}


class GraSP(_CachedScores):
    """GraSP gradient-flow preservation ``θ ⊙ Hg`` on data (Wang et al. 2020).

    The paper's ``S = −θ ⊙ Hg`` negated (see the module doc), with the logits
    divided by ``temperature`` (200 in the paper) in both gradients.
    """

    name = "grasp"
    needs = "gradients"
    requires = ("data",)

    def __init__(self, temperature: float = 200.0) -> None:
        super().__init__()
        self.temperature = check_positive("temperature", temperature)

    def prepare(self, model: nn.Module, targets: Sequence[Target], **context: Any) -> None:
        check_materialised(targets)
        context = context_with_data(context)
        batches = as_batches(context.get("data"))
        _, hg = hessian_gradient_product(
            model, [t.original for t in targets], batches, context.get("loss_fn"), temperature=self.temperature
        )
        self._scores = {t.name: t.effective() * h for t, h in zip(targets, hg)}

    def __repr__(self) -> str:
        return f"GraSP(temperature={self.temperature:g})"


class SynFlow(_CachedScores):
    """SynFlow synaptic saliency ``|θ ⊙ ∂R/∂θ|``, data-free (Tanaka et al. 2020).

    ``R`` is the summed output of the sign-linearised float64 network on an
    all-ones input. ``input_shape`` (one input, no batch dimension) comes from
    the constructor, from ``prepare(..., input_shape=...)`` or from the first
    batch of ``data``.
    """

    name = "synflow"
    needs = "gradients"
    nonnegative = True

    def __init__(self, input_shape: Sequence[int] | None = None) -> None:
        super().__init__()
        self.input_shape = None if input_shape is None else check_input_shape(input_shape)
        self.flow: float | None = None

    def prepare(self, model: nn.Module, targets: Sequence[Target], **context: Any) -> None:
        check_materialised(targets)
        context = context_with_data(context)
        shape = context.get("input_shape") or self.input_shape
        if shape is None:
            if context.get("data") is None:
                raise InvalidParameterError(
                    "input_shape", "the shape of one input, e.g. (3, 32, 32)", None,
                    "Fix: SynFlow needs no data but the input's shape: pass input_shape=...",
                )
            shape = input_shape_of(context["data"])
        flow, scores = synaptic_flow(model, shape, [t.original for t in targets])
        self.flow = float(flow)
        self._scores = {t.name: s for t, s in zip(targets, scores)}

    def __repr__(self) -> str:
        return f"SynFlow(input_shape={self.input_shape})"


SCORES.register("snip", SNIP, unit_spaces=MASK_SPACES, needs=SNIP.needs)
SCORES.register("grasp", GraSP, unit_spaces=MASK_SPACES, needs=GraSP.needs)
SCORES.register("synflow", SynFlow, unit_spaces=MASK_SPACES, needs=SynFlow.needs)
