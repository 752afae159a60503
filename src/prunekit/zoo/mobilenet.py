"""MobileNetV2 for 32×32 CIFAR images, from Sandler, Howard, Zhu, Zhmoginov &
Chen, "MobileNetV2: Inverted Residuals and Linear Bottlenecks" (CVPR 2018).

The ImageNet network (Table 2 of the paper) downsamples 32× in total; for
32×32 inputs this adaptation (as in kuangliu/pytorch-cifar) uses stride 1 in
the stem convolution and in the first two bottleneck stages, so the network
downsamples 8× (32 → 4 before the global pooling). Everything else follows the
paper: inverted residual blocks (1×1 expansion by ``t``, 3×3 depthwise, linear
1×1 projection, BN after each, ReLU6), residual connections where the stride is
1 and the channels match, a 1×1 convolution to 1280 channels, global average
pooling and a linear classifier. ``width_mult`` scales every layer's channels
(rounded to multiples of 8); the last layer keeps at least 1280 channels, as in
the paper. 2.24M parameters at width 1 with 10 classes.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import InvalidParameterError
from .init import init_weights
from .registry import register_model

__all__ = ["InvertedResidual", "MobileNetV2Cifar", "mobilenetv2_cifar"]

# (expansion t, output channels c, repeats n, stride s) — Table 2 of Sandler et
# al. 2018, with the stride of the second stage set to 1 for 32×32 inputs.
CIFAR_SETTINGS: list[tuple[int, int, int, int]] = [
    (1, 16, 1, 1),
    (6, 24, 2, 1),  # 2 on ImageNet
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]


def _make_divisible(value: float, divisor: int = 8) -> int:
    """Round to the nearest multiple of ``divisor``, never below 90% of ``value``
    (the rule of the reference implementation)."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


def _conv_bn(inp: int, out: int, kernel: int, stride: int, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(inp, out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out),
    ]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """Expansion 1×1 (skipped when ``expand_ratio`` is 1), depthwise 3×3,
    linear projection 1×1 (Sandler et al. 2018, Table 1)."""

    def __init__(self, inp: int, out: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = inp * expand_ratio
        self.use_residual = stride == 1 and inp == out
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(_conv_bn(inp, hidden, 1, 1))
        layers.append(_conv_bn(hidden, hidden, 3, stride, groups=hidden))
        layers.append(_conv_bn(hidden, out, 1, 1, act=False))
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


class MobileNetV2Cifar(nn.Module):
    """MobileNetV2 (Sandler et al. 2018) for 32×32 inputs: ``features`` (stem
    3×3 conv with stride 1, 17 inverted residual blocks, 1×1 conv to
    ``max(1280, 1280·width_mult)``), global average pooling, dropout,
    ``classifier``."""

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        width_mult: float = 1.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not width_mult > 0:
            raise InvalidParameterError("width_mult", "a number > 0", width_mult, "Fix: use e.g. 0.5, 0.75, 1.0 or 1.4.")
        stem = _make_divisible(32 * width_mult)
        last = _make_divisible(1280 * max(1.0, width_mult))
        layers: list[nn.Module] = [_conv_bn(in_channels, stem, 3, 1)]  # stride 2 on ImageNet
        channels = stem
        for t, c, n, s in CIFAR_SETTINGS:
            out = _make_divisible(c * width_mult)
            for i in range(n):
                layers.append(InvertedResidual(channels, out, s if i == 0 else 1, t))
                channels = out
        layers.append(_conv_bn(channels, last, 1, 1))
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(last, num_classes)
        init_weights(self, linear_std=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return self.classifier(self.dropout(x))


def mobilenetv2_cifar(
    num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0, dropout: float = 0.0
) -> MobileNetV2Cifar:
    """MobileNetV2 (Sandler et al. 2018) adapted to 32×32 CIFAR images."""
    return MobileNetV2Cifar(num_classes, in_channels, width_mult, dropout)


register_model("mobilenetv2_cifar", mobilenetv2_cifar, input_shape=(3, 32, 32))
