"""``mnist_embedded``: a small balanced MNIST subset shipped inside prunekit.

15,000 training images (the first 1,500 of each digit in MNIST's training
set) and the whole MNIST test set (10,000 images), 28×28 ``uint8``, in
``mnist_subset.npz`` beside this module (about 4 MB; built by
:mod:`prunekit.data.build_embedded`). It needs no file outside the package, so
examples, tests and quick experiments run anywhere. MNIST is by Yann LeCun and
Corinna Cortes, CC BY-SA 3.0 (``LICENSE-MNIST-SUBSET.txt``).
"""

from __future__ import annotations

import os
from importlib import resources

import numpy as np

from .common import ImageArrayDataset, Normalization, check_split, data_error, load_npz
from .idx import MNIST_CLASSES
from .registry import DATASETS

__all__ = ["EMBEDDED_FILE", "mnist_embedded"]

EMBEDDED_FILE = "mnist_subset.npz"


def mnist_embedded(path: str | os.PathLike[str] | None = None, split: str = "train",
                   normalize: Normalization = None, transform: object = None) -> ImageArrayDataset:
    """The packaged MNIST subset (15,000 train, balanced; the 10,000 test images of MNIST):
    items ``(1×28×28 float in [0, 1] or normalised, int label)``. ``path``
    may name another ``.npz`` of the same layout (``x_train``, ``y_train``,
    ``x_test``, ``y_test``); by default the packaged file is read."""
    split = check_split(split, ["train", "test"])
    if path is None:
        ref = resources.files(__package__).joinpath(EMBEDDED_FILE)
        if not ref.is_file():
            raise data_error(ref, "the packaged MNIST subset", "no such file",
                             "reinstall prunekit (the file is package data), or rebuild it with "
                             "python -m prunekit.data.build_embedded --mnist <folder>.")
        with resources.as_file(ref) as file:
            arrays = load_npz(file)
        source = str(ref)
    else:
        arrays = load_npz(path)
        source = os.fspath(path)
    try:
        images, labels = arrays[f"x_{split}"], arrays[f"y_{split}"]
    except KeyError as exc:
        raise data_error(source, f"arrays x_{split} and y_{split}", f"arrays {sorted(arrays)}",
                         "rebuild the file with python -m prunekit.data.build_embedded.") from exc
    if images.dtype != np.uint8 or images.ndim != 3 or len(images) != len(labels):
        raise data_error(source, "uint8 images N×H×W with N labels", f"{images.dtype} {images.shape}, {len(labels)} labels",
                         "rebuild the file with python -m prunekit.data.build_embedded.")
    return ImageArrayDataset(images, labels.astype(np.int64), MNIST_CLASSES, normalize, transform)  # type: ignore[arg-type]


DATASETS.register("mnist_embedded", mnist_embedded)
