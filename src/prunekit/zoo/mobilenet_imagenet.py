"""MobileNetV2 for 224×224 ImageNet images, from Sandler, Howard, Zhu,
Zhmoginov & Chen, "MobileNetV2: Inverted Residuals and Linear Bottlenecks"
(CVPR 2018), Table 2.

A 3×3 stem convolution with stride 2 (32 channels), 17 inverted residual
blocks (1×1 expansion by ``t``, 3×3 depthwise with the stride, linear 1×1
projection, BN after each, ReLU6 after the first two; a residual connection
where the stride is 1 and the channels match), a 1×1 convolution to 1280
channels, global average pooling, dropout 0.2 and a linear classifier: the
network downsamples 32×. ``width_mult`` scales every layer's channels
(rounded to multiples of 8); the last layer keeps at least 1280. Module names
(``features.<i>.conv.<j>``, ``classifier.1``) are those of torchvision's
``mobilenet_v2``, so its state dicts load key for key.

3,504,872 parameters at width 1 with 1000 classes; about 0.3G MACs at 224×224.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from ..errors import InvalidParameterError
from .init import init_weights
from .mobilenet import _make_divisible
from .registry import register_model
from .weights import load_weights

__all__ = ["ImageNetInvertedResidual", "MobileNetV2ImageNet", "mobilenetv2_imagenet"]

# (expansion t, output channels c, repeats n, stride s): Table 2 of Sandler et al. 2018.
IMAGENET_SETTINGS: list[tuple[int, int, int, int]] = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]


def _conv_bn_act(inp: int, out: int, kernel: int, stride: int, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inp, out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out),
        nn.ReLU6(inplace=True),
    )


class ImageNetInvertedResidual(nn.Module):
    """Expansion 1×1 (skipped when ``expand_ratio`` is 1), depthwise 3×3 with the
    stride, linear projection 1×1 (Sandler et al. 2018, Table 1), in torchvision's layout."""

    def __init__(self, inp: int, out: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = inp * expand_ratio
        self.use_residual = stride == 1 and inp == out
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(_conv_bn_act(inp, hidden, 1, 1))
        layers += [
            _conv_bn_act(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, out, 1, bias=False),
            nn.BatchNorm2d(out),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


class MobileNetV2ImageNet(nn.Module):
    """MobileNetV2 (Sandler et al. 2018) for 224×224 inputs: ``features`` (stem
    3×3 conv with stride 2, 17 inverted residual blocks, 1×1 conv to
    ``max(1280, 1280·width_mult)``), global average pooling, ``classifier``
    (dropout, Linear)."""

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, width_mult: float = 1.0,
                 dropout: float = 0.2) -> None:
        super().__init__()
        if not width_mult > 0:
            raise InvalidParameterError("width_mult", "a number > 0", width_mult, "Fix: use e.g. 0.5, 0.75, 1.0 or 1.4.")
        stem = _make_divisible(32 * width_mult)
        last = _make_divisible(1280 * max(1.0, width_mult))
        layers: list[nn.Module] = [_conv_bn_act(in_channels, stem, 3, 2)]
        channels = stem
        for t, c, n, s in IMAGENET_SETTINGS:
            out = _make_divisible(c * width_mult)
            for i in range(n):
                layers.append(ImageNetInvertedResidual(channels, out, s if i == 0 else 1, t))
                channels = out
        layers.append(_conv_bn_act(channels, last, 1, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(last, num_classes))
        init_weights(self, linear_std=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return self.classifier(x)


def mobilenetv2_imagenet(num_classes: int = 1000, in_channels: int = 3, width_mult: float = 1.0,
                         dropout: float = 0.2, weights: str | os.PathLike[str] | None = None) -> MobileNetV2ImageNet:
    """MobileNetV2 (Sandler et al. 2018) for ImageNet, 3.5M parameters at width 1.
    ``weights``: a state-dict file (torchvision's layout) loaded strictly."""
    model = MobileNetV2ImageNet(num_classes, in_channels, width_mult, dropout)
    if weights is not None:
        load_weights(model, weights, strict=True)
    return model


register_model("mobilenetv2_imagenet", mobilenetv2_imagenet, input_shape=(3, 224, 224))
