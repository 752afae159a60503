"""save_shrunk / load_shrunk keep the state dict's per-module metadata (``_version``)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import prunekit
from prunekit.errors import CheckpointError
from prunekit.io import save_sparse
from prunekit.surgery import load_shrunk, save_shrunk
from prunekit.surgery.history import surgery_history


class Versioned(nn.Module):
    """A small net whose loading depends on its recorded version, as torchvision's MNASNet's does:
    version 1 checkpoints had another stem; a state dict without a version is refused."""

    _version = 2

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 2)
        self.seen_version: object = "not loaded"

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing, unexpected, errors):
        version = local_metadata.get("version", None)
        if version not in (1, 2):
            raise ValueError(f"version should be 1 or 2, not {version}")
        self.seen_version = version
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing, unexpected, errors)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.stem(x)))
        x = torch.relu(self.conv(x))
        return self.head(x.mean(dim=(2, 3)))


def _shrunk(seed: int = 0) -> tuple[Versioned, torch.Tensor]:
    torch.manual_seed(seed)
    model = Versioned().eval()
    x = torch.randn(2, 3, 8, 8)
    prunekit.structural_prune(model, x, sparsity=0.5)
    return model, x


def test_module_versions_survive_save_and_load(tmp_path):
    model, x = _shrunk()
    path = tmp_path / "m.safetensors"
    save_shrunk(model, path)
    fresh = Versioned().eval()
    load_shrunk(fresh, path)
    assert fresh.seen_version == 2
    assert torch.equal(fresh(x), model(x))


def test_an_older_version_reaches_the_module(tmp_path):
    model, _ = _shrunk()
    model._version = 1  # as if saved by an older release of the class
    path = tmp_path / "m.safetensors"
    save_shrunk(model, path)
    fresh = Versioned().eval()
    load_shrunk(fresh, path)
    assert fresh.seen_version == 1


def _write(path, model, state_metadata) -> None:
    metadata = {"prunekit-surgery": surgery_history(model).to_json(), "prunekit-state-metadata": state_metadata}
    save_sparse(model.state_dict(), path, metadata=metadata)


@pytest.mark.parametrize("bad, match", [
    ("not a mapping", "not a mapping of module prefixes"),
    ({"no.such.module": {"version": 2}}, "not a module"),
    ({"": {"version": "2"}}, "not an integer"),
    ({"": {"version": [2]}}, "not a mapping of names"),
])
def test_edited_metadata_is_refused_and_leaves_the_model_untouched(tmp_path, bad, match):
    model, _ = _shrunk()
    path = tmp_path / "m.safetensors"
    _write(path, model, bad)
    fresh = Versioned().eval()
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    with pytest.raises(CheckpointError, match=match):
        load_shrunk(fresh, path)
    after = fresh.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_files_without_the_metadata_load_as_a_plain_dict_does(tmp_path):
    model, _ = _shrunk()
    path = tmp_path / "m.safetensors"
    save_sparse(model.state_dict(), path, metadata={"prunekit-surgery": surgery_history(model).to_json()})
    with pytest.raises(ValueError, match="version should be 1 or 2, not None"):
        load_shrunk(Versioned().eval(), path)
