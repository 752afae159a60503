"""Errors raised by prunekit, and the helpers that word them.

Every error about user input names the parameter, the expected form, what was
given and, where one exists, the fix (the scikit-learn convention).
"""

from __future__ import annotations

import difflib
import numbers
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = [
    "PrunekitError",
    "InvalidParameterError",
    "CheckpointError",
    "did_you_mean",
    "check_choice",
]


class PrunekitError(Exception):
    """Base class of every error prunekit raises on purpose."""


class InvalidParameterError(PrunekitError, ValueError):
    """A parameter has the wrong type, range or form.

    The message reads ``<param>: expected <expected>, got <got>. <fix>``.
    """

    def __init__(self, param: str, expected: str, got: Any, fix: str | None = None) -> None:
        self.param = param
        self.expected = expected
        self.got = got
        self.fix = fix
        got_text = got if isinstance(got, str) and got.startswith("<") else _short_repr(got)
        message = f"{param}: expected {expected}, got {got_text}."
        if fix:
            message += f" {fix}"
        super().__init__(message)


class CheckpointError(PrunekitError, OSError):
    """A checkpoint file is missing, unreadable or not in the expected format."""


def _short_repr(value: Any, limit: int = 120) -> str:
    text = repr(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ``" Did you mean 'x'?"`` for the closest choice, or ``""``."""
    close = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=0.5)
    return f" Did you mean {close[0]!r}?" if close else ""


def check_choice(param: str, value: Any, choices: Iterable[str]) -> str:
    """Validate that ``value`` is one of ``choices`` and return it."""
    options = list(choices)
    if value not in options:
        raise InvalidParameterError(
            param,
            "one of " + ", ".join(repr(c) for c in options),
            value,
            ("Fix: pick one of the listed values." + did_you_mean(str(value), options)).strip(),
        )
    return value


def is_shape(value: Any) -> bool:
    """True for a non-empty sequence of positive ints (bools and strings are not shapes)."""
    return (
        not isinstance(value, (str, bytes))
        and isinstance(value, Sequence)
        and len(value) > 0
        and all(isinstance(d, numbers.Integral) and not isinstance(d, bool) and d > 0 for d in value)
    )
