"""Model families: where the attention heads and MLP neurons of each layer of
a Hugging Face BERT, DistilBERT, GPT-2, LLaMA or ViT lie (transformers 5.x),
and :func:`attention_layers` / :func:`mlp_layers` for any model.

Each :class:`HFFamily` names where the layers are, builds the
:class:`~.units.AttentionSpec` and :class:`~.units.MlpSpec` of one layer, and
names the config fields that hold the head count and the MLP width (what a
config can express, and how it is updated, is :mod:`prunekit.surgery.hf`).
Other models' attention and MLP modules are found through their layer handlers
(:attr:`.handlers.LayerHandler.attention`, :attr:`.handlers.LayerHandler.mlp`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..errors import InvalidParameterError
from .handlers import handler_for
from .units import AttentionSpec, MlpSpec, consumer, producer

__all__ = ["FAMILIES", "HFFamily", "hf_family", "hf_layers", "attention_layers", "mlp_layers", "separate_attention"]


@dataclass(frozen=True)
class HFFamily:
    """How to find one family's layers, heads and MLP neurons."""

    model_type: str
    layers: tuple[str, ...]        # candidate paths from the base model to the ModuleList of layers
    attention: Callable[[str, nn.Module], AttentionSpec]
    mlp: Callable[[str, nn.Module], MlpSpec]
    mlp_field: str                 # config field of the MLP width
    head_fields: tuple[str, ...]   # config fields of (query heads[, key/value heads]); () = not expressible


def separate_attention(name: str, attn: nn.Module, names: tuple[str, str, str], out_name: str, out: nn.Module,
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
    return separate_attention(f"{name}.attention.self", attn, ("query", "key", "value"), f"{name}.attention.output.dense",
                     layer.attention.output.dense, d, lambda h, kv: {"num_attention_heads": h, "all_head_size": h * d})


def _distilbert_attention(name: str, layer: nn.Module) -> AttentionSpec:
    attn = layer.attention
    return separate_attention(f"{name}.attention", attn, ("q_lin", "k_lin", "v_lin"), f"{name}.attention.out_lin",
                     attn.out_lin, attn.attention_head_size, lambda h, kv: {"n_heads": h})


def _vit_attention(name: str, layer: nn.Module) -> AttentionSpec:
    attn = layer.attention
    return separate_attention(f"{name}.attention", attn, ("q_proj", "k_proj", "v_proj"), f"{name}.attention.o_proj",
                     attn.o_proj, attn.head_dim, lambda h, kv: {"num_attention_heads": h})


def _llama_attention(name: str, layer: nn.Module) -> AttentionSpec:
    attn = layer.self_attn
    return separate_attention(f"{name}.self_attn", attn, ("q_proj", "k_proj", "v_proj"), f"{name}.self_attn.o_proj",
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
            "Fix: add an HFFamily adapter to prunekit.coupling.families.FAMILIES for it.",
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


def _handler_specs(model: nn.Module, field: str) -> dict[str, Any]:
    """``{module name: spec}`` of every module whose layer handler has ``field`` (``attention``/``mlp``)."""
    specs: dict[str, Any] = {}
    for name, module in model.named_modules():
        handler = handler_for(module)
        build = None if handler is None else getattr(handler, field)
        if build is not None:
            specs[name] = build(name, module)
    return specs


def attention_layers(model: nn.Module) -> dict[Any, AttentionSpec]:
    """Every attention layer whose heads can be removed: ``{key: spec}``.

    Keys are layer indices (0, 1, ...) for a Hugging Face model of a supported
    family (see :data:`FAMILIES`), else the qualified names of the modules whose layer
    handler gives an attention spec (``nn.MultiheadAttention``, ``PrunedMultiheadAttention``,
    the zoo GPT's ``CausalSelfAttention``, a user's type with ``LayerHandler(attention=...)``).
    """
    family = hf_family(model)
    if family is not None:
        return {i: family.attention(name, layer) for i, (name, layer) in enumerate(hf_layers(model, family))}
    return _handler_specs(model, "attention")


def mlp_layers(model: nn.Module) -> dict[Any, MlpSpec]:
    """Every MLP hidden layer whose neurons can be removed: ``{key: spec}``.

    Keys are layer indices for a Hugging Face model of a supported family, else
    the qualified names of the modules whose layer handler gives an MLP spec
    (the zoo GPT's ``MLP``, a user's type with ``LayerHandler(mlp=...)``).
    (Other models' MLPs are channel groups: see ``prunekit.structural_prune``.)
    """
    family = hf_family(model)
    if family is not None:
        return {i: family.mlp(name, layer) for i, (name, layer) in enumerate(hf_layers(model, family))}
    specs = _handler_specs(model, "mlp")
    if not specs:
        raise InvalidParameterError(
            "model", "a Hugging Face BERT, DistilBERT, GPT-2, LLaMA or ViT model, or one with MLP modules whose "
            "layer handler gives an MLP spec (LayerHandler(mlp=...))", f"<{type(model).__name__}>",
            "Fix: prune other models' MLP neurons with prunekit.structural_prune.",
        )
    return specs
