"""The progress protocol: one event type for every long call (stage, done, total, current figures).

Placeholder holding only :class:`ProgressEvent`, so that the command line can be
written against the agreed interface; the full module (``progress_reporter``,
the ``progress=`` argument types) replaces it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["ProgressEvent"]


@dataclass(frozen=True)
class ProgressEvent:
    stage: str                      # "fit", "sensitivity", "lottery", "oneshot", "search", "sparse-timing", ...
    done: int                       # units finished in this stage (monotone, ends at total)
    total: int | None               # units in this stage (None when unknown)
    figures: Mapping[str, float]    # current figures, e.g. {"loss": 0.31, "accuracy": 0.97, "sparsity": 0.5}
    detail: str = ""                # what is being worked on: a layer name, "level 3", "block 7"
    parent: str | None = None       # enclosing stage for nested work (a lottery level's fit epochs)
