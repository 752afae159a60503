"""What the readers share: an in-memory image data set, normalisation presets,
path checks worded as prunekit errors, and atomic ``.npz`` caches."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from ..files import atomic_write
from ..errors import InvalidParameterError, check_choice

__all__ = [
    "NORMALIZATIONS",
    "ImageArrayDataset",
    "Normalization",
    "check_split",
    "data_error",
    "existing_path",
    "load_npz",
    "resolve_normalization",
    "save_npz_atomic",
]

#: Per-channel (mean, std) on [0, 1] pixels, by name.
NORMALIZATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    # (x/255 - 0.5)/0.5, i.e. [-1, 1]: the pretrained resnet20_cifar10_dense
    "half": ((0.5,), (0.5,)),
}

Normalization = Union[str, tuple[Sequence[float], Sequence[float]], None]


def data_error(path: Any, expected: str, found: str, fix: str) -> InvalidParameterError:
    """An error about a data file: names the path, what was expected, what was found, the fix."""
    return InvalidParameterError("path", f"{expected} at {os.fspath(path)!r}", f"<{found}>", f"Fix: {fix}")


def existing_path(path: Any, what: str, fix: str) -> Path:
    """``path`` as a Path that exists, or an error naming it."""
    if path is None:
        raise InvalidParameterError("path", what, None, f"Fix: {fix} Nothing is downloaded.")
    p = Path(os.fspath(path)).expanduser()
    if not p.exists():
        raise data_error(p, what, "no such file or folder", fix + " Nothing is downloaded.")
    return p


def check_split(split: str, choices: Sequence[str]) -> str:
    return check_choice("split", split, list(choices))


def resolve_normalization(
    normalize: Normalization, channels: int
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(mean, std) as ``(C, 1, 1)`` tensors, from a preset name or a pair of sequences."""
    if normalize is None:
        return None
    if isinstance(normalize, str):
        key = check_choice("normalize", normalize, list(NORMALIZATIONS))
        mean, std = NORMALIZATIONS[key]
    else:
        try:
            mean, std = normalize
            mean, std = [float(m) for m in mean], [float(s) for s in std]
        except (TypeError, ValueError) as exc:
            raise InvalidParameterError(
                "normalize", "None, a preset name or a pair (mean, std) of per-channel sequences", normalize,
                f"Fix: e.g. normalize=((0.5,), (0.5,)) or one of {sorted(NORMALIZATIONS)}.",
            ) from exc
    if len(mean) == 1:
        mean = list(mean) * channels
    if len(std) == 1:
        std = list(std) * channels
    if len(mean) != channels or len(std) != channels or min(std) <= 0:
        raise InvalidParameterError(
            "normalize", f"{channels} means and {channels} positive stds (or one of each)", normalize,
            "Fix: give one value per channel.",
        )
    return (torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1),
            torch.tensor(std, dtype=torch.float32).view(-1, 1, 1))


class ImageArrayDataset(Dataset):
    """Images held in memory as ``uint8`` (``N×H×W`` or ``N×H×W×C``) with int labels.

    Item ``i`` is ``(image, label)``: ``image`` a float tensor ``C×H×W`` in
    [0, 1], or ``(x - mean) / std`` when ``normalize`` is given, then passed
    through ``transform`` if any; ``label`` an ``int``. ``data`` and
    ``targets`` hold the raw arrays, ``classes`` the class names.
    """

    def __init__(
        self,
        data: np.ndarray,
        targets: np.ndarray,
        classes: Sequence[str],
        normalize: Normalization = None,
        transform: Callable[[torch.Tensor], Any] | None = None,
    ) -> None:
        if data.dtype != np.uint8 or data.ndim not in (3, 4):
            raise InvalidParameterError("data", "a uint8 array N×H×W or N×H×W×C", f"<{data.dtype} {data.shape}>")
        if len(targets) != len(data):
            raise InvalidParameterError("targets", f"{len(data)} labels (one per image)", len(targets))
        self.data = data
        self.targets = np.asarray(targets, dtype=np.int64)
        self.classes = list(classes)
        self.channels = 1 if data.ndim == 3 else data.shape[3]
        self.normalize = normalize
        self._norm = resolve_normalization(normalize, self.channels)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.data)

    def _to_float(self, array: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(array))
        if self.data.ndim == 3:  # grey: (N×)H×W → (N×)1×H×W
            x = x.unsqueeze(-3)
        else:  # (N×)H×W×C → (N×)C×H×W
            x = x.movedim(-1, -3)
        x = x.to(torch.float32).div_(255.0)
        if self._norm is not None:
            x = (x - self._norm[0]) / self._norm[1]
        return x

    def __getitem__(self, index: int) -> tuple[Any, int]:
        x = self._to_float(self.data[index])
        if self.transform is not None:
            x = self.transform(x)
        return x, int(self.targets[index])

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All images as one float tensor ``N×C×H×W`` (normalised, without
        ``transform``) and the labels as ``int64``: for quick evaluation."""
        return self._to_float(self.data), torch.from_numpy(self.targets.copy())

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.targets, minlength=len(self.classes))
        return {name: int(c) for name, c in zip(self.classes, counts)}

    def __repr__(self) -> str:
        shape = "×".join(str(s) for s in self.data.shape[1:])
        return f"{type(self).__name__}({len(self)} images {shape}, {len(self.classes)} classes)"


def save_npz_atomic(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray], compress: bool = False) -> None:
    """Write ``arrays`` to ``path`` as ``.npz``: to a temporary file beside it,
    then ``os.replace``, so readers see the old file or the whole new one."""
    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            (np.savez_compressed if compress else np.savez)(handle, **arrays)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; caches and package data are shared

    atomic_write(path, write)


def load_npz(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read an ``.npz`` without ever unpickling (``allow_pickle=False``); a path that is not a
    readable ``.npz`` file is an error naming it."""
    file = existing_path(path, "an .npz file", "give the path of an .npz file.")
    if not file.is_file():
        raise data_error(file, "an .npz file", "a folder", "give the .npz file inside it, not the folder.")
    try:
        with np.load(file, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        raise data_error(file, "an .npz file", "a file that is not an .npz archive of arrays (pickled objects are never read)",
                         "give an .npz file written by numpy.savez (or prunekit.data.build_embedded).") from exc
