"""ImageNet-sized zoo models: they build, run on a small input, have the literature's
parameter counts and torchvision's module names."""

from __future__ import annotations

import inspect

import pytest
import torch

from prunekit.errors import InvalidParameterError
from prunekit.zoo import MODELS, create_model, model_input_shape

# name -> parameters with 1000 classes (torchvision's resnet18, resnet50, mobilenet_v2, vgg16_bn)
PARAMS = {
    "resnet18_imagenet": 11_689_512,
    "resnet50_imagenet": 25_557_032,
    "mobilenetv2_imagenet": 3_504_872,
    "vgg16_bn_imagenet": 138_365_992,
}
# a few state-dict keys of torchvision's layout, so its weight files load key for key
KEYS = {
    "resnet18_imagenet": ("conv1.weight", "layer2.0.downsample.0.weight", "layer4.1.bn2.running_var", "fc.bias"),
    "resnet50_imagenet": ("layer1.0.conv3.weight", "layer1.0.downsample.1.weight", "layer3.5.bn3.bias", "fc.weight"),
    "mobilenetv2_imagenet": ("features.0.0.weight", "features.1.conv.1.weight", "features.2.conv.2.weight",
                             "features.17.conv.3.running_mean", "features.18.1.weight", "classifier.1.weight"),
    "vgg16_bn_imagenet": ("features.0.weight", "features.1.running_mean", "features.40.weight", "classifier.0.weight",
                          "classifier.3.weight", "classifier.6.bias"),
}


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_builds_runs_and_matches_the_literature(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name).eval()
    assert sum(p.numel() for p in model.parameters()) == PARAMS[name]
    assert set(KEYS[name]) <= set(model.state_dict())
    assert model_input_shape(name) == (3, 224, 224)
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 1000) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_classes_channels_and_documentation(name: str) -> None:
    small = {"vgg16_bn_imagenet": {"hidden": 16}}.get(name, {})
    model = create_model(name, num_classes=7, in_channels=1, **small).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 32, 32)).shape == (1, 7)
    factory = MODELS.get(name)
    assert "201" in (inspect.getdoc(factory) or "") + (inspect.getdoc(inspect.getmodule(factory)) or "")
    assert all(p.annotation is not inspect.Parameter.empty for p in inspect.signature(factory).parameters.values())


def test_vgg_classifier_is_the_imagenet_one() -> None:
    model = create_model("vgg16_bn_imagenet", hidden=32)
    linears = [m for m in model.classifier if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(512 * 7 * 7, 32), (32, 32), (32, 1000)]
    assert sum(isinstance(m, torch.nn.Conv2d) for m in model.features) == 13


def test_resnet50_uses_bottlenecks_with_the_stride_on_the_3x3() -> None:
    model = create_model("resnet50_imagenet")
    assert [len(s) for s in (model.layer1, model.layer2, model.layer3, model.layer4)] == [3, 4, 6, 3]
    block = model.layer2[0]
    assert block.conv2.stride == (2, 2) and block.conv1.stride == (1, 1) and block.conv3.out_channels == 512


@pytest.mark.parametrize("name, kwargs, param", [
    ("vgg16_bn_imagenet", {"hidden": 0}, "hidden"),
    ("mobilenetv2_imagenet", {"width_mult": 0}, "width_mult"),
])
def test_bad_sizes_are_refused(name: str, kwargs: dict, param: str) -> None:
    with pytest.raises(InvalidParameterError, match=param):
        create_model(name, **kwargs)
