"""The constraints a declared parameter can have (see :mod:`prunekit.validation`)."""

from __future__ import annotations

import json
import numbers
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import InvalidParameterError, did_you_mean

__all__ = [
    "REQUIRED",
    "AnyOf",
    "Constraint",
    "Device",
    "Flag",
    "Fraction",
    "InstanceOf",
    "Interval",
    "IsCallable",
    "JsonObject",
    "Options",
    "OutputDir",
    "PathLike",
    "RealNotInt",
    "SEED",
    "Spec",
    "Strings",
]


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


#: The default of a parameter that has none (it must be given).
REQUIRED: Any = _Required()


class RealNotInt:
    """The kind of :class:`Interval` that takes floats but not ints (``1`` is a count, ``1.0`` a fraction)."""


_INT_TEXT = re.compile(r"^\s*[+-]?\d+\s*$")


def _kind_ok(value: Any, kind: type) -> bool:
    if isinstance(value, bool):
        return False
    if kind is RealNotInt:
        return isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral)
    return isinstance(value, kind)


def _number(value: float) -> str:
    """A bound as it reads in a message: ints in full (a seed's 2**63 - 1), floats short."""
    return str(value) if isinstance(value, int) else f"{value:g}"


def _kind_name(kind: type) -> str:
    return "an int" if kind is numbers.Integral else "a float"


class Constraint:
    """A set of accepted values; subclasses say which."""

    def accepts(self, value: Any) -> bool:
        raise NotImplementedError

    def describe(self) -> str:
        """What is accepted, as it reads after "expected"."""
        raise NotImplementedError

    def fix(self, value: Any, name: str) -> str | None:
        """A fix for a refused ``value`` of the parameter called ``name`` (None when there is none to give)."""
        return None

    def convert(self, value: Any, name: str) -> Any:
        """``value`` checked (and normalised, e.g. an int bound to a float); raises the error form."""
        if not self.accepts(value):
            raise InvalidParameterError(name, self.describe(), value, self.fix(value, name))
        return value

    def from_text(self, text: str, name: str) -> Any:
        """The value a command-line ``text`` stands for, checked."""
        return self.convert(text, name)

    def choices(self) -> list[str] | None:
        """The accepted names, when they are a list of names."""
        return None


@dataclass(frozen=True)
class Interval(Constraint):
    """A number of ``kind`` (``numbers.Real``, ``numbers.Integral`` or :class:`RealNotInt`) in a range.

    ``left``/``right`` None means unbounded on that side; ``closed`` is ``"both"``,
    ``"left"``, ``"right"`` or ``"neither"``. Bools are never numbers here.
    """

    kind: type
    left: float | None = None
    right: float | None = None
    closed: str = "both"
    example: Any = None

    def __post_init__(self) -> None:
        if self.closed not in ("both", "left", "right", "neither"):
            raise InvalidParameterError("closed", "one of 'both', 'left', 'right', 'neither'", self.closed)

    def _in_range(self, value: float) -> bool:
        closed_left = self.closed in ("both", "left")
        closed_right = self.closed in ("both", "right")
        if self.left is not None and (value < self.left or (value == self.left and not closed_left)):
            return False
        return self.right is None or value < self.right or (value == self.right and closed_right)

    def accepts(self, value: Any) -> bool:
        return _kind_ok(value, self.kind) and self._in_range(value)

    def describe(self) -> str:
        what = _kind_name(self.kind)
        if self.left is not None and self.right is not None:
            lb = "[" if self.closed in ("both", "left") else "("
            rb = "]" if self.closed in ("both", "right") else ")"
            return f"{what} in {lb}{_number(self.left)}, {_number(self.right)}{rb}"
        if self.left is not None:
            return f"{what} {'>=' if self.closed in ('both', 'left') else '>'} {_number(self.left)}"
        if self.right is not None:
            return f"{what} {'<=' if self.closed in ('both', 'right') else '<'} {_number(self.right)}"
        return what

    def fix(self, value: Any, name: str) -> str | None:
        if self.example is None:
            return None
        return f"Fix: e.g. {name} {self.example}." if name.startswith("-") else f"Fix: e.g. {name}={self.example}."

    def convert(self, value: Any, name: str) -> Any:
        value = super().convert(value, name)
        return int(value) if self.kind is numbers.Integral else float(value)

    def from_text(self, text: str, name: str) -> Any:
        try:
            value: Any = int(text) if self.kind is numbers.Integral else float(text)
        except ValueError:
            raise InvalidParameterError(name, self.describe(), text, self.fix(text, name)) from None
        return self.convert(value, name)


