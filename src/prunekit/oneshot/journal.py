"""What :func:`prunekit.oneshot_prune` needs to undo itself: the original values of the
tensors it modifies, kept per block, and where every tensor of the model lived.

Before a block's weights are changed, :meth:`Journal.record` keeps a copy of
each weight about to be pruned: in host memory (offload ``"none"`` / ``"cpu"``)
or in ``<offload dir>/original_<key>.safetensors`` (offload ``"disk"``), so
the undo information of a model larger than memory stays on disk too. On
success the copies are dropped (:meth:`Journal.discard`); on failure
:meth:`Journal.restore` writes them back, bit for bit, and
:class:`Placement` moves every parameter and buffer back to the device it was
on before the call.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..io import atomic_write

__all__ = ["Journal", "Placement"]

logger = logging.getLogger(__name__)


class Journal:
    """Original values of modified parameters, per key (e.g. ``"block_3"``), in memory or in ``directory``."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory
        self._params: dict[str, dict[str, nn.Parameter]] = {}  # key -> name -> parameter (no data kept here)
        self._memory: dict[str, dict[str, torch.Tensor]] = {}
        self._seen: set[int] = set()  # a tied parameter is recorded once

    def _path(self, key: str) -> Path:
        return self.directory / f"original_{key}.safetensors"  # type: ignore[operator]

    @torch.no_grad()
    def record(self, key: str, params: Iterable[tuple[str, nn.Parameter]]) -> None:
        """Keep the current values of ``params`` (``(name, parameter)`` pairs) under ``key``."""
        fresh = {name: p for name, p in params if id(p) not in self._seen}
        self._seen.update(id(p) for p in fresh.values())
        if not fresh:
            return
        copies = {name: p.detach().to("cpu", copy=True).contiguous() for name, p in fresh.items()}
        self._params[key] = fresh
        if self.directory is None:
            self._memory[key] = copies
        else:
            atomic_write(self._path(key), lambda tmp: save_file(copies, tmp))

    def recorded(self) -> list[str]:
        """The keys recorded so far, in order."""
        return list(self._params)

    def originals(self, key: str) -> dict[str, torch.Tensor]:
        """The values recorded under ``key``, by name (read from disk when offloaded)."""
        if self.directory is None:
            return self._memory[key]
        return load_file(str(self._path(key)))

    @torch.no_grad()
    def restore(self) -> None:
        """Write every recorded value back into its parameter."""
        for key, params in self._params.items():
            originals = self.originals(key)
            for name, param in params.items():
                param.copy_(originals[name])
        logger.info("restored the original values of %d parameters", sum(map(len, self._params.values())))

    def discard(self) -> None:
        """Drop every copy (and its file)."""
        if self.directory is not None:
            for key in self._params:
                self._path(key).unlink(missing_ok=True)
        self._params.clear()
        self._memory.clear()
        self._seen.clear()


class Placement:
    """The device of every parameter and buffer of a model, to move them back after a failure."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._devices = {(id(m), kind, name): t.device for m in model.modules()
                         for kind, tensors in (("p", m._parameters), ("b", m._buffers))
                         for name, t in tensors.items() if t is not None}

    def restore(self) -> None:
        for module in self.model.modules():
            for name, p in module._parameters.items():
                device = self._devices.get((id(module), "p", name))
                if p is not None and device is not None and p.device != device:
                    p.data = p.data.to(device)
            for name, b in module._buffers.items():
                device = self._devices.get((id(module), "b", name))
                if b is not None and device is not None and b.device != device:
                    module._buffers[name] = b.to(device)
