"""ResNet-20/32/56 for CIFAR-10, from He, Zhang, Ren & Sun, "Deep Residual
Learning for Image Recognition" (CVPR 2016), Section 4.2.

A 3×3 stem convolution (16 channels), three stages of ``n = (depth - 2) / 6``
basic blocks with 16, 32 and 64 channels (the first block of stages 2 and 3
halves the resolution with stride 2), global average pooling and a linear
classifier: ``6n + 2`` weighted layers. Convolutions have no bias (each is
followed by batch normalisation).

Shortcuts where the shape changes:

* ``shortcut="B"`` (default): a 1×1 convolution with stride 2 and batch
  normalisation, as ``layer{2,3}.0.downsample.{0,1}`` (the paper's option B,
  the layout of torchvision's ResNets). This is the layout of the pretrained
  ``resnet20_cifar10_dense.safetensors`` (272,474 parameters), which loads with
  ``create_model("resnet20", weights=path)``; it expects inputs normalised as
  ``(x / 255 - 0.5) / 0.5`` (``PRETRAINED_NORMALIZATION``).
* ``shortcut="A"``: the parameter-free option the paper uses for CIFAR:
  subsample by 2 and pad the new channels with zeros.

Parameter counts (10 classes) — the paper's Table 6 rounds option A to
0.27M / 0.46M / 0.85M:

==========  ============  ============
model       option A      option B
==========  ============  ============
resnet20    269,722       272,474
resnet32    464,154       466,906
resnet56    853,018       855,770
==========  ============  ============
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidParameterError, check_choice
from .init import init_weights
from .registry import register_model
from .weights import load_weights

__all__ = [
    "BasicBlock",
    "CifarResNet",
    "PRETRAINED_NORMALIZATION",
    "resnet20",
    "resnet32",
    "resnet56",
]

#: (mean, std) per channel, on [0, 1] inputs, of the pretrained ResNet-20.
PRETRAINED_NORMALIZATION: tuple[tuple[float, ...], tuple[float, ...]] = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


class _PadShortcut(nn.Module):
    """Option A: take every other pixel and zero-pad the extra channels."""

    def __init__(self, planes: int, stride: int) -> None:
        super().__init__()
        self.planes = planes
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        extra = self.planes - x.shape[1]
        return F.pad(x, (0, 0, 0, 0, extra // 2, extra - extra // 2))


class BasicBlock(nn.Module):
    """Two 3×3 conv-BN layers with a residual connection (He et al. 2016)."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: str = "B") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            if shortcut == "B":
                self.downsample = nn.Sequential(
                    nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
                )
            else:
                self.downsample = _PadShortcut(planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + identity)


class CifarResNet(nn.Module):
    """A CIFAR ResNet of ``depth = 6n + 2`` layers (He et al. 2016, Section 4.2):
    ``conv1``/``bn1`` (16 channels), ``layer1..3`` of ``n`` :class:`BasicBlock`
    each (16, 32, 64 channels, strides 1, 2, 2), average pooling and ``fc``.
    ``width`` multiplies the channels (1 in the paper)."""

    def __init__(
        self,
        depth: int = 20,
        num_classes: int = 10,
        in_channels: int = 3,
        shortcut: str = "B",
        width: int = 1,
    ) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise InvalidParameterError(
                "depth", "6n + 2 with n >= 1 (20, 32, 44, 56, 110, ...)", depth, "Fix: use one of 20, 32, 44, 56, 110."
            )
        shortcut = check_choice("shortcut", str(shortcut).upper(), ("A", "B"))
        n = (depth - 2) // 6
        widths = [16 * width, 32 * width, 64 * width]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        in_planes = widths[0]
        stages = []
        for i, planes in enumerate(widths):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(BasicBlock(in_planes, planes, stride, shortcut))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(in_planes, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x)


def _build(depth: int, num_classes: int, in_channels: int, shortcut: str,
           weights: str | os.PathLike[str] | None) -> CifarResNet:
    model = CifarResNet(depth, num_classes, in_channels, shortcut)
    if weights is not None:
        load_weights(model, weights, strict=True)
    return model


def resnet20(num_classes: int = 10, in_channels: int = 3, shortcut: str = "B",
             weights: str | os.PathLike[str] | None = None) -> CifarResNet:
    """ResNet-20 for CIFAR (He et al. 2016; n = 3). ``weights``: a state-dict
    file (safetensors or torch) loaded strictly, e.g. the pretrained
    ``resnet20_cifar10_dense.safetensors`` (inputs ``(x/255 - 0.5)/0.5``)."""
    return _build(20, num_classes, in_channels, shortcut, weights)


def resnet32(num_classes: int = 10, in_channels: int = 3, shortcut: str = "B",
             weights: str | os.PathLike[str] | None = None) -> CifarResNet:
    """ResNet-32 for CIFAR (He et al. 2016; n = 5)."""
    return _build(32, num_classes, in_channels, shortcut, weights)


def resnet56(num_classes: int = 10, in_channels: int = 3, shortcut: str = "B",
             weights: str | os.PathLike[str] | None = None) -> CifarResNet:
    """ResNet-56 for CIFAR (He et al. 2016; n = 9)."""
    return _build(56, num_classes, in_channels, shortcut, weights)


register_model("resnet20", resnet20, input_shape=(3, 32, 32))
register_model("resnet32", resnet32, input_shape=(3, 32, 32))
register_model("resnet56", resnet56, input_shape=(3, 32, 32))
