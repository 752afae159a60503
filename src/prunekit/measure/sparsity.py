"""Sparsity per tensor and over the model, from a model or a state dict.

Understands the three states a tensor can be in: reparametrised
(``torch.nn.utils.prune`` layout, from prunekit or from torch), in-place
masked (prunekit's lean mode) and plain zeros (after ``make_permanent`` or
from anywhere else).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from ..io import logical_tensors
from ..masks import pruned_tensors
from ..targets import select_targets, tensor_state
from ._results import dump_json, row_named, table_lines
from .params import _ZerosAndSparsity

__all__ = ["TensorSparsity", "SparsityReport", "sparsity_report", "sparsity_report_from_state_dict"]


@dataclass
class TensorSparsity(_ZerosAndSparsity):
    """One row: a tensor's size, non-zeros and sparsity."""

    name: str
    shape: tuple[int, ...]
    params: int
    nonzero: int
    state: str


@dataclass
class SparsityReport:
    """Rows per tensor, their total, and the whole model's parameter count."""

    rows: list[TensorSparsity]
    model_params: int
    model_nonzero: int
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def params(self) -> int:
        return sum(r.params for r in self.rows)

    @property
    def nonzero(self) -> int:
        return sum(r.nonzero for r in self.rows)

    @property
    def sparsity(self) -> float:
        """Fraction of zeros over the reported tensors (the global figure)."""
        return (self.params - self.nonzero) / self.params if self.params else 0.0

    @property
    def model_sparsity(self) -> float:
        return (self.model_params - self.model_nonzero) / self.model_params if self.model_params else 0.0

    def __getitem__(self, name: str) -> TensorSparsity:
        return row_named(self.rows, name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tensors": [
                {**asdict(r), "shape": list(r.shape), "zeros": r.zeros, "sparsity": r.sparsity} for r in self.rows
            ],
            "total": {"params": self.params, "nonzero": self.nonzero, "sparsity": self.sparsity},
            "model": {"params": self.model_params, "nonzero": self.model_nonzero, "sparsity": self.model_sparsity},
            **({"extras": self.extras} if self.extras else {}),
        }

    def to_json(self, path: str | os.PathLike[str] | None = None, indent: int = 2) -> str:
        """The report as JSON; written atomically to ``path`` when given."""
        return dump_json(self.to_dict(), path, indent)

    def table(self) -> str:
        """A plain-text table (the CLI renders the same rows with rich)."""
        header = ("tensor", "shape", "params", "nonzero", "sparsity", "state")
        lines = [
            (r.name, "×".join(map(str, r.shape)), f"{r.params:,}", f"{r.nonzero:,}", f"{100 * r.sparsity:.2f}%", r.state)
            for r in self.rows
        ]
        total = ("total", "", f"{self.params:,}", f"{self.nonzero:,}", f"{100 * self.sparsity:.2f}%", "")
        body = [line.rstrip() for line in table_lines(header, lines, total, left=(0, 1, 5))]
        body.append(
            f"model: {self.model_params:,} parameters, {self.model_nonzero:,} non-zero "
            f"({100 * self.model_sparsity:.2f}% sparse)"
        )
        return "\n".join(body)

    def __str__(self) -> str:
        return self.table()


def _row(name: str, tensor: torch.Tensor, mask: torch.Tensor | None, state: str) -> TensorSparsity:
    with torch.no_grad():
        if mask is not None and state == "reparam":
            nonzero = int(torch.count_nonzero((tensor != 0) & (mask != 0)))
        else:
            nonzero = int(torch.count_nonzero(tensor))
    return TensorSparsity(name, tuple(tensor.shape), tensor.numel(), nonzero, state)


def sparsity_report(
    model: nn.Module,
    *,
    types: Any = None,
    include: str | Iterable[str] | None = None,
    exclude: str | Iterable[str] | None = None,
    params: str | Iterable[str] = "weight",
) -> SparsityReport:
    """Per-tensor sparsity of ``model``.

    Rows are every masked tensor plus the tensors the selection arguments pick
    (same meaning as in :func:`prunekit.select_targets`; by default the weights
    of Linear and ConvNd layers). The total is over the rows; the model
    figures count every parameter (masked entries as zeros).
    """
    wanted: dict[str, tuple[nn.Module, str]] = {}
    for qualified, module, name, _state in pruned_tensors(model):
        wanted[qualified] = (module, name)
    try:
        for target in select_targets(model, types=types, include=include, exclude=exclude, params=params):
            wanted.setdefault(target.name, (target.module, target.param_name))
    except ValueError:
        if not wanted and (include is not None or types is not None):
            raise
    order = {name: i for i, name in enumerate(_qualified_params(model))}
    rows = []
    for qualified in sorted(wanted, key=lambda n: order.get(n, len(order))):
        module, name = wanted[qualified]
        state = tensor_state(module, name)
        if state == "reparam":
            rows.append(_row(qualified, module._parameters[name + "_orig"], module._buffers[name + "_mask"], state))
        else:
            rows.append(_row(qualified, module._parameters[name], None, state))
    model_params = model_nonzero = 0
    for module in model.modules():
        for pname, param in module._parameters.items():
            if param is None:
                continue
            base = pname[:-5] if pname.endswith("_orig") else pname
            state = tensor_state(module, base)
            row = _row(pname, param, module._buffers.get(base + "_mask") if state == "reparam" else None, state)
            model_params += row.params
            model_nonzero += row.nonzero
    return SparsityReport(rows, model_params, model_nonzero)


def _qualified_params(model: nn.Module) -> list[str]:
    names = []
    for module_name, module in model.named_modules():
        for pname in module._parameters:
            base = pname[:-5] if pname.endswith("_orig") else pname
            names.append(f"{module_name}.{base}" if module_name else base)
    return names


def sparsity_report_from_state_dict(
    state_dict: Mapping[str, torch.Tensor], *, all_tensors: bool = False
) -> SparsityReport:
    """Per-tensor sparsity from a state dict (torch-pruned, prunekit or plain).

    Rows are masked tensors and every floating tensor of 2 or more dimensions
    (weights); ``all_tensors=True`` adds the rest (biases, norms, buffers).
    """
    rows = []
    model_params = model_nonzero = 0
    for name, (state, tensor, mask) in logical_tensors(state_dict).items():
        if state == "dense" and name.endswith("_mask"):
            continue  # a mask whose tensor is not in the state dict
        if not tensor.is_floating_point():
            continue
        row = _row(name, tensor, mask, state)
        model_params += row.params
        model_nonzero += row.nonzero
        if state != "dense" or tensor.dim() >= 2 or all_tensors:
            rows.append(row)
    return SparsityReport(rows, model_params, model_nonzero)


