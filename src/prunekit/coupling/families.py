"""Model families: where the attention heads and MLP neurons of each layer of
a Hugging Face BERT, DistilBERT, GPT-2, LLaMA, ViT or DeiT lie (transformers 5.x),
timm-style attention modules (:func:`fused_qkv_spec`), and
:func:`attention_layers` / :func:`mlp_layers` for any model.

Each :class:`HFFamily` names where the layers are, builds the
:class:`~.units.AttentionSpec` and :class:`~.units.MlpSpec` of one layer, and
names the config fields that hold the head count and the MLP width (what a
config can express, and how it is updated, is :mod:`prunekit.surgery.hf`).
Other models' attention and MLP modules are found through their layer handlers
(:attr:`.handlers.LayerHandler.attention`, :attr:`.handlers.LayerHandler.mlp`).

timm's attention (ViT/DeiT ``Attention``, Swin ``WindowAttention``,
``AttentionRope``) has one fused ``qkv`` Linear ``(dim -> 3·H·d)`` whose
output is read as ``reshape(B, N, 3, H, d)`` (q rows first, then k, then v;
head ``h`` at rows ``h·d ... (h+1)·d - 1`` of each), or separate
``q_proj``/``k_proj``/``v_proj``, then ``proj`` ``(H·d -> dim)``. Its
handler is registered by class name and matches modules of that layout
(:func:`is_fused_qkv_attention`); register :func:`fused_qkv_spec` for your own
class of the same layout: ``register_layer_handler(MyAttention,
LayerHandler(attention=fused_qkv_spec))``. Per-head tensors go with the heads:
Swin's ``relative_position_bias_table`` (one column per head) and Swin V2's
``logit_scale`` (one row per head), ``q_bias``/``k_bias``/``v_bias``
(``head_dim`` entries per head) and the last Linear of ``cpb_mlp`` (one output
row per head). After a removal ``num_heads`` and ``attn_dim`` (when the module
has it) are set; ``head_dim`` and ``scale`` are kept.
A forward that reshapes the heads' output to the input width (``reshape(B, N,
C)``, older timm) needs ``attn_dim`` or ``-1`` there instead. timm's ``Mlp``
(``fc1``, ``fc2``) gives its hidden neurons (:func:`fc_mlp_spec`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import InvalidParameterError
from .handlers import LayerHandler, handler_for, register_layer_handler
from .units import AttentionSpec, MlpSpec, UnitSlice, consumer, producer

__all__ = [
    "FAMILIES",
    "HFFamily",
    "hf_family",
    "hf_layers",
    "attention_layers",
    "mlp_layers",
    "separate_attention",
    "fused_qkv_spec",
    "is_fused_qkv_attention",
    "TIMM_ATTENTION_CLASSES",
    "fc_mlp_spec",
    "is_fc_mlp",
]


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


def _child(name: str, key: str) -> str:
    return f"{name}.{key}" if name else key


#: per-head tensors of timm attention modules: (tensor, dim holding the heads)
_PER_HEAD_TENSORS = (("relative_position_bias_table", 1), ("logit_scale", 0))


def is_fused_qkv_attention(module: nn.Module) -> bool:
    """Whether ``module`` has timm's attention layout: an int ``num_heads``, a Linear
    ``proj`` and a Linear ``qkv`` (or Linear ``q_proj``, ``k_proj``, ``v_proj``)."""
    heads = getattr(module, "num_heads", None)
    if isinstance(heads, bool) or not isinstance(heads, int):
        return False
    if not isinstance(getattr(module, "proj", None), nn.Linear):
        return False
    if isinstance(getattr(module, "qkv", None), nn.Linear):
        return True
    return all(isinstance(getattr(module, key, None), nn.Linear) for key in ("q_proj", "k_proj", "v_proj"))


def fused_qkv_spec(name: str, attn: nn.Module) -> AttentionSpec:
    """Spec of a timm-style attention module (see the module docstring).

    Head ``h`` of ``H`` (head size ``d = head_dim``, or the projection width
    over ``H``) is rows ``i·H·d + h·d ... i·H·d + (h+1)·d - 1`` of ``qkv``
    for ``i`` = 0, 1, 2 (q, k, v) and the same columns of ``proj``.
    """
    if not is_fused_qkv_attention(attn):
        raise InvalidParameterError(
            "model", f"an attention at {name!r} with num_heads, a Linear proj and a Linear qkv "
            "(or q_proj/k_proj/v_proj)", f"<{type(attn).__name__}>",
            "Fix: give its layer handler an attention spec of its own (LayerHandler(attention=...)).",
        )
    h = attn.num_heads
    fused = getattr(attn, "qkv", None) if isinstance(getattr(attn, "qkv", None), nn.Linear) else None
    width = fused.out_features // 3 if fused is not None else attn.q_proj.out_features
    d = getattr(attn, "head_dim", None) or width // max(h, 1)
    if h * d != width or attn.proj.in_features != width or (fused is not None and fused.out_features != 3 * width):
        raise InvalidParameterError(
            "model", f"an attention at {name!r} whose projections hold num_heads * head_dim = {h} * {d} rows",
            f"<qkv width {width}, proj input {attn.proj.in_features}>",
            "Fix: check num_heads/head_dim, or give its layer handler an attention spec of its own.",
        )
    norm = getattr(attn, "norm", None)
    if isinstance(norm, nn.Module) and any(True for _ in norm.parameters()):
        raise InvalidParameterError(
            "model", f"an attention at {name!r} without a normalisation across heads before proj",
            f"<{type(norm).__name__} over {width} features (scale_norm)>",
            "Fix: heads under a norm across all heads cannot be removed exactly; leave this module out.",
        )
    if fused is not None:
        query = [producer(_child(name, "qkv"), fused, offset=0, unit=d)]
        key_value = [producer(_child(name, "qkv"), fused, offset=i * width, unit=d) for i in (1, 2)]
    else:
        query = [producer(_child(name, "q_proj"), attn.q_proj, unit=d)]
        key_value = [producer(_child(name, key), getattr(attn, key), unit=d) for key in ("k_proj", "v_proj")]
    for tensor, dim in _PER_HEAD_TENSORS:
        value = getattr(attn, tensor, None)
        if value is not None and tensor in attn._parameters and value.dim() > dim and value.shape[dim] == h:
            query.append(UnitSlice(name, ((tensor, dim),), 0, 1))
    for tensor, blocks in (("q_bias", query), ("k_bias", key_value), ("v_bias", key_value)):  # Swin V2's qkv bias
        value = getattr(attn, tensor, None)
        if isinstance(value, torch.Tensor) and value.shape == (width,):
            blocks.append(UnitSlice(name, ((tensor, 0),), 0, d))
    cpb = getattr(attn, "cpb_mlp", None)  # Swin V2: an MLP computing the bias table, one output per head
    if isinstance(cpb, nn.Sequential) and len(cpb) and isinstance(cpb[-1], nn.Linear) and cpb[-1].out_features == h:
        query.append(producer(_child(name, f"cpb_mlp.{len(cpb) - 1}"), cpb[-1]))
    has_attn_dim = hasattr(attn, "attn_dim")

    def attributes(heads: int, _kv: int) -> dict[str, int]:
        return {"num_heads": heads, **({"attn_dim": heads * d} if has_attn_dim else {})}

    return AttentionSpec(name, h, h, d, tuple(query), tuple(key_value),
                         (consumer(_child(name, "proj"), attn.proj, unit=d),), attributes=attributes)


def is_fc_mlp(module: nn.Module) -> bool:
    """Whether ``module`` has timm's ``Mlp`` layout: Linear ``fc1`` and ``fc2``, and no
    normalisation with parameters between them."""
    norm = getattr(module, "norm", None)
    return isinstance(getattr(module, "fc1", None), nn.Linear) and isinstance(getattr(module, "fc2", None), nn.Linear) \
        and not (isinstance(norm, nn.Module) and any(True for _ in norm.parameters()))


def fc_mlp_spec(name: str, mlp: nn.Module) -> MlpSpec:
    """Spec of a timm-style ``Mlp``: ``fc2(act(fc1(x)))``, hidden neuron ``j`` = row ``j`` of
    ``fc1`` and column ``j`` of ``fc2``."""
    if not is_fc_mlp(mlp):
        raise InvalidParameterError(
            "model", f"an MLP at {name!r} with Linear fc1 and fc2 and no norm with parameters between them",
            f"<{type(mlp).__name__}>", "Fix: give its layer handler an MLP spec of its own (LayerHandler(mlp=...)).",
        )
    first = producer(_child(name, "fc1"), mlp.fc1)
    return MlpSpec(name, first.size_of(mlp.fc1), producers=(first,),
                   consumers=(consumer(_child(name, "fc2"), mlp.fc2),),
                   attributes=lambda n: {"hidden_features": n} if hasattr(mlp, "hidden_features") else {})


#: class names of timm's attention modules; matched along the MRO when the layout fits
TIMM_ATTENTION_CLASSES = ("Attention", "WindowAttention", "AttentionRope")
for _class_name in TIMM_ATTENTION_CLASSES:
    register_layer_handler(_class_name, LayerHandler(attention=fused_qkv_spec, matches=is_fused_qkv_attention))
register_layer_handler("Mlp", LayerHandler(mlp=fc_mlp_spec, matches=is_fc_mlp))


FAMILIES: dict[str, HFFamily] = {
    "bert": HFFamily("bert", ("encoder.layer",), _bert_attention, _bert_mlp, "intermediate_size", ()),
    "distilbert": HFFamily("distilbert", ("transformer.layer",), _distilbert_attention, _distilbert_mlp, "hidden_dim", ()),
    "gpt2": HFFamily("gpt2", ("h",), _gpt2_attention, _gpt2_mlp, "n_inner", ()),
    "llama": HFFamily("llama", ("layers",), _llama_attention, _llama_mlp, "intermediate_size",
                      ("num_attention_heads", "num_key_value_heads")),
    "vit": HFFamily("vit", ("layers", "encoder.layer"), _vit_attention, _vit_mlp, "intermediate_size", ("num_attention_heads",)),
    "deit": HFFamily("deit", ("layers", "encoder.layer"), _vit_attention, _vit_mlp, "intermediate_size",
                     ("num_attention_heads",)),
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
    the zoo GPT's ``CausalSelfAttention``, timm-style ``Attention``/``WindowAttention``
    (:func:`fused_qkv_spec`), a user's type with ``LayerHandler(attention=...)``).
    """
    family = hf_family(model)
    if family is not None:
        return {i: family.attention(name, layer) for i, (name, layer) in enumerate(hf_layers(model, family))}
    return _handler_specs(model, "attention")


def mlp_layers(model: nn.Module) -> dict[Any, MlpSpec]:
    """Every MLP hidden layer whose neurons can be removed: ``{key: spec}``.

    Keys are layer indices for a Hugging Face model of a supported family, else
    the qualified names of the modules whose layer handler gives an MLP spec
    (the zoo GPT's ``MLP``, timm-style ``Mlp`` (:func:`fc_mlp_spec`), a user's type with
    ``LayerHandler(mlp=...)``).
    (Other models' MLPs are channel groups: see ``prunekit.structural_prune``.)
    """
    family = hf_family(model)
    if family is not None:
        return {i: family.mlp(name, layer) for i, (name, layer) in enumerate(hf_layers(model, family))}
    specs = _handler_specs(model, "mlp")
    if not specs:
        raise InvalidParameterError(
            "model", "a Hugging Face BERT, DistilBERT, GPT-2, LLaMA, ViT or DeiT model, or one with MLP modules whose "
            "layer handler gives an MLP spec (LayerHandler(mlp=...))", f"<{type(model).__name__}>",
            "Fix: prune other models' MLP neurons with prunekit.structural_prune.",
        )
    return specs
