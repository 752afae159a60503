"""Conv-2, Conv-4 and Conv-6 for CIFAR-10, from Frankle & Carbin, "The Lottery
Ticket Hypothesis: Finding Sparse, Trainable Neural Networks" (ICLR 2019),
Figure 2: scaled-down VGG-style networks (Simonyan & Zisserman 2015).

Each is pairs of 3×3 convolutions (padding 1, ReLU) followed by 2×2 max-pooling,
64, 128 then 256 channels, then fully connected 256, 256, classes:

=======  ===========================================  ==========
model    convolutions                                 parameters
=======  ===========================================  ==========
conv2    64, 64, pool                                 4.30M
conv4    64, 64, pool, 128, 128, pool                 2.43M
conv6    64, 64, pool, 128, 128, pool, 256, 256, pool 2.26M
=======  ===========================================  ==========

(Figure 2 of the paper gives 4.3M, 2.4M and 1.7M. Conv-2 and Conv-4 match; the
Conv-6 built here from the listed layers on 32×32 inputs has 2.26M, its first
fully connected layer seeing 4×4×256 = 4096 features.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidParameterError
from .registry import register_model

__all__ = ["ConvNet", "conv2", "conv4", "conv6"]


class ConvNet(nn.Module):
    """A Conv-2/4/6 network of Frankle & Carbin 2019 with ``num_stages`` stages
    of two 3×3 convolutions (64, 128, 256 channels) and a 2×2 max-pool each,
    then ``fc1`` →256, ``fc2`` 256→256, ``fc3`` 256→classes (ReLU between).

    ``dropout`` (0 by default; the paper also reports runs with 0.5) is applied
    before each fully connected layer. Inputs are ``(N, in_channels, 32, 32)``
    (``image_size`` for others, divisible by 2**num_stages).
    """

    widths = (64, 128, 256)

    def __init__(
        self,
        num_stages: int = 2,
        num_classes: int = 10,
        in_channels: int = 3,
        image_size: int = 32,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if num_stages not in (1, 2, 3):
            raise InvalidParameterError(
                "num_stages", "1, 2 or 3 (Conv-2, Conv-4, Conv-6)", num_stages, "Fix: use conv2, conv4 or conv6."
            )
        if image_size % (2**num_stages):
            raise InvalidParameterError(
                "image_size", f"a multiple of {2 ** num_stages}", image_size, "Fix: resize the inputs (32 for CIFAR)."
            )
        layers: list[nn.Module] = []
        channels = in_channels
        for width in self.widths[:num_stages]:
            layers += [
                nn.Conv2d(channels, width, 3, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(width, width, 3, padding=1),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            channels = width
        self.features = nn.Sequential(*layers)
        side = image_size // (2**num_stages)
        self.dropout = dropout
        self.fc1 = nn.Linear(channels * side * side, 256)
        self.fc2 = nn.Linear(256, 256)
        self.fc3 = nn.Linear(256, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x).flatten(1)
        x = F.relu(self.fc1(F.dropout(x, self.dropout, self.training)))
        x = F.relu(self.fc2(F.dropout(x, self.dropout, self.training)))
        return self.fc3(F.dropout(x, self.dropout, self.training))


def conv2(num_classes: int = 10, in_channels: int = 3, image_size: int = 32, dropout: float = 0.0) -> ConvNet:
    """Conv-2 (Frankle & Carbin 2019): 64, 64, pool, FC 256, 256, classes."""
    return ConvNet(1, num_classes, in_channels, image_size, dropout)


def conv4(num_classes: int = 10, in_channels: int = 3, image_size: int = 32, dropout: float = 0.0) -> ConvNet:
    """Conv-4 (Frankle & Carbin 2019): 64, 64, pool, 128, 128, pool, FC 256, 256, classes."""
    return ConvNet(2, num_classes, in_channels, image_size, dropout)


def conv6(num_classes: int = 10, in_channels: int = 3, image_size: int = 32, dropout: float = 0.0) -> ConvNet:
    """Conv-6 (Frankle & Carbin 2019): 64, 64, pool, 128, 128, pool, 256, 256, pool,
    FC 256, 256, classes."""
    return ConvNet(3, num_classes, in_channels, image_size, dropout)


register_model("conv2", conv2, input_shape=(3, 32, 32))
register_model("conv4", conv4, input_shape=(3, 32, 32))
register_model("conv6", conv6, input_shape=(3, 32, 32))
