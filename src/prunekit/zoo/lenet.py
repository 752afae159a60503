"""LeNets for MNIST: the PyTorch pruning tutorial's, and Caffe's LeNet-5."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .registry import register_model

__all__ = ["LeNet5", "TutorialLeNet"]


class TutorialLeNet(nn.Module):
    """conv1 1→6 3×3, conv2 6→16 3×3, fc1 400→120, fc2 120→84, fc3 84→10,
    on 1×28×28 inputs (LeCun et al. 1998, as written in the PyTorch tutorial;
    fc1 expects 16×5×5 features, which a 28×28 input gives)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 6, 3)
        self.conv2 = nn.Conv2d(6, 16, 3)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), (2, 2))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = x.view(-1, int(x.nelement() / x.shape[0]))
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


register_model("tutorial_lenet", TutorialLeNet, input_shape=(1, 28, 28))


class LeNet5(nn.Module):
    """The Caffe LeNet-5 for 28×28 MNIST (LeCun et al., "Gradient-based learning
    applied to document recognition", Proc. IEEE 1998, as in Caffe's
    ``examples/mnist/lenet.prototxt``), the network pruned by Han et al. 2015
    ("Learning both Weights and Connections", 431K parameters):

    ``conv1`` 1→20 5×5, max-pool 2, ``conv2`` 20→50 5×5, max-pool 2,
    ``fc1`` 800→500, ReLU, ``fc2`` 500→classes; 431,080 parameters.

    Caffe's model has no non-linearity after the convolutions; pass
    ``conv_relu=True`` for the common PyTorch variant with a ReLU after each.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, conv_relu: bool = False) -> None:
        super().__init__()
        self.conv_relu = conv_relu
        self.conv1 = nn.Conv2d(in_channels, 20, 5)
        self.conv2 = nn.Conv2d(20, 50, 5)
        self.fc1 = nn.Linear(50 * 4 * 4, 500)
        self.fc2 = nn.Linear(500, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        if self.conv_relu:
            x = F.relu(x)
        x = F.max_pool2d(x, 2)
        x = self.conv2(x)
        if self.conv_relu:
            x = F.relu(x)
        x = F.max_pool2d(x, 2)
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc2(x)


register_model("lenet5", LeNet5, input_shape=(1, 28, 28))
