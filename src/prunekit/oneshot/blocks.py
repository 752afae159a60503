"""Finding the transformer blocks of a causal LM or an encoder, and the linear layers inside one.

Known layouts (first match wins), on the model itself and then under its
Hugging Face ``base_model_prefix`` (``bert.encoder.layer`` of a
``BertForSequenceClassification``):

* LLaMA family, Mistral, Qwen2 …: ``model.model.layers``
* OPT: ``model.model.decoder.layers``
* GPT-2: ``model.transformer.h`` (its projections are ``Conv1D``, weight ``(in, out)``)
* BERT, RoBERTa … encoders: ``model.encoder.layer``
* DistilBERT: ``model.transformer.layer``
* prunekit's zoo GPT (``gpt_tiny``): ``model.blocks``

Any other model: pass ``blocks="dotted.path.to.ModuleList"``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..errors import InvalidParameterError
from ..targets import Target, select_targets

__all__ = ["KNOWN_BLOCK_PATHS", "block_targets", "find_blocks", "set_weight_matrix", "weight_matrix"]

KNOWN_BLOCK_PATHS: tuple[str, ...] = (
    "model.layers",
    "model.decoder.layers",
    "transformer.h",
    "encoder.layer",
    "transformer.layer",
    "blocks",
    "layers",
)

#: Module types pruned inside a block by default: Linear and GPT-2's Conv1D.
LINEAR_TYPES: tuple[type[nn.Module] | str, ...] = (nn.Linear, "Conv1D")


def _get(model: nn.Module, path: str) -> nn.Module | None:
    module: nn.Module | None = model
    for part in path.split("."):
        module = getattr(module, part, None)
        if not isinstance(module, nn.Module):
            return None
    return module


def find_blocks(model: nn.Module, blocks: str | None = None) -> tuple[str, nn.ModuleList]:
    """The dotted path and the ``nn.ModuleList`` of transformer blocks of ``model``.

    Raises:
        InvalidParameterError: when ``blocks`` does not name a ModuleList, or
            none of :data:`KNOWN_BLOCK_PATHS` is one.
    """
    if not isinstance(model, nn.Module):
        raise InvalidParameterError("model", "a torch.nn.Module", type(model).__name__)
    if blocks is not None:
        found = _get(model, blocks) if isinstance(blocks, str) else None
        if not isinstance(found, nn.ModuleList) or len(found) == 0:
            raise InvalidParameterError(
                "blocks", "the dotted path of a non-empty nn.ModuleList of transformer blocks", blocks,
                "Fix: e.g. blocks='model.layers'; the module names are listed by model.named_modules().",
            )
        return blocks, found
    prefix = getattr(model, "base_model_prefix", "") or ""
    prefixed = [f"{prefix}.{path}" for path in KNOWN_BLOCK_PATHS] if isinstance(prefix, str) and prefix else []
    for path in (*KNOWN_BLOCK_PATHS, *prefixed):
        found = _get(model, path)
        if isinstance(found, nn.ModuleList) and len(found) > 0:
            return path, found
    lists = [name for name, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    raise InvalidParameterError(
        "blocks", "a model with its transformer blocks at one of " + ", ".join(KNOWN_BLOCK_PATHS)
        + (f" (or under {prefix!r})" if prefixed else ""),
        f"<{type(model).__name__}>",
        "Fix: pass blocks='<path>'" + (f"; ModuleLists in this model: {', '.join(lists[:8])}" if lists else "") + ".",
    )


def block_targets(
    block: nn.Module,
    include: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
) -> list[Target]:
    """The weights of the Linear / Conv1D layers of one block (names relative to the block)."""
    return select_targets(block, types=LINEAR_TYPES, include=include, exclude=exclude, params="weight")


def weight_matrix(target: Target) -> torch.Tensor:
    """The weight as ``(out_features, in_features)`` (a transposed view for Conv1D)."""
    weight = target.original
    return weight.t() if target.in_dim == 0 else weight


@torch.no_grad()
def set_weight_matrix(target: Target, matrix: torch.Tensor) -> None:
    """Write ``matrix`` (``(out, in)`` layout) into the parameter, in its own layout and dtype."""
    weight_matrix(target).copy_(matrix.to(target.original.dtype))
