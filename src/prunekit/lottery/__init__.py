"""Lottery tickets: iterative magnitude pruning in levels, rewinding, controls, instability.

* :class:`LotteryConfig`: the run's hyperparameters (OpenLTH style);
* :class:`LotteryRun` / :func:`run_lottery`: IMP levels in a resumable run directory;
* :mod:`.rewind`: reset to θ₀, rewind to θ_k, LR rewinding, fine-tuning;
* :mod:`.controls`: random re-initialisation and layer-wise mask shuffling;
* :func:`instability_analysis`: linear mode connectivity (Frankle et al. 2020).
"""

from .config import CONTROLS, RESETS, LotteryConfig
from .controls import reinit_weights, shuffle_masks
from .instability import InstabilityResult, instability_analysis, linear_path_errors
from .levels import LotteryRun, run_lottery

__all__ = [
    "CONTROLS",
    "RESETS",
    "InstabilityResult",
    "LotteryConfig",
    "LotteryRun",
    "instability_analysis",
    "linear_path_errors",
    "reinit_weights",
    "run_lottery",
    "shuffle_masks",
]
