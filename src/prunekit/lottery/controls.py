"""Controls for a winning ticket (Frankle & Carbin 2019, section 2; Frankle et al. 2021,
"Pruning Neural Networks at Initialization: Why are We Missing the Mark?").

* random re-initialisation: the ticket's mask on a fresh random init drawn
  from the model's own initialiser with another seed;
* layer-wise shuffling: each layer's mask permuted uniformly at random, so
  every layer keeps exactly its number of weights (the same per-layer
  sparsity) at other positions, on the ticket's reset weights.

A ticket that beats both depends on its exact weights and positions, not
only on its per-layer sparsity.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

__all__ = ["reinit_weights", "shuffle_masks"]


def reinit_weights(model_fn: Callable[[], nn.Module], seed: int) -> dict[str, torch.Tensor]:
    """A fresh dense state from ``model_fn()`` under ``torch.manual_seed(seed)``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_fn()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def shuffle_masks(masks: Mapping[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """Each mask's entries permuted at random (``randperm`` seeded by ``seed``, layers in order)."""
    generator = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for name, mask in masks.items():
        flat = mask.reshape(-1)
        out[name] = flat[torch.randperm(flat.numel(), generator=generator)].reshape(mask.shape).clone()
    return out
