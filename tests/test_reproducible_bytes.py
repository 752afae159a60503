"""Files prunekit writes have the same bytes for the same tensors, so their checksums mean something."""

from __future__ import annotations

import hashlib

import torch

from conftest import classification_splits, small_lottery_config, tiny_mlp
from prunekit.io.sparse_file import safetensors_writer
from prunekit.lottery import LotteryRun


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_writer_ignores_insertion_order_of_tensors_and_metadata(tmp_path) -> None:
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 4, generator=gen), torch.randint(0, 2, (5,), generator=gen).bool()
    safetensors_writer({"a": a, "b": b}, {"x": "1", "y": "2"})(str(tmp_path / "one.safetensors"))
    safetensors_writer({"b": b, "a": a}, {"y": "2", "x": "1"})(str(tmp_path / "two.safetensors"))
    assert _digest(tmp_path / "one.safetensors") == _digest(tmp_path / "two.safetensors")
    safetensors_writer({"a": a + 1, "b": b}, {"x": "1", "y": "2"})(str(tmp_path / "three.safetensors"))
    assert _digest(tmp_path / "three.safetensors") != _digest(tmp_path / "one.safetensors")


def test_lottery_levels_write_the_same_bytes_twice(tmp_path) -> None:
    digests = []
    for run in ("first", "second"):
        LotteryRun(small_lottery_config(levels=1), tmp_path / run, model_fn=tiny_mlp, **classification_splits()).run()
        files = sorted((tmp_path / run).rglob("*.safetensors"))
        assert files
        digests.append({str(p.relative_to(tmp_path / run)): _digest(p) for p in files})
    assert digests[0] == digests[1]
