"""A resumable run's output folder: one process at a time, checked files, clear write errors.

Used by :mod:`prunekit.runner` (``prunekit run``) and :mod:`prunekit.lottery`
(``prunekit lottery``):

* :class:`RunLock`: an exclusive ``fcntl.flock`` on ``<folder>/.prunekit.lock``
  while a run writes, so a second run on the same folder is refused (it never
  waits silently, and never interleaves its files with the first one's). The
  lock is released when the holder exits, however it exits (a kill included).
* :class:`Manifest`: the sha256 of every file the run wrote, recorded right
  after the file was written (``manifest.json``, itself written atomically). A
  file counts on resume only when its bytes still have the recorded hash; a
  damaged, replaced or unrecorded file is logged and computed again, never reused.
* :func:`clean_temporary`: removes the temporary files (``.<name>.<random>.tmp``,
  see :func:`prunekit.files.atomic_write`) a killed run left behind.
* :func:`write_errors`: an ``OSError`` while writing (read-only folder, full
  disk, no permission) becomes an :class:`~prunekit.errors.InvalidParameterError`
  naming the folder; what was written before stays intact (every write is atomic).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .errors import InvalidParameterError
from .files import atomic_write, atomic_write_text

__all__ = ["LOCK_NAME", "Manifest", "RunLock", "clean_temporary", "file_sha256", "write_errors"]

logger = logging.getLogger(__name__)

LOCK_NAME = ".prunekit.lock"
#: ``atomic_write``'s temporary names: ``.<destination name>.<mkstemp suffix>.tmp``
_TEMPORARY = re.compile(r"^\..+\.[A-Za-z0-9_]{6,}\.tmp$")
_READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)
_WRITE_ERRORS = (*_READ_ONLY, errno.ENOSPC, errno.EDQUOT, errno.EFBIG)

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks; runs are not guarded
    fcntl = None  # type: ignore[assignment]


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def write_errors(folder: Path, param: str) -> Iterator[None]:
    """Turn an ``OSError`` raised while writing into ``folder`` into the project's error form."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in _WRITE_ERRORS:
            raise
        what = {errno.ENOSPC: "no space left", errno.EROFS: "read-only file system",
                errno.EDQUOT: "disk quota exceeded"}.get(exc.errno or 0, exc.strerror or str(exc))
        raise InvalidParameterError(
            param, "a writable folder with free space", f"<{os.fspath(folder)}: {what}>",
            "Fix: free space or make the folder writable (or pick another one), then run the same command "
            "again; every file finished before is intact and is reused.") from None


class RunLock:
    """Hold ``<folder>/.prunekit.lock`` exclusively (re-entrant within one object).

    ``param`` names the folder in the error (``--out`` on the command line,
    ``out_dir`` in Python). A folder that cannot be written to (read-only
    media) is not locked: ``read_only`` is then True, and a run may only read it.
    """

    def __init__(self, folder: str | os.PathLike[str], param: str) -> None:
        self.folder = Path(folder)
        self.param = param
        self.read_only = False
        self._fd: int | None = None
        self._depth = 0

    def acquire(self) -> None:
        if self._depth:
            self._depth += 1
            return
        if self.folder.exists() and not self.folder.is_dir():
            raise InvalidParameterError(self.param, "a folder (or a path to create one)", os.fspath(self.folder),
                                        "Fix: pick another folder.")
        path = self.folder / LOCK_NAME
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = _open_lock_file(path)
        except OSError as exc:
            if exc.errno in _READ_ONLY and self.folder.is_dir():
                logger.info("%s is not writable: reading it only, unlocked", self.folder)
                self.read_only = True
                self._depth = 1
                return
            with write_errors(self.folder, self.param):
                raise
            raise  # pragma: no cover - write_errors re-raises
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = _read_holder(fd)
                os.close(fd)
                raise InvalidParameterError(
                    self.param, "a folder no other prunekit run is using",
                    f"<{os.fspath(self.folder)}, in use by another run{holder}>",
                    "Fix: wait until that run ends (or stop it), or pick another folder; --restart is "
                    "refused too while it runs.") from None
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        self._depth = 1

    def release(self) -> None:
        if self._depth == 0:
            return
        self._depth -= 1
        if self._depth == 0 and self._fd is not None:
            if fcntl is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._depth > 0

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _open_lock_file(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o666)


def _read_holder(fd: int) -> str:
    try:
        pid = os.pread(fd, 32, 0).decode().strip()
    except (OSError, UnicodeDecodeError):
        return ""
    return f" (process {pid})" if pid.isdigit() else ""


