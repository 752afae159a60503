"""The model registry: ``create_model(name, **kwargs)`` and ``list_models(pattern)``."""

from __future__ import annotations

from typing import Any

from torch import nn

from ..registry import Registry

__all__ = ["MODELS", "create_model", "list_models"]

MODELS: Registry[nn.Module] = Registry("model")


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model, e.g. ``create_model("tutorial_lenet")``."""
    return MODELS.create(name, **kwargs)


def list_models(pattern: str = "*") -> list[str]:
    """Names of registered models matching the wildcard ``pattern``."""
    return MODELS.names(pattern)
