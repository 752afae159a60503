"""The model zoo: every model builds and runs, sizes match the literature, and
the real pretrained ResNet-20 loads strictly and classifies CIFAR-10."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
from torch import nn

import prunekit
from prunekit.errors import CheckpointError, InvalidParameterError
from prunekit.zoo import MODELS, create_model, list_models
from conftest import SHARED_DATA

SHARED = SHARED_DATA
RESNET20_CKPT = SHARED / "pretrained" / "resnet20_cifar10_dense.safetensors"
CIFAR_JPEG = SHARED / "cifar10-jpeg" / "cifar10_jpeg_yoongikim.tar.gz"

# name -> (input shape without batch, output shape without batch)
IMAGE_MODELS = {
    "tutorial_lenet": ((1, 28, 28), (10,)),
    "lenet_300_100": ((1, 28, 28), (10,)),
    "lenet5": ((1, 28, 28), (10,)),
    "conv2": ((3, 32, 32), (10,)),
    "conv4": ((3, 32, 32), (10,)),
    "conv6": ((3, 32, 32), (10,)),
    "vgg11_bn": ((3, 32, 32), (10,)),
    "vgg16_bn": ((3, 32, 32), (10,)),
    "resnet20": ((3, 32, 32), (10,)),
    "resnet32": ((3, 32, 32), (10,)),
    "resnet56": ((3, 32, 32), (10,)),
    "mobilenetv2_cifar": ((3, 32, 32), (10,)),
}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_every_model_is_registered() -> None:
    expected = set(IMAGE_MODELS) | {"gpt_tiny"}
    assert expected <= set(list_models())
    assert set(prunekit.list_models("resnet*")) == {"resnet20", "resnet32", "resnet56", "resnet18_imagenet",
                                                    "resnet50_imagenet"}


@pytest.mark.parametrize("name", sorted(IMAGE_MODELS))
def test_image_model_forward(name: str) -> None:
    torch.manual_seed(0)
    in_shape, out_shape = IMAGE_MODELS[name]
    model = create_model(name).eval()
    with torch.no_grad():
        out = model(torch.rand(2, *in_shape))
    assert out.shape == (2, *out_shape)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", sorted(IMAGE_MODELS))
def test_num_classes_and_in_channels(name: str) -> None:
    in_shape, _ = IMAGE_MODELS[name]
    channels = 1 if in_shape[0] == 3 else 3
    model = create_model(name, num_classes=7, in_channels=channels).eval()
    with torch.no_grad():
        out = model(torch.rand(1, channels, *in_shape[1:]))
    assert out.shape == (1, 7)


@pytest.mark.parametrize("name", sorted(set(IMAGE_MODELS) | {"gpt_tiny"}))
def test_factories_are_documented_and_typed(name: str) -> None:
    factory = MODELS.get(name)
    doc = inspect.getdoc(factory) or ""
    assert len(doc) > 20, f"{name} needs a docstring"
    module_doc = inspect.getdoc(inspect.getmodule(factory)) or ""
    assert any(ch.isdigit() for ch in doc + module_doc), f"{name}'s docs should cite a paper and year"
    hints = inspect.signature(factory).parameters
    assert all(p.annotation is not inspect.Parameter.empty for p in hints.values() if p.name != "self")


@pytest.mark.parametrize(
    "name, kwargs, expected",
    [
        ("lenet_300_100", {}, 266_610),  # Han et al. 2015: 267K
        ("lenet5", {}, 431_080),  # Han et al. 2015: 431K
        ("conv2", {}, 4_301_642),  # Frankle & Carbin 2019: 4.3M
        ("conv4", {}, 2_425_930),  # 2.4M
        ("resnet20", {}, 272_474),  # option B; the checkpoint has 272,474 parameters
        ("resnet20", {"shortcut": "A"}, 269_722),  # He et al. 2016: 0.27M
        ("resnet32", {"shortcut": "A"}, 464_154),  # 0.46M
        ("resnet56", {}, 855_770),
        ("resnet56", {"shortcut": "A"}, 853_018),  # 0.85M
        ("vgg16_bn", {}, 14_728_266),
        ("mobilenetv2_cifar", {}, 2_236_682),
    ],
)
def test_parameter_counts(name: str, kwargs: dict, expected: int) -> None:
    assert n_params(create_model(name, **kwargs)) == expected


def test_resnet_literature_sizes() -> None:
    assert round(n_params(create_model("resnet20")) / 1e3) == 272
    assert round(n_params(create_model("resnet56")) / 1e3) == 856  # ~855K
    assert abs(n_params(create_model("resnet56")) - 855_000) < 2_000


@pytest.mark.parametrize("depth, n", [(20, 3), (32, 5), (56, 9)])
def test_resnet_structure(depth: int, n: int) -> None:
    model = create_model(f"resnet{depth}")
    for stage, width in ((model.layer1, 16), (model.layer2, 32), (model.layer3, 64)):
        assert len(stage) == n
        assert stage[0].conv1.out_channels == width
    assert model.layer1[0].downsample is None
    assert isinstance(model.layer2[0].downsample, nn.Sequential)
    assert all(m.bias is None for m in model.modules() if isinstance(m, nn.Conv2d))
    # option A has no parameters in the shortcut
    a = create_model(f"resnet{depth}", shortcut="A")
    assert not list(a.layer2[0].downsample.parameters())
    with torch.no_grad():
        assert a.eval()(torch.rand(1, 3, 32, 32)).shape == (1, 10)


def test_resnet_bad_arguments() -> None:
    from prunekit.zoo.resnet_cifar import CifarResNet

    with pytest.raises(InvalidParameterError, match="6n \\+ 2"):
        CifarResNet(depth=21)
    with pytest.raises(InvalidParameterError, match="shortcut"):
        create_model("resnet20", shortcut="C")


def test_unknown_model_suggests() -> None:
    with pytest.raises(InvalidParameterError, match="resnet20"):
        create_model("resnet2O")


def test_lenet5_caffe_layout() -> None:
    model = create_model("lenet5")
    assert [m.out_channels for m in (model.conv1, model.conv2)] == [20, 50]
    assert (model.fc1.in_features, model.fc1.out_features, model.fc2.out_features) == (800, 500, 10)
    relu = create_model("lenet5", conv_relu=True).eval()
    with torch.no_grad():
        assert relu(torch.rand(3, 1, 28, 28)).shape == (3, 10)


def test_conv_nets_follow_frankle_carbin() -> None:
    for name, stages in (("conv2", 1), ("conv4", 2), ("conv6", 3)):
        model = create_model(name)
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        assert len(convs) == 2 * stages
        assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256, 256][: 2 * stages]
        assert all(c.kernel_size == (3, 3) for c in convs)
        assert (model.fc1.out_features, model.fc2.out_features, model.fc3.out_features) == (256, 256, 10)


def test_vgg_classifier_is_single_linear() -> None:
    for name, n_convs in (("vgg11_bn", 8), ("vgg16_bn", 13)):
        model = create_model(name, num_classes=100)
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        assert len(convs) == len(bns) == n_convs
        assert isinstance(model.classifier, nn.Linear)
        assert (model.classifier.in_features, model.classifier.out_features) == (512, 100)


def test_mobilenet_width_multiplier() -> None:
    small = create_model("mobilenetv2_cifar", width_mult=0.5)
    full = create_model("mobilenetv2_cifar")
    assert n_params(small) < n_params(full)
    # stride 1 in the stem: a 32×32 input reaches the last stage at 4×4
    feats = full.features.eval()
    with torch.no_grad():
        assert feats(torch.rand(1, 3, 32, 32)).shape[-2:] == (4, 4)
        assert small.eval()(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(InvalidParameterError):
        create_model("mobilenetv2_cifar", width_mult=0)


def test_gpt_tiny_forward_and_layout() -> None:
    torch.manual_seed(0)
    model = create_model("gpt_tiny", vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=32).eval()
    idx = torch.randint(0, 50, (3, 16))
    with torch.no_grad():
        logits = model(idx)
    assert logits.shape == (3, 16, 50)
    attn = model.blocks[0].attn
    assert all(isinstance(getattr(attn, n), nn.Linear) for n in ("q_proj", "k_proj", "v_proj", "out_proj"))
    assert model.blocks[0].mlp.fc.out_features == 4 * 32
    assert model.lm_head.weight is not model.wte.weight  # untied by default
    tied = create_model("gpt_tiny", vocab_size=50, block_size=16, n_layer=1, n_head=2, n_embd=32, tie_weights=True)
    assert tied.lm_head.weight is tied.wte.weight


def test_gpt_is_causal() -> None:
    torch.manual_seed(0)
    model = create_model("gpt_tiny", vocab_size=20, block_size=8, n_layer=2, n_head=2, n_embd=16).eval()
    a = torch.randint(0, 20, (1, 8))
    b = a.clone()
    b[0, 5:] = (b[0, 5:] + 1) % 20
    with torch.no_grad():
        la, lb = model(a), model(b)
    torch.testing.assert_close(la[:, :5], lb[:, :5])
    assert not torch.allclose(la[:, 5:], lb[:, 5:])


def test_gpt_bad_arguments() -> None:
    with pytest.raises(InvalidParameterError, match="n_head"):
        create_model("gpt_tiny", n_embd=30, n_head=4)
    model = create_model("gpt_tiny", vocab_size=10, block_size=4, n_layer=1, n_head=1, n_embd=8)
    with pytest.raises(InvalidParameterError, match="block_size"):
        model(torch.zeros(1, 5, dtype=torch.long))


def test_load_weights_reports_mismatch(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    state = {k: v.clone() for k, v in create_model("resnet20", shortcut="A").state_dict().items()}
    path = tmp_path / "a.safetensors"
    save_file(state, str(path))
    with pytest.raises(CheckpointError, match="missing .*downsample"):
        create_model("resnet20", weights=path)
    create_model("resnet20", shortcut="A", weights=path)  # the matching layout loads


needs_ckpt = pytest.mark.skipif(
    not RESNET20_CKPT.is_file(), reason=f"pretrained ResNet-20 not found at {RESNET20_CKPT} (shared data)"
)


@needs_ckpt
def test_pretrained_resnet20_loads_strict() -> None:
    from safetensors.torch import load_file

    state = load_file(str(RESNET20_CKPT))
    model = create_model("resnet20")
    own = {k for k in model.state_dict() if not k.endswith("num_batches_tracked")}
    assert own == set(state), "keys must match the checkpoint one for one"
    model.load_state_dict(state, strict=True)
    for key, value in state.items():
        assert torch.equal(model.state_dict()[key], value)
    assert sum(v.numel() for k, v in state.items() if "running" not in k) == n_params(model)
    create_model("resnet20", weights=RESNET20_CKPT)  # the factory's own strict loader


@needs_ckpt
@pytest.mark.slow
@pytest.mark.skipif(not CIFAR_JPEG.is_file(), reason=f"CIFAR-10 JPEG tar not found at {CIFAR_JPEG} (shared data)")
def test_pretrained_resnet20_accuracy_on_cifar_jpeg() -> None:
    pytest.importorskip("PIL", reason="Pillow is needed to decode the CIFAR-10 JPEGs (pip install pillow)")
    from prunekit.data import create_dataset
    from prunekit.zoo.resnet_cifar import PRETRAINED_NORMALIZATION

    ds = create_dataset("cifar10_jpeg", path=CIFAR_JPEG, split="test", max_per_class=50,
                        normalize=PRETRAINED_NORMALIZATION)
    assert len(ds) == 500
    x, y = ds.tensors()
    model = create_model("resnet20", weights=RESNET20_CKPT).eval()
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y).float().mean().item()
    assert accuracy > 0.70, f"accuracy {accuracy:.3f} (about 0.81 expected on the JPEG copy)"
