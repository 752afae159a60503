"""Hugging Face adapters: where the attention heads and MLP neurons of each
layer of BERT, DistilBERT, GPT-2, LLaMA and ViT lie, and which config fields
describe them (transformers 5.x).

transformers 5 removed ``PreTrainedModel.prune_heads`` and
``config.pruned_heads``; its configs describe one head count and one MLP width
for every layer. What each family's config can express:

============  ==========================================  ==========================
family        heads                                        MLP width field
============  ==========================================  ==========================
LLaMA         ``num_attention_heads``, ``num_key_value_heads``  ``intermediate_size``
              (``head_dim`` is its own field)
ViT           ``num_attention_heads`` + ``head_dim`` (read  ``intermediate_size``
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

import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError, InvalidParameterError
from .heads import AttentionSpec, MlpSpec, consumer, producer

__all__ = ["FAMILIES", "HFFamily", "hf_family", "hf_layers", "load_pretrained", "update_config"]

logger = logging.getLogger(__name__)

#: config attribute holding per-layer head counts a config field cannot express
HEADS_FIELD = "prunekit_num_heads"


@dataclass(frozen=True)
class HFFamily:
    """How to find one family's layers, heads and MLP neurons."""

    model_type: str
    layers: tuple[str, ...]        # candidate paths from the base model to the ModuleList of layers
    attention: Callable[[str, nn.Module], AttentionSpec]
    mlp: Callable[[str, nn.Module], MlpSpec]
    mlp_field: str                 # config field of the MLP width
    head_fields: tuple[str, ...]   # config fields of (query heads[, key/value heads]); () = not expressible


def _separate(name: str, attn: nn.Module, names: tuple[str, str, str], out_name: str, out: nn.Module,
              head_dim: int, attributes: Callable[[int, int], dict[str, int]]) -> AttentionSpec:
    """Spec of an attention with separate q/k/v Linear layers (GQA aware) and output ``out``."""
    q, k, v = (getattr(attn, key) for key in names)
    return AttentionSpec(
        name, q.out_features // head_dim, k.out_features // head_dim, head_dim,
        query=(producer(f"{name}.{names[0]}", q, unit=head_dim),),
        key_value=(producer(f"{name}.{names[1]}", k, unit=head_dim), producer(f"{name}.{names[2]}", v, unit=head_dim)),
        output=(consumer(out_name, out, unit=head_dim),),
        attributes=attributes,
    )


def _bert_attention(name: str, layer: nn.Module) -> AttentionSpec:
    attn, d = layer.attention.self, layer.attention.self.attention_head_size
    return _separate(f"{name}.attention.self", attn, ("query", "key", "value"), f"{name}.attention.output.dense",
                     layer.attention.output.dense, d, lambda h, kv: {"num_attention_heads": h, "all_head_size": h * d})


def _distilbert_attention(name: str, layer: nn.Module) -> AttentionSpec:
    attn = layer.attention
    return _separate(f"{name}.attention", attn, ("q_lin", "k_lin", "v_lin"), f"{name}.attention.out_lin",
                     attn.out_lin, attn.attention_head_size, lambda h, kv: {"n_heads": h})


def _vit_attention(name: str, layer: nn.Module) -> AttentionSpec:
    attn = layer.attention
    return _separate(f"{name}.attention", attn, ("q_proj", "k_proj", "v_proj"), f"{name}.attention.o_proj",
                     attn.o_proj, attn.head_dim, lambda h, kv: {"num_attention_heads": h})


