"""The report as Markdown (tables as pipe tables, plots linked by relative path)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from .document import Bullets, Heading, Image, Para, Table, document
from .schema import validate_report

__all__ = ["render_markdown", "render_blocks"]

_MD_SPECIAL = re.compile(r"([\\`*_\[\]{}<>#|!~])")


def _md(text: str) -> str:
    """Escape Markdown (and inline HTML) so text shows as written."""
    return _MD_SPECIAL.sub(r"\\\1", str(text).replace("\r", " ").replace("\n", " "))


def _md_table(block: Table) -> list[str]:
    lines = ["| " + " | ".join(_md(h) for h in block.header) + " |"]
    lines.append("|" + "|".join("---:" if n else ":---" for n in block.numeric) + "|")
    last = len(block.rows) - 1
    for i, row in enumerate(block.rows):
        cells = [_md(c) for c in row]
        if block.total and i == last:
            cells = [f"**{c}**" if c else c for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def render_markdown(report: Mapping[str, Any], plots: Mapping[str, str] | None = None) -> str:
    """The report as Markdown; ``plots`` maps plot keys to relative PNG paths to link."""
    validate_report(report)
    return render_blocks(document(report, plots or {}))


def render_blocks(blocks: Sequence[Any]) -> str:
    """``blocks`` (:mod:`.document`'s headings, paragraphs, bullets, tables, images) as Markdown."""
    out: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            out += ["#" * block.level + " " + _md(block.text), ""]
        elif isinstance(block, Para):
            out += [("> " if block.note else "") + _md(block.text), ""]
        elif isinstance(block, Bullets):
            out += [f"- {_md(item)}" for item in block.items] + [""]
        elif isinstance(block, Table):
            out += _md_table(block) + [""]
        elif isinstance(block, Image):
            out += [f"![{_md(block.alt)}]({block.src})", "", f"*{_md(block.alt)}*", ""]
    return "\n".join(out).rstrip() + "\n"
