"""Plain text for language modelling: character-level (tinyshakespeare) and
word-level (WikiText-2), tokenised and cut into fixed-length blocks.

* :class:`CharTokenizer`: one id per distinct character, sorted (as in
  Karpathy's char-rnn / nanoGPT ``shakespeare_char``).
* :class:`WordTokenizer`: whitespace-split words, ``<eos>`` appended to every
  line and ids given in order of first appearance, as in the PyTorch example
  ``word_language_model`` (``data.Corpus``); words not in the vocabulary map
  to ``<unk>`` (WikiText already uses ``<unk>`` for rare words).
* :class:`TokenBlockDataset`: item ``i`` is ``(x, y)``, two ``int64`` tensors
  of ``block_size`` ids, ``y`` being ``x`` shifted left by one token.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import torch
from torch.utils.data import Dataset

from ..errors import InvalidParameterError
from .common import check_split, data_error, existing_path
from .registry import DATASETS

__all__ = [
    "CharTokenizer",
    "TokenBlockDataset",
    "WordTokenizer",
    "read_text",
    "text_char",
    "text_word",
]


def read_text(path: str | os.PathLike[str]) -> str:
    """A UTF-8 text file (``\\r\\n`` read as ``\\n``)."""
    p = existing_path(path, "a text file", "pass the path of a plain-text file.")
    if p.is_dir():
        raise data_error(p, "a text file", "a folder", "pass the file inside it (e.g. input.txt).")
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise data_error(p, "UTF-8 text", f"undecodable byte at offset {exc.start}",
                         "convert the file to UTF-8.") from exc


class CharTokenizer:
    """Character vocabulary: ``itos`` the characters (sorted when built with
    :meth:`from_text`), ``stoi`` their ids."""

    def __init__(self, itos: Sequence[str]) -> None:
        self.itos = list(itos)
        self.stoi = {ch: i for i, ch in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise InvalidParameterError("itos", "distinct characters", itos)

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> torch.Tensor:
        try:
            return torch.tensor([self.stoi[ch] for ch in text], dtype=torch.long)
        except KeyError as exc:
            raise InvalidParameterError(
                "text", "characters of the vocabulary", exc.args[0],
                "Fix: build the tokenizer from a text that has every character (e.g. the whole file).",
            ) from None

    def decode(self, ids: Iterable[int] | torch.Tensor) -> str:
        return "".join(self.itos[int(i)] for i in ids)


class WordTokenizer:
    """Word vocabulary of the PyTorch ``word_language_model`` example: words
    split on whitespace, ``<eos>`` closing every line, ``<unk>`` for unknown
    words."""

    unk = "<unk>"
    eos = "<eos>"

    def __init__(self, itos: Sequence[str] = ()) -> None:
        self.itos: list[str] = []
        self.stoi: dict[str, int] = {}
        for word in itos:
            self.add(word)

    def add(self, word: str) -> int:
        if word not in self.stoi:
            self.stoi[word] = len(self.itos)
            self.itos.append(word)
        return self.stoi[word]

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> WordTokenizer:
        """Vocabulary in order of first appearance over ``texts``; ``<eos>`` and
        ``<unk>`` are always in it."""
        tok = cls()
        for text in texts:
            for line in text.split("\n") if text else []:
                for word in line.split():
                    tok.add(word)
                tok.add(cls.eos)
        tok.add(cls.eos)
        tok.add(cls.unk)
        return tok

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> torch.Tensor:
        """Ids of every line's words followed by ``<eos>`` (a final newline
        does not start another line)."""
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        unk, eos = self.stoi[self.unk], self.stoi[self.eos]
        ids: list[int] = []
        for line in lines:
            ids.extend(self.stoi.get(w, unk) for w in line.split())
            ids.append(eos)
        return torch.tensor(ids, dtype=torch.long)

    def decode(self, ids: Iterable[int] | torch.Tensor) -> str:
        """Words joined by spaces, each ``<eos>`` ending a line."""
        out: list[str] = []
        line: list[str] = []
        for i in ids:
            word = self.itos[int(i)]
            if word == self.eos:
                out.append(" ".join(line) + "\n")
                line = []
            else:
                line.append(word)
        return "".join(out) + " ".join(line)


class TokenBlockDataset(Dataset):
    """Fixed-length blocks of a token stream: item ``i`` is ``(x, y)`` with
    ``x = ids[s : s + block_size]`` and ``y = ids[s + 1 : s + block_size + 1]``,
    ``s = i * stride`` (``stride`` defaults to ``block_size``: no overlap)."""

    def __init__(self, ids: torch.Tensor, block_size: int, stride: int | None = None, tokenizer: object = None) -> None:
        if not isinstance(block_size, int) or block_size < 1:
            raise InvalidParameterError("block_size", "a positive int", block_size)
        stride = block_size if stride is None else stride
        if not isinstance(stride, int) or stride < 1:
            raise InvalidParameterError("stride", "None or a positive int", stride)
        if len(ids) < block_size + 1:
            raise InvalidParameterError(
                "block_size", f"at most {len(ids) - 1} (the text has {len(ids)} tokens)", block_size,
                "Fix: use a smaller block_size or a longer text.",
            )
        self.ids = ids.to(torch.long)
        self.block_size = block_size
        self.stride = stride
        self.tokenizer = tokenizer

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer) if self.tokenizer is not None else int(self.ids.max()) + 1  # type: ignore[arg-type]

    def __len__(self) -> int:
        return (len(self.ids) - 1 - self.block_size) // self.stride + 1

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"block {index} out of range for {len(self)} blocks")
        s = index * self.stride
        chunk = self.ids[s: s + self.block_size + 1]
        return chunk[:-1], chunk[1:]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self.ids)} tokens, {len(self)} blocks of {self.block_size})"


def text_char(
    path: str | os.PathLike[str] | None = None,
    split: str = "train",
    block_size: int = 128,
    stride: int | None = None,
    val_fraction: float = 0.1,
    tokenizer: CharTokenizer | None = None,
) -> TokenBlockDataset:
    """Character-level blocks of the text file ``path`` (e.g. tinyshakespeare's
    ``input.txt``). The vocabulary is the sorted characters of the whole file;
    ``split`` "train" is the first ``1 - val_fraction`` of the characters,
    "val" the rest, "all" everything (nanoGPT's 90/10 split)."""
    split = check_split(split, ["train", "val", "all"])
    if not 0.0 < val_fraction < 1.0:
        raise InvalidParameterError("val_fraction", "a fraction in (0, 1)", val_fraction)
    text = read_text(path)  # type: ignore[arg-type]
    tok = tokenizer or CharTokenizer.from_text(text)
    ids = tok.encode(text)
    cut = int(len(ids) * (1.0 - val_fraction))
    part = {"train": ids[:cut], "val": ids[cut:], "all": ids}[split]
    return TokenBlockDataset(part, block_size, stride, tok)


_WIKI_SPLITS = {"train": "train", "valid": "valid", "val": "valid", "test": "test"}


def text_word(
    path: str | os.PathLike[str] | None = None,
    split: str = "train",
    block_size: int = 35,
    stride: int | None = None,
    tokenizer: WordTokenizer | None = None,
) -> TokenBlockDataset:
    """Word-level blocks (PyTorch ``word_language_model`` tokenisation).

    ``path`` a folder of ``wiki.{train,valid,test}.tokens`` (WikiText-2): the
    file of ``split`` ("train", "valid"/"val" or "test") is read, and the
    vocabulary is built over every such file present, in the order train,
    valid, test, so all splits share ids. ``path`` a file: that file is read
    whole (``split`` is then ignored) and is its own vocabulary unless
    ``tokenizer`` is given.
    """
    root = existing_path(path, "a text file or a folder of wiki.*.tokens",
                         "pass path= the WikiText-2 folder or a text file.")
    if root.is_dir():
        split = check_split(split, list(_WIKI_SPLITS))
        target = root / f"wiki.{_WIKI_SPLITS[split]}.tokens"
        if not target.is_file():
            raise data_error(root, f"the file wiki.{_WIKI_SPLITS[split]}.tokens", "no such file",
                             "pass a folder holding WikiText's wiki.{train,valid,test}.tokens, or a file.")
        if tokenizer is None:
            sources = [root / f"wiki.{s}.tokens" for s in ("train", "valid", "test")]
            tokenizer = WordTokenizer.from_texts(read_text(p) for p in sources if p.is_file())
        text = read_text(target)
    else:
        text = read_text(root)
        tokenizer = tokenizer or WordTokenizer.from_texts([text])
    return TokenBlockDataset(tokenizer.encode(text), block_size, stride, tokenizer)


DATASETS.register("text_char", text_char, aliases=("tinyshakespeare",))
DATASETS.register("text_word", text_word, aliases=("wikitext2", "wikitext-2"))
