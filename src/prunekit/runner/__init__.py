"""Run a recipe: the dense reference and every run, trained alike, measured alike, resumable.

See :mod:`prunekit.runner.core` for the stages and the output folder,
:mod:`prunekit.runner.realise` for how a run's stages reach the library
(masks, channel shrinking, heads, neurons, one-shot) and
:mod:`prunekit.runner.measures` for what is measured.
"""

from .core import Runner, StageProgress, run_recipe
from .measures import MEASURE_KEYS
from .report_files import write_report_files

__all__ = ["StageProgress", "Runner", "run_recipe", "write_report_files", "MEASURE_KEYS"]
