"""The zoo's weight initialisation, torchvision's for these architectures.

Convolutions: He et al. 2015 normal, ``std = √2 / √fan_out`` (``kaiming_normal_``, fan-out mode,
ReLU gain), zero bias; BatchNorm: ``γ = 1``, ``β = 0``; Linear layers: ``N(0, linear_std²)`` with
zero bias where ``linear_std`` is given, else PyTorch's default.
"""

from __future__ import annotations

from torch import nn

__all__ = ["init_weights"]


def init_weights(model: nn.Module, *, linear_std: float | None = None) -> None:
    """Initialise ``model``'s Conv2d, BatchNorm2d (and, with ``linear_std``, Linear) layers in place."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif linear_std is not None and isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, linear_std)
            nn.init.zeros_(m.bias)
