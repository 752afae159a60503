"""Scores from calibration statistics: the protocol of one-shot pruning, and Wanda.

One-shot pruning (:func:`prunekit.oneshot_prune`) runs a model block by block
on calibration data and prunes each linear layer from statistics of its
inputs ``X`` (``in_features × n`` over the ``n`` calibration tokens). A score
used there is a :class:`LayerScore`:

``needs``
    which statistics the one-shot engine gathers into :class:`InputStats`:
    ``"nothing"`` (none; ``stats`` is None), ``"activations"`` (the squared
    input norms, :meth:`InputStats.norms`) or ``"hessian"`` (``X Xᵀ``,
    :meth:`InputStats.hessian`).
``compare``
    the group within which unstructured sparsity is applied: ``"matrix"``
    (one threshold per weight) or ``"row"`` (every output row pruned to the
    sparsity, as Wanda does). N:M always compares within each group of ``M``
    inputs of a row.
``score_layer(weight, stats) -> tensor``
    the importance of each entry of the ``(out, in)`` float32 weight (same
    shape, higher = keep).
``updates_weights`` and ``prune_layer(weight, stats, sparsity, nm, name=...)``
    for scores whose method also changes the kept weights (SparseGPT): returns
    ``(new_weight, keep)`` and the engine writes both.

Registered names (element and N:M unit spaces): ``magnitude`` (``|W_ij|``, the
element :class:`~prunekit.scores.magnitude.Magnitude` criterion also scores
layers), ``wanda`` (here) and ``sparsegpt`` (:mod:`prunekit.oneshot.sparsegpt`).
"""

from __future__ import annotations

import torch

from ..errors import InvalidParameterError
from ..structures import NM
from .registry import SCORES

__all__ = ["COMPARE", "InputStats", "LayerScore", "Wanda", "wanda_scores"]

#: Where unstructured sparsity is applied for a layer score.
COMPARE = ("matrix", "row")


class InputStats:
    """Running sums over the inputs ``X`` of one linear layer (``n`` real tokens seen):

    * ``sq[j] = Σ_t X_jt²``, so ``‖X_j‖₂ = sqrt(sq[j])`` (Wanda, OWL);
    * ``H = (2 / n) · X Xᵀ`` accumulated in float32 (SparseGPT's Hessian of the
      layer-wise squared error; the 1/n scale leaves its results unchanged, the
      dampening being relative to the mean diagonal).

    Padding is not calibration data: :meth:`add` takes the real positions of
    the batch (``keep``, True where the attention mask is 1) and sums only
    those, so ``n`` counts real tokens and a padded batch gives the statistics
    of its sentences unpadded.
    """

    def __init__(self, in_features: int, norms: bool, hessian: bool, device: torch.device) -> None:
        self.tokens = 0
        self.sq = torch.zeros(in_features, dtype=torch.float32, device=device) if norms else None
        self.xx = torch.zeros(in_features, in_features, dtype=torch.float32, device=device) if hessian else None

    @torch.no_grad()
    def add(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> None:
        """Sum the rows of ``x`` (``(..., in_features)``); with ``keep`` (bool, ``x.shape[:-1]``, or its
        flattened length for a layer fed ``(batch·tokens, in)``) only the rows where it is True."""
        flat = x.reshape(-1, x.shape[-1])
        if keep is not None:
            if tuple(x.shape[:-1]) != tuple(keep.shape) and not (x.dim() == 2 and x.shape[0] == keep.numel()):
                raise InvalidParameterError(
                    "data", f"inputs whose positions match the attention mask {tuple(keep.shape)}",
                    f"a layer input of shape {tuple(x.shape)}",
                    "Fix: calibrate this model on unpadded batches (equal-length rows without an attention_mask).",
                )
            flat = flat[keep.reshape(-1).to(device=flat.device, dtype=torch.bool)]
        flat = flat.float()
        self.tokens += flat.shape[0]
        if self.sq is not None:
            self.sq += flat.square().sum(0)
        if self.xx is not None:
            self.xx.addmm_(flat.t(), flat)

    def norms(self) -> torch.Tensor:
        """``‖X_j‖₂`` over every token seen."""
        if self.sq is None:
            raise RuntimeError("input norms were not collected")
        return self.sq.sqrt()

    def hessian(self) -> torch.Tensor:
        """``H = (2 / n) X Xᵀ`` (float32)."""
        if self.xx is None:
            raise RuntimeError("the Hessian was not collected")
        return self.xx * (2.0 / max(self.tokens, 1))

    def take_hessian(self) -> torch.Tensor:
        """``H`` made in place from the running sum, which is handed over (this object drops it)."""
        if self.xx is None:
            raise RuntimeError("the Hessian was not collected")
        h, self.xx = self.xx.mul_(2.0 / max(self.tokens, 1)), None
        return h

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * 4 for t in (self.sq, self.xx) if t is not None)


class LayerScore:
    """Score protocol for one-shot pruning of a linear layer from calibration statistics
    (see the module docstring)."""

    name: str = "layer_score"
    needs: str = "nothing"
    compare: str = "matrix"
    updates_weights: bool = False

    def score_layer(self, weight: torch.Tensor, stats: InputStats | None) -> torch.Tensor:
        """Importance of each entry of the ``(out, in)`` weight (same shape; higher = keep)."""
        raise NotImplementedError

    def prune_layer(
        self, weight: torch.Tensor, stats: InputStats | None, sparsity: float, nm: NM | None, *, name: str = ""
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(new_weight, keep)`` of a score that updates the kept weights (``updates_weights``)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def wanda_scores(weight: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
    """``|W| · ‖X_j‖₂`` for an ``(out, in)`` weight and the ``(in,)`` input norms."""
    return weight.detach().float().abs() * norms.to(weight.device).float().unsqueeze(0)


class Wanda(LayerScore):
    """Wanda ``|W_ij|·‖X_j‖₂``, weights times input norms, compared per output row (Sun et al. 2023).

    Sun, Liu, Bair & Kolter 2023, "A Simple and Effective Pruning Approach for
    Large Language Models" (arXiv:2306.11695): ``‖X_j‖₂`` is the norm of input
    feature ``j`` over all calibration tokens; every output row is pruned to
    the sparsity (or N:M within each row); the kept weights are not updated.
    The mask does not change when an input channel is scaled by ``c`` and its
    weights by ``1/c``.
    """

    name = "wanda"
    needs = "activations"
    compare = "row"

    def score_layer(self, weight: torch.Tensor, stats: InputStats | None) -> torch.Tensor:
        if stats is None:
            raise RuntimeError("wanda needs the input norms of the layer")
        return wanda_scores(weight, stats.norms())


SCORES.register("wanda", Wanda, unit_spaces=("element", "nm"), needs=Wanda.needs)
