"""Save a shrunk Hugging Face model as a folder and say who can load it (:func:`save_pretrained`).

After head or neuron surgery (:mod:`prunekit.surgery.heads`) the model's config
holds the new counts where the family's config can express them
(:mod:`prunekit.surgery.hf`). transformers 5 configs hold one head count and one
MLP width for all layers, so a model with the same count in every layer
(``uniform=True``) of LLaMA (also with grouped-query attention), ViT and DeiT, and
every family's MLP width, loads with stock ``AutoModel*.from_pretrained``. BERT,
DistilBERT and GPT-2 compute the head size as hidden size / head count and have
no ``head_dim`` field, so fewer heads cannot be written to their configs: those
folders need :func:`prunekit.surgery.load_pretrained`.

:func:`save_pretrained` writes the folder with ``model.save_pretrained``, then
checks it the way stock transformers would read it: the saved config builds the
model's class (on the meta device, no memory) and every parameter and buffer
must have the same name and shape as the model's; a model whose config does
not describe its shapes (channels removed by ``structural_prune``) is refused
before anything is written. Where the config holds prunekit's per-layer head
counts (heads of BERT, DistilBERT, GPT-2; counts that differ between layers),
the return value says so, a warning is logged, and a note (:data:`NOTE`) is
written into the folder.
"""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import InvalidParameterError
from .hf import HEADS_FIELD, per_layer_counts

__all__ = ["NOTE", "SavedPretrained", "save_pretrained", "stock_mismatches"]

logger = logging.getLogger(__name__)

#: the file written into a folder that stock transformers cannot load
NOTE = "LOAD_WITH_PRUNEKIT.txt"
STOCK = "transformers"
PRUNEKIT = "prunekit.surgery.load_pretrained"


@dataclass(frozen=True)
class SavedPretrained:
    """Where a model was saved and what loads it.

    ``stock`` is True when stock ``from_pretrained`` of the model's class (and the
    matching ``AutoModel*``) builds a model of the same shapes from the folder;
    ``load_with`` is ``"transformers"`` then, else ``"prunekit.surgery.load_pretrained"``,
    with ``reason`` saying why.
    """

    path: str
    stock: bool
    load_with: str
    reason: str | None = None


def stock_mismatches(model: nn.Module, config: Any) -> list[str]:
    """Names of parameters/buffers whose shape (or presence) differs between ``model`` and a
    fresh ``type(model)(config)`` built on the meta device (what stock loading builds)."""
    with torch.device("meta"):
        fresh = type(model)(config)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    stock = {k: tuple(v.shape) for k, v in fresh.state_dict().items()}
    out = [f"{k}: {ours[k]} here, {stock[k]} in stock" for k in ours if k in stock and ours[k] != stock[k]]
    out += [f"{k}: missing in stock" for k in ours if k not in stock]
    out += [f"{k}: unexpected in stock" for k in stock if k not in ours]
    return out


def _reason(config: Any) -> str | None:
    fields = per_layer_counts(config)
    if not fields:
        return None
    parts = []
    for field, counts in fields.items():
        if field == HEADS_FIELD and len(set(counts)) == 1:
            parts.append(f"{config.model_type} computes the head size as hidden size / heads and its config has no "
                         f"head_dim, so the head counts ({counts}) are in config.{field}")
        else:
            parts.append(f"the counts differ between layers ({counts} in config.{field}) and the config holds "
                         "one value for all layers")
    return "; ".join(parts) + "; only prunekit reads these fields"


def _check_described(model: nn.Module) -> None:
    """Refuse (before writing) a model whose config, even read by prunekit, does not give its shapes."""
    config = copy.deepcopy(model.config)
    if per_layer_counts(config):
        return  # load_pretrained rebuilds those layers; stock_mismatches would list them
    bad = stock_mismatches(model, config)
    if bad:
        raise InvalidParameterError(
            "model", "a model whose config describes its shapes (heads and MLP neurons removed with prune_heads / "
            "prune_mlp_neurons, which update the config)",
            "<" + "; ".join(bad[:3]) + (" ..." if len(bad) > 3 else "") + ">",
            "Fix: prunekit.surgery.save_shrunk(model, 'model.safetensors') and load_shrunk(fresh_model, ...), "
            "which replay the removal history (channels removed by structural_prune are not in the config).")


def save_pretrained(model: nn.Module, path: str | os.PathLike[str], **kwargs: Any) -> SavedPretrained:
    """``model.save_pretrained(path, **kwargs)``, then say whether stock transformers loads the folder.

    Returns a :class:`SavedPretrained`. When stock ``AutoModel*.from_pretrained`` loads it,
    ``stock`` is True (checked before writing: the config builds the model's class with the same
    parameter names and shapes; a model whose config does not describe its shapes is refused with
    :class:`~prunekit.errors.InvalidParameterError` and nothing is written). Where heads were
    removed from BERT, DistilBERT or GPT-2, whose configs cannot hold fewer heads (uniform or
    per layer), or counts differ between layers, a warning is logged, :data:`NOTE` is written into the folder, and the result
    names :func:`prunekit.surgery.load_pretrained` in ``load_with``. For a folder that stock
    transformers loads, prune with ``uniform=True`` (LLaMA, ViT and DeiT heads; every family's
    MLP neurons).
    """
    save = getattr(model, "save_pretrained", None)
    if not callable(save) or getattr(model, "config", None) is None:
        raise InvalidParameterError(
            "model", "a Hugging Face PreTrainedModel (with save_pretrained and a config)", f"<{type(model).__name__}>",
            "Fix: for other models use prunekit.surgery.save_shrunk(model, 'model.safetensors').")
    _check_described(model)
    path = os.fspath(path)
    save(path, **kwargs)
    reason = _reason(type(model.config).from_pretrained(path))
    note = os.path.join(path, NOTE)
    if reason is None:
        if os.path.exists(note):
            os.remove(note)
        logger.info("%s: stock transformers from_pretrained loads it", path)
        return SavedPretrained(path, True, STOCK)
    with open(note, "w", encoding="utf-8") as handle:
        handle.write(f"Stock transformers cannot load this folder: {reason}.\n"
                     f"Load it with prunekit:\n\n    import prunekit, transformers\n"
                     f"    model = prunekit.surgery.load_pretrained(transformers.{type(model).__name__}, {path!r})\n")
    logger.warning("%s: stock transformers from_pretrained cannot load this folder (%s); load it with "
                   "prunekit.surgery.load_pretrained (see %s)", path, reason, NOTE)
    return SavedPretrained(path, False, PRUNEKIT, reason)
