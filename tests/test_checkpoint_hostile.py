"""Files that lie: every metadata field of a sparse checkpoint is checked against its bytes before decoding.

Each hostile file is a valid file of a tiny pruned model with one field or one
stored tensor edited (and its checksum dropped, as a file from before
checksums, so the field checks themselves are what must catch the lie).
"""

from __future__ import annotations

import json
import resource
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

import prunekit
from prunekit.cli import main
from prunekit.errors import CheckpointError, InvalidParameterError

Entries = dict
Tensors = dict


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 8))
    prunekit.prune(model, 0.99, include="0")  # index encoding
    prunekit.prune(model, 0.5, include="2", mode="inplace")  # bitmask encoding
    return model


@pytest.fixture()
def valid(tmp_path: Path) -> Path:
    path = tmp_path / "valid.safetensors"
    prunekit.save_sparse(_model(), path)
    return path


def _edit(path: Path, out: Path, entries: Callable[[Entries], None] | None = None,
          tensors: Callable[[Tensors], None] | None = None, keep_checksum: bool = False) -> Path:
    stored = dict(load_file(str(path)))
    with safe_open(str(path), framework="pt") as handle:
        meta = dict(handle.metadata())
    if not keep_checksum:
        meta.pop("sha256")
    data = json.loads(meta["tensors"])
    if entries is not None:
        entries(data)
    if tensors is not None:
        tensors(stored)
    meta["tensors"] = json.dumps(data)
    save_file(stored, str(out), metadata=meta)
    return out


def _index_set(pos: int, value: int) -> Callable[[Tensors], None]:
    def edit(t: Tensors) -> None:
        index = t["0.weight::index"].clone()
        index[pos] = value
        t["0.weight::index"] = index
    return edit


def test_valid_file_uses_both_encodings_and_loads(valid):
    entries = json.loads(safe_open(str(valid), framework="pt").metadata()["tensors"])
    assert entries["0.weight"]["encoding"] == "index" and entries["2.weight"]["encoding"] == "bitmask"
    assert set(prunekit.load_sparse(valid)) == set(_model().state_dict())


def _swap(t: Tensors) -> None:
    index = t["0.weight::index"].clone()
    index[[0, 1]] = index[[1, 0]]
    t["0.weight::index"] = index


def _repeat(t: Tensors) -> None:
    index = t["0.weight::index"].clone()
    index[1] = index[0]
    t["0.weight::index"] = index


@pytest.mark.parametrize("edit,tensor,field", [
    (_index_set(0, -1), "0.weight", "index"),                    # negative: wrapped around on main
    (_index_set(-1, 64 * 64 + 5), "0.weight", "index"),          # out of range: IndexError on main
    (_swap, "0.weight", "index"),                                # unsorted
    (_repeat, "0.weight", "index"),                              # repeated position
    (lambda t: t.update({"0.weight::values": t["0.weight::values"].double()}), "0.weight", "dtype"),
    (lambda t: t.update({"2.weight::bitmask": t["2.weight::bitmask"][:-1]}), "2.weight", "shape"),
    (lambda t: t.update({"stray": torch.zeros(3)}), "stray", "<stored>"),
    (lambda t: t.pop("2.weight::values"), "2.weight", "encoding"),
])
def test_lying_tensors_are_refused_naming_tensor_and_field(valid, tmp_path, edit, tensor, field):
    bad = _edit(valid, tmp_path / "bad.safetensors", tensors=edit)
    with pytest.raises(CheckpointError) as info:
        prunekit.load_sparse(bad)
    assert f"tensor {tensor!r}: field {field!r}" in str(info.value)


def _set(tensor: str, field: str, value: object) -> Callable[[Entries], None]:
    return lambda e: e[tensor].__setitem__(field, value)


