"""prunekit's docstrings, written with reStructuredText touches, as Markdown for the site.

The docstrings use a few reStructuredText forms that Markdown would garble:
cross-reference roles (``:func:`prune```), simple tables (``====  ====``
borders), literal blocks introduced by ``::`` and aligned definition lines
(````name``   meaning``). :func:`rst_to_markdown` rewrites them for the
page, leaving the source untouched; :class:`RstDocstrings` is the griffe
extension that applies it to every docstring mkdocstrings renders.
"""

from __future__ import annotations

import ast
import re
import textwrap
from typing import Any

_ROLE = re.compile(r":(?:py:)?(?:func|class|data|mod|meth|attr|exc|obj|const|ref|term):`(~?)([^`]+)`")
_BORDER = re.compile(r"^(\s*)(=+)( +=+)+\s*$")
_DEFINITION = re.compile(r"^(``[^`]+``|\S+)\s{2,}(\S.*)$")


def _role(match: re.Match[str]) -> str:
    target = match.group(2).strip()
    if match.group(1):
        target = target.rsplit(".", 1)[-1]
    return f"`{target}`"


def _columns(border: str) -> list[int]:
    return [m.start() for m in re.finditer(r"=+", border)]


def _split(line: str, starts: list[int]) -> list[str]:
    cells = []
    for i, start in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else len(line)
        cells.append(line[start:end].strip())
    return cells


def _table(lines: list[str]) -> list[str]:
    """A reStructuredText simple table (border lines included) as a Markdown table."""
    indent = len(lines[0]) - len(lines[0].lstrip())
    lines = [line[indent:] for line in lines]
    starts = _columns(lines[0])
    borders = [i for i, line in enumerate(lines) if _BORDER.match(line)]
    rows: list[list[str]] = []
    header_rows = 0
    for i, line in enumerate(lines):
        if i in borders:
            if i != borders[0] and i != borders[-1] and not header_rows:
                header_rows = len(rows)
            continue
        if not line.strip():
            continue
        cells = _split(line, starts)
        if rows and not cells[0] and i - 1 not in borders:  # a continuation line
            rows[-1] = [f"{a} {b}".strip() for a, b in zip(rows[-1], cells)]
        else:
            rows.append(cells)
    if not rows:
        return []
    if header_rows != 1:  # no header row (or several): the first row heads the table
        header_rows = 1
    header, body = rows[0], rows[1:]
    out = ["| " + " | ".join(c.replace("|", "\\|") for c in header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in body]
    return [" " * indent + line for line in out]


def _tables(lines: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(lines):
        if _BORDER.match(lines[i]):
            j = i + 1
            last = i
            while j < len(lines):
                if _BORDER.match(lines[j]):
                    last = j
                    if j + 1 >= len(lines) or not lines[j + 1].strip():
                        break
                elif not lines[j].strip() and (j + 1 >= len(lines) or not lines[j + 1].strip()):
                    break
                j += 1
            if last > i:
                if out and out[-1].strip():
                    out.append("")
                out += _table(lines[i:last + 1])
                if last + 1 < len(lines) and lines[last + 1].strip():
                    out.append("")
                i = last + 1
                continue
        out.append(lines[i])
        i += 1
    return out


def _language(code: str) -> str:
    try:
        ast.parse(code)
    except SyntaxError:
        return "text"
    return "python"


def _literal_blocks(lines: list[str]) -> list[str]:
    """``text::`` then an indented block: ``text:`` then a fenced code block."""
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.rstrip().endswith("::") and not line.strip().startswith(">>>"):
            base = len(line) - len(line.lstrip())
            j = i + 1
            while j < len(lines) and not lines[j].strip():
                j += 1
            k = j
            while k < len(lines) and (not lines[k].strip() or len(lines[k]) - len(lines[k].lstrip()) > base):
                k += 1
            while k > j and not lines[k - 1].strip():
                k -= 1
            if k > j:
                head = line.rstrip()[:-2].rstrip()
                if head.strip():
                    out.append(head + ":")
                    out.append("")
                code = textwrap.dedent("\n".join(lines[j:k]))
                pad = " " * base
                out += [pad + "```" + _language(code)] + [pad + c if c else "" for c in code.split("\n")]
                out.append(pad + "```")
                if k < len(lines) and lines[k].strip():
                    out.append("")
                i = k
                continue
        out.append(line)
        i += 1
    return out


def _definitions(lines: list[str]) -> list[str]:
    """Runs of two or more aligned ``term   meaning`` lines (at the left margin) as a bullet list."""
    out: list[str] = []
    i = 0
    fenced = False
    while i < len(lines):
        if lines[i].lstrip().startswith("```"):
            fenced = not fenced
        run = i
        while not fenced and run < len(lines) and lines[run] and not lines[run][0].isspace() \
                and _DEFINITION.match(lines[run]) and lines[run].startswith("``"):
            run += 1
        if run - i >= 2 and (i == 0 or not lines[i - 1].strip()):
            for line in lines[i:run]:
                term, meaning = re.split(r"\s{2,}", line, maxsplit=1)
                out.append(f"- {term}: {meaning}")
            i = run
            continue
        out.append(lines[i])
        i += 1
    return out


def rst_to_markdown(text: str) -> str:
    """``text`` (a cleaned docstring) with its reStructuredText forms rewritten as Markdown."""
    if not text:
        return text
    text = _ROLE.sub(_role, text)
    lines = text.split("\n")
    lines = _tables(lines)
    lines = _literal_blocks(lines)
    lines = _definitions(lines)
    return "\n".join(lines)


try:
    import griffe
except ImportError:  # the generator's page functions are used without griffe by the tests
    griffe = None  # type: ignore[assignment]

if griffe is not None:

    class RstDocstrings(griffe.Extension):
        """Rewrite each docstring with :func:`rst_to_markdown` before mkdocstrings parses it."""

        def on_instance(self, *, node: Any, obj: Any, agent: Any, **kwargs: Any) -> None:
            if obj.docstring is not None:
                obj.docstring.value = rst_to_markdown(obj.docstring.value)
            elif obj.is_attribute and "instance-attribute" in obj.labels:
                obj.public = False  # ``self.x = ...`` in a method, undocumented: an implementation detail
