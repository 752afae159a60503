"""Coupling: which parameter slices must be removed together, and how a model
splits into prunable units.

- :func:`find_groups` traces a model (:mod:`.trace`), applies the coupling
  rules (:mod:`.rules` and the rule families it dispatches to) and returns the
  dependency :class:`Group` s of coupled channels;
- layer handlers (:mod:`.handlers`) say what a module type does to channels
  and how its attributes follow a slice: :func:`register_layer_handler`
  extends channel coupling and surgery to a user's own layer types;
- :mod:`.units` and :mod:`.families` say where the attention heads and MLP
  neurons of a transformer lie (:func:`attention_layers`, :func:`mlp_layers`),
  and :mod:`.unit_gates` gates them.

Physical removal is :mod:`prunekit.surgery`; scores of groups, heads and
neurons are :mod:`prunekit.scores`.
"""

from __future__ import annotations

from . import builtin_handlers  # noqa: F401  (registers the built-in layer handlers)
from .families import (
    FAMILIES,
    HFFamily,
    attention_layers,
    fc_mlp_spec,
    fused_qkv_spec,
    hf_family,
    hf_layers,
    mlp_layers,
)
from .graph import Binding, Graph, Space
from .groups import ROLES, Group, Slice, UnsupportedOperationError, find_groups
from .handlers import (
    LayerHandler,
    handler_for,
    is_leaf,
    list_layer_handlers,
    register_layer_handler,
    unregister_layer_handler,
    weight_out_dim,
)
from .layers import channelwise, conv, embedding, group_norm, layer_norm, linear, per_channel, produce
from .ops_generic import along_dim, elementwise, keep_leading, unary, unknown
from .trace import Op, Trace, Value, trace
from .unit_gates import head_gates, neuron_gates, unit_gates
from .units import AttentionSpec, MlpSpec, UnitSlice, consumer, mha_spec, producer

__all__ = [
    "find_groups",
    "Group",
    "Slice",
    "ROLES",
    "UnsupportedOperationError",
    "LayerHandler",
    "register_layer_handler",
    "unregister_layer_handler",
    "list_layer_handlers",
    "handler_for",
    "is_leaf",
    "weight_out_dim",
    "Graph",
    "Space",
    "Binding",
    "Op",
    "Value",
    "Trace",
    "trace",
    "produce",
    "linear",
    "conv",
    "per_channel",
    "channelwise",
    "layer_norm",
    "group_norm",
    "embedding",
    "unary",
    "elementwise",
    "keep_leading",
    "along_dim",
    "unknown",
    "UnitSlice",
    "AttentionSpec",
    "MlpSpec",
    "producer",
    "consumer",
    "mha_spec",
    "FAMILIES",
    "HFFamily",
    "hf_family",
    "hf_layers",
    "attention_layers",
    "mlp_layers",
    "fused_qkv_spec",
    "fc_mlp_spec",
    "unit_gates",
    "head_gates",
    "neuron_gates",
]