@pytest.mark.parametrize("edit,tensor,field", [
    (_set("0.weight", "dtype", "int32"), "0.weight", "dtype"),   # silently truncated floats on main
    (_set("0.weight", "dtype", "complex64"), "0.weight", "dtype"),
    (_set("2.weight", "shape", [16, 64]), "2.weight", "shape"),  # padded with zeros on main
    (_set("0.weight", "shape", "64x64"), "0.weight", "shape"),
    (_set("0.weight", "shape", [64, -64]), "0.weight", "shape"),
    (_set("0.weight", "shape", [64, 64.0]), "0.weight", "shape"),
    (_set("0.weight", "state", 5), "0.weight", "state"),
    (_set("2.weight", "state", "dense"), "2.weight", "encoding"),
    (_set("0.weight", "encoding", None), "0.weight", "encoding"),
    (_set("0.weight", "encoding", "bitmask"), "0.weight", "shape"),
    (_set("0.weight", "mask_dtype", "float"), "0.weight", "mask_dtype"),
    (_set("2.weight", "mask_dtype", "float32"), "2.weight", "mask_dtype"),
    (_set("0.bias", "colour", "red"), "0.bias", "colour"),
    (lambda e: e.__setitem__("0.bias", [1, 2]), "0.bias", "<entry>"),
    (lambda e: e.__setitem__("0.bias", None), "0.bias", "<entry>"),
    (lambda e: e.__setitem__("tied", {**e["2.bias"], "alias": "missing"}) or e["tied"].pop("encoding"),
     "tied", "alias"),
    (lambda e: e.__setitem__("tied", {"shape": [3], "dtype": "float32", "state": "dense", "alias": "2.bias"}),
     "tied", "shape"),
])
def test_lying_metadata_is_refused_naming_tensor_and_field(valid, tmp_path, edit, tensor, field):
    bad = _edit(valid, tmp_path / "bad.safetensors", entries=edit)
    with pytest.raises(CheckpointError) as info:
        prunekit.load_sparse(bad)
    assert f"tensor {tensor!r}: field {field!r}" in str(info.value)


def test_metadata_that_is_not_an_object_is_refused(valid, tmp_path):
    stored = load_file(str(valid))
    with safe_open(str(valid), framework="pt") as handle:
        meta = dict(handle.metadata())
    meta.pop("sha256")
    meta["tensors"] = "[1, 2]"
    save_file(stored, str(tmp_path / "bad.safetensors"), metadata=meta)
    with pytest.raises(CheckpointError, match="field 'tensors'"):
        prunekit.load_sparse(tmp_path / "bad.safetensors")


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@pytest.mark.parametrize("shape", [[20000, 20000], [40000, 50000], [2**40, 2**40]])
def test_small_file_declaring_a_huge_tensor_is_refused_before_allocating(valid, tmp_path, shape):
    def huge(e: Entries) -> None:
        e["0.weight"]["shape"] = shape

    bad = _edit(valid, tmp_path / "bad.safetensors", entries=huge)
    before, start = _peak_rss_bytes(), time.perf_counter()
    with pytest.raises(CheckpointError, match="'0.weight'|decode to"):
        prunekit.load_sparse(bad)
    assert time.perf_counter() - start < 5
    assert _peak_rss_bytes() - before < 200 * 2**20


def test_declared_size_bound_can_be_raised_for_a_trusted_file(tmp_path):
    model = nn.Sequential(nn.Linear(512, 512, bias=False))
    prunekit.prune(model, 1.0 - 1 / 512**2)  # one weight kept: the file is tiny, the tensor is not
    path = tmp_path / "m.safetensors"
    prunekit.save_sparse(model, path)
    with pytest.raises(CheckpointError, match="max_decoded_bytes"):
        prunekit.load_sparse(path, max_decoded_bytes=1000)
    loaded = prunekit.load_sparse(path, max_decoded_bytes=10 * 2**20)
    assert torch.equal(loaded["0.weight_orig"] * loaded["0.weight_mask"], model[0].weight.detach())
    with pytest.raises(InvalidParameterError, match="max_decoded_bytes"):
        prunekit.load_sparse(path, max_decoded_bytes=-1)


