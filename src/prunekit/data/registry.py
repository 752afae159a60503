"""The data-set registry: ``create_dataset(name, path=..., split=...)`` and ``list_datasets(pattern)``."""

from __future__ import annotations

import os
from typing import Any

from torch.utils.data import Dataset

from ..registry import Registry

__all__ = ["DATASETS", "create_dataset", "list_datasets"]

DATASETS: Registry[Dataset] = Registry("dataset")


def create_dataset(
    name: str, path: str | os.PathLike[str] | None = None, split: str = "train", **kwargs: Any
) -> Dataset:
    """Build a registered data set from local files, e.g.
    ``create_dataset("mnist", path="data/mnist", split="test")``.

    Nothing is ever downloaded: ``path`` points at files the user already has
    (``mnist_embedded`` needs none: it ships with the package).
    """
    return DATASETS.create(name, path=path, split=split, **kwargs)


def list_datasets(pattern: str = "*") -> list[str]:
    """Names of registered data sets matching the wildcard ``pattern``."""
    return DATASETS.names(pattern)
