"""Data readers for local files, registered by name: ``create_dataset(name, path=..., split=...)``.

Nothing is ever downloaded: each reader takes the path of files the user has.

==================  =========================================================
name                reads
==================  =========================================================
``mnist``           MNIST IDX files (gzip or not) in a folder
``fashion_mnist``   Fashion-MNIST IDX files (same format and names)
``mnist_embedded``  15,000 + 10,000 MNIST images shipped (no path)
``cifar10_pickle``  CIFAR-10 python batches (restricted unpickler), folder or tar.gz
``cifar10_jpeg``    CIFAR-10 as ``<split>/<class>/*.jpg``, folder or tar(.gz), Pillow
``image_folder``    any ``<split>/<class>/<image>`` folder or tar, one image size
``text_char``       character-level blocks of a text file (alias ``tinyshakespeare``)
``text_word``       word-level blocks, WikiText layout (alias ``wikitext2``)
==================  =========================================================

Image data sets give ``(float tensor C×H×W in [0, 1] or normalised, int label)``;
text data sets give ``(x, y)`` blocks of token ids, ``y`` shifted by one.
"""

from .registry import DATASETS, create_dataset, list_datasets
from .common import NORMALIZATIONS, ImageArrayDataset
from .text import CharTokenizer, TokenBlockDataset, WordTokenizer
from . import cifar_pickle, embedded, idx, image_folder, text  # noqa: F401  (register the readers)

__all__ = [
    "DATASETS",
    "NORMALIZATIONS",
    "CharTokenizer",
    "ImageArrayDataset",
    "TokenBlockDataset",
    "WordTokenizer",
    "create_dataset",
    "list_datasets",
]
