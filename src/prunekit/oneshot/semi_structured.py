"""Converting 2:4-sparse linear layers to PyTorch's semi-structured sparse kernels.

``torch.sparse.to_sparse_semi_structured`` (NVIDIA sparse tensor cores; Mishra
et al. 2021) needs a CUDA device of compute capability 8.0 (Ampere) or newer,
fp16/bf16 (or int8) weights on it and a 2:4 pattern. On CPU there are no such
kernels: a 2:4 model runs at dense speed, and :func:`to_semi_structured` says
so by raising :class:`prunekit.PrunekitError` (nothing is changed).
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from ..errors import PrunekitError
from ..structures import NM
from ..allocation.rows import nm_invalid_groups

__all__ = ["semi_structured_available", "to_semi_structured"]

logger = logging.getLogger(__name__)


def semi_structured_available(device: torch.device | str | None = None) -> tuple[bool, str]:
    """Whether 2:4 kernels exist for ``device`` (default: the current CUDA device), and why not."""
    if not torch.cuda.is_available():
        return False, "no CUDA device: PyTorch has no 2:4 sparse kernels on CPU, so a 2:4 model gets no speedup here"
    dev = torch.device(device) if device is not None else torch.device("cuda", torch.cuda.current_device())
    if dev.type != "cuda":
        return False, f"device {dev} is not CUDA: PyTorch's 2:4 sparse kernels run on NVIDIA GPUs only"
    major, minor = torch.cuda.get_device_capability(dev)
    if major < 8:
        return False, f"compute capability {major}.{minor} < 8.0: 2:4 sparse tensor cores need Ampere or newer"
    return True, ""


def _shape_constraints() -> dict[torch.dtype, tuple[int, int]]:
    """(min rows, min cols) per dtype of the backend ``to_sparse_semi_structured`` will use."""
    from torch.sparse import semi_structured as ss

    cls = (ss.SparseSemiStructuredTensorCUTLASS if ss.SparseSemiStructuredTensor._FORCE_CUTLASS
           else ss.SparseSemiStructuredTensorCUSPARSELT)
    return {dtype: (c.sparse_min_rows, c.sparse_min_cols) for dtype, c in cls._DTYPE_SHAPE_CONSTRAINTS.items()}


def _on_cuda(tensor: torch.Tensor) -> bool:
    return tensor.is_cuda


def _why_not(module: nn.Module, constraints: dict[torch.dtype, tuple[int, int]]) -> str | None:
    """Why this layer's weight cannot become a 2:4 semi-structured tensor (None: it can)."""
    weight = module.weight
    if not _on_cuda(weight):
        return f"on {weight.device}, not a CUDA device"
    if weight.dtype not in constraints:
        return f"dtype {weight.dtype} (supported: {', '.join(str(d) for d in constraints)}; cast the model first)"
    rows, cols = constraints[weight.dtype]
    m, n = weight.shape
    if m % rows or n % cols:
        return f"shape {tuple(weight.shape)} is not a multiple of ({rows}, {cols})"
    if nm_invalid_groups(weight, NM(2, 4)):
        return "not 2:4 sparse along its input dimension"
    return None


@torch.no_grad()
def to_semi_structured(model: nn.Module, include_types: tuple[type[nn.Module], ...] = (nn.Linear,)) -> list[str]:
    """Replace the weight of every 2:4-sparse Linear on a CUDA device by a semi-structured sparse tensor.

    A layer is converted when its weight is on a CUDA device, of a dtype the
    backend lists (torch 2.13: fp16, bf16, int8, fp8 e4m3), of a shape
    that is a multiple of the backend's tile, and 2:4 sparse along its input
    dimension; every other layer is left dense and the reason logged. All
    layers are converted before any is replaced, so a failure leaves the
    model unchanged. Returns the names of the converted layers.

    Raises:
        PrunekitError: when no 2:4 kernels are available (no CUDA, or a GPU
            older than Ampere), or when a layer still carries a pruning
            reparametrisation (``weight_orig``; call
            :func:`prunekit.make_permanent` first); the model is left unchanged.
    """
    ok, why = semi_structured_available()
    if not ok:
        raise PrunekitError(f"to_semi_structured: {why}.")
    from torch.sparse import to_sparse_semi_structured

    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, include_types)]
    masked = [name for name, m in layers if "weight_orig" in m._parameters]
    if masked:
        raise PrunekitError(
            f"to_semi_structured: {len(masked)} layers still carry a pruning reparametrisation "
            f"(weight_orig / weight_mask), e.g. {masked[0]!r}. Fix: call prunekit.make_permanent(model) first."
        )
    constraints = _shape_constraints()
    converted: dict[str, tuple[nn.Module, torch.Tensor]] = {}
    for name, module in layers:
        reason = _why_not(module, constraints)
        if reason is not None:
            logger.info("to_semi_structured: %s left dense: %s", name, reason)
            continue
        converted[name] = (module, to_sparse_semi_structured(module.weight.detach()))
    for module, sparse in converted.values():
        module.weight = nn.Parameter(sparse, requires_grad=False)
    logger.info("to_semi_structured: converted %d of %d layers", len(converted), len(layers))
    return list(converted)
