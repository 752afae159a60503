"""Structural surgery: physical removal of channels, neurons and heads, so the
dense model really is smaller and faster. Dependency groups and unit specs
live in :mod:`prunekit.coupling` (re-exported here); group and head scores in
:mod:`prunekit.scores`.

    groups = find_groups(model, example_inputs)            # traced, never hand-written tables
    keep = {g.name: ids for g in groups}                    # sorted channel ids to keep
    record = prune_groups(model, keep, groups, optimizer=opt)
    save_shrunk(model, "small.safetensors")
    load_shrunk(fresh_model_of_same_class, "small.safetensors")
"""

from __future__ import annotations

from ..coupling import (
    Group,
    Slice,
    UnsupportedOperationError,
    attention_layers,
    find_groups,
    mlp_layers,
)
from ..scores.groups import create_group_criterion, list_group_criteria
from ..scores.heads import score_heads, score_mlp_neurons
from .heads import prune_heads, prune_mlp_neurons, replay_heads
from .hf_load import load_pretrained
from .hf_save import SavedPretrained, save_pretrained
from .pruned_mha import PrunedMultiheadAttention
from ..measure.layer_latency import LatencyTable, LayerSpec
from .history import add_history, surgery_history
from .optim import carry_optimizer
from .remove import mask_groups, prune_groups
from .save import load_shrunk, read_history, save_shrunk
from .slicing import (
    ParamSwap,
    Removal,
    SurgeryRecord,
    keep_slices,
    replay,
    update_module_attributes,
)

__all__ = [
    "LatencyTable",
    "LayerSpec",
    "find_groups",
    "Group",
    "Slice",
    "UnsupportedOperationError",
    "prune_groups",
    "mask_groups",
    "carry_optimizer",
    "save_shrunk",
    "load_shrunk",
    "read_history",
    "surgery_history",
    "add_history",
    "keep_slices",
    "update_module_attributes",
    "Removal",
    "ParamSwap",
    "SurgeryRecord",
    "replay",
    # heads helper
    "PrunedMultiheadAttention",
    "attention_layers",
    "load_pretrained",
    "save_pretrained",
    "SavedPretrained",
    "mlp_layers",
    "prune_heads",
    "prune_mlp_neurons",
    "replay_heads",
    "score_heads",
    "score_mlp_neurons",
    # deprecated aliases of prunekit.scores.create_score / list_scores(unit_space="group")
    "create_group_criterion",
    "list_group_criteria",
]
