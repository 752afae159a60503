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
from .selection import nm_invalid_groups

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


@torch.no_grad()
def to_semi_structured(model: nn.Module, include_types: tuple[type[nn.Module], ...] = (nn.Linear,)) -> list[str]:
    """Replace the weight of every 2:4-sparse Linear on a CUDA device by a semi-structured sparse tensor.

    Returns the names of the converted layers. Layers that are not 2:4 or not
    on a CUDA device are left dense (logged).

    Raises:
        PrunekitError: when no 2:4 kernels are available (no CUDA, or a GPU
            older than Ampere); the model is left unchanged.
    """
    ok, why = semi_structured_available()
    if not ok:
        raise PrunekitError(f"to_semi_structured: {why}.")
    from torch.sparse import to_sparse_semi_structured

    nm = NM(2, 4)
    converted = []
    for name, module in model.named_modules():
        if not isinstance(module, include_types) or module.weight.device.type != "cuda":
            continue
        weight = module.weight
        if weight.shape[1] % 4 or nm_invalid_groups(weight, nm):
            logger.info("to_semi_structured: %s is not 2:4 sparse; left dense", name)
            continue
        module.weight = nn.Parameter(to_sparse_semi_structured(weight), requires_grad=False)
        converted.append(name)
    logger.info("to_semi_structured: converted %d layers", len(converted))
    return converted
