"""Global magnitude pruning of a large stack of Linear layers: prunekit against torch.

Prunes 50% of all weights of 96 Linear layers (24 blocks of h->4h, 4h->h,
h->3h, h->h; h=1024 is about 302M parameters, 1.2 GB in fp32) with one global
ranking, in three ways, each in its own fresh subprocess on an identical model
(same seed), one after another:

* ``torch``            torch.nn.utils.prune.global_unstructured(L1Unstructured, amount=0.5)
* ``prunekit-inplace`` prunekit.prune(model, 0.5, criterion="magnitude", scope="global", mode="inplace")
* ``prunekit-reparam`` the same with mode="reparam" (torch-compatible layout)

For each: wall time of the pruning call (time.perf_counter), peak RSS growth
during the call beyond the RSS just before it (the model is already built),
sampled from /proc/self/status in a background thread every few ms
(tracemalloc does not see torch's allocations), and the achieved global
sparsity counted from the effective weights (must be exactly 50%).

    python benchmarks/global_magnitude.py                # full size (minutes; torch needs ~14 GB)
    python benchmarks/global_magnitude.py --quick        # h=256, 4 blocks
    python benchmarks/global_magnitude.py --json out.json
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import threading
import time

VARIANTS = ("torch", "prunekit-inplace", "prunekit-reparam")

# Targets of the issue.
SPEEDUP_TARGET = 30.0  # prunekit at least 30x faster than torch
MEMORY_TARGET = 0.4  # at most 0.4x the model's size in extra peak RSS


# -- RSS sampling ---------------------------------------------------------------------


def rss_bytes() -> int:
    """Resident set size of this process, from /proc/self/status (VmRSS)."""
    with open("/proc/self/status", "rb") as handle:
        for line in handle:
            if line.startswith(b"VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("VmRSS not found in /proc/self/status")


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


# -- torch.optim.optimizer workaround ------------------------------------------------------


def torch_optim_workaround() -> bool:
    """Make ``torch.optim.optimizer`` reachable as an attribute again; True if it was missing.

    prunekit's in-place mode (src/prunekit/masks.py, ``_ensure_optimizer_hook``)
    calls ``torch.optim.optimizer.register_optimizer_step_post_hook``, but
    ``torch/optim/__init__.py`` ends with ``del optimizer``, so on torch 2.13 the
    attribute does not exist and ``mode="inplace"`` raises AttributeError. To
    measure the in-place mode at all, the benchmark puts the (already imported)
    submodule back on ``torch.optim``; prunekit's own code is not touched.
    """
    import importlib

    import torch

    if hasattr(torch.optim, "optimizer"):
        return False
    torch.optim.optimizer = importlib.import_module("torch.optim.optimizer")
    return True


# -- the model -----------------------------------------------------------------------------


def build_model(h: int, blocks: int, seed: int):
    """24 blocks of (h->4h, 4h->h, h->3h, h->h) Linear layers, no bias, N(0, 0.02) weights.

    Built uninitialised (skip_init) and filled with normal_ from one seeded
    generator, so every subprocess gets bit-identical weights quickly.
    """
    import torch
    from torch import nn

    gen = torch.Generator().manual_seed(seed)
    layers = []
    for _ in range(blocks):
        for fan_in, fan_out in ((h, 4 * h), (4 * h, h), (h, 3 * h), (h, h)):
            layer = nn.utils.skip_init(nn.Linear, fan_in, fan_out, bias=False)
            with torch.no_grad():
                layer.weight.normal_(0.0, 0.02, generator=gen)
            layers.append(layer)
    return nn.Sequential(*layers)


def run_variant(variant: str, model) -> None:
    import torch
    from torch.nn.utils import prune as torch_prune

    if variant == "torch":
        pairs = [(m, "weight") for m in model]
        torch_prune.global_unstructured(pairs, pruning_method=torch_prune.L1Unstructured, amount=0.5)
    else:
        import prunekit

        mode = variant.split("-", 1)[1]
        prunekit.prune(model, 0.5, criterion="magnitude", scope="global", mode=mode)
    del torch


def count_zeros(model) -> tuple[int, int]:
    """(zeros, total) of the weights the layers compute with (weight attribute)."""
    import torch

    zeros = total = 0
    with torch.no_grad():
        for m in model:
            w = m.weight
            zeros += int((w == 0).sum())
            total += w.numel()
    return zeros, total


def worker(args: argparse.Namespace) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model = build_model(args.h, args.blocks, args.seed)
    build_s = time.perf_counter() - t0
    params = sum(p.numel() for p in model.parameters())
    model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    zeros_before, _ = count_zeros(model)
    with torch.no_grad():
        checksum = float(sum(float(m.weight.double().abs().sum()) for m in model))
    workaround = False
    if args.variant.startswith("prunekit"):
        import prunekit  # noqa: F401  (import cost outside the timed region)

        if args.variant == "prunekit-inplace" and not args.no_workaround:
            workaround = torch_optim_workaround()
    gc.collect()
    time.sleep(0.05)
    before = rss_bytes()
    with PeakRSS(args.interval) as sampler:
        t0 = time.perf_counter()
        run_variant(args.variant, model)
        seconds = time.perf_counter() - t0
    extra = sampler.peak - before
    zeros, total = count_zeros(model)
    return {
        "variant": args.variant,
        "seconds": seconds,
        "rss_before_bytes": before,
        "rss_peak_bytes": sampler.peak,
        "peak_extra_bytes": extra,
        "peak_extra_over_model": extra / model_bytes,
        "rss_samples": sampler.samples,
        "params": params,
        "model_bytes": model_bytes,
        "zeros_before": zeros_before,
        "zeros_after": zeros,
        "sparsity": zeros / total,
        "exact_50": zeros == round(0.5 * total),
        "weights_abs_sum_before": checksum,
        "build_seconds": build_s,
        "torch_optim_workaround": workaround,
        "threads": torch.get_num_threads(),
    }


def spawn(variant: str, args: argparse.Namespace) -> dict:
    cmd = [
        sys.executable, os.path.abspath(__file__), "--worker", variant,
        "--h", str(args.h), "--blocks", str(args.blocks), "--seed", str(args.seed),
        "--threads", str(args.threads), "--interval", str(args.interval),
    ] + (["--no-workaround"] if args.no_workaround else [])
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"worker {variant} failed with exit code {proc.returncode}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: h=256, 4 blocks")
    parser.add_argument("--h", type=int, default=None, help="hidden size (default 1024, 256 with --quick)")
    parser.add_argument("--blocks", type=int, default=None, help="blocks of 4 Linear layers (default 24, 4 with --quick)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    parser.add_argument("--interval", type=float, default=0.002, help="RSS sampling interval, seconds")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of " + ",".join(VARIANTS))
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--no-workaround", action="store_true",
                        help="do not restore torch.optim.optimizer (prunekit's inplace mode then fails on torch 2.13)")
    parser.add_argument("--worker", choices=VARIANTS, dest="variant", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.h is None:
        args.h = 256 if args.quick else 1024
    if args.blocks is None:
        args.blocks = 4 if args.quick else 24
    if args.threads is None:
        import torch

        args.threads = torch.get_num_threads()

    if args.variant:
        print("RESULT " + json.dumps(worker(args)), flush=True)
        return 0

    import torch

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    for v in variants:
        if v not in VARIANTS:
            parser.error(f"unknown variant {v!r}")
    print(f"global magnitude pruning to 50%: {4 * args.blocks} Linear layers, h={args.h}, "
          f"torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} CPUs", flush=True)
    results = []
    for v in variants:  # one after another, never concurrently: torch's run needs a lot of RAM
        print(f"  running {v} ...", flush=True)
        results.append(spawn(v, args))
    sums = {r["weights_abs_sum_before"] for r in results}
    assert len(sums) == 1, f"the subprocesses built different models: {sums}"
    base = next((r for r in results if r["variant"] == "torch"), None)
    model_gb = results[0]["model_bytes"] / 1e9
    print(f"\nmodel: {results[0]['params'] / 1e6:.1f}M parameters, {model_gb:.3f} GB fp32 "
          f"(identical in every subprocess)\n")
    header = f"{'variant':<18} {'time s':>9} {'speedup':>8} {'peak extra GB':>14} {'x model':>8} {'sparsity':>10} {'exact 50%':>9}"
    print(header)
    print("-" * len(header))
    for r in results:
        r["speedup_vs_torch"] = base["seconds"] / r["seconds"] if base else None
        sp = f"{r['speedup_vs_torch']:.1f}x" if base else "-"
        print(f"{r['variant']:<18} {r['seconds']:>9.2f} {sp:>8} {r['peak_extra_bytes'] / 1e9:>14.2f} "
              f"{r['peak_extra_over_model']:>7.2f}x {r['sparsity']:>10.6%} {str(r['exact_50']):>9}")
    print()
    if any(r.get("torch_optim_workaround") for r in results):
        print("note: torch.optim.optimizer was missing; restored by the benchmark so that prunekit's inplace mode "
              "can run (bug in src/prunekit/masks.py _ensure_optimizer_hook)\n")
    for r in results:
        if r["variant"] == "torch":
            continue
        fast = r["speedup_vs_torch"] is not None and r["speedup_vs_torch"] >= SPEEDUP_TARGET
        lean = r["peak_extra_over_model"] <= MEMORY_TARGET
        speed_txt = f"{r['speedup_vs_torch']:.1f}x" if base else "n/a"
        print(f"target {r['variant']}: >= {SPEEDUP_TARGET:.0f}x faster: {'met' if fast else 'MISSED'} ({speed_txt}); "
              f"<= {MEMORY_TARGET}x model extra: {'met' if lean else 'MISSED'} ({r['peak_extra_over_model']:.2f}x)")
    if args.json:
        meta = {
            "benchmark": "global_magnitude",
            "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
            "torch": torch.__version__,
            "threads": args.threads,
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "h": args.h,
            "blocks": args.blocks,
            "seed": args.seed,
            "targets": {"speedup": SPEEDUP_TARGET, "extra_memory_over_model": MEMORY_TARGET},
        }
        with open(args.json, "w") as handle:
            json.dump({"meta": meta, "results": results}, handle, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
