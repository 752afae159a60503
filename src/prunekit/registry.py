"""Name registries: one per kind of component (criterion, structure, model, ...).

A registry maps a name to a factory (a class or a function) so the Python API,
YAML recipes and the command line expose the same set without hand-kept lists,
in the manner of timm's ``register_model`` / ``create_model`` / ``list_models``.

Components are named by a *spec* string ``name[:arg[:arg...]]``; arguments are
parsed as int, float, ``AxB`` tuples of ints, or left as strings. For example
``"lnorm:2"`` or ``"nm:2:4"`` or ``"block:4x4"``.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Generic, TypeVar

from .errors import InvalidParameterError, did_you_mean

T = TypeVar("T")

__all__ = ["Registry", "call_factory", "drop_aliases", "parse_spec", "resolve_name"]

_INT = re.compile(r"^[+-]?\d+$")
_TUPLE = re.compile(r"^\d+(x\d+)+$")


def _parse_arg(text: str) -> Any:
    if _INT.match(text):
        return int(text)
    if _TUPLE.match(text):
        return tuple(int(part) for part in text.split("x"))
    try:
        return float(text)
    except ValueError:
        return text


def parse_spec(spec: str) -> tuple[str, list[Any]]:
    """Split ``"name:a:b"`` into ``("name", [a, b])`` with typed arguments."""
    parts = [p.strip() for p in spec.split(":")]
    return parts[0].lower(), [_parse_arg(p) for p in parts[1:] if p != ""]


def resolve_name(name: str, kind: str, entries: Mapping[str, Any], aliases: Mapping[str, str],
                 fix: str = "Fix: use one of the registered names.") -> str:
    """The canonical key of ``name`` (a name or an alias, any case) among ``entries``, or an
    :class:`InvalidParameterError` on ``kind`` listing the names, with ``fix`` and a suggestion."""
    key = str(name).lower()
    key = aliases.get(key, key)
    if key not in entries:
        names = sorted(entries)
        raise InvalidParameterError(
            kind,
            f"a registered {kind} name ({', '.join(names)})",
            name,
            (fix + did_you_mean(str(name), names + sorted(aliases))).strip(),
        )
    return key


def call_factory(factory: Callable[..., T], name: str, args: Sequence[Any], kwargs: Mapping[str, Any], *,
                 kind: str, spec: str) -> T:
    """``factory(*args, **kwargs)`` for the spec ``spec`` of ``name``; a ``TypeError`` (arguments
    the factory does not take) becomes an :class:`InvalidParameterError` on ``kind``."""
    try:
        return factory(*args, **kwargs)
    except TypeError as exc:
        raise InvalidParameterError(
            kind,
            f"a valid {kind} spec for {name!r}",
            spec,
            f"Fix: check the arguments ({exc}).",
        ) from exc


def drop_aliases(aliases: dict[str, str], key: str) -> None:
    """Remove every alias of ``key`` from ``aliases``."""
    for alias in [a for a, k in aliases.items() if k == key]:
        del aliases[alias]


class Registry(Generic[T]):
    """A named collection of factories of one kind."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Callable[..., T]] = {}
        self._aliases: dict[str, str] = {}

    def register(
        self, name: str, factory: Callable[..., T] | None = None, *, aliases: tuple[str, ...] = ()
    ) -> Any:
        """Register ``factory`` under ``name``; usable as a decorator."""

        def add(obj: Callable[..., T]) -> Callable[..., T]:
            key = name.lower()
            for taken in (key, *[a.lower() for a in aliases]):
                if taken in self._entries or taken in self._aliases:
                    raise InvalidParameterError(
                        "name",
                        f"a {self.kind} name not yet registered",
                        taken,
                        f"Fix: choose another name; registered {self.kind}s are {self.names()}.",
                    )
            self._entries[key] = obj
            for alias in aliases:
                self._aliases[alias.lower()] = key
            return obj

        if factory is not None:
            return add(factory)
        return add

    def unregister(self, name: str) -> None:
        """Remove ``name`` and its aliases (mostly for tests and plugins)."""
        key = self.resolve(name)
        del self._entries[key]
        drop_aliases(self._aliases, key)

    def resolve(self, name: str) -> str:
        """Return the canonical name for ``name`` or raise with a suggestion."""
        return resolve_name(name, self.kind, self._entries, self._aliases)

    def get(self, name: str) -> Callable[..., T]:
        return self._entries[self.resolve(name)]

    def create(self, spec: str, **kwargs: Any) -> T:
        """Build the component named by ``spec`` (``name[:arg...]``)."""
        name, args = parse_spec(spec)
        return call_factory(self.get(name), name, args, kwargs, kind=self.kind, spec=spec)

    def names(self, pattern: str = "*") -> list[str]:
        """Registered names matching the wildcard ``pattern``, sorted."""
        return sorted(n for n in self._entries if fnmatch.fnmatchcase(n, pattern.lower()))

    def __contains__(self, name: object) -> bool:
        key = str(name).lower()
        return key in self._entries or key in self._aliases

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
