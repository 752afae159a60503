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

Where the config can express a count it is updated, so ``save_pretrained``
then ``from_pretrained`` load the smaller model; since it holds one value for
every layer, the count must then be the same in every layer (which heads or
neurons may differ per layer). Where it cannot (heads of BERT, DistilBERT,
GPT-2), the per-layer head counts are stored in ``config.prunekit_num_heads``
(saved in ``config.json``) and :func:`load_pretrained` rebuilds the smaller
model; plain ``from_pretrained`` refuses those checkpoints with a size
mismatch. Only self-attention is handled (not BERT's cross-attention).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from torch import nn

from ..coupling.families import HFFamily, hf_layers
from ..errors import InvalidParameterError

__all__ = ["HEADS_FIELD", "check_uniform", "update_config"]

logger = logging.getLogger(__name__)

#: config attribute holding per-layer head counts a config field cannot express
HEADS_FIELD = "prunekit_num_heads"


def _uniform(param: str, what: str, counts: Sequence[int], fields: Sequence[str], model_type: str) -> None:
    if len(set(counts)) > 1:
        raise InvalidParameterError(
            param,
            f"the same number of {what} in every layer ({model_type}'s config holds one value, "
            f"{', '.join(fields)}, for all layers)",
            f"<{what} per layer after removal: {list(counts)}>",
            f"Fix: remove the same number of {what} from every layer (which ones may differ per layer), "
            "e.g. sparsity= with uniform=True.",
        )


def check_uniform(model: nn.Module, family: HFFamily, heads: Sequence[int] | None, neurons: Sequence[int] | None) -> None:
    """Refuse per-layer counts that the family's config cannot hold (before any change)."""
    if heads is not None and family.head_fields:
        _uniform("heads_to_prune", "heads", heads, family.head_fields, family.model_type)
    if neurons is not None:
        _uniform("neurons_to_prune", "MLP neurons", neurons, (family.mlp_field,), family.model_type)


def update_config(model: nn.Module, family: HFFamily) -> dict[str, Any]:
    """Write the current head counts and MLP width into ``model.config``; return the fields set."""
    layers = hf_layers(model, family)
    specs = [family.attention(name, layer) for name, layer in layers]
    widths = [family.mlp(name, layer).size for name, layer in layers]
    config = model.config
    values: dict[str, Any] = {family.mlp_field: widths[0]}
    heads = [s.num_heads for s in specs]
    if family.head_fields:
        values[family.head_fields[0]] = heads[0]
        if len(family.head_fields) > 1:
            values[family.head_fields[1]] = specs[0].num_kv_heads
        values["head_dim"] = specs[0].head_dim
    elif heads != [config.num_attention_heads] * len(heads):
        values[HEADS_FIELD] = heads
    elif hasattr(config, HEADS_FIELD):
        delattr(config, HEADS_FIELD)
    for key, value in values.items():
        setattr(config, key, value)
    logger.info("config of %s updated: %s", family.model_type, values)
    return values
