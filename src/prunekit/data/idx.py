"""MNIST and Fashion-MNIST from their IDX files, gzip-compressed or not.

The IDX format (LeCun & Cortes, http://yann.lecun.com/exdb/mnist/): a
big-endian header of a 4-byte magic number ``0x0000TTDD`` (``TT`` the element
type, 0x08 for unsigned bytes; ``DD`` the number of dimensions), ``DD``
big-endian int32 sizes, then the data. Images are ``0x00000803`` (N×rows×cols)
and labels ``0x00000801`` (N). Every header and size is checked before use.

Files are found in a folder by their usual names, ``train-images-idx3-ubyte``,
``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
``t10k-labels-idx1-ubyte``, with or without ``.gz`` (``.`` instead of the last
``-`` is accepted too); Fashion-MNIST uses the same names. Nothing is
downloaded.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from .common import ImageArrayDataset, Normalization, check_split, data_error, existing_path
from .registry import DATASETS

__all__ = [
    "FASHION_MNIST_CLASSES",
    "IDX_IMAGES_MAGIC",
    "IDX_LABELS_MAGIC",
    "MNIST_CLASSES",
    "find_idx_files",
    "fashion_mnist",
    "load_idx_pair",
    "mnist",
    "read_idx",
]

IDX_IMAGES_MAGIC = 0x00000803
IDX_LABELS_MAGIC = 0x00000801
_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
           0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_GZIP = b"\x1f\x8b"

MNIST_CLASSES = [str(d) for d in range(10)]
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
_PREFIX = {"train": "train", "test": "t10k"}


def _read_bytes(path: Path) -> bytes:
    with open(path, "rb") as handle:
        head = handle.read(2)
    try:
        if head == _GZIP:
            with gzip.open(path, "rb") as handle:
                return handle.read()
        return path.read_bytes()
    except (OSError, EOFError) as exc:
        raise data_error(path, "a readable IDX file (gzip or raw)", f"{type(exc).__name__}: {exc}",
                         "re-copy the file; it is truncated or corrupt.") from exc


def read_idx(path: str | os.PathLike[str], magic: int | None = None) -> np.ndarray:
    """Read one IDX file (gzip or raw, detected from its first bytes) into a numpy array.

    ``magic``, when given (``IDX_IMAGES_MAGIC`` or ``IDX_LABELS_MAGIC``), is
    checked against the file's. Raises :class:`~prunekit.errors.InvalidParameterError`
    naming the file, what was expected and what was found.
    """
    path = existing_path(path, "an IDX file", "pass the path of an IDX file such as train-images-idx3-ubyte.gz.")
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise data_error(path, "an IDX file (4-byte magic number, then sizes)", f"{len(raw)} bytes",
                         "re-copy the file; it is truncated.")
    found = int.from_bytes(raw[:4], "big")
    if magic is not None and found != magic:
        kind = {IDX_IMAGES_MAGIC: "IDX images", IDX_LABELS_MAGIC: "IDX labels"}.get(magic, "IDX data")
        raise data_error(
            path, f"{kind} (magic 0x{magic:08X})", f"magic 0x{found:08X}",
            "check that the images and labels files are not swapped and that this is an "
            "uncorrupted MNIST/Fashion-MNIST file (gzip is detected automatically).",
        )
    code, ndim = raw[2], raw[3]
    if raw[:2] != b"\x00\x00" or code not in _DTYPES or ndim == 0:
        raise data_error(path, "an IDX file (magic 0x0000TTDD, TT a type code, DD >= 1 dimensions)",
                         f"magic 0x{found:08X}", "pass an IDX file (MNIST's .idx3-ubyte / .idx1-ubyte).")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise data_error(path, f"an IDX header of {header} bytes", f"{len(raw)} bytes", "re-copy the file; it is truncated.")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_DTYPES[code])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise data_error(
            path, f"{expected} data bytes after the header for shape {shape}",
            f"{len(raw) - header} bytes", "re-copy the file; it is truncated or has trailing data.",
        )
    array = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=True)


def find_idx_files(folder: str | os.PathLike[str], split: str) -> tuple[Path, Path]:
    """The (images, labels) files of ``split`` ("train" or "test") in ``folder``."""
    split = check_split(split, list(_PREFIX))
    folder = existing_path(folder, "a folder with the MNIST IDX files",
                           "pass the folder holding train-images-idx3-ubyte(.gz) and the other three files.")
    if folder.is_file():
        raise data_error(folder, "a folder with the four IDX files", "a file",
                         "pass the folder, not one file (or use read_idx for one file).")
    found = []
    for kind, dims in (("images", 3), ("labels", 1)):
        stems = [f"{_PREFIX[split]}-{kind}-idx{dims}-ubyte", f"{_PREFIX[split]}-{kind}.idx{dims}-ubyte"]
        names = [s + ext for s in stems for ext in (".gz", "")]
        hits = [folder / n for n in names if (folder / n).is_file()]
        if not hits:
            raise data_error(folder, f"one of {names}", "none of them",
                             "put the MNIST/Fashion-MNIST IDX files (gzip or not) in this folder.")
        found.append(hits[0])
    return found[0], found[1]


def load_idx_pair(images_path: str | os.PathLike[str], labels_path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Images ``N×rows×cols`` uint8 and labels ``N`` int64, checked against each other."""
    images = read_idx(images_path, IDX_IMAGES_MAGIC)
    labels = read_idx(labels_path, IDX_LABELS_MAGIC)
    if images.dtype != np.uint8 or labels.dtype != np.uint8:
        raise data_error(images_path, "unsigned-byte IDX data (type 0x08)", f"{images.dtype} / {labels.dtype}",
                         "pass MNIST-style unsigned-byte files.")
    if len(images) != len(labels):
        raise data_error(
            labels_path, f"{len(images)} labels, one per image in {os.fspath(images_path)!r}", f"{len(labels)} labels",
            "pair the images file with the labels file of the same split.",
        )
    return images, labels.astype(np.int64)


