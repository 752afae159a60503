"""Pruning at initialisation on CIFAR-10: SNIP, GraSP, SynFlow, magnitude and random.

The SynFlow paper's experiment (Tanaka et al. 2020, Figure 6) at laptop scale:
an untrained narrow VGG with BN (``CifarVGG([16, 16, M, 32, 32, M, 64, 64,
M])``, six 3×3 convolutions and a Linear(64, 10): 71,728 prunable weights) is
masked at 90, 95, 98 and 99% global sparsity of all conv and linear weights
(first and last layer included, no per-layer guard: ``min_keep=0``, as in the
papers), then trained briefly, for 3 seeds; the dense network beside it.

* SNIP and GraSP (T = 200) score on 256 training images (2 batches of 128),
  one-shot; magnitude and random one-shot; SynFlow data-free, 100 rounds on the
  exponential schedule. All through :func:`prunekit.prune_at_init`.
* Training: the first 500 images per class of the CIFAR-10 JPEG copy
  (5,000 images), 3 epochs, batch 128, SGD momentum 0.9, lr 0.05 with a cosine
  schedule, weight decay 5e-4, no augmentation; one thread (about 15 s of CPU
  a run). Test: 5,000 of the 10,000 test images (every other one, 500 a class).
* Per run: test accuracy, whether the masked network is disconnected (layer
  collapse: the input-dependent synaptic flow ``R(1) − R(0)`` is 0), the wall
  time of the pruning call and its peak RSS growth (sampled every 2 ms), with
  the CPU load of other processes during it (``load``, in cores); the script
  waits up to 10 s for a quiet machine (``wait_quiet``) before each pruning
  call, so read the times beside the load.

Every (method, sparsity, seed) result is cached as JSON under
``benchmarks/cache/prune_at_init/`` keyed by the configuration, so a killed
run resumes and a finished run is never recomputed.

    python benchmarks/prune_at_init.py                  # the full grid (about 25 min of CPU)
    python benchmarks/prune_at_init.py --quick          # smoke: 1 seed, tiny data
    python benchmarks/prune_at_init.py --json benchmarks/results/prune_at_init.json
    python benchmarks/prune_at_init.py --timing-only     # pruning calls alone, in quiet moments
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    SHARED_DATA,
    ForeignLoad,
    PeakRSS,
    malloc_trim,
    print_table,
    provenance,
    rss_bytes,
    run_meta,
    wait_quiet,
    write_json,
)

ROOT = Path(__file__).resolve().parent
CIFAR = SHARED_DATA / "cifar10-jpeg" / "cifar10_jpeg_yoongikim.tar.gz"
CACHE = ROOT / "cache"
METHODS = ("dense", "snip", "grasp", "synflow", "magnitude", "random")
SPARSITIES = (0.9, 0.95, 0.98, 0.99)
ARCH = [16, 16, "M", 32, 32, "M", 64, 64, "M"]

FULL = {"per_class": 500, "test": 5000, "epochs": 3, "batch": 128, "lr": 0.05, "wd": 5e-4,
        "prune_images": 256, "synflow_rounds": 100, "seeds": [0, 1, 2], "sparsities": list(SPARSITIES),
        "max_wait": 10.0}
QUICK = {"per_class": 50, "test": 1000, "epochs": 1, "batch": 64, "lr": 0.05, "wd": 5e-4,
         "prune_images": 128, "synflow_rounds": 10, "seeds": [0], "sparsities": [0.9, 0.99], "max_wait": 1.0}


# -- data ---------------------------------------------------------------------------------


def load_cifar(config: dict, path: Path):
    """(train x, train y, test x, test y) tensors, normalised; decoded once and cached by prunekit."""
    import torch

    import prunekit
    from prunekit.data.common import resolve_normalization

    mean, std = resolve_normalization("cifar10", 3)

    def tensors(split: str, per_class: int | None, limit: int | None):
        ds = prunekit.create_dataset("cifar10_jpeg", path=path, split=split, max_per_class=per_class,
                                     cache_dir=CACHE)
        data, labels = ds.data, ds.targets
        if limit is not None and limit < len(data):  # the files are sorted by class: take every k-th image
            step = len(data) // limit
            data, labels = data[::step][:limit], labels[::step][:limit]
        x = torch.from_numpy(data).permute(0, 3, 1, 2).float().div_(255.0)
        return (x - mean) / std, torch.from_numpy(labels).long()

    xtr, ytr = tensors("train", config["per_class"], None)
    xte, yte = tensors("test", None, config["test"])
    return xtr, ytr, xte, yte


class Batches:
    """Shuffled mini-batches of in-memory tensors, a new order each epoch from ``seed``."""

    def __init__(self, x, y, batch: int, seed: int, shuffle: bool = True) -> None:
        import torch

        self.x, self.y, self.batch, self.shuffle = x, y, batch, shuffle
        self.gen = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch)

    def __iter__(self):
        import torch

        order = torch.randperm(len(self.x), generator=self.gen) if self.shuffle else torch.arange(len(self.x))
        for i in range(0, len(order), self.batch):
            idx = order[i:i + self.batch]
            yield self.x[idx], self.y[idx]


# -- one run ------------------------------------------------------------------------------


def run_key(method: str, sparsity: float, seed: int, config: dict) -> str:
    relevant = {k: v for k, v in config.items() if k not in ("seeds", "sparsities", "max_wait")}
    blob = json.dumps({"method": method, "sparsity": sparsity, "seed": seed, "arch": ARCH, **relevant},
                      sort_keys=True)
    return f"{method}-{sparsity}-{seed}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def pruned_model(method: str, sparsity: float, seed: int, config: dict, data, max_wait: float):
    """The seed's untrained model masked by ``method``, and the record of the pruning call."""
    import torch

    import prunekit
    from prunekit.zoo.vgg import CifarVGG

    xtr, ytr = data[0], data[1]
    torch.manual_seed(seed)
    model = CifarVGG(list(ARCH))
    gen = torch.Generator().manual_seed(1000 + seed)
    pick = torch.randperm(len(xtr), generator=gen)[: config["prune_images"]]
    half = max(1, len(pick) // 2)
    batches = [(xtr[pick[:half]], ytr[pick[:half]]), (xtr[pick[half:]], ytr[pick[half:]])]
    record: dict = {"method": method, "sparsity": sparsity, "seed": seed}
    if method == "dense":
        return model, record
    rounds = config["synflow_rounds"] if method == "synflow" else 1
    spec = f"random:{seed}" if method == "random" else method
    waited, _ = wait_quiet(max_wait=max_wait)
    gc.collect()
    malloc_trim()
    base = rss_bytes()
    with PeakRSS() as peak, ForeignLoad() as load:
        result = prunekit.prune_at_init(
            model, sparsity, spec, data=batches if method in ("snip", "grasp") else None,
            rounds=rounds, input_shape=(3, 32, 32), min_keep=0,
        )
    record.update(
        prune_seconds=result.seconds, prune_peak_mb=(peak.peak - base) / 2**20, foreign_load=load.cores,
        waited_s=waited, rounds=rounds, collapsed=result.collapsed, flow=result.flow,
        layer_sparsity={r.name: r.sparsity for r in prunekit.sparsity_report(model).rows
                        if r.name.endswith("weight")},
    )
    return model, record


def one_run(method: str, sparsity: float, seed: int, config: dict, data) -> dict:
    import prunekit

    xtr, ytr, xte, yte = data
    model, record = pruned_model(method, sparsity, seed, config, data, config["max_wait"])
    t0 = time.perf_counter()
    fit = prunekit.fit(model, Batches(xtr, ytr, config["batch"], seed), epochs=config["epochs"], lr=config["lr"],
                       weight_decay=config["wd"], lr_schedule="cosine")
    record["train_seconds"] = time.perf_counter() - t0
    record["final_train_loss"] = fit.epoch_losses[-1]
    acc = prunekit.evaluate(model, Batches(xte, yte, 500, 0, shuffle=False))
    record["test_accuracy"] = float(acc.accuracy)
    return record


# -- the grid --------------------------------------------------------------------------------


def grid(config: dict) -> list[tuple[str, float, int]]:
    runs = []
    for seed in config["seeds"]:  # seed by seed, so that a partial run has whole seeds
        runs.append(("dense", 0.0, seed))
        for sparsity in config["sparsities"]:
            runs += [(m, sparsity, seed) for m in METHODS if m != "dense"]
    return runs


def summarise(records: list[dict], config: dict) -> list[dict]:
    rows = []
    for method in METHODS:
        for sparsity in [0.0] if method == "dense" else config["sparsities"]:
            rs = [r for r in records if r["method"] == method and r["sparsity"] == sparsity]
            if not rs:
                continue
            accs = [r["test_accuracy"] for r in rs]
            row = {"method": method, "sparsity": sparsity, "n": len(rs),
                   "acc_mean": statistics.mean(accs), "acc_std": statistics.stdev(accs) if len(accs) > 1 else 0.0}
            if method != "dense":
                row.update(
                    collapsed=sum(bool(r["collapsed"]) for r in rs),
                    prune_seconds=statistics.mean(r["prune_seconds"] for r in rs),
                    prune_peak_mb=max(r["prune_peak_mb"] for r in rs),
                    foreign_load=max(r["foreign_load"] for r in rs),
                )
            rows.append(row)
    return rows


def timing(config: dict, data, source: dict, args) -> None:
    """Time and measure each method's pruning call alone, in quiet moments (nothing cached)."""
    records = []
    for sparsity in config["sparsities"]:
        for method in METHODS[1:]:
            _, record = pruned_model(method, sparsity, config["seeds"][0], config, data, max_wait=180.0)
            records.append(record)
    header = f"{'method':10s} {'sparsity':>8s} {'prune s':>8s} {'peak MB':>8s} {'other load':>10s} {'waited s':>8s}"
    print_table(header, [f"{r['method']:10s} {r['sparsity']:8.2f} {r['prune_seconds']:8.3f} {r['prune_peak_mb']:8.1f} "
                         f"{r['foreign_load']:10.2f} {r['waited_s']:8.0f}" for r in records])
    if args.json:
        meta = run_meta(source, "prune_at_init --timing-only", args.threads)
        write_json(args.json, {"meta": {**meta, "config": config, "arch": ARCH}, "runs": records})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 seed, tiny data, 2 sparsities")
    parser.add_argument("--json", help="write the summary and every run to this file")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data", type=Path, default=CIFAR, help="the CIFAR-10 JPEG tar.gz")
    parser.add_argument("--timing-only", action="store_true",
                        help="only the pruning calls (seed 0, no training), each after waiting up to 180 s "
                             "for a quiet machine: the times to report")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    source = provenance()
    config = QUICK if args.quick else FULL
    if not args.data.exists():
        sys.exit(f"CIFAR-10 JPEG copy not found at {args.data}")
    data = load_cifar(config, args.data)
    if args.timing_only:
        timing(config, data, source, args)
        return
    store = CACHE / "prune_at_init"
    store.mkdir(parents=True, exist_ok=True)

    from prunekit.io import atomic_write_text

    records = []
    for method, sparsity, seed in grid(config):
        path = store / f"{run_key(method, sparsity, seed, config)}.json"
        if path.exists():
            records.append(json.loads(path.read_text()))
            continue
        record = one_run(method, sparsity, seed, config, data)
        atomic_write_text(path, json.dumps(record, indent=1))
        records.append(record)
        print(f"{method:9s} s={sparsity:.2f} seed={seed}: acc {record['test_accuracy']:.4f}"
              + (f", collapsed={record['collapsed']}, prune {record['prune_seconds']:.2f}s"
                 if method != "dense" else ""), flush=True)

    rows = summarise(records, config)
    header = f"{'method':10s} {'sparsity':>8s} {'test acc (mean±std)':>20s} {'collapsed':>9s} {'prune s':>8s} {'peak MB':>8s} {'load':>5s}"
    lines = []
    for r in rows:
        acc = f"{100 * r['acc_mean']:.2f} ± {100 * r['acc_std']:.2f}"
        extra = (f"{r['collapsed']:>6d}/{r['n']} {r['prune_seconds']:8.2f} {r['prune_peak_mb']:8.1f} {r['foreign_load']:5.2f}"
                 if r["method"] != "dense" else f"{'':>9s} {'':>8s} {'':>8s} {'':>5s}")
        lines.append(f"{r['method']:10s} {r['sparsity']:8.2f} {acc:>20s} {extra}")
    print_table(header, lines)
    if args.json:
        meta = run_meta(source, "prune_at_init", args.threads)
        write_json(args.json, {"meta": {**meta, "config": config, "arch": ARCH}, "summary": rows, "runs": records})


if __name__ == "__main__":
    main()
