"""Reading a recipe's YAML node tree: every key keeps its line, every value is checked.

:class:`Doc` indexes the composed node tree (line of every key and item,
source text of scalars); :class:`Section` reads one mapping, refusing unknown
keys (with a did-you-mean) and checking each value's type and range. Every
mistake is an :class:`~prunekit.errors.InvalidParameterError` whose parameter
is ``<file> line <n>, <path>`` (e.g. ``recipe.yaml line 12, runs[2].shrink.macs_target``).
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

import yaml

from ..errors import InvalidParameterError, did_you_mean

__all__ = ["Doc", "Section", "fmt_path", "type_name", "rewrap"]


class Doc:
    """The composed node tree: line of every key / item, by path."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.lines: dict[tuple[Any, ...], int] = {}
        self.scalars: dict[tuple[Any, ...], str] = {}  # source text of scalars (2:4 reads as 124 in YAML 1.1)

    def index(self, node: yaml.Node, path: tuple[Any, ...]) -> None:
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.ScalarNode):
            self.scalars[path] = node.value
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, value_node in node.value:
                key = key_node.value
                line = key_node.start_mark.line + 1
                if key_node.tag == "tag:yaml.org,2002:merge":
                    raise self.error(path + (key,), line, "no YAML merge keys ('<<')", key,
                                     "Fix: write the keys out.")
                if key in seen:
                    raise self.error(path + (key,), line, f"each key once (also on line {seen[key]})", key,
                                     "Fix: remove one of the two.")
                seen[key] = line
                self.lines[path + (key,)] = line
                self.index(value_node, path + (key,))
                self.lines[path + (key,)] = line
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self.lines[path + (i,)] = item.start_mark.line + 1
                self.index(item, path + (i,))
                self.lines[path + (i,)] = item.start_mark.line + 1

    def line(self, path: tuple[Any, ...]) -> int:
        while path and path not in self.lines:
            path = path[:-1]
        return self.lines.get(path, 1)

    def where(self, path: tuple[Any, ...], line: int | None = None) -> str:
        return f"{self.source} line {line or self.line(path)}, {fmt_path(path) or '(top level)'}"

    def error(self, path: tuple[Any, ...], line: int | None, expected: str, got: Any, fix: str | None = None
              ) -> InvalidParameterError:
        return InvalidParameterError(self.where(path, line), expected, got, fix)


def fmt_path(path: tuple[Any, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


# -- validation --------------------------------------------------------------------------


class Section:
    """Reads one mapping of the recipe, checking types and unknown keys."""

    def __init__(self, doc: Doc, path: tuple[Any, ...], value: Any, allowed: list[str], *, what: str) -> None:
        self.doc, self.path, self.allowed = doc, path, allowed
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise doc.error(path, None, f"a mapping ({what}) with keys {', '.join(allowed)}",
                            type_name(value), "Fix: write it as 'key: value' lines indented under it.")
        self.value = dict(value)
        for key in self.value:
            if not isinstance(key, str) or key not in allowed:
                raise doc.error(path + (key,), None, f"one of the keys {', '.join(allowed)}", key,
                                ("Fix: remove or rename the key." + did_you_mean(str(key), allowed)).strip())

    def at(self, key: str) -> tuple[Any, ...]:
        return self.path + (key,)

    def has(self, key: str) -> bool:
        return key in self.value

    def raw(self, key: str, default: Any = None) -> Any:
        return self.value.get(key, default)

    def fail(self, key: str | None, expected: str, got: Any, fix: str | None = None) -> InvalidParameterError:
        return self.doc.error(self.path if key is None else self.at(key), None, expected, got, fix)

    def required(self, key: str) -> Any:
        if key not in self.value or self.value[key] is None:
            raise self.doc.error(self.path, None, f"a value for '{key}'", "nothing",
                                 f"Fix: add '{key}: ...' under {fmt_path(self.path) or 'the top level'}.")
        return self.value[key]

    def string(self, key: str, default: Any = None, *, required: bool = False, nullable: bool = True) -> Any:
        value = self.required(key) if required else self.raw(key, default)
        if value is None and nullable and not required:
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, "a non-empty string", value, "Fix: quote it if needed, e.g. '2:4'.")
        return value

    def choice(self, key: str, default: str, choices: list[str]) -> str:
        value = self.raw(key, default)
        if value not in choices:
            raise self.fail(key, "one of " + ", ".join(repr(c) for c in choices), value,
                            ("Fix: pick one of the listed values." + did_you_mean(str(value), choices)).strip())
        return value

    def integer(self, key: str, default: Any, minimum: int, *, nullable: bool = False) -> Any:
        value = self.raw(key, default)
        if value is None and nullable:
            return None
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
            raise self.fail(key, f"an int >= {minimum}" + (" or null" if nullable else ""), value,
                            f"Fix: e.g. {key}: {max(minimum, 1)}.")
        return int(value)

    def real(self, key: str, default: Any, *, minimum: float = 0.0, positive: bool = False) -> float:
        value = self.raw(key, default)
        bad = isinstance(value, bool) or not isinstance(value, numbers.Real) or value != value
        if not bad:
            bad = value <= minimum if positive else value < minimum
        if bad:
            expected = f"a float > {minimum:g}" if positive else f"a float >= {minimum:g}"
            raise self.fail(key, expected, value, f"Fix: e.g. {key}: {default if default else 0.01}.")
        return float(value)

    def boolean(self, key: str, default: bool) -> bool:
        value = self.raw(key, default)
        if not isinstance(value, bool):
            raise self.fail(key, "true or false", value)
        return value

    def mapping(self, key: str) -> dict[str, Any]:
        value = self.raw(key, None)
        if value is None:
            return {}
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise self.fail(key, "a mapping of names to values", type_name(value), "Fix: e.g. kwargs: {num_classes: 10}.")
        return dict(value)

    def strings(self, key: str, default: Any = None) -> tuple[str, ...] | None:
        value = self.raw(key, default)
        if value is None:
            return None
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not items or not all(isinstance(v, str) and v for v in items):
            raise self.fail(key, "a string or a list of strings", value, f"Fix: e.g. {key}: ['fc*', 'conv2']")
        return tuple(items)


def type_name(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "<a list>"
    if isinstance(value, Mapping):
        return "<a mapping>"
    return value


def rewrap(doc: Doc, path: tuple[Any, ...], exc: InvalidParameterError) -> InvalidParameterError:
    """``exc`` re-addressed to the recipe key at ``path`` (same expected, got and fix)."""
    return InvalidParameterError(doc.where(path), exc.expected, exc.got, exc.fix)
