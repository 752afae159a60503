"""Structural pruning of CIFAR ResNets to about half the MACs: prunekit against Torch-Pruning.

Models: the pretrained ResNet-20 (``../shared/data/pretrained``) and a ResNet-56
trained here (``benchmarks/train_cifar_resnet.py``, cached in ``benchmarks/cache``),
on the CIFAR-10 JPEG copy. Each is pruned, in the same run and from the same weights:

* ``prunekit``:   ``prunekit.structural_prune(model, x, sparsity=R, criterion="l2")``
* ``torch-pruning``: Torch-Pruning 1.6.1 (``pip install torch-pruning``; a benchmark-only
  dependency), ``BasePruner(importance=GroupMagnitudeImportance(p=2, bias=True),
  pruning_ratio=R, global_pruning=False, ignored_layers=[fc])``
* with ``--criteria``: prunekit's other group criteria at the same ratio (``slimming``,
  ``taylor``, ``hrank``, ``thinet``, ``random``; the data-driven ones get 4 training batches).
* with ``--latency-macs 0.5``: prunekit's latency-aware allocation
  (``allocation="latency"``: greedy latency saved / importance lost on a per-layer latency table
  timed here at batch 64 with ``--table-threads`` threads, cached in
  ``benchmarks/cache/latency_table.json``; ``round_to=--latency-round-to``, 8 by default) down to that
  MACs fraction, group L2; and Torch-Pruning given the SAME per-layer channel counts
  (``pruning_ratio_dict``, one ratio per producer of every group); the two are checked to keep the same
  channels (``same_as_prunekit``: every tensor equal).
* with ``--macs-global 0.5``: prunekit's global ranking (group L2, each group's scores divided by
  their mean) with ``macs_target=0.5`` (a different architecture, timed too); with ``--round-to 8``
  also the same with kept channels rounded to multiples of 8.

Both remove the same fraction ``R`` of every coupled group (local ranking) by group
L2 magnitude (prunekit sums the squares over the producers' rows, the BatchNorm
weight and bias and the consumers' columns; Torch-Pruning averages the per-layer
squared norms over the group, which ranks the same; its ``bias=True`` makes it score
the BatchNorm bias as prunekit does, and both then keep the very same channels:
``--tp-bias 0`` is Torch-Pruning's default, without biases). The default ``R = 5/16`` removes a whole number of
channels from every group of 16, 32 and 64, so both libraries reach the same
architecture (MACs ratio (11/16)² ≈ 0.47).

Figures: wall time of the pruning call; parameters and MACs after/before; CPU
latency at batch 1 and 64 (with each of ``--latency-threads``, median of ``--repeats`` rounds in which
every model runs one forward in turn, the order rotating each round, after
``wait_quiet``; a figure taken while other processes used more than
``--quiet-load`` cores is marked ``busy`` and is not a result); test
accuracy before fine-tuning and after ``--finetune-steps`` SGD steps (batch 64,
lr 0.01 cosine, momentum 0.9, weight decay 5e-4, flip + crop, the same batches
in the same order for every method).

The script re-executes itself with glibc's allocator warmed (``MALLOC_MMAP_THRESHOLD_=4000000000
MALLOC_TRIM_THRESHOLD_=4000000000 MALLOC_TOP_PAD_=268435456``; ``--cold-malloc`` leaves it alone), so that
no forward pass pays page faults for fresh activation memory (docs/benchmarks.md §4).

    python benchmarks/structural.py --json benchmarks/results/structural.json
    nice -n 10 python benchmarks/structural.py --deploy --latency-macs 0.5 --latency-threads 1,2 \
        --json benchmarks/results/structural_latency.json
    python benchmarks/structural.py --models resnet20 --criteria slimming,taylor,hrank,random
    python benchmarks/structural.py --quick
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import SHARED_DATA, ForeignLoad, REPO_ROOT, print_table, provenance, run_meta, wait_quiet, write_json  # noqa: E402
from train_cifar_resnet import AugmentedBatches, cache_path, load_cifar  # noqa: E402

PRETRAINED = SHARED_DATA / "pretrained" / "resnet20_cifar10_dense.safetensors"
RESNET56 = dict(minutes=20.0, batch=128, lr=0.1, seed=0)  # train_cifar_resnet.py's defaults
DEFAULT_RATIO = 5 / 16


def load_model(name: str, quick: bool, weights: str | None):
    import prunekit

    if name == "resnet20":
        path = Path(weights) if weights else PRETRAINED
    else:
        path = Path(weights) if weights else cache_path(name, **RESNET56)
    if not path.is_file():
        if quick:
            print(f"[quick] {path} missing: random weights for {name}")
            return prunekit.create_model(name)
        sys.exit(f"{path} not found. Train it first: nice -n 10 python benchmarks/train_cifar_resnet.py --model {name}")
    return prunekit.create_model(name, weights=path)


def accuracy(model, test) -> float:
    import prunekit

    return prunekit.evaluate(model, AugmentedBatches(*test, batch_size=500, augment=False)).accuracy


def finetune(model, train, steps: int, seed: int) -> float:
    """``steps`` SGD steps on seeded augmented batches; returns the seconds taken."""
    import torch

    import prunekit

    if steps == 0:
        return 0.0
    decay = [p for p in model.parameters() if p.ndim > 1]
    rest = [p for p in model.parameters() if p.ndim <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": 5e-4}, {"params": rest, "weight_decay": 0.0}],
                          lr=0.01, momentum=0.9)
    t0 = time.perf_counter()
    prunekit.fit(model, AugmentedBatches(*train, batch_size=64, seed=seed), epochs=max(1, -(-steps * 64 // len(train[0]))),
                 optimizer=opt, lr_schedule="cosine", max_steps=steps)
    model.eval()
    return time.perf_counter() - t0


LATENCY_TABLE = REPO_ROOT / "benchmarks" / "cache" / "latency_table.json"
WARM_MALLOC = {"MALLOC_MMAP_THRESHOLD_": "4000000000", "MALLOC_TRIM_THRESHOLD_": "4000000000",
               "MALLOC_TOP_PAD_": "268435456"}


def prune_prunekit(model, x, ratio: float, criterion: str, batches, macs_target: float | None = None,
                   round_to: int | None = None, table_threads: int | None = None,
                   max_layer_ratio: float | None = None, latency: dict | None = None):
    """prunekit's call for one row; returns the StructuralPruneResult. ``latency``: ``table`` (path),
    ``repeats`` (of each table entry) and ``normalize`` (None: the library's default) of the
    latency-aware rows."""
    import prunekit
    from prunekit.measure.layer_latency import LatencyTable

    if table_threads is not None:  # latency-aware allocation down to the MACs target
        latency = latency or {}
        table = LatencyTable(batch_size=64, threads=table_threads, path=latency.get("table", LATENCY_TABLE),
                             repeats=latency.get("repeats", 10))
        result = prunekit.structural_prune(model, x, macs_target=macs_target, criterion=criterion,
                                           allocation="latency", latency_table=table, round_to=round_to,
                                           max_layer_ratio=max_layer_ratio, data=batches,
                                           normalize=latency.get("normalize"))
        table.save()
        return result
    if macs_target is None:
        # measure=False: no parameter/MAC counts inside the timed call (Torch-Pruning makes none)
        return prunekit.structural_prune(model, x, sparsity=ratio, criterion=criterion, data=batches,
                                         measure=False, round_to=round_to)
    # one global ranking (group scores divided by their mean) down to the MACs target
    return prunekit.structural_prune(model, x, macs_target=macs_target, criterion=criterion, scope="global",
                                     data=batches, round_to=round_to)


def per_layer_ratios(model, x, counts: dict[str, int]) -> dict:
    """Torch-Pruning's ``pruning_ratio_dict`` giving every producer of each prunekit group the kept
    count ``counts[group]``: TP keeps ``int(n · (1 - r))`` of ``n``, so ``r = 1 - (keep + 0.5) / n``."""
    import prunekit

    ratios = {}
    for g in prunekit.find_groups(model, x):
        keep = counts.get(g.name, g.size)
        for sl in g.producers():
            if sl.tensor == "weight" and sl.dim == 0:
                ratios[sl.module] = 0.0 if keep >= g.size else 1.0 - (keep + 0.5) / g.size
    return ratios


def prune_torch_pruning(model, x, ratio: float, bias: bool, ratios: dict | None = None):
    """Torch-Pruning at one local ``ratio``, or with per-layer ``ratios`` (pruning_ratio_dict)."""
    import torch_pruning as tp

    importance = tp.importance.GroupMagnitudeImportance(p=2, bias=bias)
    pruner = tp.pruner.BasePruner(model, x, importance=importance, pruning_ratio=0.0 if ratios else ratio,
                                  pruning_ratio_dict=ratios or None, global_pruning=False,
                                  ignored_layers=[model.fc])
    pruner.step()


def same_tensors(a, b) -> bool:
    """Every parameter and buffer of ``a`` and ``b`` has the same shape and values."""
    import torch

    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(sa[k].shape == sb[k].shape and torch.equal(sa[k], sb[k]) for k in sa)


def deployed(model):
    """The inference form of a model: eval mode, BatchNorm folded into the preceding convolution
    (``torch.fx.experimental.optimization.fuse``), as a CPU deployment would run it. Applied to the
    dense and every pruned model alike."""
    from torch.fx.experimental.optimization import fuse

    return fuse(copy.deepcopy(model).eval())


def interleaved_latency(modules: list, batch: int, threads: int, args) -> list[dict]:
    """Median latency in ms of each model at ``batch``, the models timed in turn within every round.

    One forward of each model per round, in an order that rotates each round, so that a drift of the
    machine's speed (this VM's speed changes from minute to minute, which the other-load figure does
    not show) touches every model alike. Taken in a quiet moment; ``busy`` if it was not quiet.
    """
    import torch

    x = torch.randn(batch, 3, 32, 32)
    models = [deployed(m) if args.deploy else m.eval() for m in modules]
    best = None
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    with torch.inference_mode():
        for model in models:
            for _ in range(5):
                model(x)
        for _attempt in range(args.attempts):
            waited, _ = wait_quiet(args.quiet_load, 1.0, args.max_wait)
            times: list[list[float]] = [[] for _ in models]
            with ForeignLoad() as load:
                for r in range(args.repeats):
                    for k in range(len(models)):
                        i = (k + r) % len(models)
                        t0 = time.perf_counter()
                        models[i](x)
                        times[i].append((time.perf_counter() - t0) * 1000.0)
            busy = load.cores >= args.quiet_load
            entries = [{"median_ms": statistics.median(t), "p10_ms": sorted(t)[len(t) // 10],
                        "p90_ms": sorted(t)[(9 * len(t)) // 10], "foreign_load": round(load.cores, 2),
                        "waited_s": round(waited, 1), "busy": busy, "interleaved": True} for t in times]
            if best is None or (best[0]["busy"] and not busy):
                best = entries
            if not busy:
                break
    torch.set_num_threads(before)
    for entry in best:
        entry["threads"] = threads
    return best


def run_model(name: str, args, train, test, calib) -> list[dict]:
    import torch

    import prunekit

    x1 = torch.randn(1, 3, 32, 32)
    dense = load_model(name, args.quick, args.weights.get(name)).eval()
    dense_params = prunekit.measure.count_parameters(dense).params
    dense_macs = prunekit.measure.count_macs(dense, x1, norms=False).dense_macs
    dense_acc = accuracy(dense, test)
    print(f"{name}: dense accuracy {dense_acc:.4f}, {dense_params:,} params, {dense_macs:,} MACs", flush=True)
    rows = [{"model": name, "method": "dense", "params": dense_params, "macs": dense_macs,
             "acc_before_ft": dense_acc, "acc_after_ft": None, "prune_s": 0.0, "module": dense}]
    methods = [("prunekit", "l2", None, None, None), ("torch-pruning", "l2", None, None, None)]
    if args.round_to:  # the same local ratio, kept channels in multiples of round_to
        methods.append((f"prunekit-rt{args.round_to}", "l2", None, args.round_to, None))
    methods += [("prunekit", c, None, None, None) for c in args.criteria]
    if args.macs_global:
        methods.append(("prunekit-global", "l2", args.macs_global, None, None))
        if args.round_to:
            methods.append((f"prunekit-global-rt{args.round_to}", "l2", args.macs_global, args.round_to, None))
    for t in args.table_threads if args.latency_macs else ():
        methods.append((f"prunekit-latency-t{t}", "l2", args.latency_macs, args.latency_round_to, t))
        methods.append((f"torch-pruning-same-t{t}", "l2", None, None, t))
    results = {}
    for lib, criterion, macs_target, round_to, table_threads in methods:
        model = copy.deepcopy(dense)
        torch.manual_seed(0)
        if not args.no_latency:
            wait_quiet(args.quiet_load, 1.0, args.max_wait)
        extra = {}
        with ForeignLoad() as load:
            t0 = time.perf_counter()
            if lib.startswith("prunekit"):
                results[lib] = prune_prunekit(model, x1, args.ratio, criterion, calib, macs_target, round_to,
                                              table_threads, args.latency_max_ratio if table_threads else None,
                                              {"table": args.latency_table, "repeats": args.table_repeats,
                                               "normalize": args.latency_normalize})
            elif table_threads is not None:  # the channel counts of the latency-aware prunekit row
                ratios = per_layer_ratios(model, x1, results[f"prunekit-latency-t{table_threads}"].channels_after)
                t0 = time.perf_counter()
                prune_torch_pruning(model, x1, args.ratio, bool(args.tp_bias), ratios)
            else:
                prune_torch_pruning(model, x1, args.ratio, bool(args.tp_bias))
            seconds = time.perf_counter() - t0
        model.eval()
        if table_threads is not None:
            extra["table_threads"] = table_threads
            if lib.startswith("prunekit"):
                extra["channels"] = results[lib].channels_after
                extra["latency_model_ms"] = results[lib].latency_model_ms
                results[lib + "/pruned"] = copy.deepcopy(model)  # as pruned, before fine-tuning
            else:
                extra["same_as_prunekit"] = same_tensors(model, results[f"prunekit-latency-t{table_threads}/pruned"])
                print(f"{name} {lib}: same tensors as prunekit's latency-aware model: {extra['same_as_prunekit']}")
        params = prunekit.measure.count_parameters(model).params
        macs = prunekit.measure.count_macs(model, x1, norms=False).dense_macs
        before = accuracy(model, test)
        ft_s = finetune(model, train, args.finetune_steps, seed=1)
        after = accuracy(model, test)
        print(f"{name} {lib} {criterion}: prune {seconds:.2f}s, params {params / dense_params:.3f}x, "
              f"MACs {macs / dense_macs:.3f}x, acc {before:.4f} -> {after:.4f} (fine-tune {ft_s:.0f}s)", flush=True)
        rows.append({"model": name, "method": lib, "criterion": criterion, "params": params, "macs": macs,
                     "params_ratio": params / dense_params, "macs_ratio": macs / dense_macs, "prune_s": seconds,
                     "prune_foreign_load": round(load.cores, 2), **extra,
                     "acc_before_ft": before, "acc_after_ft": after, "finetune_s": ft_s, "module": model})
    if not args.no_latency:  # the other criteria share prunekit-l2's shapes
        timed = [row for row in rows if row["method"] == "dense" or row.get("criterion") == "l2"]
        for _block in range(args.timing_blocks):  # whole interleaved blocks, one after the other: the spread
            for threads in args.latency_threads:
                for batch in (1, 64):
                    key = f"b{batch}_t{threads}"
                    for row, entry in zip(timed, interleaved_latency([r["module"] for r in timed], batch, threads, args)):
                        row.setdefault(f"latency_{key}_blocks", []).append(entry)
        base = rows[0]
        for key in [f"b{b}_t{t}" for t in args.latency_threads for b in (1, 64)]:
            for row in timed:
                blocks = row[f"latency_{key}_blocks"]
                # the block with the median latency stands for the row; every block's figures stay in the JSON
                row[f"latency_{key}"] = sorted(blocks, key=lambda e: e["median_ms"])[len(blocks) // 2]
            for row in rows[1:]:
                blocks = row.get(f"latency_{key}_blocks")
                if blocks:
                    dense = base[f"latency_{key}_blocks"]
                    speedups = sorted(d["median_ms"] / b["median_ms"] for d, b in zip(dense, blocks))
                    row[f"speedup_{key}_blocks"] = speedups
                    row[f"speedup_{key}"] = statistics.median(speedups)
                    row[f"busy_{key}"] = any(e["busy"] for e in blocks + dense)
    for row in rows:
        del row["module"]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="resnet20,resnet56")
    parser.add_argument("--ratio", type=float, default=DEFAULT_RATIO)
    parser.add_argument("--criteria", default="", help="extra prunekit criteria, e.g. slimming,taylor,hrank,random")
    parser.add_argument("--finetune-steps", type=int, default=300)
    parser.add_argument("--test-limit", type=int, default=None, help="evaluate on this many test images (all: 10,000)")
    parser.add_argument("--calib-batches", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2, help="torch threads for pruning and fine-tuning")
    parser.add_argument("--latency-threads", default=None,
                        help="thread counts to time latency with, e.g. 1,2 (default: --threads)")
    parser.add_argument("--latency-macs", type=float, default=None,
                        help="add prunekit's latency-aware allocation down to this MACs fraction (e.g. 0.5) "
                             "and Torch-Pruning with the same per-layer channel counts")
    parser.add_argument("--table-threads", default="1",
                        help="with --latency-macs: threads of the latency table(s), e.g. 1,2 (one row pair each)")
    parser.add_argument("--latency-round-to", type=int, default=8,
                        help="with --latency-macs: channels removed 8 at a time (0: one at a time)")
    parser.add_argument("--latency-normalize", default=None,
                        help="with --latency-macs: normalize= of the latency-aware rows (default: the library's, 'sum')")
    parser.add_argument("--latency-table", default=str(LATENCY_TABLE),
                        help="with --latency-macs: the latency table's cache file")
    parser.add_argument("--table-repeats", type=int, default=10,
                        help="with --latency-macs: timed forwards per new table entry (their median)")
    parser.add_argument("--timing-blocks", type=int, default=1,
                        help="time every model this many times over (whole interleaved blocks, one after the "
                             "other); speedups are the median over blocks, with their range")
    parser.add_argument("--latency-max-ratio", type=float, default=None,
                        help="with --latency-macs: max_layer_ratio of the latency-aware rows (e.g. 0.5)")
    parser.add_argument("--cold-malloc", action="store_true",
                        help="do not re-execute with glibc's allocator warmed (see the module docstring)")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--attempts", type=int, default=5)
    parser.add_argument("--quiet-load", type=float, default=0.25)
    parser.add_argument("--max-wait", type=float, default=120.0)
    parser.add_argument("--no-latency", action="store_true")
    parser.add_argument("--deploy", action="store_true",
                        help="time every model (dense included) with BatchNorm folded into its convolutions")
    parser.add_argument("--tp-bias", type=int, default=1, choices=(0, 1),
                        help="Torch-Pruning scores biases too (1, as prunekit does: same channels chosen) or not (0)")
    parser.add_argument("--macs-global", type=float, default=None,
                        help="add a prunekit row with scope='global' down to this MACs fraction (e.g. 0.5)")
    parser.add_argument("--round-to", type=int, default=None,
                        help="with --macs-global: one more global row whose kept channels are multiples of this")
    parser.add_argument("--resnet20-weights", default=None)
    parser.add_argument("--resnet56-weights", default=None)
    parser.add_argument("--quick", action="store_true", help="smoke: 500 test images, 5 fine-tuning steps, few repeats")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if not args.cold_malloc and any(os.environ.get(k) != v for k, v in WARM_MALLOC.items()):
        print("re-executing with glibc's allocator warmed: " + " ".join(f"{k}={v}" for k, v in WARM_MALLOC.items()),
              flush=True)
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **WARM_MALLOC})
    args.criteria = [c for c in args.criteria.split(",") if c]
    args.latency_threads = [int(t) for t in (args.latency_threads or str(args.threads)).split(",") if t]
    args.table_threads = [int(t) for t in args.table_threads.split(",") if t]
    args.latency_round_to = args.latency_round_to or None
    args.weights = {"resnet20": args.resnet20_weights, "resnet56": args.resnet56_weights}
    if args.quick:
        args.test_limit, args.finetune_steps = 500, 5
        args.repeats, args.attempts, args.max_wait = 3, 1, 2.0
    source = provenance()
    import torch

    torch.set_num_threads(args.threads)
    train = load_cifar("train", 2000 if args.quick else None)
    test = load_cifar("test", args.test_limit)
    calib = list(AugmentedBatches(*train, batch_size=64, seed=7, augment=False))[: args.calib_batches]
    rows = []
    for name in [m for m in args.models.split(",") if m]:
        rows += run_model(name, args, train, test, calib)

    def lat(row: dict, key: str) -> str:
        entry = row.get(f"latency_{key}")
        if not entry:
            return "-"
        speed = row.get(f"speedup_{key}")
        return f"{entry['median_ms']:.1f}" + (f" ({speed:.2f}x)" if speed else "") + ("*" if entry["busy"] else "")

    keys = [f"b{b}_t{t}" for t in args.latency_threads for b in (1, 64)]
    header = (f"{'model':9} {'method':24} {'criterion':9} {'prune s':>8} {'params':>7} {'MACs':>6} "
              f"{'acc':>7} {'acc+ft':>7} " + " ".join(f"{'lat ' + k + ' ms':>16}" for k in keys))
    print_table(header, [
        f"{r['model']:9} {r['method']:24} {r.get('criterion', '-'):9} {r['prune_s']:8.3f} "
        f"{r['params'] / 1e3:6.0f}k {r.get('macs_ratio', 1.0):6.3f} {r['acc_before_ft']:7.4f} "
        f"{(r['acc_after_ft'] if r['acc_after_ft'] is not None else r['acc_before_ft']):7.4f} "
        + " ".join(f"{lat(r, k):>16}" for k in keys)
        for r in rows
    ])
    print("* = taken while other processes used the CPU (not a result); speedups are dense / pruned; "
          "prune s with the other load in the JSON (prune_foreign_load)")
    for r in rows:
        for t in args.latency_threads:
            key = f"b64_t{t}"
            if r.get(f"speedup_{key}") and not r.get(f"busy_{key}"):
                ratio = r[f"speedup_{key}"] * r["macs_ratio"]
                spread = [s * r["macs_ratio"] for s in r[f"speedup_{key}_blocks"]]
                r[f"share_{key}"], r[f"share_{key}_blocks"] = ratio, spread
                print(f"{r['model']} {r['method']}: batch-64 speedup at {t} thread(s) {r[f'speedup_{key}']:.2f}x = "
                      f"{ratio:.3f} x the MAC reduction {1 / r['macs_ratio']:.2f}x (blocks {min(spread):.3f}-"
                      f"{max(spread):.3f}; target >= 0.85): {'met' if ratio >= 0.85 else 'MISSED'}")
    if args.json:
        meta = run_meta(source, "structural", args.threads)
        meta.update({"latency_threads": args.latency_threads, "table_threads": args.table_threads,
                     "latency_macs": args.latency_macs, "latency_round_to": args.latency_round_to,
                     "latency_max_ratio": args.latency_max_ratio, "latency_normalize": args.latency_normalize,
                     "latency_table": args.latency_table, "table_repeats": args.table_repeats,
                     "timing_blocks": args.timing_blocks,
                     "malloc": {k: os.environ.get(k) for k in WARM_MALLOC}, "deploy": args.deploy,
                     "ratio": args.ratio, "tp_bias": args.tp_bias, "finetune_steps": args.finetune_steps, "test_images": len(test[0]),
                     "quick": args.quick, "torch_pruning": _tp_version(), "cpu_count": os.cpu_count()})
        write_json(args.json, {"meta": meta, "rows": rows})


def _tp_version() -> str:
    """The installed distribution's version (torch_pruning.__version__ of 1.6.1 still says 1.6.0)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("torch-pruning")
    except PackageNotFoundError:
        return "not installed"


if __name__ == "__main__":
    main()
