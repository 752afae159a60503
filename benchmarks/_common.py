"""Helpers shared by the benchmark scripts in this directory.

* RSS sampling: ``rss_bytes``, ``malloc_trim``, ``PeakRSS``
* load of other processes: ``ForeignLoad``, ``wait_quiet``
* what was measured and where: ``provenance``, ``run_meta``
* output: ``write_json``, ``print_table``

The scripts are run as ``python benchmarks/X.py`` and put their own directory
on ``sys.path`` to import this module. It does not import torch, so a script
can import it before deciding on torch's thread count.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
#: The shared real data: ``$PRUNEKIT_SHARED_DATA`` when set, else ``../shared/data`` beside the repository.
SHARED_DATA = Path(os.environ.get("PRUNEKIT_SHARED_DATA") or REPO_ROOT.parent / "shared" / "data")


# -- RSS sampling ---------------------------------------------------------------------


def rss_bytes() -> int:
    """Resident set size of this process, from /proc/self/status (VmRSS)."""
    with open("/proc/self/status", "rb") as handle:
        for line in handle:
            if line.startswith(b"VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("VmRSS not found in /proc/self/status")


def malloc_trim() -> None:
    """Return free heap pages to the OS (glibc), so the RSS before the call is the live memory.

    Without it, pages freed while building and checking the model stay mapped
    and the pruning call can reuse them without any RSS growth, hiding part of
    its peak.
    """
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakRSS:
    """Samples the RSS every ``interval`` seconds in a thread; ``peak`` is the maximum seen."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRSS:
        self.peak = rss_bytes()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


# -- load of other processes ------------------------------------------------------------


class ForeignLoad:
    """CPU used by *other* processes while a block runs, in cores (from /proc/stat).

    ``(machine busy CPU time - this process's CPU time) / wall time``: about 0
    on a quiet machine, up to the number of cores when something else competes.
    Reported next to every timing so that a disturbed figure can be told apart.
    """

    @staticmethod
    def _busy() -> float:
        with open("/proc/stat") as handle:
            fields = [int(v) for v in handle.readline().split()[1:]]
        # user nice system idle iowait irq softirq steal ...
        return (sum(fields[:3]) + sum(fields[5:8])) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _own() -> float:
        t = os.times()
        return t.user + t.system

    def __enter__(self) -> ForeignLoad:
        self._b0, self._o0, self._w0 = self._busy(), self._own(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.perf_counter() - self._w0
        self.own_cpu = self._own() - self._o0
        self.cores = max(0.0, (self._busy() - self._b0 - self.own_cpu) / wall) if wall > 0 else 0.0


def wait_quiet(threshold: float = 0.25, window: float = 1.0, max_wait: float = 180.0) -> tuple[float, float]:
    """Wait until other processes use less than ``threshold`` cores over ``window`` seconds.

    Gives up after ``max_wait`` seconds. Returns (seconds waited, last load).
    On a shared machine OpenMP-parallel torch ops slow down many times when a
    core is taken by another process, so timings are taken in quiet moments.
    """
    t0 = time.perf_counter()
    while True:
        with ForeignLoad() as load:
            time.sleep(window)
        waited = time.perf_counter() - t0
        if load.cores < threshold or waited >= max_wait:
            return waited, load.cores


# -- what was measured ------------------------------------------------------------------


def provenance() -> dict:
    """The prunekit source measured: git commit and uncommitted changes under src/."""

    def git(*cmd: str) -> str:
        try:
            return subprocess.run(["git", *cmd], cwd=REPO_ROOT, capture_output=True, text=True,
                                  check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return ""

    return {"commit": git("rev-parse", "--short", "HEAD"),
            "src_uncommitted": git("status", "--porcelain", "--", "src").splitlines()}


def run_meta(source: dict, benchmark: str, threads: int) -> dict:
    """The leading entries of every benchmark's JSON ``meta``: source, command and environment."""
    import torch

    return {
        "prunekit_source": source,
        "benchmark": benchmark,
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "torch": torch.__version__,
        "threads": threads,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }


# -- output -----------------------------------------------------------------------------


def write_json(path: str, payload: dict) -> None:
    """Write ``payload`` as indented JSON to ``path`` and say so."""
    with open(path, "w") as handle:
        json.dump(payload, handle, indent=2)
    print(f"wrote {path}")


def print_table(header: str, lines: Iterable[str]) -> None:
    """Print ``header``, a rule of dashes as wide as it, and the formatted ``lines``."""
    print(header)
    print("-" * len(header))
    for line in lines:
        print(line)
