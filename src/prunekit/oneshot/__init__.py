"""One-shot pruning of transformers, block by block, from a calibration set.

Wanda (Sun et al. 2023), SparseGPT (Frantar & Alistarh 2023), the magnitude
baseline, OWL layerwise sparsity (Yin et al. 2023), unstructured and N:M, in
bounded memory (one block at a time; the rest on CPU or disk). Entry point:
:func:`oneshot_prune`; a Hugging Face folder larger than memory, streamed
block by block into a new folder: :func:`prune_pretrained`; held-out
perplexity: :func:`lm_perplexity`.
"""

from __future__ import annotations

from .api import OneShotProgress, OneShotResult, oneshot_prune
from .blocks import find_blocks
from .methods import ONESHOT_METHODS, list_oneshot_methods
from .perplexity import lm_perplexity, window_batches
from .pretrained import prune_pretrained
from .semi_structured import to_semi_structured

__all__ = [
    "ONESHOT_METHODS",
    "OneShotProgress",
    "OneShotResult",
    "find_blocks",
    "list_oneshot_methods",
    "lm_perplexity",
    "oneshot_prune",
    "prune_pretrained",
    "to_semi_structured",
    "window_batches",
]
