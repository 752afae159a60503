"""Fully connected networks: LeNet-300-100.

LeNet-300-100 is the 784-300-100-10 multilayer perceptron of LeCun, Bottou,
Bengio & Haffner, "Gradient-based learning applied to document recognition"
(Proc. IEEE, 1998), the MNIST baseline of Han et al., "Learning both Weights and
Connections for Efficient Neural Networks" (NeurIPS 2015) and of Frankle &
Carbin, "The Lottery Ticket Hypothesis" (ICLR 2019).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .registry import register_model

__all__ = ["LeNet300100"]


class LeNet300100(nn.Module):
    """LeNet-300-100: ``fc1`` 784→300, ReLU, ``fc2`` 300→100, ReLU, ``fc3`` 100→classes
    (LeCun et al. 1998; Han et al. 2015; Frankle & Carbin 2019), 266,610 parameters.

    Inputs of any shape ``(N, ...)`` with ``in_features`` elements per sample
    (a ``(N, 1, 28, 28)`` MNIST batch) are flattened.
    """

    def __init__(self, num_classes: int = 10, in_features: int = 784, in_channels: int | None = None) -> None:
        super().__init__()
        if in_channels is not None:  # accept the zoo-wide keyword: C×28×28 images
            in_features = in_channels * 28 * 28
        self.fc1 = nn.Linear(in_features, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


register_model("lenet_300_100", LeNet300100, input_shape=(1, 28, 28))
