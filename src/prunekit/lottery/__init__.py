"""Lottery tickets: iterative magnitude pruning in levels, rewinding, controls.

* :class:`LotteryConfig`: the run's hyperparameters (OpenLTH style);
* :class:`LotteryRun` / :func:`run_lottery`: IMP levels in a resumable run directory;
* :mod:`.rewind`: reset to θ₀, rewind to θ_k, LR rewinding, fine-tuning;
* :mod:`.controls`: random re-initialisation and layer-wise mask shuffling.

Instability analysis (linear mode connectivity, Frankle et al. 2020) is an
experiment on a run: :mod:`prunekit.analysis.instability`. Its old names here
(``prunekit.lottery.instability_analysis`` ...) still work for one release.
"""

from ..deprecation import moved_names
from .config import CONTROLS, RESETS, LotteryConfig
from .controls import reinit_weights, shuffle_masks
from .levels import LotteryRun, run_lottery

__all__ = [
    "CONTROLS",
    "RESETS",
    "LotteryConfig",
    "LotteryRun",
    "reinit_weights",
    "run_lottery",
    "shuffle_masks",
]

__getattr__ = moved_names(__name__, {
    "InstabilityResult": "prunekit.analysis.instability",
    "instability_analysis": "prunekit.analysis.instability",
    "linear_path_errors": "prunekit.analysis.instability",
})
