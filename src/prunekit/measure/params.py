"""Parameter counts: total parameters and non-zeros, whatever the pruning state.

A tensor can be in one of three states (see :mod:`prunekit.targets`):

* ``reparam``: ``<name>_orig`` parameter, ``<name>_mask`` buffer and a
  ``torch.nn.utils.prune`` hook; the effective tensor is ``orig * mask``;
* ``inplace``: the parameter itself holds zeros, with a bool ``<name>_mask``;
* ``dense``: a plain parameter, possibly with exact zeros.

In every state the count is::

    params  = Σ numel(p)                 over every parameter (``_orig`` counted once)
    nonzero = Σ count_nonzero(effective(p))
    sparsity = (params - nonzero) / params

Buffers (masks, BatchNorm running statistics) are not parameters and are not
counted. A parameter registered under several names (tied weights) is counted
once, as ``model.parameters()`` counts it. Otherwise the figures equal the
model-wide ones of :func:`prunekit.sparsity_report`, built on the same
:func:`prunekit.targets.tensor_state` and :meth:`prunekit.Target.effective`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from ..errors import InvalidParameterError
from ..targets import Target, tensor_state

__all__ = ["ParamCount", "count_parameters", "effective_tensor", "module_param_counts"]


class _ZerosAndSparsity:
    """``zeros`` and ``sparsity`` of a count with ``params`` and ``nonzero``
    (base of :class:`ParamCount` and :class:`prunekit.TensorSparsity`)."""

    params: int
    nonzero: int

    @property
    def zeros(self) -> int:
        """``params - nonzero``."""
        return self.params - self.nonzero

    @property
    def sparsity(self) -> float:
        """``zeros / params`` (0.0 when there are no parameters)."""
        return self.zeros / self.params if self.params else 0.0


@dataclass(frozen=True)
class ParamCount(_ZerosAndSparsity):
    """Total parameters and non-zeros of a model."""

    params: int
    nonzero: int

    @property
    def density(self) -> float:
        """``nonzero / params`` (1.0 for a model without parameters)."""
        return self.nonzero / self.params if self.params else 1.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "zeros": self.zeros, "sparsity": self.sparsity}


def _check_model(model: Any, param: str = "model") -> nn.Module:
    if not isinstance(model, nn.Module):
        raise InvalidParameterError(
            param, "a torch.nn.Module", f"<{type(model).__name__}>", "Fix: pass the network itself, not its state dict."
        )
    return model


def count_parameters(model: nn.Module) -> ParamCount:
    """Total parameters and non-zeros of ``model`` (every parameter, every state).

    ``nonzero`` counts the entries of the *effective* tensors: ``orig * mask``
    for reparametrised tensors, the parameter itself otherwise (the same rule
    as :func:`prunekit.sparsity_report`). A parameter registered under several
    names (tied embeddings) is counted once, as ``model.parameters()`` does;
    :func:`prunekit.sparsity_report`'s model figures count each registration.

    Raises:
        InvalidParameterError: if ``model`` is not an ``nn.Module``.
    """
    _check_model(model)
    seen: set[int] = set()
    params = nonzero = 0
    for module in model.modules():
        p, nz = module_param_counts(module, seen)
        params += p
        nonzero += nz
    return ParamCount(params, nonzero)


def effective_tensor(module: nn.Module, name: str) -> torch.Tensor:
    """The tensor ``module`` computes with for parameter ``name`` (masks applied), detached.

    ``name`` is the logical name (``"weight"``, not ``"weight_orig"``).
    """
    if name not in module._parameters and name + "_orig" not in module._parameters:
        raise InvalidParameterError(
            "name",
            f"a parameter of {type(module).__name__} ({', '.join(module._parameters) or 'none'})",
            name,
        )
    return Target(name, "", module, name).effective()


def module_param_counts(module: nn.Module, seen: set[int] | None = None) -> tuple[int, int]:
    """``(params, nonzero)`` of the parameters registered on ``module`` itself
    (not its children), with masks applied as in :func:`count_parameters`.

    ``seen``: ids of parameters already counted (skipped, then added to it).
    """
    params = nonzero = 0
    with torch.no_grad():
        for pname, param in module._parameters.items():
            if param is None:
                continue
            if seen is not None:
                if id(param) in seen:
                    continue
                seen.add(id(param))
            base = pname[:-5] if pname.endswith("_orig") else pname
            params += param.numel()
            if pname != base and tensor_state(module, base) == "reparam":
                nonzero += int(torch.count_nonzero(effective_tensor(module, base)))
            else:
                nonzero += int(torch.count_nonzero(param))
    return params, nonzero