class Fraction(Interval):
    """A float in [0, 1] (by default; ``closed`` as for :class:`Interval`). An int is not a
    fraction: on the command line a bare ``1`` is refused with the fix ``1.0``, or
    ``count_option`` when a count is what was meant."""

    def __init__(self, closed: str = "both", *, count_option: str | None = None, example: Any = 0.5) -> None:
        super().__init__(RealNotInt, 0.0, 1.0, closed, example)
        object.__setattr__(self, "count_option", count_option)

    def describe(self) -> str:
        return super().describe().replace("a float", "a fraction")

    def from_text(self, text: str, name: str) -> Any:
        if _INT_TEXT.match(text):
            n = int(text)
            fixes = []
            if n in (0, 1):
                fixes.append(f"for {100 * n}% write {n}.0")
            if self.count_option:
                fixes.append(f"to prune a number of units per tensor use {self.count_option} {n}")
            if not fixes:
                fixes.append(f"e.g. {name} 0.5")
            raise InvalidParameterError(name, f"{self.describe()} written with a decimal point", text,
                                        "Fix: " + "; ".join(fixes) + ".")
        return super().from_text(text, name)


@dataclass(frozen=True)
class Options(Constraint):
    """One of a set of names; ``values`` may be a function (a registry's ``list_*``), read at each check."""

    values: Iterable[str] | Callable[[], Iterable[str]]
    what: str = "value"
    listed_by: str | None = None  # e.g. "prunekit list models"

    def choices(self) -> list[str]:
        values = self.values() if callable(self.values) else self.values
        return [str(v) for v in values]

    def accepts(self, value: Any) -> bool:
        return isinstance(value, str) and value in self.choices()

    def describe(self) -> str:
        return f"a {self.what} among " + ", ".join(self.choices())

    def fix(self, value: Any, name: str) -> str | None:
        where = f" (see `{self.listed_by}`)" if self.listed_by else ""
        return ("Fix: pick one of the listed values" + where + "." + did_you_mean(str(value), self.choices())).strip()


@dataclass(frozen=True)
class Spec(Constraint):
    """A registry spec string (``name[:arg...]``), checked by building it with ``create``;
    ``names`` lists the registered names (live)."""

    create: Callable[[str], Any]
    names: Callable[[], Iterable[str]]
    what: str
    examples: str = ""
    listed_by: str | None = None

    def accepts(self, value: Any) -> bool:
        if not isinstance(value, str):
            return False
        try:
            self.create(value)
        except InvalidParameterError:
            return False
        return True

    def describe(self) -> str:
        text = f"a registered {self.what} ({', '.join(self.names())})"
        return text + (f" or a spec such as {self.examples}" if self.examples else "")

    def convert(self, value: Any, name: str) -> Any:
        if not isinstance(value, str):
            raise InvalidParameterError(name, self.describe(), value, self.fix(value, name))
        try:
            self.create(value)
        except InvalidParameterError as exc:  # the registry's own words, under this parameter's name
            raise InvalidParameterError(name, exc.expected, exc.got, exc.fix) from None
        return value

    def fix(self, value: Any, name: str) -> str | None:
        where = f" (see `{self.listed_by}`)" if self.listed_by else ""
        return ("Fix: use a registered name" + where + "." + did_you_mean(str(value), list(self.names()))).strip()


@dataclass(frozen=True)
class InstanceOf(Constraint):
    """An instance of ``cls`` (described as ``what``)."""

    cls: type
    what: str = ""

    def accepts(self, value: Any) -> bool:
        return isinstance(value, self.cls)

    def describe(self) -> str:
        return self.what or f"a {self.cls.__name__}"


class IsCallable(Constraint):
    """Any callable (described as ``what``)."""

    def __init__(self, what: str = "a callable") -> None:
        self.what = what

    def accepts(self, value: Any) -> bool:
        return callable(value) and not isinstance(value, type)

    def describe(self) -> str:
        return self.what


class Strings(Constraint):
    """A string or a list/tuple of strings (on the command line: one string per use)."""

    def __init__(self, what: str = "a string or a list of strings") -> None:
        self.what = what

    def accepts(self, value: Any) -> bool:
        if isinstance(value, str):
            return True
        if isinstance(value, Iterator):
            return True  # checking would consume it; its user checks the items
        return isinstance(value, Iterable) and all(isinstance(v, str) for v in value)

    def describe(self) -> str:
        return self.what


class PathLike(Constraint):
    """A path (str or ``os.PathLike``); ``exists="file"`` or ``"dir"`` requires one there."""

    def __init__(self, exists: str | None = None) -> None:
        if exists not in (None, "file", "dir"):
            raise InvalidParameterError("exists", "None, 'file' or 'dir'", exists)
        self.exists = exists

    def accepts(self, value: Any) -> bool:
        if not isinstance(value, (str, os.PathLike)) or str(value) == "":
            return False
        if self.exists == "file":
            return Path(value).is_file()
        if self.exists == "dir":
            return Path(value).is_dir()
        return True

    def describe(self) -> str:
        return {None: "a path", "file": "an existing file", "dir": "an existing folder"}[self.exists]

    def fix(self, value: Any, name: str) -> str | None:
        if not self.exists or not isinstance(value, (str, os.PathLike)):
            return None
        path = Path(value)
        if self.exists == "file" and path.is_dir():
            inside = sorted(path.glob("*.safetensors")) or sorted(p for p in path.iterdir() if p.is_file())
            example = f", e.g. {str(inside[0])!r}" if inside else ""
            return f"Fix: {str(path)!r} is a folder; name one file in it{example}."
        if self.exists == "dir" and path.is_file():
            return f"Fix: {str(path)!r} is a file; name the folder it is in, {str(path.parent)!r}, or another folder."
        return f"Fix: check the path (the current folder is {os.getcwd()})."


