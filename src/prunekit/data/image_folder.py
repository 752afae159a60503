"""Images stored one file per image, per class: ``<root>/<split>/<class>/<name>.jpg``,
in a folder or in a ``.tar`` / ``.tar.gz`` read in place (never extracted).

This is how the JPEG copy of CIFAR-10 is laid out (``train/airplane/0000.jpg``
…, 50,000 train and 10,000 test images). Images are decoded with Pillow, which
is imported only when needed (``pip install pillow``). Decoding tens of
thousands of JPEGs takes a while, so ``cache_dir=`` keeps the decoded images as
one ``uint8`` array in an ``.npz`` file in that folder (written to a temporary
file and moved into place with ``os.replace``, so an interrupted run never
leaves half a cache); the cache's name hashes the source's path, size and
modification time and the options, so a changed source is decoded again.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidParameterError
from .cifar_pickle import CIFAR10_CLASSES
from .common import (
    ImageArrayDataset,
    Normalization,
    check_split,
    data_error,
    existing_path,
    load_npz,
    save_npz_atomic,
)
from .registry import DATASETS

__all__ = ["IMAGE_EXTENSIONS", "cifar10_jpeg", "image_folder", "load_image_folder"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
_CACHE_VERSION = 1
_MAX_SIDE = 4096  # refuse absurd images before decoding them


def _pillow() -> Any:
    try:
        from PIL import Image
    except ImportError as exc:
        raise ImportError(
            "Reading image files needs Pillow, which is not installed. Fix: pip install pillow"
        ) from exc
    return Image


def _split_member(name: str, split: str) -> tuple[str, str] | None:
    """``(class, file)`` if ``name`` is ``[prefix/]split/class/file.ext``, else None."""
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if len(parts) < 3 or ".." in parts or parts[-3] != split:
        return None
    cls, fname = parts[-2], parts[-1]
    if fname.startswith(".") or not fname.lower().endswith(IMAGE_EXTENSIONS):
        return None
    return cls, fname


def _iter_files(root: Path, split: str) -> Iterator[tuple[str, str, bytes]]:
    """``(class, file name, encoded bytes)`` of every image of ``split``."""
    if root.is_dir():
        base = root / split
        if not base.is_dir():
            raise data_error(root, f"a folder {split}/<class>/<image>", f"no folder {split!r}",
                             f"pass the folder that holds {split}/ (with one sub-folder per class).")
        for cls_dir in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for file in sorted(cls_dir.iterdir()):
                if file.is_file() and not file.name.startswith(".") and file.suffix.lower() in IMAGE_EXTENSIONS:
                    yield cls_dir.name, file.name, file.read_bytes()
        return
    try:
        tar = tarfile.open(root, "r:*")
    except (tarfile.TarError, OSError) as exc:
        raise data_error(root, "a folder or a .tar/.tar.gz of <split>/<class>/<image> files",
                         f"{type(exc).__name__}: {exc}", "pass the image folder or its tar archive.") from exc
    with tar:
        try:
            for member in tar:
                if not member.isfile():
                    continue  # links, devices and folders are skipped; nothing is extracted
                hit = _split_member(member.name, split)
                if hit is None:
                    continue
                handle = tar.extractfile(member)
                if handle is not None:
                    yield hit[0], hit[1], handle.read()
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise data_error(root, "a readable tar archive", f"{type(exc).__name__}: {exc}",
                             "re-copy the archive; it is truncated or corrupt.") from exc


def _decode(image_module: Any, data: bytes, source: str, channels: int) -> np.ndarray:
    try:
        with image_module.open(io.BytesIO(data)) as im:
            if max(im.size) > _MAX_SIDE:
                raise data_error(source, f"an image at most {_MAX_SIDE} pixels a side", f"size {im.size}",
                                 "remove the file or resize it.")
            im = im.convert("RGB" if channels == 3 else "L")
            return np.asarray(im, dtype=np.uint8)
    except InvalidParameterError:
        raise
    except Exception as exc:  # Pillow raises UnidentifiedImageError, OSError, ...
        raise data_error(source, "a readable image", f"{type(exc).__name__}: {exc}",
                         "remove or replace the corrupt file.") from exc


def load_image_folder(
    path: str | os.PathLike[str],
    split: str = "train",
    classes: Sequence[str] | None = None,
    max_per_class: int | None = None,
    channels: int = 3,
    cache_dir: str | os.PathLike[str] | None = None,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Decode ``<path>/<split>/<class>/*`` into ``(images N×H×W×C uint8, labels, classes)``.

    Files are taken in (class, file name) order. ``classes`` fixes the class
    list and label numbers (folders of other names are an error); by default it
    is the sorted folder names. ``max_per_class`` keeps the first so many files
    of each class. With ``cache_dir`` the result is cached as described in the
    module docstring.
    """
    root = existing_path(path, "an image folder or tar archive",
                         "pass the folder (or .tar/.tar.gz) holding <split>/<class>/<image> files.")
    if max_per_class is not None and (not isinstance(max_per_class, int) or max_per_class < 1):
        raise InvalidParameterError("max_per_class", "None or a positive int", max_per_class)
    if channels not in (1, 3):
        raise InvalidParameterError("channels", "1 (grey) or 3 (RGB)", channels)
    cache_file = None
    if cache_dir is not None:
        stat = root.stat()
        key = json.dumps([_CACHE_VERSION, str(root.resolve()), stat.st_size, stat.st_mtime_ns, split,
                          list(classes) if classes is not None else None, max_per_class, channels])
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        stem = root.name.split(".")[0] or "images"
        cache_file = Path(os.fspath(cache_dir)).expanduser() / f"{stem}-{split}-{digest}.npz"
        if cache_file.is_file():
            try:
                cached = load_npz(cache_file)
                images, labels, names = cached["images"], cached["labels"], [str(c) for c in cached["classes"]]
                if images.dtype == np.uint8 and images.ndim == 4 and len(labels) == len(images):
                    return images, labels.astype(np.int64), names
            except (OSError, ValueError, KeyError):
                pass  # unreadable cache: decode again and overwrite it

    files = [(cls, name, data) for cls, name, data in _iter_files(root, split)]
    found = sorted({cls for cls, _, _ in files})
    if not files:
        raise data_error(root, f"image files under {split}/<class>/", "none",
                         f"check the layout: {split}/<class>/<name>{IMAGE_EXTENSIONS[0]}.")
    names = list(classes) if classes is not None else found
    unknown = [c for c in found if c not in names]
    if unknown:
        raise data_error(root, f"class folders among {names}", f"folders {unknown}",
                         "remove the extra folders or pass classes= with every class name.")
    files.sort(key=lambda f: (names.index(f[0]), f[1]))
    if max_per_class is not None:
        kept: dict[str, int] = {}
        selected = []
        for item in files:
            if kept.get(item[0], 0) < max_per_class:
                kept[item[0]] = kept.get(item[0], 0) + 1
                selected.append(item)
        files = selected
    image_module = _pillow()
    decoded = [_decode(image_module, data, f"{root}:{split}/{cls}/{name}", channels) for cls, name, data in files]
    shapes = {a.shape for a in decoded}
    if len(shapes) != 1:
        raise data_error(root, "images of one size", f"sizes {sorted(shapes)[:4]}",
                         "resize the images to one size before reading them.")
    images = np.stack(decoded)
    if images.ndim == 3:
        images = images[..., None]
    labels = np.array([names.index(cls) for cls, _, _ in files], dtype=np.int64)
    if cache_file is not None:
        save_npz_atomic(cache_file, {"images": images, "labels": labels, "classes": np.array(names)})
    return images, labels, names


