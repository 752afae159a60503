"""Shared fixtures: seeded tiny models and helpers to snapshot a model's state."""

from __future__ import annotations

import os
from pathlib import Path

import copy
from typing import Any

import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

import prunekit
import prunekit.lottery
from prunekit.oneshot.pretrained import StreamedBlocks


#: The shared real data (MNIST, CIFAR-10 JPEG, tiny Shakespeare, WikiText-2, the pretrained ResNet-20):
#: ``$PRUNEKIT_SHARED_DATA`` when set, else ``../shared/data`` beside the repository. Tests that need a
#: file there skip with the path they looked in when it is missing.
SHARED_DATA = Path(os.environ.get("PRUNEKIT_SHARED_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data")


class TinyNet(nn.Module):
    """A small conv + linear network (every dimension divisible by 4 and 8)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.fc1 = nn.Linear(8 * 4 * 4, 16)
        self.fc2 = nn.Linear(16, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv(x))
        x = x.flatten(1)
        return self.fc2(torch.relu(self.fc1(x)))


def tiny_mlp() -> nn.Module:
    """An 8 → 32 → 16 → 3 MLP (the lottery and instability tests)."""
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 3))


def tiny_mlp_bn() -> nn.Module:
    """An 8 → 16 → 3 MLP with a BatchNorm1d."""
    return nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))


def classification_splits() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Seeded 8-feature, 3-class data: 240 train, 60 val, 60 test samples."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(360, 8, generator=g)
    y = (x @ torch.randn(8, 3, generator=g)).argmax(1)
    return {"train": (x[:240], y[:240]), "val": (x[240:300], y[240:300]), "test": (x[300:], y[300:])}


def small_lottery_config(**kw: Any) -> prunekit.lottery.LotteryConfig:
    """Two fast levels of the ``tiny`` MLP; ``kw`` overrides any field."""
    base = {"model": "tiny", "levels": 2, "rate": 0.2, "output_rate": 0.1, "train_steps": 12, "batch_size": 20,
            "eval_every": 4, "lr": 5e-3, "seed": 3, **kw}
    return prunekit.lottery.LotteryConfig(**base)


def make_tiny(seed: int = 0) -> TinyNet:
    torch.manual_seed(seed)
    return TinyNet()


@pytest.fixture
def tiny() -> TinyNet:
    return make_tiny(0)


@pytest.fixture
def tiny_input() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randn(4, 8, 4, 4, generator=g)


@pytest.fixture
def lenet() -> nn.Module:
    torch.manual_seed(0)
    return prunekit.create_model("tutorial_lenet")


@pytest.fixture
def lenet_input() -> torch.Tensor:
    g = torch.Generator().manual_seed(2)
    return torch.randn(2, 1, 28, 28, generator=g)


def snapshot(model: nn.Module) -> dict:
    """Everything an aborted operation must leave as it was."""
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "params": {n: (id(p), p.detach().clone()) for n, p in model.named_parameters()},
        "hooks": {n: list(m._forward_pre_hooks.values()) for n, m in model.named_modules()},
        "attrs": {n: sorted(k for k in vars(m) if not k.startswith("_")) for n, m in model.named_modules()},
    }


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-for-bit equality of values, with NaN equal to NaN."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.is_floating_point():
        nan_a, nan_b = torch.isnan(a), torch.isnan(b)
        return torch.equal(nan_a, nan_b) and torch.equal(a[~nan_a], b[~nan_b])
    return torch.equal(a, b)


def assert_unchanged(model: nn.Module, before: dict) -> None:
    after = snapshot(model)
    assert list(after["state"]) == list(before["state"]), "state_dict keys changed"
    for key, value in before["state"].items():
        assert after["state"][key].dtype == value.dtype, key
        assert same(after["state"][key], value), f"{key} changed"
    assert list(after["params"]) == list(before["params"]), "parameters changed"
    for name, (pid, value) in before["params"].items():
        assert after["params"][name][0] == pid, f"{name} was replaced"
        assert same(after["params"][name][1], value), f"{name} changed"
    for name, hooks in before["hooks"].items():
        now = after["hooks"][name]
        assert len(now) == len(hooks) and all(a is b for a, b in zip(now, hooks)), f"hooks of {name!r} changed"
    assert after["attrs"] == before["attrs"], "module attributes changed"


def keep_mask(module: nn.Module, name: str = "weight") -> torch.Tensor:
    """Current keep mask (bool) of module.<name>; all True if unpruned."""
    mask = module._buffers.get(name + "_mask")
    if mask is None:
        return torch.ones_like(getattr(module, name), dtype=torch.bool)
    return mask != 0


def effective(module: nn.Module, name: str = "weight") -> torch.Tensor:
    """The tensor the module computes with."""
    return getattr(module, name).detach()


@pytest.fixture(scope="session")
def _native_module():
    """prunekit.native's compiled kernels, built once per test session (20-60 s)."""
    from prunekit import native

    missing = native.missing_requirements()
    if missing:
        pytest.skip("cannot build prunekit.native here: missing " + "; ".join(missing))
    module = native.enable()
    native.disable()
    return module


@pytest.fixture
def native_kernels(_native_module, monkeypatch):
    """Enable the native kernels for one test; returns the list of (kernel name, args) calls."""
    from types import SimpleNamespace

    from prunekit import native

    calls: list = []

    def recorder(name):
        real = getattr(_native_module, name)
        return lambda *args: calls.append((name, args)) or real(*args)

    names = ("mask_", "masked_sgd_", "masked_adam_")
    monkeypatch.setattr(native, "_KERNELS", SimpleNamespace(**{name: recorder(name) for name in names}))
    return calls


@pytest.fixture(autouse=True)
def _native_off_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests take the stock-op path unless they enable the kernels (``native_kernels``): an
    existing build of prunekit.native would otherwise be loaded by default on some machines only."""
    if "PRUNEKIT_NATIVE" not in os.environ:
        monkeypatch.setenv("PRUNEKIT_NATIVE", "0")


def inplace_pair(sparsity: float, seed: int = 0):
    """A model big enough for the fused SGD path (and a small layer below its
    threshold), pruned in place, and a plain copy masked by hand; with the masks."""
    from prunekit.fused_sgd import FUSE_MIN_NUMEL

    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(300, 256), nn.ReLU(), nn.Linear(256, 8))
    assert model[0].weight.numel() >= FUSE_MIN_NUMEL > model[2].weight.numel()
    reference = copy.deepcopy(model)
    prunekit.prune(model, sparsity, mode="inplace")
    masks = [model[0].weight_mask.clone(), model[2].weight_mask.clone()]
    with torch.no_grad():
        reference[0].weight.mul_(masks[0])
        reference[2].weight.mul_(masks[1])
    return model, reference, masks


@pytest.fixture(autouse=True)
def _fixed_console_width(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test sees a 160-column console, whatever terminal runs the suite: rich sizes tables
    and wraps lines to the width it finds, so output checks would otherwise depend on it."""
    monkeypatch.setenv("COLUMNS", "160")


# -- devices ----------------------------------------------------------------------------

#: Whether this machine has a CUDA device (CI never has one; ``benchmarks/cuda_paths.py`` runs
#: the CUDA cases where one is present).
HAS_CUDA = torch.cuda.is_available()

#: The devices present, as names: ``"cpu"`` always, ``"cuda"`` where available.
DEVICES = ["cpu"] + (["cuda"] if HAS_CUDA else [])

#: The device parameter list: the devices present only (no skipped placeholder where a device is
#: absent); the CUDA case, where there is one, is marked ``cuda`` (``pytest -m cuda`` selects it).
DEVICE_PARAMS = [pytest.param("cpu", id="cpu")] + (
    [pytest.param("cuda", id="cuda", marks=pytest.mark.cuda)] if HAS_CUDA else [])


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cuda: runs on a CUDA device (present only where one is)")


@pytest.fixture(params=DEVICE_PARAMS)
def device(request: pytest.FixtureRequest) -> torch.device:
    """Each device present (``cpu``; ``cuda`` where available), as a ``torch.device``."""
    return torch.device(request.param)


class EveryOther(torch_prune.BasePruningMethod):
    """The torch tutorial's custom method, whose __init__ takes no amount: prunes every other entry
    of those not yet pruned."""

    PRUNING_TYPE = "unstructured"

    def compute_mask(self, t, default_mask):
        mask = default_mask.clone()
        mask.view(-1)[::2] = 0
        return mask


def materialised_blocks(store: StreamedBlocks) -> list[int]:
    """Indices of the blocks of a ``StreamedBlocks`` store whose parameters are off the meta device."""
    return [i for i, b in enumerate(store.blocks) if any(p.device.type != "meta" for p in b.parameters())]


def watch_streamed_blocks(monkeypatch: pytest.MonkeyPatch) -> tuple[list[list[int]], list[StreamedBlocks]]:
    """Record, at every block load, forward and release of ``prune_pretrained``'s block store,
    which blocks are materialised: returns ``(seen, stores)``, filled as the call runs."""
    seen: list[list[int]] = []
    stores: list[StreamedBlocks] = []
    real_load, real_release = StreamedBlocks.load, StreamedBlocks.release

    def load_block(self, index):
        stores.append(self)
        block = real_load(self, index)
        seen.append(materialised_blocks(self))
        # the block runs with hooks while it is the only one in memory
        block.register_forward_pre_hook(lambda *_: seen.append(materialised_blocks(self)))
        return block

    def release_block(self, index, changed):
        real_release(self, index, changed)
        seen.append(materialised_blocks(self))

    monkeypatch.setattr(StreamedBlocks, "load", load_block)
    monkeypatch.setattr(StreamedBlocks, "release", release_block)
    return seen, stores

