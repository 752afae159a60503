"""VGG-11 and VGG-16 with batch normalisation, adapted to 32×32 CIFAR images.

The convolutional layers are those of Simonyan & Zisserman, "Very Deep
Convolutional Networks for Large-Scale Image Recognition" (ICLR 2015),
configurations A (VGG-11) and D (VGG-16), each 3×3 convolution (padding 1)
followed by batch normalisation (Ioffe & Szegedy 2015) and ReLU. For 32×32
inputs the five max-pools leave a 1×1×512 map, and the classifier is a single
``nn.Linear(512, num_classes)`` as in the common CIFAR variant of
kuangliu/pytorch-cifar and of Frankle et al.'s OpenLTH ``cifar_vgg`` (used in
"Linear Mode Connectivity and the Lottery Ticket Hypothesis", ICML 2020),
rather than the three-layer 4096-wide ImageNet classifier. Module names and
order (``features.<i>`` with conv biases, ``classifier``) follow kuangliu's
``VGG``, so its state dicts load key for key.
Parameters: vgg11_bn 9.23M, vgg16_bn 14.73M (10 classes).
"""

from __future__ import annotations

import torch
from torch import nn

from .init import init_weights
from .registry import register_model

__all__ = ["CifarVGG", "vgg11_bn", "vgg16_bn", "VGG_CONFIGS"]

# Channels per 3×3 conv; "M" is a 2×2 max-pool (Simonyan & Zisserman 2015, Table 1).
VGG_CONFIGS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


class CifarVGG(nn.Module):
    """VGG with BN for 32×32 inputs: ``features`` (conv-BN-ReLU blocks and
    max-pools, per ``config``), flatten, ``classifier`` = Linear(512, classes)
    (the kuangliu/pytorch-cifar and OpenLTH CIFAR variant)."""

    def __init__(self, config: list[int | str], num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for item in config:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                width = int(item)
                layers += [
                    nn.Conv2d(channels, width, 3, padding=1),
                    nn.BatchNorm2d(width),
                    nn.ReLU(inplace=True),
                ]
                channels = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(channels, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        # 1×1 for 32×32 inputs; averaging makes other sizes work too
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return self.classifier(x)


def vgg11_bn(num_classes: int = 10, in_channels: int = 3) -> CifarVGG:
    """VGG-11 (configuration A, Simonyan & Zisserman 2015) with BN, CIFAR classifier Linear(512, classes)."""
    return CifarVGG(VGG_CONFIGS["vgg11"], num_classes, in_channels)


def vgg16_bn(num_classes: int = 10, in_channels: int = 3) -> CifarVGG:
    """VGG-16 (configuration D, Simonyan & Zisserman 2015) with BN, CIFAR classifier Linear(512, classes)."""
    return CifarVGG(VGG_CONFIGS["vgg16"], num_classes, in_channels)


register_model("vgg11_bn", vgg11_bn, input_shape=(3, 32, 32))
register_model("vgg16_bn", vgg16_bn, input_shape=(3, 32, 32))
