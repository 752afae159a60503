"""The report as one self-contained HTML page (inline CSS, plots by relative path).

Laid out for a 1280 px window without horizontal scrolling: the results come
as two narrower tables, text cells wrap (``overflow-wrap: anywhere``), only
number cells keep to one line, and a table never grows past its container.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

from .document import Bullets, Heading, Image, Para, Table, document
from .schema import validate_report

__all__ = ["render_html", "render_page", "CSS"]

CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       color: #1f2328; background: #fff; max-width: 1200px; margin: 2rem auto; padding: 0 1.5rem; }
h1 { font-size: 1.8rem; margin-bottom: .3rem; }
h2 { font-size: 1.3rem; margin-top: 2.2rem; border-bottom: 1px solid #d0d7de; padding-bottom: .25rem; }
h3 { font-size: 1.05rem; margin: 1.4rem 0 .2rem; }
.table { max-width: 100%; overflow-x: auto; margin: .6rem 0 1.2rem; }
table { border-collapse: collapse; font-size: 13.5px; max-width: 100%; }
th, td { border: 1px solid #d0d7de; padding: .3rem .55rem; vertical-align: top;
         white-space: normal; overflow-wrap: anywhere; }
th { background: #f6f8fa; text-align: left; overflow-wrap: normal; word-break: keep-all; }
th.num { text-align: right; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr:nth-child(even) td { background: #fbfcfd; }
tr.total td { font-weight: 600; background: #f6f8fa; }
p.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: .5rem .8rem; margin: .6rem 0; }
figure { margin: 1rem 0 1.6rem; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid #d0d7de; }
figcaption { color: #57606a; font-size: 13px; }
ul { padding-left: 1.3rem; }
"""


def _h(text: Any) -> str:
    return html.escape(str(text), quote=True)


def render_html(report: Mapping[str, Any], plots: Mapping[str, str] | None = None) -> str:
    """The report as one self-contained HTML page (inline CSS, images by relative path)."""
    validate_report(report)
    return render_page(report["title"], document(report, plots or {}))


def render_page(title: str, blocks: Sequence[Any]) -> str:
    """``blocks`` (:mod:`.document`'s headings, paragraphs, bullets, tables, images) as one
    self-contained HTML page titled ``title``."""
    body: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            anchor = f' id="{_h(block.anchor)}"' if block.anchor else ""
            body.append(f"<h{block.level}{anchor}>{_h(block.text)}</h{block.level}>")
        elif isinstance(block, Para):
            body.append(f'<p class="note">{_h(block.text)}</p>' if block.note else f"<p>{_h(block.text)}</p>")
        elif isinstance(block, Bullets):
            body.append("<ul>" + "".join(f"<li>{_h(i)}</li>" for i in block.items) + "</ul>")
        elif isinstance(block, Table):
            head = "".join(f'<th class="num">{_h(c)}</th>' if n else f"<th>{_h(c)}</th>"
                           for c, n in zip(block.header, block.numeric))
            rows = []
            last = len(block.rows) - 1
            for i, row in enumerate(block.rows):
                cells = "".join(
                    f'<td class="num">{_h(c)}</td>' if n else f"<td>{_h(c)}</td>" for c, n in zip(row, block.numeric)
                )
                cls = ' class="total"' if block.total and i == last else ""
                rows.append(f"<tr{cls}>{cells}</tr>")
            body.append(f'<div class="table"><table><thead><tr>{head}</tr></thead>'
                        f"<tbody>{''.join(rows)}</tbody></table></div>")
        elif isinstance(block, Image):
            body.append(f'<figure><img src="{_h(block.src)}" alt="{_h(block.alt)}" loading="lazy">'
                        f"<figcaption>{_h(block.alt)}</figcaption></figure>")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{_h(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )
