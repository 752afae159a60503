"""``prune_pretrained``: one-shot pruning of a Hugging Face model folder that never holds the whole model.

Causal LMs and encoder-only models (BERT-style ``encoder.layer``, DistilBERT's
``transformer.layer``) alike: the engine works on whatever block list
:func:`prunekit.oneshot.blocks.find_blocks` finds.

The model is built from ``config.json`` with its parameters on the meta
device (:func:`prunekit.oneshot.hf_folder.build_skeleton`); only the parts
outside the blocks (embeddings, final norm, head) are read from the
safetensors files up front. The engine (:mod:`prunekit.oneshot.engine`)
then works through :class:`StreamedBlocks`: a block's tensors are read from
the files (``safe_open``, lazily, no pickle) when the engine loads it, and
once pruned the block is written to its own shard of the output folder and
its parameters go back to meta. At any moment one block's weights, the parts
outside the blocks, one block's activations and its statistics are in memory.

The output is a folder ``from_pretrained`` loads: the input's ``config.json``
and other non-weight files (tokenizer, generation config), one shard per
block plus one for the rest, and ``model.safetensors.index.json``. It is
written into a hidden folder beside ``out_dir`` and renamed at the end, so a
failure leaves no ``out_dir`` behind (and the input folder is only read).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..deprecation import renamed_value
from ..errors import InvalidParameterError
from ..memory import release_freed_memory
from .api import OneShotResult, make_plan, plan_batches
from ..progress import ProgressArg, progress_reporter
from .engine import run_pass
from .blocks import find_blocks
from .capture import check_token_ids
from .hf_folder import (
    SUPPORTED_MODELS,
    SafetensorsFolder,
    ShardWriter,
    TensorSlots,
    build_skeleton,
    copy_side_files,
    describe_config,
)

__all__ = ["StreamedBlocks", "prune_pretrained"]

logger = logging.getLogger(__name__)


class StreamedBlocks:
    """Blocks read from a model folder when loaded and written to the output's shards when released
    (the engine's :class:`prunekit.oneshot.offload.BlockHome`)."""

    def __init__(self, slots: TensorSlots, path: str, blocks: nn.ModuleList, writer: ShardWriter,
                 device: torch.device) -> None:
        self.slots = slots
        self.path = path
        self.blocks = blocks
        self.writer = writer
        self.device = device
        self.rest = torch.device("cpu")

    def start(self) -> None:
        """The blocks are on meta from the start."""

    def _names(self, index: int) -> tuple[list[str], list[str]]:
        return self.slots.names(f"{self.path}.{index}.")

    def load(self, index: int) -> nn.Module:
        params, buffers = self._names(index)
        self.slots.put(params, buffers, self.device)
        return self.blocks[index]

    def release(self, index: int, changed: bool) -> None:
        params, buffers = self._names(index)
        if changed:
            self.writer.write(index + 1, self.slots.state(params, buffers))
        self.slots.clear(params)
        release_freed_memory()

    def finish(self) -> None:
        """Nothing to bring back: the pruned blocks are in the output's shards."""


def _check_out_dir(out_dir: Any, model_dir: Path) -> Path:
    if not isinstance(out_dir, (str, os.PathLike)):
        raise InvalidParameterError("out_dir", "a folder path", out_dir)
    out = Path(out_dir)
    if out.resolve() == model_dir.resolve():
        raise InvalidParameterError("out_dir", "a folder other than model_dir", str(out_dir),
                                    "Fix: write the pruned model to a new folder.")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InvalidParameterError("out_dir", "a new or empty folder", str(out_dir),
                                    "Fix: pick a new folder or remove the old one.")
    return out


def _check_known_layout(model: nn.Module) -> None:
    """An error naming what the folder holds and what is supported, when its blocks are not found."""
    try:
        find_blocks(model)
    except InvalidParameterError as exc:
        raise InvalidParameterError(
            "blocks", f"{SUPPORTED_MODELS}: {exc.expected}",
            f"{describe_config(getattr(model, 'config', None))}, read as {type(model).__name__}",
            exc.fix) from None


def prune_pretrained(
    model_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    data: Any = None,
    method: str = "wanda",
    sparsity: float | None = None,
    structure: str = "element",
    *,
    owl: bool = False,
    owl_lambda: float = 0.08,
    owl_m: float = 5.0,
    sequential: bool = False,
    device: str | torch.device | None = None,
    batch_size: int = 8,
    blocks: str | None = None,
    include: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
    blocksize: int = 128,
    percdamp: float = 0.01,
    head: bool = False,
    embeddings: bool = False,
    progress: ProgressArg = None,
    calibration: Any = None,
) -> OneShotResult:
    """Prune the Hugging Face model in ``model_dir`` into ``out_dir`` without ever loading it whole.

    The model is a decoder-only causal LM (LLaMA family, Mistral, Qwen2,
    GPT-2, OPT …) or an encoder-only model (BERT, RoBERTa, DistilBERT …,
    blocks at ``encoder.layer`` / ``transformer.layer``), bare or with a task
    head: the class named in its ``config.json``'s ``architectures`` is built
    (:func:`prunekit.oneshot.hf_folder.build_skeleton`). An encoder's
    calibration batches are dicts with ``input_ids`` and ``attention_mask``
    (or id tensors): the model's own forward runs up to the first block, so
    each block sees the attention mask the model derives, and padded
    positions take no part in any statistic.

    The same pruning as :func:`prunekit.oneshot_prune` (same arguments and
    formulas: Wanda ``|W_ij|·‖X_j‖₂``, Sun et al. 2023; SparseGPT's OBS update
    from ``H = 2XXᵀ``, Frantar & Alistarh 2023; OWL, Yin et al. 2023), with
    zeros written (``mode="permanent"``), on a model that is read block by block
    from ``model_dir`` (``config.json`` and ``model.safetensors`` or sharded
    ``model-0000i-of-0000n.safetensors`` with ``model.safetensors.index.json``)
    and written block by block to ``out_dir``. The weights keep the
    checkpoint's dtype (``config.dtype``), as ``from_pretrained`` loads them.
    ``from_pretrained(out_dir)`` gives the model ``oneshot_prune`` would have
    produced from ``from_pretrained(model_dir)``: the same masks and outputs.

    Memory: the parts outside the blocks (embeddings, final norm, head), one
    block's weights, its inputs and outputs over the calibration set and its
    layers' statistics; never two blocks.

    Args:
        model_dir: the Hugging Face model folder (only read).
        out_dir: a new or empty folder for the pruned model.
        data, method, sparsity, structure, owl, owl_lambda, owl_m, sequential, device, batch_size, blocks, include, exclude, blocksize, percdamp, head, embeddings, progress: as for
            :func:`prunekit.oneshot_prune` (``device`` defaults to the CPU).
        calibration: deprecated name of ``data`` (giving both is an error).

    Returns:
        :class:`prunekit.oneshot.OneShotResult`; its report is gathered block
        by block while each block is in memory.

    Raises:
        InvalidParameterError: a folder without ``config.json`` or safetensors
            weights, a checkpoint missing a parameter, a model that is neither a
            causal LM nor an encoder with its blocks at a known path (an
            encoder-decoder model, a class transformers does not provide),
            naming what the folder holds; an ``out_dir`` that is not new or
            empty, or any bad argument of :func:`oneshot_prune`; all before
            anything is written.
        PrunekitError: as :func:`oneshot_prune`; the partial output is removed.
    """
    data = renamed_value(calibration, "calibration", "data", "prunekit.prune_pretrained", new_value=data)
    folder = SafetensorsFolder(model_dir)
    out = _check_out_dir(out_dir, folder.folder)
    model = build_skeleton(folder)
    if blocks is None:
        _check_known_layout(model)
    plan = make_plan(model, method, sparsity, structure, owl=owl, owl_lambda=owl_lambda, owl_m=owl_m,
                     sequential=sequential, batch_size=batch_size, blocksize=blocksize, percdamp=percdamp,
                     device=device if device is not None else "cpu", blocks=blocks, include=include,
                     exclude=exclude, head=head, embeddings=embeddings, progress=progress)
    batches = plan_batches(plan, data, batch_size)
    if batches is not None:
        check_token_ids(model, batches)
    slots = TensorSlots(model, folder)
    slots.check_complete()
    outside = slots.names(f"{plan.path}.", inside=False)
    slots.put(*outside, plan.device)

    start = time.perf_counter()
    work = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:8]}"
    work.mkdir(parents=True)
    try:
        writer = ShardWriter(work, len(plan.blocks) + 1)
        with progress_reporter(plan.progress) as plan.report:
            outcome = run_pass(model, plan, batches,
                               StreamedBlocks(slots, plan.path, plan.blocks, writer, plan.device), journal=None)
        writer.write(len(plan.blocks) + 1, slots.state(*outside))
        writer.close()
        copy_side_files(folder.folder, work)
        if out.exists():
            out.rmdir()  # empty (checked above)
        work.rename(out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    logger.info("pruned %s into %s (%d shards)", folder.folder, out, writer.count)
    return OneShotResult.from_pass(plan, outcome, time.perf_counter() - start)
