"""The model registry: ``create_model(name, **kwargs)``, ``list_models(pattern)``, and
each model's declared input: ``model_input_shape(name)``, ``example_input(name)``.

A zoo model is registered with :func:`register_model`, which also declares the
shape of one input sample (without the batch dim) for the model's default
arguments, and, for a language model, the vocabulary its token ids are drawn
from. Tools that need an example input (tracing, MACs, latency, the command
line's ``--shrink``) read it from here instead of guessing from the layers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import InvalidParameterError
from ..registry import Registry

__all__ = ["MODELS", "ModelInput", "create_model", "example_input", "list_models", "model_input", "model_input_shape",
           "register_model"]

MODELS: Registry[nn.Module] = Registry("model")


@dataclass(frozen=True)
class ModelInput:
    """One input sample of a zoo model: ``shape`` without the batch dim; ``vocab`` the
    number of token ids for a language model (ids in ``[0, vocab)``), None for real-valued inputs."""

    shape: tuple[int, ...]
    vocab: int | None = None


_INPUTS: dict[str, ModelInput] = {}


def register_model(name: str, factory: Callable[..., nn.Module], *, input_shape: tuple[int, ...],
                   vocab: int | None = None) -> Callable[..., nn.Module]:
    """Register ``factory`` under ``name`` with the input it takes with its default arguments:
    ``input_shape`` per sample (no batch dim) and, for token ids, the ``vocab`` size."""
    if not input_shape or not all(isinstance(d, int) and d > 0 for d in input_shape):
        raise InvalidParameterError("input_shape", "a tuple of positive ints without the batch dim", input_shape,
                                    "Fix: e.g. input_shape=(3, 32, 32).")
    if vocab is not None and (isinstance(vocab, bool) or not isinstance(vocab, int) or vocab < 1):
        raise InvalidParameterError("vocab", "a positive int (number of token ids) or None", vocab)
    MODELS.register(name, factory)
    _INPUTS[name.lower()] = ModelInput(tuple(input_shape), vocab)
    return factory


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model, e.g. ``create_model("tutorial_lenet")``."""
    return MODELS.create(name, **kwargs)


def list_models(pattern: str = "*") -> list[str]:
    """Names of registered models matching the wildcard ``pattern``."""
    return MODELS.names(pattern)


def model_input(name: str) -> ModelInput:
    """The declared input of the zoo model ``name`` (for its default arguments)."""
    key = MODELS.resolve(name)
    if key not in _INPUTS:
        raise InvalidParameterError(
            "name", "a model registered with its input shape (prunekit.zoo.register_model)", name,
            "Fix: pass the example input yourself (on the command line: --input-shape N,C,H,W).",
        )
    return _INPUTS[key]


def model_input_shape(name: str) -> tuple[int, ...]:
    """The shape of one input sample of the zoo model ``name``, without the batch dim,
    e.g. ``(1, 28, 28)`` for ``lenet5``, ``(128,)`` token ids for ``gpt_tiny``."""
    return model_input(name).shape


def example_input(name: str, batch_size: int = 1, *, seed: int = 0,
                  shape: tuple[int, ...] | None = None) -> torch.Tensor:
    """A seeded example input of the zoo model ``name``: ``(batch_size, *model_input_shape(name))``
    normal values, or token ids in ``[0, vocab)`` for a language model. ``shape`` (batch first)
    replaces the declared shape; the kind of values stays the model's."""
    if shape is None:
        shape = (batch_size, *model_input_shape(name))
    declared = _INPUTS.get(MODELS.resolve(name)) if name in MODELS else None
    vocab = None if declared is None else declared.vocab
    gen = torch.Generator().manual_seed(seed)
    if vocab is not None:
        return torch.randint(0, vocab, tuple(shape), generator=gen)
    return torch.randn(tuple(shape), generator=gen)
