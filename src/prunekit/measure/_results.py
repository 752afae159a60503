"""Pieces shared by the result classes of :mod:`prunekit.measure`: JSON output,
plain-text tables and looking a row up by name."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from ..files import atomic_write_text


def dump_json(data: Any, path: str | os.PathLike[str] | None, indent: int) -> str:
    """``data`` as JSON; also written atomically to ``path`` (with a final newline) when given."""
    text = json.dumps(data, indent=indent)
    if path is not None:
        atomic_write_text(path, text + "\n")
    return text


def table_lines(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    total: Sequence[str] | None = None,
    left: tuple[int, ...] = (0,),
) -> list[str]:
    """Aligned text lines: the header, a rule, the rows and, when given, a rule and ``total``.

    Columns in ``left`` are left-aligned, the others right-aligned; cells are
    joined by two spaces and lines are not stripped.
    """
    every = [header, *rows, *([total] if total is not None else [])]
    widths = [max(len(row[i]) for row in every) for i in range(len(header))]
    rule = "  ".join("-" * w for w in widths)

    def fmt(row: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))

    lines = [fmt(header), rule, *(fmt(r) for r in rows)]
    if total is not None:
        lines += [rule, fmt(total)]
    return lines


def row_named(rows: Sequence[Any], name: str) -> Any:
    """The row whose ``name`` is ``name``; KeyError listing the names otherwise."""
    for row in rows:
        if row.name == name:
            return row
    raise KeyError(f"{name!r} is not in the report; rows are {[r.name for r in rows]}")
