"""``prunekit.oneshot_prune``: layer-by-layer one-shot pruning of a transformer from a calibration set.

The pass itself (capture, per block statistics, prune, rerun) is
:mod:`prunekit.oneshot.engine`; this module validates the arguments and makes
the call all or nothing: every weight the pass is about to change is first
recorded (:class:`prunekit.oneshot.journal.Journal`, in memory or in the
offload folder), the masks of the masked modes are attached only after the
pass has succeeded, and on any exception the recorded values and the devices
of all tensors are put back before it propagates.
"""

from __future__ import annotations

import logging
import math
import numbers
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from ..deprecation import renamed_value
from ..errors import InvalidParameterError, check_choice
from ..masks import list_realisations
from ..masks import apply_masks
from ..measure.sparsity import SparsityReport
from ..params import ONESHOT_PARAMS
from ..progress import ProgressArg, check_progress, progress_reporter
from ..structures import NM, Element, create_structure
from ..targets import Target
from ..validation import checked_keywords, validate
from .blocks import block_targets, find_blocks, weight_matrix
from .capture import calibration_batches, check_token_ids
from .engine import OneShotProgress, PassOutcome, Plan, run_pass
from .head import find_output_parts
from .journal import Journal, Placement
from .methods import ONESHOT_METHODS
from .offload import OFFLOAD_MODES, BlockStore
from ..allocation.owl import check_owl

__all__ = ["OneShotProgress", "OneShotResult", "make_plan", "oneshot_prune", "plan_batches"]

logger = logging.getLogger(__name__)

#: ``"permanent"`` (zeros written, no mask) or one of the mask modes of :func:`prunekit.apply_masks`.


@dataclass
class OneShotResult:
    """What :func:`oneshot_prune` did: per-block target sparsities, per-layer achieved sparsities,
    the sparsity report of the pruned layers (``report.extras["nm_invalid_groups"]`` per layer
    for N:M), time, calibration tokens (real ones: positions whose attention mask is 0 are padding,
    not counted) and the largest per-block working set in bytes."""

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

    @classmethod
    def from_pass(cls, plan: Plan, outcome: PassOutcome, seconds: float) -> OneShotResult:
        rows = outcome.rows
        if plan.include is not None or plan.exclude is not None:
            rows = [r for r in rows if r.name in outcome.layer_sparsity]
        report = SparsityReport(rows, outcome.model_params, outcome.model_nonzero)
        if plan.nm is not None:
            report.extras["nm_invalid_groups"] = outcome.nm_invalid_groups
        report.extras["method"] = plan.method.name
        return cls(plan.method.name, "element" if plan.nm is None else plan.nm.spec(), plan.sparsity, plan.path,
                   outcome.levels, outcome.layer_sparsity, outcome.ratios, seconds, outcome.tokens, outcome.peak,
                   report)

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
        raise InvalidParameterError("structure", "'element' or an N:M pattern such as '2:4'", structure,
                                    "Fix: one-shot methods prune elements; use prunekit.prune for other structures.")
    return made


def _in_features(target: Target) -> int:
    return weight_matrix(target).shape[1]


def make_plan(
    model: Any, method: str, sparsity: Any, structure: Any, *, owl: bool = False, owl_lambda: float = 0.08,
    owl_m: float = 5.0, sequential: bool = False, mode: str = "permanent", batch_size: Any = 8,
    blocksize: Any = 128, percdamp: Any = 0.01, device: Any = None, blocks: str | None = None, include: Any = None,
    exclude: Any = None, head: Any = False, embeddings: Any = False,
    progress: ProgressArg = None,
) -> Plan:
    """Validate the arguments of a pass (see :func:`oneshot_prune`) before anything changes.

    Only shapes, names and module types are read: the blocks may still be on the meta device.
    """
    if not isinstance(model, nn.Module):
        raise InvalidParameterError("model", "a torch.nn.Module", type(model).__name__)
    check_progress(progress)
    validate(ONESHOT_PARAMS, {"method": method, "mode": mode, "blocksize": blocksize, "percdamp": percdamp})
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
                                        "Fix: use OWL with structure='element'.")
        check_owl(sparsity, owl_lambda, owl_m)
    check_choice("mode", mode, list_realisations())
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
        dev = torch.device(device) if device is not None else (
            first.device if first is not None else torch.device("cpu"))
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
    options = {"blocksize": blocksize, "percdamp": percdamp}
    return Plan(chosen, nm, sparsity, dev, path, block_list, parts, mode, options, owl, owl_lambda, owl_m, sequential,
                include, exclude, progress)


def plan_batches(plan: Plan, data: Any, batch_size: int) -> list[Any] | None:
    """The calibration batches of ``data`` when ``plan`` needs them; None (``data`` not read) when not."""
    if plan.needs_data:
        return calibration_batches(data, batch_size)
    if data is not None:
        logger.info("%s without OWL reads no calibration data: data is not used", plan.method.name)
    return None


