"""CIFAR-10 from the official "python version" batches (Krizhevsky 2009):
``data_batch_1`` … ``data_batch_5`` and ``test_batch`` (and ``batches.meta``),
in the folder ``cifar-10-batches-py`` or inside ``cifar-10-python.tar.gz``
(read in place, never extracted).

How it is kept safe: the batches are pickles, and ``pickle.load`` on a file can
run arbitrary code, because a pickle may name any importable callable
(``os.system``, ``builtins.eval``, ...) to be called while loading. These files
are read with :class:`RestrictedUnpickler`, whose ``find_class`` resolves only
the handful of numpy callables that rebuild plain arrays
(``numpy.core.multiarray._reconstruct``, ``numpy.ndarray``, ``numpy.dtype``,
``numpy.core.numeric._frombuffer``, and ``_codecs.encode`` that Python 3 uses
for bytes in protocol-2 pickles) and raises for every other global. Built-in
containers and scalars (dict, list, bytes, str, int, ...) need no global. After
loading, the result must be a dict holding a ``uint8`` array of N×3072 pixels
and N labels in 0..9, or the file is rejected; object arrays are refused.
"""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from .common import ImageArrayDataset, Normalization, check_split, data_error, existing_path
from .registry import DATASETS

__all__ = ["CIFAR10_CLASSES", "RestrictedUnpickler", "cifar10_pickle", "load_cifar_batch", "safe_unpickle"]

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
_SPLIT_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}


def _numpy_allowed() -> dict[tuple[str, str], Any]:
    import codecs

    core = getattr(np, "_core", None) or np.core  # numpy 2 renamed numpy.core to numpy._core
    reconstruct = core.multiarray._reconstruct
    frombuffer = core.numeric._frombuffer
    allowed: dict[tuple[str, str], Any] = {("_codecs", "encode"): codecs.encode}
    for module in ("numpy.core", "numpy._core"):
        allowed[(f"{module}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{module}.numeric", "_frombuffer")] = frombuffer
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that can rebuild plain numpy arrays and built-in containers
    but resolves no other global, so loading cannot call arbitrary code."""

    _allowed: dict[tuple[str, str], Any] | None = None

    def find_class(self, module: str, name: str) -> Any:
        if RestrictedUnpickler._allowed is None:
            RestrictedUnpickler._allowed = _numpy_allowed()
        try:
            return RestrictedUnpickler._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"global {module}.{name} is not allowed in a CIFAR batch (only numpy array reconstruction is)"
            ) from None


def safe_unpickle(data: bytes) -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler` (Python 2 pickles as bytes)."""
    return RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()


def _key(batch: dict, name: str) -> Any:
    for k in (name, name.encode()):
        if k in batch:
            return batch[k]
    return None


def load_cifar_batch(data: bytes, source: str = "<bytes>") -> tuple[np.ndarray, np.ndarray]:
    """Parse one batch: images ``N×32×32×3`` uint8 (HWC) and labels ``N`` int64."""
    try:
        batch = safe_unpickle(data)
    except Exception as exc:  # UnpicklingError, EOFError, ValueError, ... on bad files
        raise data_error(source, "a CIFAR-10 python batch (a pickled dict of numpy arrays)",
                         f"{type(exc).__name__}: {exc}",
                         "use the official cifar-10-batches-py files; other pickles are refused for safety.") from exc
    if not isinstance(batch, dict):
        raise data_error(source, "a pickled dict with 'data' and 'labels'", type(batch).__name__,
                         "use the official cifar-10-batches-py files.")
    pixels, labels = _key(batch, "data"), _key(batch, "labels")
    if not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8 or pixels.ndim != 2 or pixels.shape[1] != 3072:
        got = f"{getattr(pixels, 'dtype', type(pixels).__name__)} {getattr(pixels, 'shape', '')}"
        raise data_error(source, "'data' a uint8 array N×3072", got, "use the official CIFAR-10 python batches.")
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise data_error(source, "'labels' a list of ints", type(labels).__name__,
                         "use the official CIFAR-10 python batches.") from exc
    if labels.shape != (len(pixels),):
        raise data_error(source, f"{len(pixels)} labels, one per image", f"shape {labels.shape}",
                         "use the official CIFAR-10 python batches.")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise data_error(source, "labels in 0..9", f"labels in {labels.min()}..{labels.max()}",
                         "use CIFAR-10 batches (CIFAR-100 uses 'fine_labels').")
    images = pixels.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy()
    return images, labels


def _read_members(path: Path, names: list[str]) -> dict[str, bytes]:
    """Read the files ``names`` (and ``batches.meta``, if present) from a folder or a tar."""
    wanted = set(names) | {"batches.meta"}
    found: dict[str, bytes] = {}
    if path.is_dir():
        for base in (path, path / "cifar-10-batches-py"):
            for name in wanted:
                if (base / name).is_file() and name not in found:
                    found[name] = (base / name).read_bytes()
    elif tarfile.is_tarfile(path):
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                base = member.name.rsplit("/", 1)[-1]
                if member.isfile() and base in wanted and base not in found:
                    handle = tar.extractfile(member)
                    if handle is not None:
                        found[base] = handle.read()
    else:
        raise data_error(path, "a folder cifar-10-batches-py or the tar cifar-10-python.tar.gz", "another file",
                         "pass the folder of the python batches or the official tar.gz.")
    missing = [n for n in names if n not in found]
    if missing:
        raise data_error(path, f"the batches {names}", f"missing {missing}",
                         "pass the folder holding data_batch_1..5 and test_batch (or the official tar.gz).")
    return found


def cifar10_pickle(path: str | os.PathLike[str] | None = None, split: str = "train",
                   normalize: Normalization = None, transform: object = None) -> ImageArrayDataset:
    """CIFAR-10 (Krizhevsky 2009) from the official python batches at ``path``
    (the folder ``cifar-10-batches-py``, its parent, or ``cifar-10-python.tar.gz``),
    read with a restricted unpickler (see the module docstring): items
    ``(3×32×32 float in [0, 1] or normalised, int label)``. ``normalize``:
    None, ``"cifar10"``, ``"half"`` or ``(mean, std)``."""
    split = check_split(split, list(_SPLIT_FILES))
    root = existing_path(path, "the CIFAR-10 python batches (folder or tar.gz)",
                         "pass path= the folder cifar-10-batches-py or cifar-10-python.tar.gz.")
    names = _SPLIT_FILES[split]
    files = _read_members(root, names)
    parts = [load_cifar_batch(files[n], f"{root}/{n}") for n in names]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    classes = CIFAR10_CLASSES
    if "batches.meta" in files:
        try:
            meta = safe_unpickle(files["batches.meta"])
            raw = _key(meta, "label_names") if isinstance(meta, dict) else None
            if isinstance(raw, list) and len(raw) == 10:
                classes = [n.decode() if isinstance(n, bytes) else str(n) for n in raw]
        except Exception:  # the names are optional; the pixels and labels are checked
            classes = CIFAR10_CLASSES
    return ImageArrayDataset(images, labels, classes, normalize, transform)  # type: ignore[arg-type]


DATASETS.register("cifar10_pickle", cifar10_pickle)
