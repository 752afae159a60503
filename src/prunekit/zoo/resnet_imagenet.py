"""ResNet-18 and ResNet-50 for 224×224 ImageNet images, from He, Zhang, Ren &
Sun, "Deep Residual Learning for Image Recognition" (CVPR 2016), Table 1.

A 7×7 stem convolution with stride 2 (64 channels), batch normalisation, ReLU
and a 3×3 max-pool with stride 2; four stages of residual blocks with 64, 128,
256 and 512 base channels (stride 2 in the first block of stages 2-4), global
average pooling and a linear classifier. ResNet-18 stacks [2, 2, 2, 2] basic
blocks (two 3×3 convolutions); ResNet-50 stacks [3, 4, 6, 3] bottleneck blocks
(1×1 reduce, 3×3 with the stride, 1×1 expand by 4). Shortcuts where the shape
changes are 1×1 convolutions with batch normalisation (option B). Module names
(``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer2.0.downsample.0``, ``fc``) are
those of torchvision's ResNet, so its state dicts load key for key.

Parameters (1000 classes): resnet18_imagenet 11,689,512; resnet50_imagenet
25,557,032. MACs at 224×224: about 1.8G and 4.1G.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from .init import init_weights
from .registry import register_model
from .resnet_cifar import BasicBlock
from .weights import load_weights

__all__ = ["Bottleneck", "ImageNetResNet", "resnet18_imagenet", "resnet50_imagenet"]


class Bottleneck(nn.Module):
    """1×1 reduce, 3×3 (with the stride), 1×1 expand by 4, each with BN, and a
    residual connection (He et al. 2016, Figure 5 right; the stride sits on the
    3×3 convolution as in torchvision's "ResNet v1.5")."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != out:
            self.downsample = nn.Sequential(nn.Conv2d(in_planes, out, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + identity)


class ImageNetResNet(nn.Module):
    """A ResNet for 224×224 inputs (He et al. 2016, Table 1): stem, ``layer1..4``
    of ``blocks[i]`` blocks of type ``block`` (64, 128, 256, 512 base channels),
    average pooling and ``fc``."""

    def __init__(self, block: type[nn.Module], blocks: list[int], num_classes: int = 1000,
                 in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        expansion = int(getattr(block, "expansion", 1))
        in_planes = 64
        stages = []
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), blocks)):
            layers = []
            for j in range(n):
                layers.append(block(in_planes, planes, 2 if i > 0 and j == 0 else 1))
                in_planes = planes * expansion
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _build(block: type[nn.Module], blocks: list[int], num_classes: int, in_channels: int,
           weights: str | os.PathLike[str] | None) -> ImageNetResNet:
    model = ImageNetResNet(block, blocks, num_classes, in_channels)
    if weights is not None:
        load_weights(model, weights, strict=True)
    return model


def resnet18_imagenet(num_classes: int = 1000, in_channels: int = 3,
                      weights: str | os.PathLike[str] | None = None) -> ImageNetResNet:
    """ResNet-18 for ImageNet (He et al. 2016): [2, 2, 2, 2] basic blocks, 11.7M parameters.
    ``weights``: a state-dict file (torchvision's layout) loaded strictly."""
    return _build(BasicBlock, [2, 2, 2, 2], num_classes, in_channels, weights)


def resnet50_imagenet(num_classes: int = 1000, in_channels: int = 3,
                      weights: str | os.PathLike[str] | None = None) -> ImageNetResNet:
    """ResNet-50 for ImageNet (He et al. 2016): [3, 4, 6, 3] bottleneck blocks, 25.6M parameters.
    ``weights``: a state-dict file (torchvision's layout) loaded strictly."""
    return _build(Bottleneck, [3, 4, 6, 3], num_classes, in_channels, weights)


register_model("resnet18_imagenet", resnet18_imagenet, input_shape=(3, 224, 224))
register_model("resnet50_imagenet", resnet50_imagenet, input_shape=(3, 224, 224))