def _idx_dataset(path: str | os.PathLike[str] | None, split: str, classes: list[str],
                 normalize: Normalization, transform: object) -> ImageArrayDataset:
    images_path, labels_path = find_idx_files(
        existing_path(path, "a folder with the IDX files",
                      "pass path= the folder holding train-images-idx3-ubyte.gz and the other three files."),
        split,
    )
    images, labels = load_idx_pair(images_path, labels_path)
    if labels.size and labels.max() >= len(classes):
        raise data_error(labels_path, f"labels in 0..{len(classes) - 1}", f"label {int(labels.max())}",
                         "pass an MNIST or Fashion-MNIST labels file.")
    return ImageArrayDataset(images, labels, classes, normalize, transform)  # type: ignore[arg-type]


def mnist(path: str | os.PathLike[str] | None = None, split: str = "train",
          normalize: Normalization = None, transform: object = None) -> ImageArrayDataset:
    """MNIST (LeCun & Cortes; CC BY-SA 3.0) from the folder ``path`` of IDX files:
    items ``(1×28×28 float in [0, 1] or normalised, int label)``. ``normalize``:
    None, ``"mnist"`` (mean 0.1307, std 0.3081) or ``(mean, std)``."""
    return _idx_dataset(path, split, MNIST_CLASSES, normalize, transform)


def fashion_mnist(path: str | os.PathLike[str] | None = None, split: str = "train",
                  normalize: Normalization = None, transform: object = None) -> ImageArrayDataset:
    """Fashion-MNIST (Xiao, Rasul & Vollgraf 2017; MIT) from the folder ``path``
    of IDX files (same names and format as MNIST)."""
    return _idx_dataset(path, split, FASHION_MNIST_CLASSES, normalize, transform)


DATASETS.register("mnist", mnist)
DATASETS.register("fashion_mnist", fashion_mnist, aliases=("fashion-mnist", "fmnist"))
