"""Callbacks for training frameworks; each is imported only when asked for.

* :class:`prunekit.integrations.lightning.PrunekitPruning`: a Lightning
  callback, a drop-in for ``lightning.pytorch.callbacks.ModelPruning`` with
  prunekit's criteria, structures and schedules (needs ``pip install lightning``).
* :class:`prunekit.integrations.huggingface.PrunekitTrainerCallback`: a
  ``transformers.TrainerCallback`` (needs ``pip install transformers``).

``import prunekit`` and ``import prunekit.integrations`` need neither
framework; ``from prunekit.integrations import PrunekitPruning`` imports
Lightning then.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["PrunekitPruning", "PrunekitTrainerCallback", "PruningMisconfiguration"]

_WHERE = {"PrunekitPruning": "lightning", "PrunekitTrainerCallback": "huggingface",
          "PruningMisconfiguration": "lightning"}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
