"""What :func:`prunekit.to_sparse` chose, per layer and end to end."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

__all__ = ["LayerChoice", "SparseConversion"]


@dataclass(frozen=True)
class LayerChoice:
    """One Linear (``kind="linear"``) or 1×1 convolution (``"conv1x1"``): its 2-D weight shape, sparsity, input rows, the median time of dense and each kernel, the choice.

    ``choice`` is ``"dense"`` or a kernel name; ``reason`` says why in words
    (``"fastest"``, ``"no kernel faster than dense by more than 1x"``, ``"not called
    by example_inputs"``, ...). Times are medians in milliseconds; a kernel that
    could not run on the layer is absent from ``kernel_ms`` and named in ``reason``.
    """

    name: str
    shape: tuple[int, int]
    dtype: str
    sparsity: float
    rows: int
    choice: str
    reason: str
    dense_ms: float | None = None
    kernel_ms: dict[str, float] = field(default_factory=dict)
    kind: str = "linear"

    @property
    def speedup(self) -> float | None:
        """Dense time over the chosen kernel's time (1.0 when dense was kept)."""
        if self.choice == "dense" or self.dense_ms is None:
            return 1.0 if self.dense_ms is not None else None
        return self.dense_ms / self.kernel_ms[self.choice]


@dataclass(frozen=True)
class SparseConversion:
    """The converted model (changed in place), the per-layer choices and the end-to-end timing.

    ``speedup = dense_ms / sparse_ms``, medians of interleaved forwards of the
    model before and after conversion, at ``threads`` threads.
    """

    model: nn.Module
    layers: tuple[LayerChoice, ...]
    dense_ms: float | None
    sparse_ms: float | None
    threads: int
    max_abs_error: float

    @property
    def speedup(self) -> float | None:
        if self.dense_ms is None or self.sparse_ms is None:
            return None
        return self.dense_ms / self.sparse_ms

    @property
    def converted(self) -> list[str]:
        """Names of the layers now sparse."""
        return [layer.name for layer in self.layers if layer.choice != "dense"]

    def to_dict(self) -> dict[str, Any]:
        return {"layers": [dict(asdict(layer), speedup=layer.speedup) for layer in self.layers],
                "dense_ms": self.dense_ms, "sparse_ms": self.sparse_ms, "speedup": self.speedup,
                "threads": self.threads, "max_abs_error": self.max_abs_error}

    def table(self) -> str:
        """A plain-text table, one line a layer, then the end-to-end line."""
        lines = [f"{'layer':<32} {'shape':>11} {'sparsity':>8} {'rows':>5} {'dense ms':>9} "
                 f"{'choice':>8} {'speedup':>7}  kernels (ms); reason"]
        for layer in self.layers:
            shape = "x".join(map(str, layer.shape))
            dense = f"{layer.dense_ms:.3f}" if layer.dense_ms is not None else "-"
            kernels = ", ".join(f"{k} {ms:.3f}" for k, ms in layer.kernel_ms.items()) or "-"
            speed = f"{layer.speedup:.2f}x" if layer.speedup is not None else "-"
            name = layer.name if len(layer.name) <= 32 else "..." + layer.name[-29:]
            lines.append(f"{name:<32} {shape:>11} {layer.sparsity:>8.3f} {layer.rows:>5} {dense:>9} "
                         f"{layer.choice:>8} {speed:>7}  {kernels}; {layer.reason}")
        if self.speedup is not None:
            lines.append(f"end to end: dense {self.dense_ms:.3f} ms, sparse {self.sparse_ms:.3f} ms, "
                         f"speedup {self.speedup:.2f}x at {self.threads} thread(s); "
                         f"{len(self.converted)}/{len(self.layers)} layers sparse")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()
