"""prunekit: prune PyTorch networks, compatible with torch.nn.utils.prune, and measure it.

The spine: targets (what) -> scores -> structures and allocation
(masks) -> realisation (reparam, in-place, permanent) -> measurement.
"""

from __future__ import annotations

import logging

from .allocation import check_sparsity, compute_keep_masks
from .deprecation import deprecated_alias
from .scores import (
    Criterion,
    FunctionCriterion,
    Magnitude,
    Random,
    as_criterion,
    create_score,
    criterion_names,
    list_scores,
    register_score,
    score_entry,
    score_units,
)
from .scores.element import register_criterion as _register_criterion
from .errors import CheckpointError, InvalidParameterError, PrunekitError
from .io import (
    atomic_write,
    load_pruned_state_dict,
    load_sparse,
    load_state_dict_file,
    restore_masks,
    save_sparse,
)
from .masks import (
    Realisation,
    apply_masks,
    create_realisation,
    list_realisations,
    make_permanent,
    reapply_masks,
    register_realisation,
    remove,
)
from .measure import SparsityReport, TensorSparsity, sparsity_report, sparsity_report_from_state_dict
from .pruner import Pruner, prune
from .controller import PruningController
from .structures import (
    NM,
    Block,
    Channel,
    Element,
    Kernel,
    Structure,
    create_structure,
    list_structures,
    register_structure,
)
from .targets import DEFAULT_TYPES, Target, select_targets
from .training import evaluate, fit
from .progress import ProgressEvent
from .data import create_dataset, list_datasets
from .schedules import create_schedule, list_schedules
from .zoo import create_model, list_models, model_input_shape
from .pruning_at_init import PruneAtInitResult, prune_at_init
from .analysis.proxies import spearman, zero_cost_proxies
from .coupling import LayerHandler, list_layer_handlers, register_layer_handler
from .scores.groups import GroupCriterion
from .scores.heads import score_heads, score_mlp_neurons
from .surgery.heads import prune_heads, prune_mlp_neurons
from .surgery.pruned_mha import PrunedMultiheadAttention
from .surgery.api import StructuralPruneResult, structural_prune
from .surgery import find_groups, load_shrunk, prune_groups, save_shrunk
from .learned import LearnedScores, MovementPruning, Supermask
from .oneshot import OneShotResult, lm_perplexity, oneshot_prune, prune_pretrained
from .execution import SparseLinear, to_sparse
from .export import export_onnx, onnx_latency, save_dense

from .version import __version__

# the former criterion registry API: element-like scores of prunekit.scores.SCORES
create_criterion = deprecated_alias(as_criterion, "prunekit.create_criterion", "prunekit.scores.as_criterion")
list_criteria = deprecated_alias(criterion_names, "prunekit.list_criteria", 'prunekit.list_scores(unit_space="element")')
register_criterion = deprecated_alias(
    _register_criterion, "prunekit.register_criterion", "prunekit.register_score(name, unit_spaces=MASK_SPACES)"
)

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "DEFAULT_TYPES",
    "NM",
    "Block",
    "Channel",
    "CheckpointError",
    "Criterion",
    "Element",
    "FunctionCriterion",
    "InvalidParameterError",
    "Kernel",
    "Magnitude",
    "PruneAtInitResult",
    "Pruner",
    "PruningController",
    "PrunekitError",
    "Random",
    "SparsityReport",
    "Structure",
    "Target",
    "TensorSparsity",
    "__version__",
    "apply_masks",
    "atomic_write",
    "check_sparsity",
    "compute_keep_masks",
    "create_criterion",
    "create_score",
    "create_dataset",
    "create_model",
    "create_schedule",
    "create_structure",
    "evaluate",
    "fit",
    "ProgressEvent",
    "list_criteria",
    "list_scores",
    "score_units",
    "list_datasets",
    "list_models",
    "model_input_shape",
    "list_schedules",
    "list_structures",
    "load_pruned_state_dict",
    "load_sparse",
    "load_state_dict_file",
    "make_permanent",
    "prune",
    "oneshot_prune",
    "prune_pretrained",
    "OneShotResult",
    "lm_perplexity",
    "prune_at_init",
    "reapply_masks",
    "register_criterion",
    "register_score",
    "remove",
    "restore_masks",
    "save_sparse",
    "score_entry",
    "select_targets",
    "sparsity_report",
    "sparsity_report_from_state_dict",
    "spearman",
    "zero_cost_proxies",
    # transformer head / MLP-neuron surgery (issue 4)
    "PrunedMultiheadAttention",
    "prune_heads",
    "prune_mlp_neurons",
    "score_heads",
    "score_mlp_neurons",
    # channel surgery with group criteria (issue 4)
    "StructuralPruneResult",
    "structural_prune",
    "find_groups",
    "prune_groups",
    "save_shrunk",
    "load_shrunk",
    "GroupCriterion",
    # layer handlers: custom layer types in channel coupling and surgery
    "LayerHandler",
    "register_layer_handler",
    "list_layer_handlers",
    # realisations: how keep masks become a model (mode=)
    "Realisation",
    "create_realisation",
    "list_realisations",
    "register_realisation",
    # structures defined by users
    "register_structure",
    # learned masks (issue 5)
    "LearnedScores",
    "MovementPruning",
    "Supermask",
    # sparse execution: pruned Linears computed from compressed weights where faster
    "SparseLinear",
    "to_sparse",
    # exports other runtimes load: ONNX (checked in onnxruntime), plain dense safetensors
    "export_onnx",
    "onnx_latency",
    "save_dense",
]
