"""``prunekit.oneshot_prune``: layer-by-layer one-shot pruning of a transformer from a calibration set.

The engine (Frantar & Alistarh 2023; Sun et al. 2023 use the same scheme):

1. capture the inputs of the first block for every calibration batch
   (:mod:`prunekit.oneshot.capture`);
2. for each block in turn: bring it to the device, hook its linear layers to
   gather their input statistics while running it on its inputs, prune each
   layer, run the pruned block again and keep its outputs as the next
   block's inputs; send the block back (:mod:`prunekit.oneshot.offload`).

Only one block's activations (inputs and outputs) and statistics are in
memory at a time. With ``sequential=True`` the layers of a block are pruned
in groups in the order the block calls them, layers reading the same input
forming one group (q/k/v, then the output projection, then the MLP's input
projections, then its output projection), each group's statistics being
gathered with the earlier groups already pruned.

OWL (``owl=True``) first runs the dense model block by block to measure each
block's outlier ratio, then prunes block ``l`` at its own sparsity ``s_l``.
"""

from __future__ import annotations

import logging
import math
import numbers
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import InvalidParameterError, check_choice
from ..masks import apply_masks
from ..measure.sparsity import SparsityReport, sparsity_report
from ..memory import release_freed_memory
from ..structures import NM, Element, create_structure
from ..targets import Target
from .blocks import (
    LINEAR_TYPES,
    block_targets,
    find_blocks,
    set_weight_matrix,
    weight_matrix,
)
from .capture import Captured, calibration_batches, capture_block_inputs, run_block
from .head import OutputParts, find_output_parts, head_input_stats
from .methods import ONESHOT_METHODS, OneShotMethod
from .offload import OFFLOAD_MODES, BlockStore
from .owl import check_owl, outlier_ratio, owl_sparsities
from .selection import nm_invalid_groups
from .stats import InputStats, collect_input_stats
from .wanda import wanda_scores

__all__ = ["OneShotProgress", "OneShotResult", "oneshot_prune"]

logger = logging.getLogger(__name__)

MODES = ("permanent", "inplace", "reparam")


@dataclass(frozen=True)
class OneShotProgress:
    """Sent to ``progress`` when a block starts (``status="start"``) and ends (``"done"``)."""

    stage: str  # "capture" (the first block's inputs), "owl" (measuring outliers) or "prune"
    block: int
    blocks: int
    status: str
    seconds: float = 0.0


@dataclass
class OneShotResult:
    """What :func:`oneshot_prune` did: per-block target sparsities, per-layer achieved sparsities,
    the sparsity report of the pruned layers (``report.extras["nm_invalid_groups"]`` per layer
    for N:M), time, calibration tokens and the largest per-block working set in bytes."""

    method: str
    structure: str
    sparsity: float
    block_path: str
    block_sparsities: list[float]
    layer_sparsity: dict[str, float]
    outlier_ratios: list[float] | None
    seconds: float
    calibration_tokens: int
    peak_block_bytes: int
    report: SparsityReport = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["report"] = self.report.to_dict()
        return out


