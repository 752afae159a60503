"""Load a head-pruned Hugging Face checkpoint (:func:`load_pretrained`).

BERT, DistilBERT and GPT-2 configs cannot express fewer heads in a layer, so
head surgery records the per-layer counts in ``config.prunekit_num_heads``
(:mod:`prunekit.surgery.hf`); :func:`load_pretrained` rebuilds the smaller
model from them and loads the safetensors weights.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from ..coupling.families import hf_family, hf_layers
from ..errors import CheckpointError, InvalidParameterError
from .heads import prune_heads
from .hf import HEADS_FIELD

__all__ = ["load_pretrained"]


def _state_dict_from(path: str) -> dict[str, torch.Tensor]:
    single = os.path.join(path, "model.safetensors")
    if os.path.exists(single):
        return load_file(single)
    index = os.path.join(path, "model.safetensors.index.json")
    if not os.path.exists(index):
        raise CheckpointError(f"{path}: no model.safetensors or model.safetensors.index.json (save with save_pretrained)")
    with open(index, encoding="utf-8") as handle:
        files = sorted(set(json.load(handle)["weight_map"].values()))
    state: dict[str, torch.Tensor] = {}
    for name in files:
        state.update(load_file(os.path.join(path, name)))
    return state


def load_pretrained(model_class: Any, path: str, **kwargs: Any) -> nn.Module:
    """``model_class.from_pretrained(path)`` that also loads head-pruned BERT, DistilBERT and GPT-2.

    A checkpoint without ``config.prunekit_num_heads`` goes to
    ``from_pretrained`` unchanged (with ``kwargs``). Otherwise the model is
    built from its config, each layer shrunk to its recorded head count, and
    the safetensors weights loaded (never unpickled); it is returned in eval
    mode like ``from_pretrained``.
    """
    config = model_class.config_class.from_pretrained(path)
    counts = getattr(config, HEADS_FIELD, None)
    if counts is None:
        return model_class.from_pretrained(path, **kwargs)
    if kwargs:
        raise InvalidParameterError(
            "kwargs", "no extra from_pretrained arguments for a head-pruned checkpoint", sorted(kwargs),
            "Fix: load without them, then move or cast the model.",
        )
    model = model_class(config)
    family = hf_family(model)
    if family is None:
        raise CheckpointError(f"{path}: {HEADS_FIELD} in the config of a {type(model).__name__}, not a supported family")
    layers = hf_layers(model, family)
    if len(counts) != len(layers):
        raise CheckpointError(f"{path}: {HEADS_FIELD} has {len(counts)} entries for {len(layers)} layers")
    plan = {}
    for i, ((name, layer), count) in enumerate(zip(layers, counts)):
        heads = family.attention(name, layer).num_heads
        if count < heads:
            plan[i] = list(range(count, heads))
    prune_heads(model, plan)
    state = _state_dict_from(path)
    missing, unexpected = model.load_state_dict(state, strict=False)
    model.tie_weights()
    loaded = {t.data_ptr() for k, t in model.state_dict().items() if k in state}
    untied = [k for k in missing if model.state_dict()[k].data_ptr() not in loaded]
    if untied or unexpected:
        raise CheckpointError(f"{path}: weights do not fit the model (missing {untied[:5]}, unexpected {unexpected[:5]})")
    return model.eval()
