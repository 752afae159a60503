"""Load a shrunk Hugging Face checkpoint with per-layer counts (:func:`load_pretrained`).

BERT, DistilBERT and GPT-2 configs cannot express fewer heads in a layer, and
no transformers 5 config holds counts that differ between layers, so head and
neuron surgery records those per-layer counts in ``config.prunekit_num_heads``,
``prunekit_num_key_value_heads`` and ``prunekit_mlp_sizes``
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
from ..coupling.units import AttentionSpec
from .heads import prune_heads, prune_mlp_neurons
from .hf import HEADS_FIELD, KV_FIELD, MLP_FIELD, per_layer_counts

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


def _to_model_keys(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with checkpoint names turned into the model's parameter names.

    transformers 5 renames some families' modules (ViT's ``layers.N.attention.q_proj``) and
    ``save_pretrained`` writes the older checkpoint names; its own ``revert_weight_conversion``
    gives, for the model's own tensors, the names it would write, which are mapped back here
    (pure renamings only: a checkpoint name whose tensor was merged or split stays as it is).
    """
    ours = model.state_dict()
    if set(state) <= set(ours):
        return state
    try:
        from transformers.core_model_loading import revert_weight_conversion
    except ImportError:  # an older or newer transformers: the mismatch is reported by the caller
        return state
    back = {id(t): k for k, t in ours.items()}
    names = {saved: back[id(t)] for saved, t in revert_weight_conversion(model, dict(ours)).items() if id(t) in back}
    return {names.get(k, k): v for k, v in state.items()}


def _head_plan(spec: AttentionSpec, heads: int, kv_heads: int) -> list[int]:
    """Query heads to remove from ``spec`` so that ``heads`` remain on ``kv_heads`` key/value heads
    (the first groups, the first query heads of each: the weights are loaded afterwards)."""
    per_group = heads // kv_heads
    g = spec.group_size
    return [grp * g + i for grp in range(spec.num_kv_heads) for i in range(g) if grp >= kv_heads or i >= per_group]


def _check_counts(path: str, field: str, counts: list[int], sizes: list[int]) -> None:
    if len(counts) != len(sizes):
        raise CheckpointError(f"{path}: config.{field} has {len(counts)} entries for {len(sizes)} layers")
    if any(not 1 <= c <= s for c, s in zip(counts, sizes)):
        raise CheckpointError(f"{path}: config.{field} = {counts} does not fit the layers' sizes {sizes}")


def load_pretrained(model_class: Any, path: str, **kwargs: Any) -> nn.Module:
    """``model_class.from_pretrained(path)`` that also loads per-layer head and neuron counts.

    A checkpoint without per-layer counts (``config.prunekit_num_heads``,
    ``prunekit_num_key_value_heads``, ``prunekit_mlp_sizes``) goes to ``from_pretrained``
    unchanged (with ``kwargs``): stock transformers loads it too. Otherwise the model is built
    from its config, each layer shrunk to its recorded counts, and the safetensors weights
    loaded (never unpickled); it is returned in eval mode like ``from_pretrained``.
    """
    config = model_class.config_class.from_pretrained(path)
    fields = per_layer_counts(config)
    if not fields:
        return model_class.from_pretrained(path, **kwargs)
    if kwargs:
        raise InvalidParameterError(
            "kwargs", "no extra from_pretrained arguments for a checkpoint with per-layer counts", sorted(kwargs),
            "Fix: load without them, then move or cast the model.",
        )
    model = model_class(config)
    family = hf_family(model)
    if family is None:
        raise CheckpointError(f"{path}: {', '.join(fields)} in the config of a {type(model).__name__}, "
                              "not a supported family")
    layers = hf_layers(model, family)
    specs = [family.attention(name, layer) for name, layer in layers]
    if HEADS_FIELD in fields:
        heads = fields[HEADS_FIELD]
        _check_counts(path, HEADS_FIELD, heads, [s.num_heads for s in specs])
        kv_heads = fields.get(KV_FIELD, [h // s.group_size for h, s in zip(heads, specs)])
        _check_counts(path, KV_FIELD, kv_heads, [s.num_kv_heads for s in specs])
        prune_heads(model, {i: _head_plan(s, h, kv) for i, (s, h, kv) in enumerate(zip(specs, heads, kv_heads))
                            if h < s.num_heads})
    if MLP_FIELD in fields:
        sizes = [family.mlp(name, layer).size for name, layer in layers]
        _check_counts(path, MLP_FIELD, fields[MLP_FIELD], sizes)
        prune_mlp_neurons(model, {i: list(range(w, size)) for i, (w, size) in enumerate(zip(fields[MLP_FIELD], sizes))
                                  if w < size})
    state = _to_model_keys(model, _state_dict_from(path))
    missing, unexpected = model.load_state_dict(state, strict=False)
    model.tie_weights()
    loaded = {t.data_ptr() for k, t in model.state_dict().items() if k in state}
    untied = [k for k in missing if model.state_dict()[k].data_ptr() not in loaded]
    if untied or unexpected:
        raise CheckpointError(f"{path}: weights do not fit the model (missing {untied[:5]}, unexpected {unexpected[:5]})")
    return model.eval()
