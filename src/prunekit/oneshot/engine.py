"""The block-by-block pass of one-shot pruning, shared by :func:`prunekit.oneshot_prune`
(a model in memory) and :func:`prunekit.oneshot.prune_pretrained` (a folder streamed from disk).

Frantar & Alistarh 2023 (Sun et al. 2023 use the same scheme):

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

A method that reads no input statistics (``magnitude``, ``|W|``; any
registered layer score that ``needs="nothing"``) without OWL needs no
calibration pass: each block is loaded, pruned from its weights and
released, and the model never runs (:attr:`Plan.needs_data`).

OWL (``owl=True``) first runs the dense model block by block to measure each
block's outlier ratio, then prunes block ``l`` at its own sparsity ``s_l``.

The pass only writes weight values (the new weights, zeros at the pruned
entries); the masks of ``mode="inplace"`` / ``"reparam"`` are returned in
:attr:`PassOutcome.keeps` for the caller to attach once the pass has
succeeded, so that a failure leaves nothing but values to restore
(:mod:`prunekit.oneshot.journal`). The sparsity report is gathered block by
block while each block is loaded, so it needs no block in memory at the end.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..measure.sparsity import TensorSparsity, sparsity_report
from ..memory import release_freed_memory
from ..progress import LegacyEvent, ProgressArg, ProgressCallback
from ..structures import NM
from ..targets import Target
from .blocks import LINEAR_TYPES, block_targets, set_weight_matrix, weight_matrix
from .capture import Captured, capture_block_inputs, run_block
from .head import OutputParts, head_input_stats
from .journal import Journal
from .methods import ONESHOT_METHODS, OneShotMethod
from .offload import BlockHome
from ..allocation.owl import outlier_ratio, owl_sparsities
from ..allocation.rows import nm_invalid_groups
from .stats import InputStats, RealPositions, collect_input_stats
from .wanda import wanda_scores

__all__ = ["OneShotProgress", "PassOutcome", "Plan", "run_pass"]

logger = logging.getLogger(__name__)


class OneShotProgress(LegacyEvent):
    """What the pass reports when a block starts and when it ends: a
    :class:`~prunekit.progress.ProgressEvent` whose ``stage`` is ``"capture"`` (the
    first block's inputs), ``"owl"`` (measuring outlier ratios) or ``"prune"``,
    ``done`` the blocks finished (``block`` at its start, ``block + 1`` at its end)
    of ``total`` = the blocks, ``detail`` ``"block i"``, ``figures`` ``seconds``
    (the block's time, at its end) and ``sparsity`` (its level, for ``"prune"``).

    Deprecated: the old attributes ``block``, ``blocks``, ``status`` (``"start"`` /
    ``"done"``) and ``seconds`` still answer for one release and warn with the new form.
    """

    _new_forms = {"block": "done (at a block's start) or done - 1 (at its end), and detail",
                  "blocks": "total", "status": "done (it grows by one when a block is done)",
                  "seconds": "figures['seconds']"}

    def __init__(self, stage: str, block: int, blocks: int, status: str, seconds: float = 0.0,
                 sparsity: float | None = None) -> None:
        figures: dict[str, float] = {} if status == "start" else {"seconds": float(seconds)}
        if sparsity is not None:
            figures["sparsity"] = float(sparsity)
        super().__init__(stage, block + (status != "start"), blocks, figures, f"block {block}")
        self._keep_legacy(block=block, blocks=blocks, status=status, seconds=seconds)


@dataclass
class Plan:
    """The validated arguments of one pass."""

    method: OneShotMethod
    nm: NM | None
    sparsity: float
    device: torch.device
    path: str
    blocks: nn.ModuleList
    parts: OutputParts
    mode: str = "permanent"
    options: dict[str, Any] = field(default_factory=dict)
    owl: bool = False
    owl_lambda: float = 0.08
    owl_m: float = 5.0
    sequential: bool = False
    include: Any = None
    exclude: Any = None
    progress: ProgressArg = None
    #: where the pass reports (:func:`prunekit.progress.progress_reporter` of ``progress``, set by the caller)
    report: ProgressCallback | None = None

    @property
    def needs_data(self) -> bool:
        """Whether the pass runs the model on calibration data: a method that reads input statistics
        (Wanda's norms, SparseGPT's Hessian) or OWL's outlier ratios. Magnitude alone needs none."""
        return self.method.norms or self.method.hessian or self.owl


@dataclass
class Keep:
    """A mask to attach after the pass: ``restore`` when the pruned entries get their original values
    back (``mode="reparam"`` with a method that leaves the kept weights as they were)."""

    target: Target
    keep: torch.Tensor
    restore: bool
    journal_key: str
    name: str


@dataclass
class PassOutcome:
    """What one pass did (see :class:`prunekit.oneshot.OneShotResult`)."""

    levels: list[float] = field(default_factory=list)
    ratios: list[float] | None = None
    layer_sparsity: dict[str, float] = field(default_factory=dict)
    tokens: int = 0
    peak: int = 0
    rows: list[TensorSparsity] = field(default_factory=list)
    model_params: int = 0
    model_nonzero: int = 0
    nm_invalid_groups: dict[str, int] = field(default_factory=dict)
    keeps: list[Keep] = field(default_factory=list)


@contextmanager
def _stage(report: ProgressCallback | None, stage: str, index: int, count: int,
           sparsity: float | None = None) -> Iterator[None]:
    """Send ``start`` and ``done`` (with the seconds taken) events around a stage of one block."""
    start = time.perf_counter()
    if report:
        report(OneShotProgress(stage, index, count, "start", sparsity=sparsity))
    yield
    if report:
        report(OneShotProgress(stage, index, count, "done", time.perf_counter() - start, sparsity=sparsity))


def sequential_groups(block: nn.Module, targets: list[Target], inputs: Captured,
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
        single = Captured(inputs.hidden[:1], inputs.args[:1], inputs.kwargs[:1], inputs.keep[:1])
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
                 sparsity: float, plan: Plan, prefix: str, key: str, outcome: PassOutcome) -> None:
    """Prune each layer of ``group``: new weights written, zeros at the pruned entries."""
    for target in group:
        name = prefix + target.name
        matrix = weight_matrix(target).detach().float()
        # each layer's statistics are released as soon as it is pruned
        new, keep = method.prune_layer(matrix, None if stats is None else stats.pop(target.name),
                                       sparsity, plan.nm, plan.options, name)
        if new is not None:
            set_weight_matrix(target, new)
        keep_param = keep.t() if target.in_dim == 0 else keep
        with torch.no_grad():
            target.original.mul_(keep_param.to(target.original.dtype))
        if plan.mode != "permanent":
            outcome.keeps.append(Keep(target, keep_param.contiguous(), plan.mode == "reparam" and new is None,
                                      key, name))
        outcome.layer_sparsity[name] = 1.0 - float(keep.sum()) / keep.numel()
        logger.debug("%s: sparsity %.4f", name, outcome.layer_sparsity[name])


def _owl_ratios(plan: Plan, store: BlockHome, inputs: Captured) -> list[float]:
    """Outlier ratio of every block of the dense model (its inputs from the dense blocks before it)."""
    ratios = []
    x = inputs
    for index in range(len(plan.blocks)):
        with _stage(plan.report, "owl", index, len(plan.blocks)):
            block = store.load(index)
            targets = block_targets(block, plan.include, plan.exclude)
            positions = RealPositions()
            with collect_input_stats(targets, norms=True, hessian=False, positions=positions) as stats:
                x = run_block(block, x, plan.device, store.rest, positions)
            ratios.append(outlier_ratio([wanda_scores(weight_matrix(t), stats[t.name].norms()) for t in targets],
                                        plan.owl_m))
            store.release(index, changed=False)
    return ratios


def _report_block(outcome: PassOutcome, plan: Plan, block: nn.Module, prefix: str, targets: list[Target]) -> None:
    """Report rows (and N:M check) of a pruned block while it is loaded; its parameters join the model totals."""
    report = sparsity_report(block, types=LINEAR_TYPES, params="weight")
    outcome.model_params += report.model_params
    outcome.model_nonzero += report.model_nonzero
    for row in report.rows:
        # the masks of the masked modes are attached after the pass: the rows already say so
        outcome.rows.append(dataclasses.replace(row, name=prefix + row.name,
                                                state=plan.mode if plan.mode != "permanent" else row.state))
    if plan.nm is not None:
        for target in targets:
            outcome.nm_invalid_groups[prefix + target.name] = nm_invalid_groups(weight_matrix(target), plan.nm)


def _report_outside(outcome: PassOutcome, plan: Plan, model: nn.Module) -> None:
    """Rows of the pruned head / embedding, and the parameters outside the blocks in the model totals."""
    inside = {id(m) for block in plan.blocks for m in block.modules()}
    for module in model.modules():
        if id(module) not in inside:
            for p in module._parameters.values():
                if p is not None:
                    outcome.model_params += p.numel()
                    outcome.model_nonzero += int(torch.count_nonzero(p))
    for target in (plan.parts.embedding, plan.parts.head):
        if target is None:
            continue
        row = sparsity_report(target.module, types=(type(target.module),), params=target.param_name).rows[0]
        row = dataclasses.replace(row, name=target.name, state=plan.mode if plan.mode != "permanent" else row.state)
        # in the model's order: the embedding before the blocks, the head after them
        outcome.rows.insert(0 if target is plan.parts.embedding else len(outcome.rows), row)
        if plan.nm is not None:
            outcome.nm_invalid_groups[target.name] = nm_invalid_groups(weight_matrix(target), plan.nm)


def _prune_outside_blocks(plan: Plan, last: Captured | None, outcome: PassOutcome,
                          journal: Journal | None) -> None:
    """Prune the head (from the final norm's outputs on ``last``) and/or the embedding (by magnitude)."""
    parts, method = plan.parts, plan.method
    targets = [t for t in (parts.head, parts.embedding) if t is not None]
    if journal is not None:
        journal.record("outside", [(t.name, t.original) for t in targets])
    if parts.head is not None:
        stats = head_input_stats(parts, last, plan.device, method.norms, method.hessian) \
            if last is not None and (method.norms or method.hessian) else None
        _prune_group([parts.head], method, stats, plan.sparsity, plan, "", "outside", outcome)
        logger.info("output head %s pruned by %s at %.4f", parts.head.name, method.name, plan.sparsity)
    if parts.embedding is not None:
        if parts.tied:
            outcome.layer_sparsity[parts.embedding.name] = outcome.layer_sparsity[parts.head.name]  # type: ignore[union-attr]
            logger.info("%s is tied to the head: pruned with it", parts.embedding.name)
        else:
            magnitude = ONESHOT_METHODS.get("magnitude")()
            _prune_group([parts.embedding], magnitude, None, plan.sparsity, plan, "", "outside", outcome)
            logger.info("token embedding %s pruned by magnitude at %.4f", parts.embedding.name, plan.sparsity)


def move_outside_blocks(model: nn.Module, block_list: nn.ModuleList, device: torch.device) -> None:
    """Move the parameters and buffers outside the blocks (embeddings, rotary tables, head) to ``device``."""
    inside = {id(t) for b in block_list for t in (*b.parameters(), *b.buffers())}
    for module in model.modules():
        for p in module._parameters.values():
            if p is not None and id(p) not in inside and p.device != device:
                p.data = p.data.to(device)
        for name, b in module._buffers.items():
            if b is not None and id(b) not in inside and b.device != device:
                module._buffers[name] = b.to(device)


def _open_block(plan: Plan, store: BlockHome, index: int, journal: Journal | None
                ) -> tuple[nn.Module, list[Target], str, str]:
    """Block ``index`` loaded, its targets, their name prefix and journal key; the targets' values
    recorded in ``journal`` first (so an error restores them)."""
    block = store.load(index)
    targets = block_targets(block, plan.include, plan.exclude)
    prefix, key = f"{plan.path}.{index}.", f"block_{index}"
    if journal is not None:
        journal.record(key, [(prefix + t.name, t.original) for t in targets])
    return block, targets, prefix, key


def _run_without_data(plan: Plan, store: BlockHome, journal: Journal | None, outcome: PassOutcome) -> None:
    """The pass of a method that reads no input statistics (magnitude): each block loaded, pruned
    from its weights alone and released; the model never runs."""
    outcome.levels = [plan.sparsity] * len(plan.blocks)
    for index in range(len(plan.blocks)):
        with _stage(plan.report, "prune", index, len(plan.blocks), plan.sparsity):
            block, targets, prefix, key = _open_block(plan, store, index, journal)
            _prune_group(targets, plan.method, None, plan.sparsity, plan, prefix, key, outcome)
            _report_block(outcome, plan, block, prefix, targets)
            store.release(index, changed=True)
            release_freed_memory()
        logger.info("block %d/%d pruned at %.4f", index + 1, len(plan.blocks), plan.sparsity)


def run_pass(model: nn.Module, plan: Plan, batches: list[Any] | None, store: BlockHome,
             journal: Journal | None) -> PassOutcome:
    """Prune every block of ``model`` (and the head / embedding when asked) from ``batches``.

    Each block's weights are recorded in ``journal`` (when given) before they change. A plan
    that needs no data (:attr:`Plan.needs_data`) never runs the model and ignores ``batches``.
    """
    outcome = PassOutcome()
    move_outside_blocks(model, plan.blocks, plan.device)
    store.start()
    if not plan.needs_data:
        _run_without_data(plan, store, journal, outcome)
        _prune_outside_blocks(plan, None, outcome, journal)
        _report_outside(outcome, plan, model)
        return outcome
    if batches is None:
        raise RuntimeError("run_pass: this plan needs calibration batches")
    with _stage(plan.report, "capture", 0, 1):
        inputs = capture_block_inputs(model, plan.blocks[0], batches, plan.device, store.rest)
    outcome.levels = [plan.sparsity] * len(plan.blocks)
    if plan.owl:
        outcome.ratios = _owl_ratios(plan, store, inputs)
        outcome.levels = owl_sparsities(outcome.ratios, plan.sparsity, plan.owl_lambda)
        logger.info("OWL outlier ratios %s -> sparsities %s", [f"{r:.4f}" for r in outcome.ratios],
                    [f"{s:.4f}" for s in outcome.levels])
    outcome.tokens = inputs.tokens
    x = inputs
    del inputs  # from here on only the current block's inputs and outputs are alive
    for index in range(len(plan.blocks)):
        with _stage(plan.report, "prune", index, len(plan.blocks), outcome.levels[index]):
            block, targets, prefix, key = _open_block(plan, store, index, journal)
            groups = sequential_groups(block, targets, x, plan.device) if plan.sequential else [targets]
            for group in groups:
                stats = None
                if plan.method.norms or plan.method.hessian:
                    positions = RealPositions()
                    with collect_input_stats(group, norms=plan.method.norms, hessian=plan.method.hessian,
                                             positions=positions) as stats:
                        run_block(block, x, plan.device, None, positions)
                    outcome.peak = max(outcome.peak, x.nbytes + sum(st.nbytes for st in stats.values()))
                _prune_group(group, plan.method, stats, outcome.levels[index], plan, prefix, key, outcome)
                del stats
            x = run_block(block, x, plan.device, store.rest)
            outcome.peak = max(outcome.peak, 2 * x.nbytes)
            _report_block(outcome, plan, block, prefix, targets)
            store.release(index, changed=True)
            release_freed_memory()  # the block's statistics and temporaries, and its inputs
        logger.info("block %d/%d pruned at %.4f", index + 1, len(plan.blocks), outcome.levels[index])
    _prune_outside_blocks(plan, x, outcome, journal)
    _report_outside(outcome, plan, model)
    return outcome
