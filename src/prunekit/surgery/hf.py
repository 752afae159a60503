"""Hugging Face configs after head/neuron surgery: which config fields
describe the head counts and MLP width of BERT, DistilBERT, GPT-2, LLaMA, ViT
and DeiT (transformers 5.x), and their update. Where heads and neurons lie is
:mod:`prunekit.coupling.families`; loading a head-pruned checkpoint is
:mod:`prunekit.surgery.hf_load`.

transformers 5 removed ``PreTrainedModel.prune_heads`` and
``config.pruned_heads``; its configs describe one head count and one MLP width
for every layer. What each family's config can express:

============  ==========================================  ==========================
family        heads                                        MLP width field
============  ==========================================  ==========================
LLaMA         ``num_attention_heads``, ``num_key_value_heads``  ``intermediate_size``
              (``head_dim`` is its own field)
ViT, DeiT     ``num_attention_heads`` + ``head_dim`` (read  ``intermediate_size``
              with ``getattr(config, "head_dim", ...)``)
BERT          not expressible (head size = hidden / heads)  ``intermediate_size``
DistilBERT    not expressible (head size = dim / n_heads)   ``hidden_dim``
GPT-2         not expressible (head size = n_embd / n_head) ``n_inner``
============  ==========================================  ==========================

Where the config can express a count and it is the same in every layer, it is
updated, so ``save_pretrained`` then stock ``from_pretrained`` load the smaller
model (``uniform=True`` of :func:`~prunekit.surgery.prune_heads` and
:func:`~prunekit.surgery.prune_mlp_neurons` keeps the counts equal). Otherwise
(heads of BERT, DistilBERT, GPT-2; counts that differ between layers) the
config's fields keep the size the model was built with and the per-layer counts
go to ``config.prunekit_num_heads``, ``config.prunekit_num_key_value_heads`` and
``config.prunekit_mlp_sizes`` (saved in ``config.json``):
:func:`~prunekit.surgery.load_pretrained` rebuilds the smaller model from them,
:func:`~prunekit.surgery.save_pretrained` says so, and stock ``from_pretrained``
refuses those checkpoints with a size mismatch. Only self-attention is handled
(not BERT's cross-attention).
"""

from __future__ import annotations

import logging
from typing import Any

from torch import nn

from ..coupling.families import HFFamily, hf_layers

__all__ = ["HEADS_FIELD", "KV_FIELD", "MLP_FIELD", "PER_LAYER_FIELDS", "per_layer_counts", "update_config"]

logger = logging.getLogger(__name__)

#: config attributes holding per-layer counts that the config's own fields cannot express
HEADS_FIELD = "prunekit_num_heads"
KV_FIELD = "prunekit_num_key_value_heads"
MLP_FIELD = "prunekit_mlp_sizes"
PER_LAYER_FIELDS = (HEADS_FIELD, KV_FIELD, MLP_FIELD)


def per_layer_counts(config: Any) -> dict[str, list[int]]:
    """The per-layer count fields present in ``config`` ({field: counts})."""
    return {f: list(getattr(config, f)) for f in PER_LAYER_FIELDS if getattr(config, f, None) is not None}


def update_config(model: nn.Module, family: HFFamily) -> dict[str, Any]:
    """Write the current head counts and MLP width into ``model.config``; return the fields set.

    A count that is the same in every layer goes to the config's own field; counts that differ
    (or heads of a family whose config cannot hold them) go to the per-layer fields, and the
    config's own field keeps the size the model was built with (see the module doc).
    """
    layers = hf_layers(model, family)
    specs = [family.attention(name, layer) for name, layer in layers]
    widths = [family.mlp(name, layer).size for name, layer in layers]
    heads = [s.num_heads for s in specs]
    kv_heads = [s.num_kv_heads for s in specs]
    config = model.config
    values: dict[str, Any] = {}
    if len(set(widths)) == 1:
        values[family.mlp_field] = widths[0]
    else:
        values[MLP_FIELD] = widths
    if family.head_fields:
        values["head_dim"] = specs[0].head_dim
        if len(set(heads)) == 1 and len(set(kv_heads)) == 1:
            values[family.head_fields[0]] = heads[0]
            if len(family.head_fields) > 1:
                values[family.head_fields[1]] = kv_heads[0]
        else:
            values[HEADS_FIELD] = heads
            if len(family.head_fields) > 1:
                values[KV_FIELD] = kv_heads
    elif heads != [config.num_attention_heads] * len(heads):
        values[HEADS_FIELD] = heads
    for key in PER_LAYER_FIELDS:
        if key not in values and hasattr(config, key):
            delattr(config, key)
    for key, value in values.items():
        setattr(config, key, value)
    logger.info("config of %s updated: %s", family.model_type, values)
    per_layer = [k for k in PER_LAYER_FIELDS if k in values]
    if per_layer:
        logger.info("%s: per-layer counts in config.%s; stock transformers cannot load this model, "
                    "prunekit.surgery.load_pretrained can", family.model_type, ", config.".join(per_layer))
    return values
