"""Gates on units: multiply each head's or neuron's contribution by ``xi`` (ones).

Masking a head (for exactness checks and Michel et al.'s importance) is done
by :func:`head_gates`: a gate ``xi_h`` multiplies head ``h``'s columns of the
output projection, which is the same as multiplying the head's output, since
the output projection is linear. :func:`neuron_gates` does the same for MLP
hidden neurons (their consumers' input columns).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..errors import InvalidParameterError
from ..targets import tensor_state
from .units import AttentionSpec, MlpSpec, UnitSlice

__all__ = ["unit_gates", "head_gates", "neuron_gates"]


class _ColumnGate(nn.Module):
    """Parametrization ``W -> W * xi`` with ``xi`` repeated over each head's positions along ``dim``."""

    def __init__(self, gate: torch.Tensor, block: UnitSlice, dim: int, size: int) -> None:
        super().__init__()
        self.gate, self.unit, self.dim, self.size = gate, block.unit, dim, size
        self.index = torch.tensor(block.positions(range(gate.numel())), device=gate.device)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        scale = torch.ones(self.size, dtype=weight.dtype, device=weight.device)
        scale = scale.index_put((self.index,), self.gate.to(weight.dtype).repeat_interleave(self.unit))
        shape = [1] * weight.dim()
        shape[self.dim] = self.size
        return weight * scale.view(shape)


@contextlib.contextmanager
def unit_gates(
    model: nn.Module, units: Mapping[Any, tuple[int, Sequence[UnitSlice]]], *, requires_grad: bool = False
) -> Iterator[dict[Any, torch.Tensor]]:
    """Gate units read by linear consumers: ``units[key] = (count, consumer blocks)``.

    Yields ``{key: xi}``, ``xi`` ones of shape ``(count,)``; inside the block
    unit ``u`` reaches its consumers multiplied by ``xi[u]`` (0 masks it).
    Implemented as a ``torch.nn.utils.parametrize`` parametrization of each
    consumer weight (its unit columns times ``xi``), removed on exit with the
    original weight restored. The weights must be Parameters (in-place masks
    are fine; make ``reparam`` masks permanent first).
    """
    gates: dict[Any, torch.Tensor] = {}
    added: list[tuple[nn.Module, str]] = []
    try:
        for key, (count, blocks) in units.items():
            device = getattr(model.get_submodule(blocks[0].module), blocks[0].tensors[0][0]).device
            gate = torch.ones(count, device=device, requires_grad=requires_grad)
            for block in blocks:
                module = model.get_submodule(block.module)
                (tensor, dim), = block.tensors
                if tensor_state(module, tensor) == "reparam" or parametrize.is_parametrized(module, tensor):
                    raise InvalidParameterError(
                        "model", f"a plain {tensor} in {block.module} to gate units",
                        "<a reparametrised (torch.nn.utils.prune-style) or parametrised weight>",
                        "Fix: call prunekit.make_permanent(model) first.",
                    )
                size = getattr(module, tensor).shape[dim]
                parametrize.register_parametrization(module, tensor, _ColumnGate(gate, block, dim, size))
                added.append((module, tensor))
            gates[key] = gate
        yield gates
    finally:
        for module, tensor in added:
            parametrize.remove_parametrizations(module, tensor, leave_parametrized=False)


def head_gates(
    model: nn.Module, specs: Mapping[Any, AttentionSpec], *, requires_grad: bool = False
) -> contextlib.AbstractContextManager[dict[Any, torch.Tensor]]:
    """Gate every head (see :func:`unit_gates`): ``{layer: xi}`` with ``xi`` of shape ``(num_heads,)``.

    The gate multiplies head ``h``'s columns of the output projection, the
    same as multiplying the head's output (Michel et al. 2019's ``xi_h``).
    """
    return unit_gates(model, {k: (s.num_heads, s.output) for k, s in specs.items()}, requires_grad=requires_grad)


def neuron_gates(
    model: nn.Module, specs: Mapping[Any, MlpSpec], *, requires_grad: bool = False
) -> contextlib.AbstractContextManager[dict[Any, torch.Tensor]]:
    """Gate every MLP hidden neuron (see :func:`unit_gates`): ``{layer: xi}`` of shape ``(size,)``."""
    return unit_gates(model, {k: (s.size, s.consumers) for k, s in specs.items()}, requires_grad=requires_grad)


