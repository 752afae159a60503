"""CPU latency of ResNet-20 shrunk to fixed channel widths, in a fresh process, interleaved.

Issue 4 asks for a batch-64 latency speedup of at least 0.85x the MAC reduction.
``structural.py`` times its models in the process that also loaded the data,
pruned and fine-tuned them; this script isolates the question "how fast does
oneDNN run these widths?": the pretrained ResNet-20 (or random weights with
``--random``), shrunk by ``prunekit.prune_groups`` to the stage widths below
(which channels are kept does not change the time), every model with BatchNorm
folded into its convolutions (``torch.fx.experimental.optimization.fuse``),
timed one forward each per round in a rotating order after ``wait_quiet``.

Caution: in a fresh process glibc hands each forward pass fresh memory (mmap and
heap trimming), and the page faults cost the dense model the most. Run it with
``MALLOC_MMAP_THRESHOLD_=4000000000 MALLOC_TRIM_THRESHOLD_=4000000000
MALLOC_TOP_PAD_=268435456`` (or after some training in the same process) for
warmed-allocator timings, which are the ones to compare with ``structural.py``.

    python benchmarks/width_latency.py --json benchmarks/results/width_latency.json
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import SHARED_DATA, ForeignLoad, provenance, run_meta, wait_quiet, write_json  # noqa: E402

PRETRAINED = SHARED_DATA / "pretrained" / "resnet20_cifar10_dense.safetensors"
#: kept channels per stage width (16, 32, 64) of ResNet-20
WIDTHS = {
    "uniform 11/22/44 (ratio 5/16)": {16: 11, 32: 22, 64: 44},
    "8/24/48 (round_to=8)": {16: 8, 32: 24, 64: 48},
    "16/16/32": {16: 16, 32: 16, 64: 32},
    "16/32/32": {16: 16, 32: 32, 64: 32},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--random", action="store_true", help="random weights instead of the pretrained ones")
    parser.add_argument("--quiet-load", type=float, default=0.25)
    parser.add_argument("--max-wait", type=float, default=120.0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    import torch
    from torch.fx.experimental.optimization import fuse

    import prunekit

    source = provenance()
    torch.set_num_threads(args.threads)
    if args.random or not PRETRAINED.is_file():
        print("random weights" if args.random else f"{PRETRAINED} not found: random weights")
        base = prunekit.create_model("resnet20").eval()
    else:
        base = prunekit.create_model("resnet20", weights=PRETRAINED).eval()
    x1 = torch.randn(1, 3, 32, 32)
    variants = {"dense": base}
    for name, widths in WIDTHS.items():
        model = copy.deepcopy(base)
        groups = prunekit.find_groups(model, x1)
        prunekit.prune_groups(model, {g.name: torch.arange(widths.get(g.size, g.size)) for g in groups}, groups)
        variants[name] = model
    macs = {k: prunekit.measure.count_macs(v, x1, norms=False).dense_macs for k, v in variants.items()}
    models = {k: fuse(copy.deepcopy(v).eval()) for k, v in variants.items()}
    x = torch.randn(args.batch, 3, 32, 32)
    names = list(models)
    times: dict[str, list[float]] = {k: [] for k in names}
    with torch.inference_mode():
        for model in models.values():
            for _ in range(5):
                model(x)
        waited, _ = wait_quiet(args.quiet_load, 1.0, args.max_wait)
        with ForeignLoad() as load:
            for r in range(args.rounds):
                for j in range(len(names)):
                    k = names[(j + r) % len(names)]
                    t0 = time.perf_counter()
                    models[k](x)
                    times[k].append((time.perf_counter() - t0) * 1000.0)
    dense_ms = statistics.median(times["dense"])
    rows = []
    print(f"ResNet-20, batch {args.batch}, {args.threads} threads, BN folded, {args.rounds} interleaved rounds; "
          f"other load {load.cores:.2f} cores (waited {waited:.0f} s)")
    print(f"{'widths':32} {'MACs':>6} {'ms':>7} {'speedup':>8} {'MAC red':>8} {'ratio':>6}")
    for k in names:
        ms = statistics.median(times[k])
        reduction = macs["dense"] / macs[k]
        ratio = dense_ms / ms / reduction
        rows.append({"widths": k, "macs_ratio": macs[k] / macs["dense"], "median_ms": ms,
                     "speedup": dense_ms / ms, "mac_reduction": reduction, "speedup_over_mac_reduction": ratio})
        print(f"{k:32} {macs[k] / macs['dense']:6.3f} {ms:7.1f} {dense_ms / ms:7.2f}x {reduction:7.2f}x {ratio:6.2f}")
    if args.json:
        meta = run_meta(source, "width_latency", args.threads)
        meta.update({"batch": args.batch, "rounds": args.rounds, "foreign_load": round(load.cores, 2),
                     "weights": "random" if args.random else str(PRETRAINED)})
        write_json(args.json, {"meta": meta, "rows": rows})


if __name__ == "__main__":
    main()