@checked_keywords
def oneshot_prune(
    model: nn.Module,
    data: Any = None,
    method: str = "wanda",
    sparsity: float | None = None,
    structure: str = "element",
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
    progress: ProgressArg = None,
    calibration: Any = None,
) -> OneShotResult:
    """Prune the linear layers of every transformer block of ``model`` once, from calibration data.

    Args:
        model: a Hugging Face causal LM (LLaMA family, GPT-2, OPT …), an
            encoder (BERT, RoBERTa, DistilBERT …, bare or with a task head) or a
            model with its blocks at a known path (:func:`find_blocks`), e.g.
            prunekit's ``gpt_tiny``.
        data: the calibration data: token ids ``(N, T)`` or an iterable of
            batches (id tensors, dicts of model inputs or ``(inputs, targets)`` pairs).
            Not needed (and not read) by ``method="magnitude"`` without OWL:
            then the model never runs.
            The positions of a dict batch whose ``attention_mask`` is 0 are
            padding: they are run through the blocks but take no part in any
            statistic (input norms, Hessians, OWL's outlier ratios, the
            head's inputs) nor in ``calibration_tokens``. A batch without a
            mask counts every position.
        method: ``"wanda"`` (``|W_ij|·‖X_j‖₂`` per output row; Sun et al. 2023),
            ``"sparsegpt"`` (OBS update from ``H = 2XXᵀ``; Frantar & Alistarh 2023)
            or ``"magnitude"`` (``|W|``, one threshold per matrix).
        sparsity: fraction of each layer's weights pruned; default 0.5, and
            ``1 − N/M`` for N:M (any other value is an error there).
        structure: ``"element"`` (unstructured) or ``"N:M"`` such as ``"2:4"``, ``"4:8"``.
        owl: per-block sparsities from outlier ratios (Yin et al. 2023) within
            ``± owl_lambda`` of ``sparsity``, outliers above ``owl_m`` × mean.
        sequential: prune a block's layers group by group with re-captured inputs.
        offload: ``"none"``, ``"cpu"`` or ``"disk"`` for the blocks not being pruned.
            The original values of the pruned weights are kept until the call
            succeeds, in memory, or in ``offload_dir`` with ``"disk"``. A model
            that does not fit in memory at all: :func:`prune_pretrained`.
        offload_dir: folder for ``offload="disk"`` (default: a temporary one).
        device: where blocks are pruned (default: the model's device).
        batch_size: rows per forward when ``data`` is an id tensor.
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
        progress: ``True`` for a progress bar on stderr, or a callable receiving
            a :class:`~prunekit.progress.ProgressEvent` when each block starts and
            ends (stages ``"capture"``, ``"owl"``, ``"prune"``; ``done`` blocks of
            ``total``; see :class:`OneShotProgress`). Default: logged at DEBUG
            only. A callback reading the old :class:`OneShotProgress` attributes
            (``status``, ``block``, ``blocks``, ``seconds``) still works
            (deprecated, warns). An exception it raises stops the pass, and the
            model is restored.
        calibration: deprecated name of ``data`` (giving both is an error).

    Returns:
        :class:`OneShotResult`.

    Raises:
        InvalidParameterError: for bad arguments, before anything changes.
        PrunekitError: when a SparseGPT Hessian stays indefinite after raising
            the dampening. Then, as after any other exception during the
            pass, the model is put back as it was before the call (weights
            bit for bit, devices, no masks or hooks; see
            :mod:`prunekit.oneshot.journal`) before the exception propagates.
    """
    data = renamed_value(calibration, "calibration", "data", "prunekit.oneshot_prune", new_value=data)
    plan = make_plan(model, method, sparsity, structure, owl=owl, owl_lambda=owl_lambda, owl_m=owl_m,
                     sequential=sequential, mode=mode, batch_size=batch_size, blocksize=blocksize,
                     percdamp=percdamp, device=device, blocks=blocks, include=include, exclude=exclude,
                     head=head, embeddings=embeddings, progress=progress)
    check_choice("offload", offload, OFFLOAD_MODES)
    batches = plan_batches(plan, data, batch_size)
    if batches is not None:
        check_token_ids(model, batches)

    start = time.perf_counter()
    was_training = model.training
    placement = Placement(model)
    store = BlockStore(plan.blocks, offload, plan.device, offload_dir)
    journal = Journal(store.directory if offload == "disk" else None)
    succeeded = False
    try:
        model.eval()
        with progress_reporter(plan.progress) as plan.report:
            outcome = run_pass(model, plan, batches, store, journal)
        store.finish()
        if plan.mode != "permanent":
            _attach_masks(plan, outcome, journal)
        succeeded = True
    except BaseException:
        _roll_back(store, journal, placement)
        raise
    finally:
        journal.discard()
        store.close(keep_files=succeeded)
        model.train(was_training)
    return OneShotResult.from_pass(plan, outcome, time.perf_counter() - start)


def _roll_back(store: BlockStore, journal: Journal, placement: Placement) -> None:
    """Undo a failed pass: every block back in memory, the recorded weights and all devices restored."""
    logger.warning("one-shot pruning failed: restoring the model as it was before the call")
    store.finish()
    journal.restore()
    placement.restore()


@torch.no_grad()
def _attach_masks(plan: Plan, outcome: PassOutcome, journal: Journal) -> None:
    """The masks of ``mode="inplace"`` / ``"reparam"``, all at once once the pass has succeeded.

    With ``"reparam"`` and a method that leaves the kept weights unchanged
    (Wanda, magnitude), the pruned entries of ``<name>_orig`` get their
    original values back: the mask alone prunes them, as it would have had the
    mask been attached before the next block ran.
    """
    for key in journal.recorded():
        restore = [k for k in outcome.keeps if k.restore and k.journal_key == key]
        if restore:
            originals = journal.originals(key)
            for k in restore:
                param = k.target.original
                param.copy_(torch.where(k.keep, param, originals[k.name].to(param.device)))
    apply_masks([k.target for k in outcome.keeps], [k.keep for k in outcome.keeps], mode=plan.mode,
                description=f"oneshot {plan.method.name}")
