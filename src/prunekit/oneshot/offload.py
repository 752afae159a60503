"""Where the blocks not being worked on live: ``"none"`` (all on the device),
``"cpu"`` (in host memory, each block moved to the device while it is pruned)
or ``"disk"`` (each block's parameters and buffers written to
``<dir>/block_<i>.safetensors`` and their storage released; a block is read
back when it is pruned and written out again after).

With ``"disk"`` only one block's weights are in memory during pruning. The
parameters stay the same ``nn.Parameter`` objects (only their data is swapped),
so references to them (optimizers, masks) stay valid. At the end every block
is read back, so the returned model is complete; the folder is a temporary one
unless given, and temporary folders are removed.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import check_choice
from ..memory import release_freed_memory

__all__ = ["OFFLOAD_MODES", "BlockStore"]

logger = logging.getLogger(__name__)

OFFLOAD_MODES = ("none", "cpu", "disk")


def _tensors(block: nn.Module) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for name, p in block.named_parameters():
        out[name] = p.data
    for name, b in block.named_buffers():
        out[name] = b
    return out


class BlockStore:
    """Moves blocks between their resting place and the device (see the module docstring)."""

    def __init__(self, blocks: nn.ModuleList, mode: str, device: torch.device, directory: str | None = None) -> None:
        self.blocks = blocks
        self.mode = check_choice("offload", mode, OFFLOAD_MODES)
        self.device = device
        self.rest = torch.device("cpu") if mode != "none" else device
        self._temporary = mode == "disk" and directory is None
        self.directory = Path(tempfile.mkdtemp(prefix="prunekit-offload-")) if self._temporary else (
            Path(directory) if directory is not None else None)
        if mode == "disk":
            self.directory.mkdir(parents=True, exist_ok=True)  # type: ignore[union-attr]
            for index in range(len(blocks)):
                self._write(index)
            logger.info("offloaded %d blocks to %s", len(blocks), self.directory)
        else:
            for block in blocks:
                block.to(self.rest)

    def _path(self, index: int) -> Path:
        return self.directory / f"block_{index}.safetensors"  # type: ignore[operator]

    def _write(self, index: int) -> None:
        block = self.blocks[index]
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in _tensors(block).items()}
        save_file(tensors, str(self._path(index)))
        del tensors
        empty = torch.empty(0)
        for p in block.parameters():
            p.data = empty
        for module in block.modules():
            for name, b in module._buffers.items():
                if b is not None:
                    module._buffers[name] = torch.empty(0, dtype=b.dtype)
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

    def load(self, index: int) -> nn.Module:
        """Block ``index`` on the device."""
        if self.mode == "disk":
            self._read(index, self.device)
        else:
            self.blocks[index].to(self.device)
        return self.blocks[index]

    def release(self, index: int) -> None:
        """Send block ``index`` back to its resting place."""
        if self.mode == "disk":
            self._write(index)
        elif self.mode == "cpu":
            self.blocks[index].to(self.rest)

    def finish(self) -> None:
        """Bring every disk-offloaded block back (on the CPU) and remove a temporary folder."""
        if self.mode == "disk":
            for index in range(len(self.blocks)):
                self._read(index, torch.device("cpu"))
            if self._temporary:
                shutil.rmtree(self.directory, ignore_errors=True)  # type: ignore[arg-type]
