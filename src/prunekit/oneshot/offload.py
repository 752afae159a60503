"""Where the blocks not being worked on live: ``"none"`` (all on the device),
``"cpu"`` (in host memory, each block moved to the device while it is pruned)
or ``"disk"`` (each block's parameters and buffers written to
``<dir>/block_<i>.safetensors`` and their storage released; a block is read
back when it is pruned and written out again after, only if it changed).

With ``"disk"`` only one block's weights are in memory during pruning. The
parameters stay the same ``nn.Parameter`` objects (only their data is swapped),
so references to them (optimizers, masks) stay valid. :meth:`BlockStore.finish`
reads every block back, so the model is complete again; :meth:`BlockStore.close`
removes a temporary folder (and, after a failure, the block files written to a
given one). Block files are written with :func:`prunekit.io.atomic_write`: a
failed write leaves the previous version of the file.

:class:`BlockHome` is what the engine (:mod:`prunekit.oneshot.engine`) needs
from a store; :class:`prunekit.oneshot.pretrained.StreamedBlocks` is the other
one, reading blocks from a Hugging Face folder and writing them to a new one.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Protocol

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import check_choice
from ..io import atomic_write
from ..memory import release_freed_memory

__all__ = ["OFFLOAD_MODES", "BlockHome", "BlockStore"]

logger = logging.getLogger(__name__)

OFFLOAD_MODES = ("none", "cpu", "disk")


class BlockHome(Protocol):
    """Moves blocks between their resting place and the device for the engine."""

    #: where block outputs (the next block's inputs) are kept
    rest: torch.device

    def start(self) -> None:
        """Send every block to its resting place."""

    def load(self, index: int) -> nn.Module:
        """Block ``index``, ready on the device."""

    def release(self, index: int, changed: bool) -> None:
        """Send block ``index`` back; ``changed`` says whether its tensors were modified."""

    def finish(self) -> None:
        """After the pass (or a failure): whatever the store owes the model or the output."""


def _tensors(block: nn.Module) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for name, p in block.named_parameters():
        out[name] = p.data
    for name, b in block.named_buffers():
        out[name] = b
    return out


class BlockStore:
    """The offload modes of :func:`prunekit.oneshot_prune` (see the module docstring)."""

    def __init__(self, blocks: nn.ModuleList, mode: str, device: torch.device, directory: str | None = None) -> None:
        self.blocks = blocks
        self.mode = check_choice("offload", mode, OFFLOAD_MODES)
        self.device = device
        self.rest = torch.device("cpu") if mode != "none" else device
        self._temporary = mode == "disk" and directory is None
        self.directory = Path(tempfile.mkdtemp(prefix="prunekit-offload-")) if self._temporary else (
            Path(directory) if directory is not None and mode == "disk" else None)
        self._on_disk: set[int] = set()  # blocks whose storage is released (their file is current)
        self._written: set[int] = set()  # block files this store wrote

    def start(self) -> None:
        if self.mode == "disk":
            self.directory.mkdir(parents=True, exist_ok=True)  # type: ignore[union-attr]
            for index in range(len(self.blocks)):
                self._write(index)
            logger.info("offloaded %d blocks to %s", len(self.blocks), self.directory)
        else:
            for block in self.blocks:
                block.to(self.rest)

    def _path(self, index: int) -> Path:
        return self.directory / f"block_{index}.safetensors"  # type: ignore[operator]

    def _write(self, index: int) -> None:
        block = self.blocks[index]
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in _tensors(block).items()}
        atomic_write(self._path(index), lambda tmp: save_file(tensors, tmp))
        self._written.add(index)
        tensors.clear()
        self._drop(index)

    def _drop(self, index: int) -> None:
        block = self.blocks[index]
        empty = torch.empty(0)
        for p in block.parameters():
            p.data = empty
        for module in block.modules():
            for name, b in module._buffers.items():
                if b is not None:
                    module._buffers[name] = torch.empty(0, dtype=b.dtype)
        self._on_disk.add(index)
        release_freed_memory()  # glibc keeps freed chunks below its mmap threshold otherwise

    def _read(self, index: int, device: torch.device) -> None:
        block = self.blocks[index]
        loaded = load_file(str(self._path(index)), device=str(device))
        for name, p in block.named_parameters():
            p.data = loaded[name]
        for module_name, module in block.named_modules():
            for name in list(module._buffers):
                if module._buffers[name] is not None:
                    module._buffers[name] = loaded[f"{module_name}.{name}" if module_name else name]
        self._on_disk.discard(index)

    def load(self, index: int) -> nn.Module:
        """Block ``index`` on the device."""
        if self.mode == "disk":
            self._read(index, self.device)
        else:
            self.blocks[index].to(self.device)
        return self.blocks[index]

    def release(self, index: int, changed: bool = True) -> None:
        """Send block ``index`` back to its resting place (its file is rewritten only if it ``changed``)."""
        if self.mode == "disk":
            if changed:
                self._write(index)
            else:
                self._drop(index)
        elif self.mode == "cpu":
            self.blocks[index].to(self.rest)

    def finish(self) -> None:
        """Bring every disk-offloaded block back (on the CPU)."""
        for index in sorted(self._on_disk):
            self._read(index, torch.device("cpu"))

    def close(self, keep_files: bool = True) -> None:
        """Remove a temporary folder; with ``keep_files=False`` also the block files written to a given one."""
        if self.directory is None:
            return
        if self._temporary:
            shutil.rmtree(self.directory, ignore_errors=True)
        elif not keep_files:
            for index in self._written:
                self._path(index).unlink(missing_ok=True)
