"""VGG-16 with batch normalisation for 224×224 ImageNet images, from Simonyan &
Zisserman, "Very Deep Convolutional Networks for Large-Scale Image
Recognition" (ICLR 2015), configuration D, with BN (Ioffe & Szegedy 2015)
after each convolution.

Thirteen 3×3 convolutions (padding 1) with BN and ReLU and five 2×2 max-pools
(``features``), an adaptive average pooling to 7×7 (the identity at 224×224;
other input sizes work too), flatten, and the three-layer classifier
25088 → 4096 → 4096 → classes with ReLU and dropout. Module names
(``features.<i>``, ``classifier.0/3/6``) are those of torchvision's
``vgg16_bn``, so its state dicts load key for key. ``hidden`` (4096 in the
paper) is the width of the two hidden classifier layers.

138,365,992 parameters with 1000 classes; about 15.5G MACs at 224×224.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from ..errors import InvalidParameterError
from .init import init_weights
from .registry import register_model
from .vgg import VGG_CONFIGS
from .weights import load_weights

__all__ = ["ImageNetVGG", "vgg16_bn_imagenet"]


class ImageNetVGG(nn.Module):
    """VGG with BN for 224×224 inputs: ``features`` (conv-BN-ReLU blocks and
    max-pools, per ``config``), ``avgpool`` to 7×7, flatten, ``classifier``
    (Linear(512·49, hidden), ReLU, Dropout, Linear(hidden, hidden), ReLU, Dropout,
    Linear(hidden, classes))."""

    def __init__(self, config: list[int | str], num_classes: int = 1000, in_channels: int = 3,
                 hidden: int = 4096, dropout: float = 0.5) -> None:
        super().__init__()
        if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
            raise InvalidParameterError("hidden", "a positive int (classifier width)", hidden, "Fix: e.g. hidden=4096.")
        layers: list[nn.Module] = []
        channels = in_channels
        for item in config:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                width = int(item)
                layers += [nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
                channels = width
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(channels * 7 * 7, hidden), nn.ReLU(True), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.ReLU(True), nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )
        init_weights(self, linear_std=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def vgg16_bn_imagenet(num_classes: int = 1000, in_channels: int = 3, hidden: int = 4096, dropout: float = 0.5,
                      weights: str | os.PathLike[str] | None = None) -> ImageNetVGG:
    """VGG-16 (configuration D, Simonyan & Zisserman 2015) with BN and the ImageNet
    classifier 25088-4096-4096-classes; 138.4M parameters.
    ``weights``: a state-dict file (torchvision's layout) loaded strictly."""
    model = ImageNetVGG(VGG_CONFIGS["vgg16"], num_classes, in_channels, hidden, dropout)
    if weights is not None:
        load_weights(model, weights, strict=True)
    return model


register_model("vgg16_bn_imagenet", vgg16_bn_imagenet, input_shape=(3, 224, 224))