def test_report_refuses_a_lying_file_before_allocating(valid, tmp_path, capsys):
    bad = _edit(valid, tmp_path / "bad.safetensors", entries=_set("0.weight", "shape", [40000, 50000]))
    before, start = _peak_rss_bytes(), time.perf_counter()
    assert main(["report", str(bad)]) == 2
    assert time.perf_counter() - start < 5
    assert _peak_rss_bytes() - before < 200 * 2**20
    assert "decode to" in " ".join(capsys.readouterr().err.split())
    assert main(["report", str(valid)]) == 0


def test_flipped_value_byte_is_caught_by_the_checksum(valid, tmp_path):
    data = bytearray(valid.read_bytes())
    data[-3] ^= 0x40  # inside the last stored tensor's values
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="'sha256'"):
        prunekit.load_sparse(bad)


def test_an_edit_with_a_stale_checksum_is_refused(valid, tmp_path):
    bad = _edit(valid, tmp_path / "bad.safetensors", entries=_set("2.weight", "state", "zeros"), keep_checksum=True)
    with pytest.raises(CheckpointError, match="'sha256'"):
        prunekit.load_sparse(bad)


def test_file_without_checksum_still_loads_bit_exactly(valid, tmp_path):
    old = _edit(valid, tmp_path / "old.safetensors")
    a, b = prunekit.load_sparse(valid), prunekit.load_sparse(old)
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a)


def test_same_model_saved_twice_gives_the_same_bytes(tmp_path):
    model = _model()
    sizes = {prunekit.save_sparse(model, tmp_path / f"{i}.safetensors") for i in range(3)}
    assert len(sizes) == 1
    first = (tmp_path / "0.safetensors").read_bytes()
    assert all((tmp_path / f"{i}.safetensors").read_bytes() == first for i in (1, 2))
    again = _model()  # an equal model built anew
    prunekit.save_sparse(again, tmp_path / "again.safetensors")
    assert (tmp_path / "again.safetensors").read_bytes() == first


@pytest.mark.parametrize("path", [None, 3])
def test_load_sparse_of_a_non_path_is_a_parameter_error(path):
    with pytest.raises(InvalidParameterError, match="path: expected"):
        prunekit.load_sparse(path)


def test_load_sparse_of_a_folder_or_a_truncated_file_is_a_checkpoint_error(valid, tmp_path):
    with pytest.raises(CheckpointError, match="not a file"):
        prunekit.load_sparse(tmp_path)
    (tmp_path / "short.safetensors").write_bytes(valid.read_bytes()[:5])
    with pytest.raises(CheckpointError):
        prunekit.load_sparse(tmp_path / "short.safetensors")


def test_every_stored_dtype_round_trips_bit_exactly_and_reproducibly(tmp_path):
    torch.manual_seed(0)
    weight = torch.randn(16, 16)
    weight[weight.abs() < 1.0] = 0  # plain zeros: stored compressed
    sd = {
        "a": torch.randn(5).to(torch.bfloat16), "b": torch.tensor([True, False, True]),
        "c": torch.tensor(7, dtype=torch.int64), "d": torch.zeros(0, 3), "e": torch.randn(2, 3).double(),
        "f": torch.arange(4, dtype=torch.int8), "g": torch.randn(3).half(), "w": weight,
    }
    prunekit.save_sparse(sd, tmp_path / "1.safetensors")
    prunekit.save_sparse(dict(reversed(list(sd.items()))), tmp_path / "2.safetensors")
    back = prunekit.load_sparse(tmp_path / "1.safetensors")
    assert set(back) == set(sd)
    for key, value in sd.items():
        assert back[key].dtype == value.dtype and back[key].shape == value.shape and torch.equal(back[key], value)
    assert load_file(str(tmp_path / "1.safetensors")).keys() == load_file(str(tmp_path / "2.safetensors")).keys()
