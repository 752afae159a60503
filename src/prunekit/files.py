"""Files written whole or not at all, and small JSON reads: the foundation every layer may use.

A write goes to a temporary file beside its destination, is flushed to disk,
then replaces the destination with ``os.replace``, so a reader (or a run
killed mid-write) sees the old file or the whole new one, never a part.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["atomic_write", "atomic_write_text", "read_json_object"]

logger = logging.getLogger(__name__)


def atomic_write(path: str | os.PathLike[str], write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` then move the file to ``path`` in one step.

    A crash or kill leaves either the old file or the new one, never half of one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)

    atomic_write(path, write)


def read_json_object(path: str | os.PathLike[str], *, then: str) -> dict[str, Any] | None:
    """The JSON object stored at ``path`` by a resumable run, or None.

    None when the file is missing, is not an object, or cannot be read or
    parsed; the last case is logged as a warning that ends with ``then`` (what
    the caller does instead, e.g. "the stage runs again").
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: bad JSON or bad UTF-8 alike
        logger.warning("ignoring unreadable %s (%s); %s", path, exc, then)
        return None
    return value if isinstance(value, dict) else None


# -- encoding -------------------------------------------------------------------
