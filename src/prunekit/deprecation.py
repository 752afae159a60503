"""Deprecated names: each keeps working for one release and warns once.

These helpers cover every kind of rename in prunekit:

- :func:`deprecated_alias` wraps a function or class under its old name;
- :func:`renamed_argument` maps an old keyword (``ratio``, ``amount``,
  ``calibration`` ...) to its new one inside a function (:func:`renamed_value`
  when the signature still declares the old keyword);
- :func:`moved_names` gives a module a ``__getattr__`` that serves names which
  moved elsewhere (for example ``prunekit.criteria`` → ``prunekit.scores``).

A warning is a :class:`FutureWarning` (shown to users by default, unlike
``DeprecationWarning`` outside ``__main__``), issued once per old name and
process.
"""

from __future__ import annotations

import functools
import importlib
import reprlib
import warnings
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any, TypeVar

from .errors import InvalidParameterError

__all__ = ["warn_once", "deprecated_alias", "renamed_argument", "renamed_value", "moved_names", "reset_warnings"]

F = TypeVar("F", bound=Callable[..., Any])

_warned: set[str] = set()


def warn_once(old: str, new: str, *, stacklevel: int = 3) -> None:
    """Warn once per process that ``old`` is deprecated in favour of ``new``."""
    if old in _warned:
        return
    _warned.add(old)
    warnings.warn(
        f"{old} is deprecated and will be removed in the next release; use {new} instead.",
        FutureWarning,
        stacklevel=stacklevel,
    )


def reset_warnings() -> None:
    """Forget which deprecations were announced (for tests)."""
    _warned.clear()


def deprecated_alias(obj: F, old: str, new: str) -> F:
    """``obj`` under its old name ``old``: the first use warns that ``new`` replaces it.

    Classes are subclassed (so ``isinstance`` checks against the new class hold);
    functions are wrapped with their signature and docstring kept.
    """
    if isinstance(obj, type):
        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            warn_once(old, new)
            obj.__init__(self, *args, **kwargs)  # type: ignore[misc]

        alias = type(old.rsplit(".", 1)[-1], (obj,), {"__init__": __init__, "__doc__": f"Deprecated alias of {new}."})
        alias.__module__ = obj.__module__
        return alias  # type: ignore[return-value]

    @functools.wraps(obj)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        warn_once(old, new)
        return obj(*args, **kwargs)

    wrapper.__doc__ = f"Deprecated alias of {new}.\n\n" + (obj.__doc__ or "")
    return wrapper  # type: ignore[return-value]


def renamed_argument(
    kwargs: MutableMapping[str, Any], old: str, new: str, where: str, *, new_value: Any = None, convert: Callable[[Any], Any] | None = None
) -> Any:
    """Pop the deprecated keyword ``old`` from ``kwargs`` and return the value for ``new``.

    ``new_value`` is what the caller received for ``new`` (``None`` when not given);
    giving both is an error. ``convert`` maps an old value to the new meaning.
    """
    if old not in kwargs:
        return new_value
    return _renamed(kwargs.pop(old), old, new, where, new_value, convert)


def renamed_value(
    old_value: Any, old: str, new: str, where: str, *, new_value: Any = None, convert: Callable[[Any], Any] | None = None
) -> Any:
    """:func:`renamed_argument` for a deprecated keyword the signature declares (``old=None``):
    ``old_value`` is what the caller received for ``old``, ``None`` when not given."""
    if old_value is None:
        return new_value
    return _renamed(old_value, old, new, where, new_value, convert)


def _renamed(value: Any, old: str, new: str, where: str, new_value: Any, convert: Callable[[Any], Any] | None) -> Any:
    if new_value is not None:
        raise InvalidParameterError(
            old, f"not given together with {new}=",
            f"{old}={reprlib.repr(value)} and {new}={reprlib.repr(new_value)}",
            f"Fix: pass only {new}= ({old}= is its deprecated name).",
        )
    # the frames: warn_once, _renamed, renamed_argument/renamed_value, the function renamed, its caller
    warn_once(f"{where}({old}=...)", f"{where}({new}=...)", stacklevel=5)
    return convert(value) if convert is not None else value


def moved_names(module: str, moves: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` serving names that moved: ``{"old_name": "package.module:new_name"}``."""

    def __getattr__(name: str) -> Any:
        if name not in moves:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        target, _, attr = moves[name].partition(":")
        value = getattr(importlib.import_module(target), attr or name)
        warn_once(f"{module}.{name}", f"{target}.{attr or name}")
        return value

    return __getattr__
