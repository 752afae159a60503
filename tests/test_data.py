"""Data readers: IDX (MNIST), CIFAR-10 pickles, image folders/tars, text, the embedded MNIST subset."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from prunekit.data import (
    CharTokenizer,
    WordTokenizer,
    create_dataset,
    list_datasets,
)
from prunekit.data.idx import IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, read_idx
from prunekit.errors import InvalidParameterError
from conftest import SHARED_DATA

SHARED = SHARED_DATA
MNIST_DIR = SHARED / "mnist"
SHAKESPEARE = SHARED / "tinyshakespeare" / "input.txt"
WIKITEXT = SHARED / "wikitext-2"


def test_registry_names() -> None:
    names = set(list_datasets())
    assert {"mnist", "fashion_mnist", "mnist_embedded", "cifar10_pickle", "cifar10_jpeg", "image_folder",
            "text_char", "text_word"} <= names
    with pytest.raises(InvalidParameterError, match="mnist"):
        create_dataset("mnsit")


# -- IDX -----------------------------------------------------------------------------


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    magic = magic if magic is not None else (0x0800 | array.ndim)
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", s) for s in array.shape) + array.tobytes()


def write_mnist(folder: Path, n_train: int = 20, n_test: int = 10, gz: bool = True, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        for kind, arr, dims in (("images", images, 3), ("labels", labels, 1)):
            name = f"{prefix}-{kind}-idx{dims}-ubyte"
            data = idx_bytes(arr)
            if gz:
                (folder / (name + ".gz")).write_bytes(gzip.compress(data))
            else:
                (folder / name).write_bytes(data)
        out[prefix] = (images, labels)
    return out


@pytest.mark.parametrize("gz", [True, False])
def test_idx_synthetic_roundtrip(tmp_path: Path, gz: bool) -> None:
    arrays = write_mnist(tmp_path, gz=gz)
    train = create_dataset("mnist", path=tmp_path, split="train")
    test = create_dataset("mnist", path=tmp_path, split="test")
    assert (len(train), len(test)) == (20, 10)
    np.testing.assert_array_equal(train.data, arrays["train"][0])
    x, y = train[3]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and isinstance(y, int) and y == 3
    torch.testing.assert_close(x[0], torch.from_numpy(arrays["train"][0][3]).float() / 255)
    assert 0.0 <= x.min() and x.max() <= 1.0


def test_idx_normalisation(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    raw = create_dataset("mnist", path=tmp_path)[0][0]
    half = create_dataset("mnist", path=tmp_path, normalize=((0.5,), (0.5,)))[0][0]
    torch.testing.assert_close(half, (raw - 0.5) / 0.5)
    preset = create_dataset("mnist", path=tmp_path, normalize="mnist")[0][0]
    torch.testing.assert_close(preset, (raw - 0.1307) / 0.3081)
    with pytest.raises(InvalidParameterError, match="normalize"):
        create_dataset("mnist", path=tmp_path, normalize="imagenet")


def test_idx_wrong_magic(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    images = tmp_path / "train-images-idx3-ubyte.gz"
    labels = tmp_path / "train-labels-idx1-ubyte.gz"
    # swap the two files' contents: each now has the other's magic
    a, b = images.read_bytes(), labels.read_bytes()
    images.write_bytes(b)
    labels.write_bytes(a)
    with pytest.raises(InvalidParameterError) as info:
        create_dataset("mnist", path=tmp_path)
    message = str(info.value)
    assert str(images) in message
    assert "0x00000803" in message and "0x00000801" in message
    assert "Fix:" in message


def test_idx_truncated_and_mismatched(tmp_path: Path) -> None:
    arr = np.zeros((4, 28, 28), dtype=np.uint8)
    bad = tmp_path / "short-images-idx3-ubyte"
    bad.write_bytes(idx_bytes(arr)[:-5])
    with pytest.raises(InvalidParameterError, match="3136 data bytes"):
        read_idx(bad, IDX_IMAGES_MAGIC)
    gz = tmp_path / "x.gz"
    gz.write_bytes(gzip.compress(idx_bytes(arr))[:-8])
    with pytest.raises(InvalidParameterError, match="truncated or corrupt"):
        read_idx(gz)
    good = tmp_path / "good.gz"
    good.write_bytes(gzip.compress(idx_bytes(arr)))
    np.testing.assert_array_equal(read_idx(good, IDX_IMAGES_MAGIC), arr)
    # image and label counts differ
    folder = tmp_path / "m"
    write_mnist(folder)
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(7, np.uint8))))
    with pytest.raises(InvalidParameterError, match="20 labels"):
        create_dataset("mnist", path=folder)


def test_idx_missing_files(tmp_path: Path) -> None:
    with pytest.raises(InvalidParameterError, match="Nothing is downloaded"):
        create_dataset("mnist", path=tmp_path / "nope")
    with pytest.raises(InvalidParameterError, match="train-images-idx3-ubyte"):
        create_dataset("mnist", path=tmp_path)
    with pytest.raises(InvalidParameterError, match="path"):
        create_dataset("mnist")
    write_mnist(tmp_path)
    with pytest.raises(InvalidParameterError, match="split"):
        create_dataset("mnist", path=tmp_path, split="valid")


def test_read_idx_labels_magic(tmp_path: Path) -> None:
    labels = np.arange(10, dtype=np.uint8)
    path = tmp_path / "l.idx"
    path.write_bytes(idx_bytes(labels))
    np.testing.assert_array_equal(read_idx(path, IDX_LABELS_MAGIC), labels)


def test_fashion_mnist_same_format(tmp_path: Path) -> None:
    write_mnist(tmp_path, gz=False)
    ds = create_dataset("fashion_mnist", path=tmp_path, split="test")
    assert ds.classes[9] == "Ankle boot" and len(ds) == 10


@pytest.mark.skipif(not (MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file(),
                    reason=f"real MNIST IDX files not found in {MNIST_DIR} (shared data)")
def test_real_mnist() -> None:
    train = create_dataset("mnist", path=MNIST_DIR, split="train")
    test = create_dataset("mnist", path=MNIST_DIR, split="test")
    assert (len(train), len(test)) == (60_000, 10_000)
    assert train.data.shape == (60_000, 28, 28) and train.data.dtype == np.uint8
    assert train.targets[:5].tolist() == [5, 0, 4, 1, 9]  # the well-known first labels
    assert test.class_counts()["1"] == 1135
    x, y = test[0]
    assert x.shape == (1, 28, 28) and y == 7


# -- CIFAR-10 pickles ---------------------------------------------------------------------


def write_cifar_batches(folder: Path, per_batch: int = 4, protocol: int = 2, bytes_keys: bool = True) -> dict:
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]

    def key(k: str) -> object:
        return k.encode() if bytes_keys else k

    for name in names:
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=per_batch)]
        batch = {key("batch_label"): key(name), key("labels"): labels, key("data"): data,
                 key("filenames"): [key(f"img_{i}.png") for i in range(per_batch)]}
        with open(folder / name, "wb") as handle:
            pickle.dump(batch, handle, protocol=protocol)
        written[name] = (data, labels)
    meta = {key("label_names"): [key(n) for n in ["airplane", "automobile", "bird", "cat", "deer",
                                                   "dog", "frog", "horse", "ship", "truck"]],
            key("num_cases_per_batch"): per_batch}
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump(meta, handle, protocol=protocol)
    return written


@pytest.mark.parametrize("protocol, bytes_keys", [(2, True), (pickle.HIGHEST_PROTOCOL, False), (4, True)])
def test_cifar_pickle_synthetic(tmp_path: Path, protocol: int, bytes_keys: bool) -> None:
    written = write_cifar_batches(tmp_path / "cifar-10-batches-py", protocol=protocol, bytes_keys=bytes_keys)
    train = create_dataset("cifar10_pickle", path=tmp_path, split="train")  # the parent folder works too
    test = create_dataset("cifar10_pickle", path=tmp_path / "cifar-10-batches-py", split="test")
    assert (len(train), len(test)) == (20, 4)
    assert train.classes[0] == "airplane" and train.classes[9] == "truck"
    data, labels = written["test_batch"]
    assert test.targets.tolist() == labels
    # row layout: 1024 red, 1024 green, 1024 blue, each row-major 32×32
    img = test.data[2]
    assert img.shape == (32, 32, 3)
    assert img[0, 0, 0] == data[2, 0] and img[0, 0, 1] == data[2, 1024] and img[0, 1, 2] == data[2, 2049]
    x, y = test[2]
    assert x.shape == (3, 32, 32) and y == labels[2]
    assert x[1, 0, 0].item() == pytest.approx(data[2, 1024] / 255)
    np.testing.assert_array_equal(train.data[4:8].reshape(4, -1)[:, :1],
                                  written["data_batch_2"][0].reshape(4, 3, 1024)[:, 0, :1])


def test_cifar_pickle_from_tar(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar_batches(folder)
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    a = create_dataset("cifar10_pickle", path=archive, split="train")
    b = create_dataset("cifar10_pickle", path=folder, split="train")
    np.testing.assert_array_equal(a.data, b.data)
    np.testing.assert_array_equal(a.targets, b.targets)


class _Evil:
    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):  # noqa: ANN204
        return (os.mkdir, (self.target,))


def test_cifar_pickle_refuses_code(tmp_path: Path) -> None:
    folder = tmp_path / "batches"
    write_cifar_batches(folder)
    marker = tmp_path / "pwned"
    with open(folder / "test_batch", "wb") as handle:
        pickle.dump({b"data": _Evil(str(marker)), b"labels": [0]}, handle, protocol=2)
    with pytest.raises(InvalidParameterError, match="not allowed"):
        create_dataset("cifar10_pickle", path=folder, split="test")
    assert not marker.exists(), "the pickle's code must never run"


def test_cifar_pickle_bad_content(tmp_path: Path) -> None:
    folder = tmp_path / "batches"
    write_cifar_batches(folder)
    with open(folder / "test_batch", "wb") as handle:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, handle, protocol=2)
    with pytest.raises(InvalidParameterError, match="N×3072"):
        create_dataset("cifar10_pickle", path=folder, split="test")
    (folder / "data_batch_3").unlink()
    with pytest.raises(InvalidParameterError, match="data_batch_3"):
        create_dataset("cifar10_pickle", path=folder, split="train")


# -- image folders / tars -----------------------------------------------------------------

COLOURS = {"airplane": (250, 10, 10), "cat": (10, 250, 10), "truck": (10, 10, 250)}


def write_image_folder(root: Path, n: int = 3, size: int = 32) -> None:
    Image = pytest.importorskip("PIL.Image", reason="Pillow is needed to write test JPEGs (pip install pillow)")
    for split in ("train", "test"):
        for cls, colour in COLOURS.items():
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.new("RGB", (size, size), colour).save(d / f"{i:04d}.jpg", quality=95)


def test_image_folder_and_tar(tmp_path: Path) -> None:
    root = tmp_path / "cifar"
    write_image_folder(root)
    ds = create_dataset("cifar10_jpeg", path=root, split="train")
    assert len(ds) == 9
    # official CIFAR-10 label numbers, whatever classes are present
    assert sorted(set(ds.targets.tolist())) == [0, 3, 9]
    x, y = ds[0]
    assert x.shape == (3, 32, 32) and y == 0
    assert x[0].mean() > 0.9 and x[1].mean() < 0.1  # red airplane
    generic = create_dataset("image_folder", path=root, split="test")
    assert generic.classes == ["airplane", "cat", "truck"] and generic.targets.tolist() == [0] * 3 + [1] * 3 + [2] * 3
    archive = tmp_path / "cifar.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname=".")
    from_tar = create_dataset("cifar10_jpeg", path=archive, split="train")
    np.testing.assert_array_equal(from_tar.data, ds.data)
    np.testing.assert_array_equal(from_tar.targets, ds.targets)
    few = create_dataset("cifar10_jpeg", path=archive, split="test", max_per_class=2)
    assert few.class_counts()["cat"] == 2 and len(few) == 6


def test_image_folder_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "imgs"
    write_image_folder(root)
    cache = tmp_path / "cache"
    first = create_dataset("cifar10_jpeg", path=root, split="test", cache_dir=cache)
    files = list(cache.glob("*.npz"))
    assert len(files) == 1 and not list(cache.glob("*.tmp"))
    import prunekit.data.image_folder as mod

    def no_pillow() -> None:
        raise AssertionError("the cache must be used, not Pillow")

    monkeypatch.setattr(mod, "_pillow", no_pillow)
    second = create_dataset("cifar10_jpeg", path=root, split="test", cache_dir=cache)
    np.testing.assert_array_equal(first.data, second.data)
    np.testing.assert_array_equal(first.targets, second.targets)
    assert second.classes == first.classes


def test_image_folder_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "imgs"
    write_image_folder(root, n=1)
    (root / "train" / "unicorn").mkdir()
    (root / "train" / "unicorn" / "0.jpg").write_bytes((root / "train" / "cat" / "0000.jpg").read_bytes())
    with pytest.raises(InvalidParameterError, match="unicorn"):
        create_dataset("cifar10_jpeg", path=root, split="train")
    (root / "test" / "cat" / "0001.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(InvalidParameterError, match="0001.jpg"):
        create_dataset("cifar10_jpeg", path=root, split="test")
    with pytest.raises(InvalidParameterError, match="no folder"):
        create_dataset("image_folder", path=root, split="val")
    import sys

    monkeypatch.setitem(sys.modules, "PIL", None)  # as if Pillow were not installed
    (root / "test" / "cat" / "0001.jpg").unlink()
    with pytest.raises(ImportError, match="pip install pillow"):
        create_dataset("cifar10_jpeg", path=root, split="test")


# -- text -----------------------------------------------------------------------------


def test_char_dataset(tmp_path: Path) -> None:
    text = "hello world\nhello there\n" * 20
    path = tmp_path / "t.txt"
    path.write_text(text)
    train = create_dataset("text_char", path=path, split="train", block_size=8)
    val = create_dataset("tinyshakespeare", path=path, split="val", block_size=8)
    tok = train.tokenizer
    assert isinstance(tok, CharTokenizer) and tok.itos == sorted(set(text)) and train.vocab_size == len(set(text))
    cut = int(len(text) * 0.9)
    assert len(train) == (cut - 1 - 8) // 8 + 1
    x, y = train[2]
    assert x.shape == y.shape == (8,) and x.dtype == torch.long
    assert tok.decode(x) == text[16:24] and tok.decode(y) == text[17:25]
    assert tok.decode(val[0][0]) == text[cut:cut + 8]
    overlapping = create_dataset("text_char", path=path, split="all", block_size=8, stride=1)
    assert len(overlapping) == len(text) - 8
    with pytest.raises(InvalidParameterError, match="block_size"):
        create_dataset("text_char", path=path, block_size=10_000)


def test_word_tokenizer_like_pytorch_example(tmp_path: Path) -> None:
    folder = tmp_path / "wiki"
    folder.mkdir()
    (folder / "wiki.train.tokens").write_text(" \n = Title = \n the cat sat on the <unk> mat . \n")
    (folder / "wiki.valid.tokens").write_text(" the dog sat . \n")
    (folder / "wiki.test.tokens").write_text(" a bird \n")
    train = create_dataset("text_word", path=folder, split="train", block_size=4)
    valid = create_dataset("wikitext2", path=folder, split="valid", block_size=2)
    tok = train.tokenizer
    assert isinstance(tok, WordTokenizer) and tok is not None
    assert tok.itos[:4] == ["<eos>", "=", "Title", "the"]  # order of first appearance
    assert {"dog", "bird", "<unk>"} <= set(tok.itos)  # one vocabulary over all splits
    # 3 lines: [] + eos, 3 words + eos, 8 words + eos
    assert len(train.ids) == 1 + 4 + 9
    assert tok.decode(valid.ids) == "the dog sat .\n"
    assert valid.tokenizer.itos == tok.itos
    x, y = train[0]
    assert x.shape == (4,) and torch.equal(x[1:], y[:-1])
    # unknown words become <unk>
    assert tok.encode("zebra the\n").tolist() == [tok.stoi["<unk>"], tok.stoi["the"], tok.stoi["<eos>"]]
    single = create_dataset("text_word", path=folder / "wiki.test.tokens", block_size=2)
    assert single.tokenizer.itos == ["a", "bird", "<eos>", "<unk>"]


@pytest.mark.skipif(not SHAKESPEARE.is_file(), reason=f"tinyshakespeare not found at {SHAKESPEARE} (shared data)")
def test_real_tinyshakespeare() -> None:
    ds = create_dataset("tinyshakespeare", path=SHAKESPEARE, block_size=64)
    assert ds.vocab_size == 65
    assert ds.tokenizer.decode(ds[0][0][:14]) == "First Citizen:"


@pytest.mark.skipif(not (WIKITEXT / "wiki.valid.tokens").is_file(),
                    reason=f"WikiText-2 not found in {WIKITEXT} (shared data)")
def test_real_wikitext2() -> None:
    valid = create_dataset("wikitext2", path=WIKITEXT, split="valid", block_size=35)
    test = create_dataset("wikitext2", path=WIKITEXT, split="test", block_size=35)
    assert (len(valid.ids), len(test.ids)) == (217_646, 245_569)  # the data README's counts
    assert valid.tokenizer.itos == test.tokenizer.itos
    assert valid[0][0].shape == (35,)


# -- embedded MNIST ------------------------------------------------------------------------


def test_mnist_embedded() -> None:
    train = create_dataset("mnist_embedded", split="train")
    test = create_dataset("mnist_embedded", split="test")
    assert (len(train), len(test)) == (15000, 10000)  # the whole MNIST test set
    assert set(train.class_counts().values()) == {1500}
    x, y = train[0]
    assert x.shape == (1, 28, 28) and 0 <= y <= 9 and x.max() <= 1.0 and x.max() > 0.5
    assert train.data.dtype == np.uint8
    import prunekit.data as pkg

    packaged = Path(pkg.__file__).with_name("mnist_subset.npz")
    assert packaged.stat().st_size < 5 * 1024 * 1024


@pytest.mark.skipif(not (MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file(),
                    reason=f"real MNIST IDX files not found in {MNIST_DIR} (shared data)")
def test_mnist_embedded_matches_source() -> None:
    embedded = create_dataset("mnist_embedded", split="test")
    real = create_dataset("mnist", path=MNIST_DIR, split="test")
    from prunekit.data.common import load_npz
    import prunekit.data as pkg

    index = load_npz(Path(pkg.__file__).with_name("mnist_subset.npz"))["index_test"]
    np.testing.assert_array_equal(embedded.data, real.data[index])
    np.testing.assert_array_equal(embedded.targets, real.targets[index])


def test_build_embedded(tmp_path: Path) -> None:
    from prunekit.data.build_embedded import main

    write_mnist(tmp_path / "m", n_train=40, n_test=30)
    out = tmp_path / "sub.npz"
    assert main(["--mnist", str(tmp_path / "m"), "--out", str(out),
                 "--train-per-class", "3", "--test-per-class", "2"]) == 0
    ds = create_dataset("mnist_embedded", path=out, split="train")
    assert len(ds) == 30 and set(ds.class_counts().values()) == {3}
    assert len(create_dataset("mnist_embedded", path=out, split="test")) == 20


def test_load_npz_refuses_a_folder_a_missing_file_and_a_non_archive_naming_the_path(tmp_path):
    from prunekit.data.common import load_npz
    from prunekit.errors import InvalidParameterError

    good = tmp_path / "ok.npz"
    np.savez(good, x_train=np.zeros((2, 3), dtype=np.uint8))
    assert load_npz(good)["x_train"].shape == (2, 3)
    junk = tmp_path / "junk.npz"
    junk.write_text("not an archive")
    for path, found in ((tmp_path, "a folder"), (tmp_path / "missing.npz", "no such file"),
                        (junk, "not an .npz archive")):
        with pytest.raises(InvalidParameterError) as info:
            load_npz(path)
        assert info.value.param == "path" and found in str(info.value) and str(path) in str(info.value)
