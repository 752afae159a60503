"""Writing the runner's report: ``report.json`` first, then Markdown, HTML and plots."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from ..io import atomic_write_text
from ..measure.report import write_report

__all__ = ["write_report_files"]

logger = logging.getLogger(__name__)


def write_report_files(report: dict[str, Any], out_dir: str | os.PathLike[str]
                       ) -> tuple[dict[str, Path], list[str]]:
    """Write ``report.json``, then :func:`prunekit.measure.report.write_report`
    (Markdown, HTML, plots). Returns the files written and warnings: a failing
    renderer is reported, never silently skipped, and never loses the JSON."""
    out = Path(out_dir)
    path = out / "report.json"
    atomic_write_text(path, json.dumps(report, indent=2) + "\n")
    files: dict[str, Path] = {"json": path}
    warnings: list[str] = []
    logger.info("wrote %s", path)
    try:
        written = write_report(report, out)
    except Exception as exc:  # a rendering bug must not lose the computed results
        message = f"write_report failed ({type(exc).__name__}: {exc}); report.json was written"
        logger.warning(message)
        warnings.append(message)
        return files, warnings
    for kind, file in dict(written or {}).items():
        files[str(kind)] = Path(file)
    logger.info("write_report wrote %s", ", ".join(str(p) for p in files.values()))
    return files, warnings