def _llama_attention(name: str, layer: nn.Module) -> AttentionSpec:
    attn = layer.self_attn
    return _separate(f"{name}.self_attn", attn, ("q_proj", "k_proj", "v_proj"), f"{name}.self_attn.o_proj",
                     attn.o_proj, attn.head_dim, lambda h, kv: {"num_key_value_groups": h // kv})


def _gpt2_attention(name: str, layer: nn.Module) -> AttentionSpec:
    attn = layer.attn
    d = attn.head_dim
    heads = attn.c_proj.weight.shape[0] // d
    width = heads * d
    fused = f"{name}.attn.c_attn"
    blocks = [producer(fused, attn.c_attn, offset=i * width, unit=d) for i in range(3)]
    return AttentionSpec(
        f"{name}.attn", heads, heads, d,
        query=(blocks[0],), key_value=(blocks[1], blocks[2]),
        output=(consumer(f"{name}.attn.c_proj", attn.c_proj, unit=d),),
        attributes=lambda h, kv: {"num_heads": h, "split_size": h * d},
    )


def _two_layer_mlp(name: str, first: tuple[str, nn.Module], second: tuple[str, nn.Module]) -> MlpSpec:
    """An MLP ``second(act(first(x)))``; names are relative to the layer ``name``."""
    return MlpSpec(name, producer(f"{name}.{first[0]}", first[1]).size_of(first[1]),
                   producers=(producer(f"{name}.{first[0]}", first[1]),),
                   consumers=(consumer(f"{name}.{second[0]}", second[1]),))


def _bert_mlp(name: str, layer: nn.Module) -> MlpSpec:
    return _two_layer_mlp(name, ("intermediate.dense", layer.intermediate.dense), ("output.dense", layer.output.dense))


def _distilbert_mlp(name: str, layer: nn.Module) -> MlpSpec:
    return _two_layer_mlp(name, ("ffn.lin1", layer.ffn.lin1), ("ffn.lin2", layer.ffn.lin2))


def _vit_mlp(name: str, layer: nn.Module) -> MlpSpec:
    return _two_layer_mlp(name, ("mlp.fc1", layer.mlp.fc1), ("mlp.fc2", layer.mlp.fc2))


def _gpt2_mlp(name: str, layer: nn.Module) -> MlpSpec:
    return _two_layer_mlp(name, ("mlp.c_fc", layer.mlp.c_fc), ("mlp.c_proj", layer.mlp.c_proj))


def _llama_mlp(name: str, layer: nn.Module) -> MlpSpec:
    mlp = layer.mlp
    return MlpSpec(
        f"{name}.mlp", mlp.gate_proj.out_features,
        producers=(producer(f"{name}.mlp.gate_proj", mlp.gate_proj), producer(f"{name}.mlp.up_proj", mlp.up_proj)),
        consumers=(consumer(f"{name}.mlp.down_proj", mlp.down_proj),),
        attributes=lambda n: {"intermediate_size": n},
    )


FAMILIES: dict[str, HFFamily] = {
    "bert": HFFamily("bert", ("encoder.layer",), _bert_attention, _bert_mlp, "intermediate_size", ()),
    "distilbert": HFFamily("distilbert", ("transformer.layer",), _distilbert_attention, _distilbert_mlp, "hidden_dim", ()),
    "gpt2": HFFamily("gpt2", ("h",), _gpt2_attention, _gpt2_mlp, "n_inner", ()),
    "llama": HFFamily("llama", ("layers",), _llama_attention, _llama_mlp, "intermediate_size",
                      ("num_attention_heads", "num_key_value_heads")),
    "vit": HFFamily("vit", ("layers", "encoder.layer"), _vit_attention, _vit_mlp, "intermediate_size", ("num_attention_heads",)),
}


def hf_family(model: nn.Module) -> HFFamily | None:
    """The adapter of a Hugging Face model of a supported family, or ``None`` for other models.

    Raises for a Hugging Face model of a family without an adapter.
    """
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type is None or not hasattr(model, "base_model"):
        return None
    if model_type not in FAMILIES:
        raise InvalidParameterError(
            "model", "a Hugging Face model of family " + ", ".join(sorted(FAMILIES)), f"<model_type {model_type!r}>",
            "Fix: add an HFFamily adapter to prunekit.surgery.hf.FAMILIES for it.",
        )
    return FAMILIES[model_type]


def hf_layers(model: nn.Module, family: HFFamily) -> list[tuple[str, nn.Module]]:
    """``(qualified name, layer)`` of every transformer layer, in order."""
    base = model.base_model
    prefix = next(name for name, module in model.named_modules() if module is base)
    for candidate in family.layers:
        path = f"{prefix}.{candidate}" if prefix else candidate
        try:
            layers = model.get_submodule(path)
            break
        except AttributeError:
            continue
    else:
        raise InvalidParameterError(
            "model", f"a {family.model_type} model with its layers at " + " or ".join(family.layers),
            f"<{type(model).__name__}>", "Fix: update the HFFamily adapter for this transformers version.",
        )
    return [(f"{path}.{i}", layer) for i, layer in enumerate(layers)]


def _uniform(param: str, what: str, counts: Sequence[int], fields: Sequence[str], model_type: str) -> None:
    if len(set(counts)) > 1:
        raise InvalidParameterError(
            param,
            f"the same number of {what} in every layer ({model_type}'s config holds one value, "
            f"{', '.join(fields)}, for all layers)",
            f"<{what} per layer after removal: {list(counts)}>",
            f"Fix: remove the same number of {what} from every layer (which ones may differ per layer), "
            "e.g. by ratio with scope='local'.",
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


def _state_dict_from(path: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

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
    from .heads import prune_heads  # heads imports this module at call time too

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
