"""Helpers shared by the benchmark scripts in this directory.

* RSS sampling: ``rss_bytes``, ``malloc_trim``, ``PeakRSS``
* load of other processes: ``ForeignLoad``, ``wait_quiet``
* what was measured and where: ``provenance``, ``cpu_model``, ``machine``, ``run_meta``
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


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or the platform's word for it)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return float("nan")


def one_pass_gbps(gib: float = 1.0, repeat: int = 3) -> float:
    """Memory bandwidth of one read pass: GB/s of ``tensor.sum()`` over ``gib`` GiB of float32, best of ``repeat``.

    The tensor is larger than most last-level caches, so this is the speed at
    which a memory-bound kernel (a dense matrix-vector product, a pass over a
    model's weights) can at best read its operands on this machine.
    """
    import torch

    data = torch.ones(int(gib * 2**30) // 4)
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        data.sum()
        best = min(best, time.perf_counter() - t0)
    size = data.numel() * 4
    del data
    return round(size / best / 1e9, 2)


def machine(bandwidth: bool = True) -> dict:
    """The machine a figure was measured on: CPU model, cores, memory, one-pass bandwidth, UTC date."""
    import torch

    info = {"cpu_model": cpu_model(), "cores": os.cpu_count(), "memory_gib": _memory_gib(),
            "torch_threads": torch.get_num_threads(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if bandwidth:
        info["one_pass_gbps"] = one_pass_gbps()
    return info


def machine_line(info: dict) -> str:
    """One printable line of :func:`machine`'s figures."""
    bandwidth = f", one pass {info['one_pass_gbps']} GB/s" if "one_pass_gbps" in info else ""
    return (f"machine: {info['cpu_model']}, {info['cores']} cores, {info['memory_gib']} GiB{bandwidth}, "
            f"torch threads {info['torch_threads']}; {info['date']}")


def run_meta(source: dict, benchmark: str, threads: int) -> dict:
    """The leading entries of every benchmark's JSON ``meta``: source, command, machine and environment."""
    import torch

    return {
        "prunekit_source": source,
        "benchmark": benchmark,
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "torch": torch.__version__,
        "threads": threads,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "machine": machine(),
    }


# -- output -----------------------------------------------------------------------------


def write_json(path: str, payload: dict) -> None:
    """Write ``payload`` as indented JSON to ``path`` atomically (a temporary file, then a rename) and say so."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    with open(temporary, "w") as handle:
        json.dump(payload, handle, indent=2)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, target)
    print(f"wrote {path}")
    if isinstance(payload.get("meta"), dict) and isinstance(payload["meta"].get("machine"), dict):
        print(machine_line(payload["meta"]["machine"]))


def print_table(header: str, lines: Iterable[str]) -> None:
    """Print ``header``, a rule of dashes as wide as it, and the formatted ``lines``."""
    print(header)
    print("-" * len(header))
    for line in lines:
        print(line)