def _check_fraction(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= float(value) < 1.0:
        raise InvalidParameterError(name, "a fraction in [0, 1)", value, "Fix: e.g. sparsity=0.5.")
    return float(value)


def _check_structure(structure: Any) -> NM | None:
    if isinstance(structure, str) and structure.strip().lower() in ("n:m", "nm"):
        raise InvalidParameterError("structure", "concrete N and M such as '2:4' or '4:8'", structure,
                                    "Fix: write the numbers, e.g. structure='4:8'.")
    made = create_structure(structure)
    if isinstance(made, Element):
        return None
    if not isinstance(made, NM):
        raise InvalidParameterError("structure", "'unstructured' or an N:M pattern such as '2:4'", structure,
                                    "Fix: one-shot methods prune elements; use prunekit.prune for other structures.")
    return made


def _in_features(target: Target) -> int:
    return weight_matrix(target).shape[1]


def _sequential_groups(block: nn.Module, targets: list[Target], inputs: Captured,
                       device: torch.device) -> list[list[Target]]:
    """Targets grouped by the input tensor they read, in the order the block calls them."""
    order: list[tuple[torch.Tensor, Target]] = []  # the input objects are kept alive: no reuse of identities
    handles = []
    for target in targets:
        def hook(module: nn.Module, args: tuple[Any, ...], target: Target = target) -> None:
            if all(t is not target for _, t in order):
                order.append((args[0], target))
        handles.append(target.module.register_forward_pre_hook(hook))
    try:
        single = Captured(inputs.hidden[:1], inputs.args[:1], inputs.kwargs[:1])
        run_block(block, single, device, None)
    finally:
        for handle in handles:
            handle.remove()
    groups: list[list[Target]] = []
    last: torch.Tensor | None = None
    for tensor, target in order:
        if last is not None and tensor is last:
            groups[-1].append(target)
        else:
            last = tensor
            groups.append([target])
    missing = [t for t in targets if all(t is not g for group in groups for g in group)]
    if missing:
        logger.warning("sequential: %s never called by the block; pruned with the last group",
                       ", ".join(t.name for t in missing))
        groups.append(missing)
    return groups


def _prune_group(group: list[Target], method: OneShotMethod, stats: dict[str, InputStats] | None,
                 sparsity: float, nm: NM | None, options: dict[str, Any], prefix: str, mode: str) -> dict[str, float]:
    achieved = {}
    keeps: list[torch.Tensor] = []
    for target in group:
        name = prefix + target.name
        matrix = weight_matrix(target).detach().float()
        # each layer's statistics are released as soon as it is pruned
        new, keep = method.prune_layer(matrix, None if stats is None else stats.pop(target.name),
                                       sparsity, nm, options, name)
        if new is not None:
            set_weight_matrix(target, new)
        keep_param = keep.t() if target.in_dim == 0 else keep
        if mode == "permanent":
            with torch.no_grad():
                target.original.mul_(keep_param.to(target.original.dtype))
        keeps.append(keep_param.contiguous())
        achieved[name] = 1.0 - float(keep.sum()) / keep.numel()
        logger.debug("%s: sparsity %.4f", name, achieved[name])
    if mode != "permanent":
        apply_masks(group, keeps, mode=mode, description=f"oneshot {method.name}")
    return achieved


def _owl_ratios(blocks: nn.ModuleList, store: BlockStore, inputs: Captured, include: Any, exclude: Any,
                owl_m: float, device: torch.device, progress: Callable[[OneShotProgress], None] | None) -> list[float]:
    """Outlier ratio of every block of the dense model (its inputs from the dense blocks before it)."""
    ratios = []
    x = inputs
    for index in range(len(blocks)):
        with _stage(progress, "owl", index, len(blocks)):
            block = store.load(index)
            targets = block_targets(block, include, exclude)
            with collect_input_stats(targets, norms=True, hessian=False) as stats:
                x = run_block(block, x, device, store.rest)
            ratios.append(outlier_ratio([wanda_scores(weight_matrix(t), stats[t.name].norms()) for t in targets],
                                        owl_m))
            store.release(index)
    return ratios


@contextmanager
def _stage(progress: Callable[[OneShotProgress], None] | None, stage: str, index: int, count: int) -> Iterator[None]:
    """Send ``start`` and ``done`` (with the seconds taken) events around a stage of one block."""
    start = time.perf_counter()
    if progress:
        progress(OneShotProgress(stage, index, count, "start"))
    yield
    if progress:
        progress(OneShotProgress(stage, index, count, "done", time.perf_counter() - start))


def _check_arguments(
    model: Any, method: str, sparsity: Any, structure: Any, owl: bool, owl_lambda: float, owl_m: float,
    offload: str, mode: str, batch_size: Any, blocksize: Any, percdamp: Any, device: Any, blocks: str | None,
    include: Any, exclude: Any, head: Any = False, embeddings: Any = False,
) -> tuple[OneShotMethod, NM | None, float, torch.device, str, nn.ModuleList, OutputParts]:
    """Validate every argument of :func:`oneshot_prune` before anything changes."""
    if not isinstance(model, nn.Module):
        raise InvalidParameterError("model", "a torch.nn.Module", type(model).__name__)
    chosen = ONESHOT_METHODS.get(method)()
    nm = _check_structure(structure)
    if sparsity is None:
        sparsity = nm.fixed_sparsity if nm is not None else 0.5
    sparsity = _check_fraction("sparsity", sparsity)
    if nm is not None and not math.isclose(sparsity, nm.fixed_sparsity):
        raise InvalidParameterError("sparsity", f"{nm.fixed_sparsity} (fixed by {nm.spec()}) or None", sparsity,
                                    f"Fix: leave sparsity out for structure={nm.spec()!r}.")
    if owl:
        if nm is not None:
            raise InvalidParameterError("owl", "False for N:M (its sparsity is fixed)", owl,
                                        "Fix: use OWL with structure='unstructured'.")
        check_owl(sparsity, owl_lambda, owl_m)
    check_choice("offload", offload, OFFLOAD_MODES)
    check_choice("mode", mode, MODES)
    for name, value in (("batch_size", batch_size), ("blocksize", blocksize)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidParameterError(name, "a positive int", value)
    if nm is not None and chosen.hessian and blocksize % nm.m:
        raise InvalidParameterError("blocksize", f"a multiple of M={nm.m}", blocksize, "Fix: e.g. blocksize=128.")
    if isinstance(percdamp, bool) or not isinstance(percdamp, numbers.Real) or not percdamp > 0:
        raise InvalidParameterError("percdamp", "a positive float", percdamp, "Fix: e.g. percdamp=0.01.")
    path, block_list = find_blocks(model, blocks)
    first = next(model.parameters(), None)
    try:
        dev = torch.device(device) if device is not None else (first.device if first is not None else torch.device("cpu"))
    except (RuntimeError, TypeError) as exc:
        raise InvalidParameterError("device", "a torch device such as 'cpu' or 'cuda:0'", device) from exc
    for index, block in enumerate(block_list):
        targets = block_targets(block, include, exclude)
        for target in targets:
            if nm is not None and _in_features(target) % nm.m:
                raise InvalidParameterError(
                    "structure", f"an input size divisible by M={nm.m}",
                    f"{path}.{index}.{target.name} with {_in_features(target)} inputs",
                    f"Fix: exclude {target.name!r} or pick M dividing {_in_features(target)}.",
                )
            state = target.state
            if mode != "permanent" and state not in ("dense", mode):
                raise InvalidParameterError("mode", f"{state!r}, the mode {target.name} is already pruned in", mode)
    parts = find_output_parts(model, path, head, embeddings, nm, mode)
    return chosen, nm, sparsity, dev, path, block_list, parts


def oneshot_prune(
    model: nn.Module,
    calibration: Any,
    method: str = "wanda",
    sparsity: float | None = None,
    structure: str = "unstructured",
    *,
    owl: bool = False,
    owl_lambda: float = 0.08,
    owl_m: float = 5.0,
    sequential: bool = False,
    offload: str = "none",
    offload_dir: str | None = None,
    device: str | torch.device | None = None,
    batch_size: int = 8,
    blocks: str | None = None,
    include: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
    mode: str = "permanent",
    blocksize: int = 128,
    percdamp: float = 0.01,
    head: bool = False,
    embeddings: bool = False,
    progress: Callable[[OneShotProgress], None] | None = None,
) -> OneShotResult:
    """Prune the linear layers of every transformer block of ``model`` once, from calibration data.

    Args:
        model: a Hugging Face causal LM (LLaMA family, GPT-2, OPT …) or a
            model with its blocks at a known path (:func:`find_blocks`), e.g.
            prunekit's ``gpt_tiny``.
        calibration: token ids ``(N, T)`` or an iterable of batches (id
            tensors, dicts of model inputs or ``(inputs, targets)`` pairs).
        method: ``"wanda"`` (``|W_ij|·‖X_j‖₂`` per output row; Sun et al. 2023),
            ``"sparsegpt"`` (OBS update from ``H = 2XXᵀ``; Frantar & Alistarh 2023)
            or ``"magnitude"`` (``|W|``, one threshold per matrix).
        sparsity: fraction of each layer's weights pruned; default 0.5, and
            ``1 − N/M`` for N:M (any other value is an error there).
        structure: ``"unstructured"`` or ``"N:M"`` such as ``"2:4"``, ``"4:8"``.
        owl: per-block sparsities from outlier ratios (Yin et al. 2023) within
            ``± owl_lambda`` of ``sparsity``, outliers above ``owl_m`` × mean.
        sequential: prune a block's layers group by group with re-captured inputs.
        offload: ``"none"``, ``"cpu"`` or ``"disk"`` for the blocks not being pruned.
        offload_dir: folder for ``offload="disk"`` (default: a temporary one).
        device: where blocks are pruned (default: the model's device).
        batch_size: rows per forward when ``calibration`` is an id tensor.
        blocks: dotted path of the block ModuleList when not detected.
        include, exclude: globs on the layer names inside a block (``"mlp.*"``).
        mode: ``"permanent"`` (zeros written, no mask: saves with
            ``save_pretrained``), ``"inplace"`` or ``"reparam"`` (prunekit masks
            kept, e.g. for fine-tuning; see :func:`prunekit.apply_masks`).
        blocksize, percdamp: SparseGPT's column block (128) and dampening (0.01).
        head: also prune the output head (``lm_head``; default False: left
            dense). After the last block, the model's final norm (and OPT's
            ``project_out``) is run on the last block's outputs and the head is
            pruned with ``method`` from those inputs ``X`` (Wanda's ``‖X_j‖₂``,
            SparseGPT's ``H = 2XXᵀ``) at ``sparsity`` (not an OWL level) and
            ``structure``. An error when no final norm is found
            (:data:`prunekit.oneshot.head.FINAL_NORM_NAMES`).
        embeddings: also prune the token embedding (default False) by
            magnitude ``|E_vd|`` (no calibration statistic applies to a table
            lookup) at ``sparsity``, one threshold per matrix, or N of every M
            consecutive entries along the embedding dimension for N:M.
            A head tied to the embedding (GPT-2, OPT) is one matrix: it needs
            ``head=True, embeddings=True`` together (pruned once, by ``method``
            from the head's inputs) and ``mode="permanent"``; either flag alone
            is an error.
        progress: called with :class:`OneShotProgress` events.

    Returns:
        :class:`OneShotResult`.

    Raises:
        InvalidParameterError: for bad arguments, before anything changes.
        PrunekitError: when a SparseGPT Hessian stays indefinite after raising
            the dampening; the blocks before it are then already pruned.
    """
    chosen, nm, sparsity, dev, path, block_list, parts = _check_arguments(
        model, method, sparsity, structure, owl, owl_lambda, owl_m, offload, mode, batch_size, blocksize, percdamp,
        device, blocks, include, exclude, head, embeddings)
    batches = calibration_batches(calibration, batch_size)

    start = time.perf_counter()
    options = {"blocksize": blocksize, "percdamp": percdamp}
    was_training = model.training
    model.eval()
    store = BlockStore(block_list, offload, dev, offload_dir)
    peak = 0
    ratios: list[float] | None = None
    layer_sparsity: dict[str, float] = {}
    try:
        _move_outside_blocks(model, block_list, dev)
        with _stage(progress, "capture", 0, 1):
            inputs = capture_block_inputs(model, block_list[0], batches, dev, store.rest)
        levels = [sparsity] * len(block_list)
        if owl:
            ratios = _owl_ratios(block_list, store, inputs, include, exclude, owl_m, dev, progress)
            levels = owl_sparsities(ratios, sparsity, owl_lambda)
            logger.info("OWL outlier ratios %s -> sparsities %s", [f"{r:.4f}" for r in ratios],
                        [f"{s:.4f}" for s in levels])
        tokens = inputs.tokens
        x = inputs
        del inputs  # from here on only the current block's inputs and outputs are alive
        for index in range(len(block_list)):
            with _stage(progress, "prune", index, len(block_list)):
                block = store.load(index)
                targets = block_targets(block, include, exclude)
                prefix = f"{path}.{index}."
                groups = _sequential_groups(block, targets, x, dev) if sequential else [targets]
                for group in groups:
                    stats = None
                    if chosen.norms or chosen.hessian:
                        with collect_input_stats(group, norms=chosen.norms, hessian=chosen.hessian) as stats:
                            run_block(block, x, dev, None)
                        peak = max(peak, x.nbytes + sum(st.nbytes for st in stats.values()))
                    layer_sparsity.update(_prune_group(group, chosen, stats, levels[index], nm, options, prefix, mode))
                    del stats
                x = run_block(block, x, dev, store.rest)
                peak = max(peak, 2 * x.nbytes)
                store.release(index)
                release_freed_memory()  # the block's statistics and temporaries, and its inputs
            logger.info("block %d/%d pruned at %.4f", index + 1, len(block_list), levels[index])
        layer_sparsity.update(_prune_outside_blocks(parts, x, chosen, sparsity, nm, options, mode, dev))
    finally:
        store.finish()
        model.train(was_training)
    seconds = time.perf_counter() - start
    outside = [t.name for t in (parts.head, parts.embedding) if t is not None]
    report = sparsity_report(model, types=(*LINEAR_TYPES, nn.Embedding) if outside else LINEAR_TYPES,
                             include=[f"{path}.*", *outside], params="weight")
    if include is not None or exclude is not None:
        report.rows = [r for r in report.rows if r.name in layer_sparsity]
    if nm is not None:
        report.extras["nm_invalid_groups"] = {
            name: nm_invalid_groups(_effective_matrix(model, name), nm) for name in layer_sparsity
        }
    report.extras["method"] = chosen.name
    return OneShotResult(chosen.name, "unstructured" if nm is None else nm.spec(), sparsity, path, levels,
                         layer_sparsity, ratios, seconds, tokens, peak, report)


def _prune_outside_blocks(parts: OutputParts, last: Captured, method: OneShotMethod, sparsity: float,
                          nm: NM | None, options: dict[str, Any], mode: str, device: torch.device) -> dict[str, float]:
    """Prune the head (from the final norm's outputs on ``last``) and/or the embedding (by magnitude)."""
    achieved: dict[str, float] = {}
    if parts.head is not None:
        stats = head_input_stats(parts, last, device, method.norms, method.hessian) \
            if method.norms or method.hessian else None
        achieved.update(_prune_group([parts.head], method, stats, sparsity, nm, options, "", mode))
        logger.info("output head %s pruned by %s at %.4f", parts.head.name, method.name, sparsity)
    if parts.embedding is not None:
        if parts.tied:
            achieved[parts.embedding.name] = achieved[parts.head.name]  # type: ignore[union-attr]
            logger.info("%s is tied to the head: pruned with it", parts.embedding.name)
        else:
            magnitude = ONESHOT_METHODS.get("magnitude")()
            achieved.update(_prune_group([parts.embedding], magnitude, None, sparsity, nm, options, "", mode))
            logger.info("token embedding %s pruned by magnitude at %.4f", parts.embedding.name, sparsity)
    return achieved


def _move_outside_blocks(model: nn.Module, block_list: nn.ModuleList, device: torch.device) -> None:
    """Move the parameters and buffers outside the blocks (embeddings, rotary tables, head) to ``device``."""
    inside = {id(t) for b in block_list for t in (*b.parameters(), *b.buffers())}
    for module in model.modules():
        for name, p in module._parameters.items():
            if p is not None and id(p) not in inside and p.device != device:
                p.data = p.data.to(device)
        for name, b in module._buffers.items():
            if b is not None and id(b) not in inside and b.device != device:
                module._buffers[name] = b.to(device)


def _effective_matrix(model: nn.Module, name: str) -> torch.Tensor:
    module_name, _, param = name.rpartition(".")
    module = model.get_submodule(module_name)
    target = Target(name, module_name, module, param)
    effective = target.effective()
    return effective.t() if target.in_dim == 0 else effective
