"""Helpers for the scripts that measure the tutorials' figures (``docs/scripts/tutorial_*.py``).

Each script measures its tutorial's key numbers, formats them as a Markdown
table with a line saying where and when they were measured, and hands the text
to :func:`publish`. That function writes ``docs/figures/tutorial_<name>.md`` and
replaces the text between the page's markers
``<!-- figures:tutorial_<name>:begin -->`` and ``<!-- figures:tutorial_<name>:end -->``.
The page therefore quotes exactly what the command printed, and no figure is
typed by hand. The scripts run as ``python docs/scripts/tutorial_<name>.py``
and put their own folder on ``sys.path`` to import this module.
"""

from __future__ import annotations

import datetime
import os
import re
import sys
from pathlib import Path

__all__ = ["FIGURES", "REPO_ROOT", "SHARED_DATA", "TUTORIALS", "commit", "cpu_model", "provenance", "publish", "table"]

REPO_ROOT = Path(__file__).resolve().parents[2]
FIGURES = REPO_ROOT / "docs" / "figures"
TUTORIALS = REPO_ROOT / "docs" / "tutorials"
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

# the benchmarks' own record of where and what was measured, and where the shared data lies
from _common import SHARED_DATA, cpu_model  # noqa: E402
from _common import provenance as _source  # noqa: E402


def commit() -> str:
    """The short git commit measured, with ``+changes`` when src/ has uncommitted edits."""
    source = _source()
    return (source["commit"] or "unknown commit") + (" +changes" if source["src_uncommitted"] else "")


#: The 1-minute load average when this module was imported, i.e. before the script's own work.
LOAD_AT_START = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def provenance(threads: int) -> str:
    """One line: machine, cores, threads used, other load, torch, commit and date."""
    import torch

    return (f"Measured on {cpu_model()} ({os.cpu_count()} cores, {threads} thread(s) used; "
            f"load average {LOAD_AT_START:.1f} before the run), torch {torch.__version__}, "
            f"prunekit commit {commit()}, {datetime.date.today().isoformat()}, "
            f"by `python {' '.join(sys.argv)}`.")


def table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def publish(name: str, text: str, *, page: str | None = None) -> None:
    """Write ``docs/figures/tutorial_<name>.md`` and splice ``text`` into the page's markers."""
    FIGURES.mkdir(parents=True, exist_ok=True)
    figure = FIGURES / f"tutorial_{name}.md"
    figure.write_text(text.rstrip() + "\n")
    print(f"wrote {figure.relative_to(REPO_ROOT)}")
    if page is None:
        return
    path = TUTORIALS / page
    begin, end = f"<!-- figures:tutorial_{name}:begin -->", f"<!-- figures:tutorial_{name}:end -->"
    source = path.read_text()
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if not pattern.search(source):
        raise SystemExit(f"{path}: markers {begin} ... {end} not found")
    path.write_text(pattern.sub(lambda _: f"{begin}\n{text.rstrip()}\n{end}", source))
    print(f"updated {path.relative_to(REPO_ROOT)}")
