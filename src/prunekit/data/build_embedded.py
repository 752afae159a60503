"""Build the MNIST subset that ships inside prunekit (``mnist_embedded``).

Takes the first ``--train-per-class`` images of each digit from MNIST's
training set and the first ``--test-per-class`` of each from its test set, or
the whole test set with ``--test-per-class 0`` (in file order, so the subset is
reproducible without a seed), and writes them as
``uint8`` arrays in a compressed ``.npz`` (no pickles) along with their indices
in the original files::

    python -m prunekit.data.build_embedded --mnist /path/to/mnist \\
        --out src/prunekit/data/mnist_subset.npz

MNIST is by Yann LeCun and Corinna Cortes, under CC BY-SA 3.0; see
``LICENSE-MNIST-SUBSET.txt`` beside this file.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import numpy as np

from .common import save_npz_atomic
from .idx import find_idx_files, load_idx_pair

__all__ = ["DEFAULT_OUT", "TRAIN_PER_CLASS", "TEST_PER_CLASS", "build", "first_per_class", "main"]

DEFAULT_OUT = Path(__file__).with_name("mnist_subset.npz")
#: The packaged subset: 1,500 training images per digit (15,000) and the whole test set (10,000).
TRAIN_PER_CLASS = 1500
TEST_PER_CLASS = 0


logger = logging.getLogger(__name__)

def first_per_class(labels: np.ndarray, per_class: int, num_classes: int = 10) -> np.ndarray:
    """Indices of the first ``per_class`` samples of each class, in file order."""
    picks = []
    for c in range(num_classes):
        idx = np.flatnonzero(labels == c)[:per_class]
        if len(idx) < per_class:
            raise ValueError(f"class {c} has only {len(idx)} samples, fewer than {per_class}")
        picks.append(idx)
    return np.sort(np.concatenate(picks))


def build(mnist_dir: str | os.PathLike[str], out: str | os.PathLike[str] = DEFAULT_OUT,
          train_per_class: int = TRAIN_PER_CLASS, test_per_class: int = TEST_PER_CLASS) -> dict[str, np.ndarray]:
    """Write the subset to ``out`` (atomically) and return its arrays; a per-class
    count of 0 takes the whole split."""
    arrays: dict[str, np.ndarray] = {}
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        images, labels = load_idx_pair(*find_idx_files(mnist_dir, split))
        index = first_per_class(labels, per_class) if per_class > 0 else np.arange(len(labels))
        arrays[f"x_{split}"] = images[index].astype(np.uint8)
        arrays[f"y_{split}"] = labels[index].astype(np.uint8)
        arrays[f"index_{split}"] = index.astype(np.int32)
    save_npz_atomic(out, arrays, compress=True)
    return arrays


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m prunekit.data.build_embedded", description=__doc__.split("\n\n")[0])
    parser.add_argument("--mnist", required=True, help="folder with the four MNIST IDX files (gzip or not)")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="output .npz (default: the packaged file)")
    parser.add_argument("--train-per-class", type=int, default=TRAIN_PER_CLASS, help="0: the whole training set")
    parser.add_argument("--test-per-class", type=int, default=TEST_PER_CLASS, help="0: the whole test set")
    args = parser.parse_args(argv)
    arrays = build(args.mnist, args.out, args.train_per_class, args.test_per_class)
    size = os.path.getsize(args.out)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logger.info("wrote %s: %d train + %d test images, %s bytes",
                args.out, len(arrays["y_train"]), len(arrays["y_test"]), f"{size:,}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