class OutputDir(PathLike):
    """A folder to write into: new, or an existing folder, but not an existing file."""

    def __init__(self) -> None:
        super().__init__(None)

    def accepts(self, value: Any) -> bool:
        return super().accepts(value) and not (Path(value).exists() and not Path(value).is_dir())

    def describe(self) -> str:
        return "a folder (new or existing), not a file"

    def fix(self, value: Any, name: str) -> str | None:
        if isinstance(value, (str, os.PathLike)) and Path(value).exists():
            return f"Fix: {str(value)!r} is a file; choose another path for {name}."
        return None


class Device(Constraint):
    """A torch device this machine has: ``"cpu"``, ``"cuda"``/``"cuda:N"`` (when CUDA is
    available and has device N), ``"mps"`` (when available), or a ``torch.device``."""

    def accepts(self, value: Any) -> bool:
        return self._problem(value) is None

    @staticmethod
    def _problem(value: Any) -> str | None:
        if not isinstance(value, (str, torch.device)):
            return "not a device"
        try:
            device = torch.device(value)
        except (RuntimeError, ValueError):
            return "not a device"
        if device.type == "cuda":
            if not torch.cuda.is_available():
                return "CUDA is not available on this machine"
            if device.index is not None and device.index >= torch.cuda.device_count():
                return f"this machine has {torch.cuda.device_count()} CUDA device(s)"
        if device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            return "MPS is not available on this machine"
        return None

    def describe(self) -> str:
        return "a torch device this machine has, such as 'cpu' or 'cuda:0'"

    def fix(self, value: Any, name: str) -> str | None:
        problem = self._problem(value)
        use = f"{name} cpu" if name.startswith("-") else f"{name}='cpu'"
        return f"Fix: {problem}; use {use}." if problem else None


#: A seed torch accepts (``torch.manual_seed`` takes at most a signed 64-bit integer here).
SEED = Interval(numbers.Integral, 0, 2**63 - 1, example=0)


class JsonObject(Constraint):
    """A dict; on the command line a JSON object such as ``'{"n_layer": 4}'``."""

    def accepts(self, value: Any) -> bool:
        return isinstance(value, dict)

    def describe(self) -> str:
        return "a JSON object of keyword arguments"

    def fix(self, value: Any, name: str) -> str | None:
        return f"Fix: name each argument, e.g. {name} '{{\"n_layer\": 4}}'." if name.startswith("-") else \
            f"Fix: pass a dict, e.g. {name}={{'n_layer': 4}}."

    def from_text(self, text: str, name: str) -> Any:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidParameterError(name, self.describe(), text, f"Fix: valid JSON, e.g. '{{\"n_layer\": 4}}' "
                                                                     f"({exc.msg} at character {exc.pos}).") from None
        return self.convert(value, name)


class Flag(Constraint):
    """True or False; on the command line a switch (given: True)."""

    def accepts(self, value: Any) -> bool:
        return isinstance(value, bool)

    def describe(self) -> str:
        return "True or False"


class AnyOf(Constraint):
    """Any of ``constraints``; ``None`` among them accepts None."""

    def __init__(self, *constraints: Constraint | None) -> None:
        self.allow_none = any(c is None for c in constraints)
        self.constraints = [c for c in constraints if c is not None]

    def accepts(self, value: Any) -> bool:
        return (value is None and self.allow_none) or any(c.accepts(value) for c in self.constraints)

    def describe(self) -> str:
        parts = [c.describe() for c in self.constraints] + (["None"] if self.allow_none else [])
        return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " or " + parts[-1]

    def convert(self, value: Any, name: str) -> Any:
        if value is None and self.allow_none:
            return None
        for c in self.constraints:
            if c.accepts(value):
                return c.convert(value, name)
        fixes = [f for f in (c.fix(value, name) for c in self.constraints) if f]
        # a string that names no registry entry gets that registry's words (did you mean ...)
        if isinstance(value, str):
            for c in self.constraints:
                if isinstance(c, (Spec, Options)):
                    c.convert(value, name)
        raise InvalidParameterError(name, self.describe(), value, fixes[0] if fixes else None)

    def from_text(self, text: str, name: str) -> Any:
        return self.constraints[0].from_text(text, name)

    def choices(self) -> list[str] | None:
        return next((c.choices() for c in self.constraints if c.choices() is not None), None)
