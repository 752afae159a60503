"""Reference models, registered by name (data readers join them later)."""

from .registry import MODELS, create_model, list_models
from . import lenet  # noqa: F401  (registers the models)

__all__ = ["MODELS", "create_model", "list_models"]
