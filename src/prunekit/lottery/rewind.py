"""Reset strategies: where the survivors of a pruning level start, and which iterations they train.

With T the training length, k the rewind iteration, θ₀ the initial weights,
θ_k the weights after k iterations of dense training, and θ_{L-1} the trained
weights of the previous level, level L >= 1 trains mask m_L from

* ``lottery`` (Frankle & Carbin 2019): m_L ⊙ θ₀, iterations 0..T;
* ``rewind`` (weight rewinding; Frankle et al. 2019/2020, "Stabilizing the
  Lottery Ticket Hypothesis", "Linear Mode Connectivity…"): m_L ⊙ θ_k,
  iterations k..T with the learning rate of those iterations;
* ``lr_rewind`` (learning-rate rewinding; Renda, Frankle & Carbin 2020,
  "Comparing Rewinding and Fine-tuning in Neural Network Pruning"):
  m_L ⊙ θ_{L-1}, iterations k..T, the LR schedule replayed from k;
* ``finetune``: m_L ⊙ θ_{L-1}, ``finetune_steps`` iterations (default T - k)
  at the final learning rate (the LR of iteration T - 1).

Level 0 always trains the dense θ₀ over 0..T and records θ_k.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from .config import LotteryConfig
from .loop import Segment, derive_seed, lr_at

__all__ = ["segment_for", "start_weights"]


def start_weights(
    config: LotteryConfig,
    init: Mapping[str, torch.Tensor],
    rewind: Mapping[str, torch.Tensor] | None,
    previous: Mapping[str, torch.Tensor] | None,
) -> Mapping[str, torch.Tensor]:
    """The dense state the survivors of a level >= 1 are reset to (the mask is applied after)."""
    if config.reset == "lottery":
        return init
    if config.reset == "rewind":
        if rewind is None:
            raise RuntimeError("weight rewinding needs θ_k, which level 0 records; run level 0 first")
        return rewind
    if previous is None:
        raise RuntimeError(f"reset {config.reset!r} needs the previous level's trained weights")
    return previous


def segment_for(config: LotteryConfig, level: int, *, control: str | None = None) -> Segment:
    """The iterations, LR rule and seeds of ``level`` (and of ``control`` beside it).

    A control shares its level's data order, so the only difference from the
    ticket is its initialisation or mask.
    """
    data_seed = derive_seed(config.seed, "level", level, "data")
    init_seed = derive_seed(config.seed, "level", level, "train", control or "ticket")
    T, k = config.train_steps, config.rewind_step
    if level == 0 or config.reset == "lottery":
        return Segment(0, T, data_seed, init_seed)
    if config.reset in ("rewind", "lr_rewind"):
        return Segment(k, T, data_seed, init_seed)
    steps = config.finetune_steps if config.finetune_steps is not None else T - k
    return Segment(0, steps, data_seed, init_seed, constant_lr=lr_at(config, T - 1))
