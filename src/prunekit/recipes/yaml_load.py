"""Recipe YAML read with bounds: the safe loader, a limited number of aliases, a limited expanded size.

YAML anchors and aliases let a few hundred bytes describe a tree of billions
of nodes (each level aliasing the previous one several times). The safe
loader never runs code, but walking such a tree takes minutes and gigabytes.
:class:`BoundedSafeLoader` refuses a document with more than
:data:`MAX_ALIASES` aliases, more than :data:`MAX_NODES` nodes once aliases
are expanded, or more than :data:`MAX_BYTES` of text, before anything walks it.
"""

from __future__ import annotations

from typing import Any

import yaml

from ..errors import InvalidParameterError

__all__ = ["MAX_ALIASES", "MAX_BYTES", "MAX_NODES", "BoundedSafeLoader", "load_yaml"]

MAX_ALIASES = 100
MAX_NODES = 100_000
MAX_BYTES = 2**20
_FIX = "Fix: write the repeated parts out, or use fewer anchors and aliases (*name)."


class _TooLarge(Exception):
    def __init__(self, line: int, got: str) -> None:
        super().__init__(got)
        self.line, self.got = line, got


class BoundedSafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that stops at more than ``max_aliases`` aliases."""

    max_aliases = MAX_ALIASES

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self.aliases_seen = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.aliases_seen += 1
            if self.aliases_seen > self.max_aliases:
                mark = self.peek_event().start_mark
                raise _TooLarge(mark.line + 1, f"<more than {self.max_aliases} aliases>")
        return super().compose_node(parent, index)


def _expanded_size(root: yaml.Node, limit: int) -> int:
    """Nodes in the tree once every alias is expanded (stops counting past ``limit``)."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise _TooLarge(node.start_mark.line + 1, "<an alias inside its own anchor (a recursive structure)>")
        active.add(key)
        total = 1
        if isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        else:
            children = []
        for child in children:
            total += size(child)
            if total > limit:
                raise _TooLarge(node.start_mark.line + 1, f"<more than {limit:,} nodes once aliases are expanded>")
        active.discard(key)
        sizes[key] = total
        return total

    return size(root)


def load_yaml(text: str, source: str) -> tuple[yaml.Node | None, Any]:
    """The composed node tree and the Python value of YAML ``text``, within the bounds above.

    Raises :class:`~prunekit.errors.InvalidParameterError` naming ``source``
    and the line for invalid or oversized YAML.
    """
    expected = (f"YAML of at most {MAX_BYTES:,} bytes with at most {MAX_ALIASES} aliases and "
                f"{MAX_NODES:,} nodes once aliases are expanded")
    if len(text) > MAX_BYTES:
        raise InvalidParameterError(source, expected, f"<{len(text):,} characters>", _FIX)
    loader = BoundedSafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None
        _expanded_size(node, MAX_NODES)
        return node, loader.construct_document(node)
    except _TooLarge as exc:
        raise InvalidParameterError(f"{source} line {exc.line}", expected, exc.got, _FIX) from None
    finally:
        loader.dispose()
