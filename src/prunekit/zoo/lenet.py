"""The LeNet of the PyTorch pruning tutorial (``torch.nn.utils.prune``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .registry import MODELS

__all__ = ["TutorialLeNet"]


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


MODELS.register("tutorial_lenet", TutorialLeNet)