def image_folder(
    path: str | os.PathLike[str] | None = None,
    split: str = "train",
    classes: Sequence[str] | None = None,
    max_per_class: int | None = None,
    channels: int = 3,
    cache_dir: str | os.PathLike[str] | None = None,
    normalize: Normalization = None,
    transform: object = None,
) -> ImageArrayDataset:
    """A data set of ``<path>/<split>/<class>/<image>`` files (folder or tar),
    all of one size, held decoded in memory: items ``(C×H×W float, int label)``."""
    root = existing_path(path, "an image folder or tar archive",
                         "pass path= the folder (or .tar/.tar.gz) holding <split>/<class>/<image> files.")
    images, labels, names = load_image_folder(root, split, classes, max_per_class, channels, cache_dir)
    if channels == 1:
        images = images[..., 0]
    return ImageArrayDataset(images, labels, names, normalize, transform)  # type: ignore[arg-type]


def cifar10_jpeg(
    path: str | os.PathLike[str] | None = None,
    split: str = "train",
    max_per_class: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    normalize: Normalization = None,
    transform: object = None,
) -> ImageArrayDataset:
    """CIFAR-10 (Krizhevsky 2009) stored as JPEG files per class, e.g.
    ``cifar10_jpeg_yoongikim.tar.gz`` (``train/<class>/NNNN.jpg``,
    ``test/<class>/NNNN.jpg``): items ``(3×32×32 float, int label)`` with the
    official label numbers (airplane 0 … truck 9). ``normalize``: None,
    ``"cifar10"``, ``"half"`` (``(x/255 - 0.5)/0.5``, for the pretrained
    ResNet-20) or ``(mean, std)``. ``max_per_class`` takes the first so many
    images of each class; ``cache_dir`` caches the decoded images."""
    split = check_split(split, ["train", "test"])
    ds = image_folder(path, split, CIFAR10_CLASSES, max_per_class, 3, cache_dir, normalize, transform)
    if ds.data.shape[1:] != (32, 32, 3):
        raise data_error(path, "32×32 RGB CIFAR-10 images", f"images of shape {ds.data.shape[1:]}",
                         "use image_folder for images of other sizes.")
    return ds


DATASETS.register("image_folder", image_folder)
DATASETS.register("cifar10_jpeg", cifar10_jpeg)