def clean_temporary(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary files of interrupted atomic writes under ``folder`` (call with the
    folder's :class:`RunLock` held, so no write of this run is under way). Returns them."""
    removed = []
    for path in Path(folder).rglob(".*.tmp"):
        if path.is_file() and _TEMPORARY.match(path.name):
            path.unlink(missing_ok=True)
            removed.append(path)
    if removed:
        logger.info("removed %d temporary file(s) left by an interrupted run: %s", len(removed),
                    ", ".join(str(p) for p in removed))
    return removed


class Manifest:
    """``{relative path: sha256}`` of the files a run wrote, in ``<folder>/<name>``.

    :meth:`write`/:meth:`write_text`/:meth:`write_json` write a file atomically and
    record its hash; :meth:`record` records a file written by another function
    (e.g. :func:`prunekit.save_sparse`); :meth:`valid` says whether a file may be reused.
    """

    def __init__(self, folder: str | os.PathLike[str], param: str, name: str = "manifest.json") -> None:
        self.folder = Path(folder)
        self.path = self.folder / name
        self.param = param
        self.hashes: dict[str, str] = {}
        self.load()

    def load(self) -> None:
        self.hashes = {}
        if not self.path.is_file():
            return
        try:
            value = json.loads(self.path.read_text(encoding="utf-8"))
            files = value["files"]
            if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
                raise TypeError("files is not a {path: sha256} object")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("ignoring damaged %s (%s); every file is checked again and recomputed", self.path, exc)
            return
        self.hashes = {str(k): v for k, v in files.items()}

    def _key(self, path: Path) -> str:
        return Path(os.path.relpath(path, self.folder)).as_posix()

    def _save(self) -> None:
        text = json.dumps({"files": dict(sorted(self.hashes.items()))}, indent=1) + "\n"
        with write_errors(self.folder, self.param):
            atomic_write_text(self.path, text)

    def record(self, *paths: Path) -> None:
        """Record the current bytes of ``paths`` as the run's own."""
        for path in paths:
            self.hashes[self._key(path)] = file_sha256(path)
        self._save()

    def forget(self, *paths: Path) -> None:
        """Drop ``paths`` (about to be rewritten) before they change."""
        if any(self.hashes.pop(self._key(p), None) is not None for p in paths):
            self._save()

    def forget_under(self, folder: Path) -> None:
        prefix = self._key(folder).rstrip("/") + "/"
        keys = [k for k in self.hashes if k.startswith(prefix)]
        for key in keys:
            del self.hashes[key]
        if keys:
            self._save()

    def write(self, path: Path, write: Callable[[str], None]) -> None:
        """``atomic_write(path, write)``, the hash recorded before the file takes its place (a kill
        in between leaves a recorded hash that the old bytes do not match: never a finished file
        without its hash)."""
        self.forget(path)

        def write_and_record(tmp: str) -> None:
            write(tmp)
            self.hashes[self._key(path)] = file_sha256(tmp)
            self._save()

        with write_errors(self.folder, self.param):
            atomic_write(path, write_and_record)

    def write_text(self, path: Path, text: str) -> None:
        def write(tmp: str) -> None:
            with open(tmp, "w", encoding="utf-8") as handle:
                handle.write(text)

        self.write(path, write)

    def write_json(self, path: Path, value: Any, indent: int = 2) -> None:
        self.write_text(path, json.dumps(value, indent=indent) + "\n")

    def saved(self, path: Path, save: Callable[[], object]) -> None:
        """Run ``save()`` (which writes ``path`` atomically itself), then record the hash."""
        self.forget(path)
        with write_errors(self.folder, self.param):
            save()
        self.record(path)

    def valid(self, *paths: Path) -> bool:
        """True when every path exists with its recorded hash. A file that exists but was not
        written by this run as it is now (damaged, replaced, or never recorded) is logged."""
        for path in paths:
            if not path.is_file():
                return False
            recorded = self.hashes.get(self._key(path))
            try:
                actual = file_sha256(path)
            except OSError as exc:
                logger.warning("cannot read %s (%s); it is computed again", path, exc)
                return False
            if recorded != actual:
                why = "was not recorded by this run" if recorded is None else "changed since it was written"
                logger.warning("%s %s (sha256 %s); not reused: it is computed again", path, why, actual[:12])
                return False
        return True

    def read_json(self, path: Path) -> dict[str, Any] | None:
        """The JSON object at ``path`` when :meth:`valid`, else None."""
        if not self.valid(path):
            return None
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            logger.warning("ignoring unreadable %s (%s); it is computed again", path, exc)
            return None
        return value if isinstance(value, dict) else None
