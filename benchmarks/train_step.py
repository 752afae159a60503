"""Training-step time of a 50%-pruned model against the same dense model.

Model: 6 blocks of Linear(768->3072), GELU, Linear(3072->768) (28.3M
parameters), batch 64, MSE loss on fixed random data. One row set per
optimizer, each with torch's default hyperparameters and ``foreach=True``
(``--foreach default`` leaves torch's choice, the single-tensor loop on the
CPU): ``sgd`` SGD(lr=0.01), ``momentum`` SGD(lr=0.01, momentum=0.9), ``adam``
Adam(lr=1e-3), ``adamw`` AdamW(lr=1e-3, weight_decay=1e-2). Variants, built
from the same seed and trained side by side in one process, each with its own
optimizer of the same settings:

* ``dense``             no pruning
* ``torch-reparam``     torch.nn.utils.prune.l1_unstructured(amount=0.5) on every Linear weight
* ``prunekit-reparam``  prunekit.prune(model, 0.5, mode="reparam")  (torch-compatible layout)
* ``prunekit-inplace``  prunekit.prune(model, 0.5, mode="inplace")  with nothing opted in: the
                        default path, which loads prunekit.native's kernels, building them
                        once where no build exists and a compiler does (before any timing;
                        the script says which path it took)
* ``prunekit-stock``    the same with the kernels switched off (prunekit.native.disable()):
                        what the default path does where they cannot be built, or with
                        PRUNEKIT_NATIVE=0

``--build-native`` builds the kernels first through ``prunekit.native.enable()``
(an error where it cannot), instead of leaving it to the default path.

One step = zero_grad, forward, loss, backward, optimizer.step, timed with
time.perf_counter. The variants are interleaved within every round (the order
rotates each round) so that drift of the machine affects all alike; the
figure is the median step time over the measured rounds after the warm-up, and
its ratio to dense. On a shared machine only quiet rounds count: rounds during
which other processes used fewer than --quiet-load cores (measured from
/proc/stat), until --steps of them are collected (at most --max-rounds). After training the script asserts that the pruned entries
of both in-place models are still exactly zero (and at 50%).

    python benchmarks/train_step.py
    python benchmarks/train_step.py --quick
    python benchmarks/train_step.py --build-native --json out.json
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ForeignLoad, print_table, provenance, run_meta, wait_quiet, write_json  # noqa: E402

VARIANTS = ("dense", "torch-reparam", "prunekit-reparam", "prunekit-inplace", "prunekit-stock")
INPLACE_VARIANTS = ("prunekit-inplace", "prunekit-stock")
#: optimizer rows: (label, torch class name, keyword arguments besides foreach)
OPTIMIZERS = {
    "sgd": ("SGD", "SGD", {"lr": 0.01}),
    "momentum": ("SGD momentum 0.9", "SGD", {"lr": 0.01, "momentum": 0.9}),
    "adam": ("Adam", "Adam", {"lr": 1e-3}),
    "adamw": ("AdamW", "AdamW", {"lr": 1e-3, "weight_decay": 1e-2}),
}
INPLACE_TARGET = 1.03  # prunekit's in-place step at most 1.03x dense


def build_model(blocks: int, d: int, hidden: int, seed: int):
    import torch
    from torch import nn

    torch.manual_seed(seed)
    layers = []
    for _ in range(blocks):
        layers += [nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, d)]
    return nn.Sequential(*layers)


def make_variant(name: str, args: argparse.Namespace):
    import torch
    from torch import nn
    from torch.nn.utils import prune as torch_prune

    model = build_model(args.blocks, args.d, args.hidden, args.seed)
    if name == "torch-reparam":
        for m in model.modules():
            if isinstance(m, nn.Linear):
                torch_prune.l1_unstructured(m, "weight", amount=0.5)
    elif name.startswith("prunekit"):
        import prunekit

        mode = "reparam" if name == "prunekit-reparam" else "inplace"
        prunekit.prune(model, 0.5, criterion="magnitude", mode=mode)
    model.train()
    del torch
    return model


def make_optimizer(model, optimizer: str, foreach: bool | None):
    import torch

    _, cls, kwargs = OPTIMIZERS[optimizer]
    return getattr(torch.optim, cls)(model.parameters(), foreach=foreach, **kwargs)


def train_step(model, optimizer, x, y) -> None:
    import torch.nn.functional as F

    optimizer.zero_grad(set_to_none=True)
    loss = F.mse_loss(model(x), y)
    loss.backward()
    optimizer.step()


def check_inplace_zeros(model) -> tuple[int, int]:
    """Assert every pruned entry of the in-place model is exactly 0; return (pruned, total)."""
    import torch

    pruned = total = 0
    with torch.no_grad():
        for name, m in model.named_modules():
            mask = m._buffers.get("weight_mask")
            if mask is None:
                continue
            assert mask.dtype == torch.bool, f"{name}: expected a bool in-place mask, got {mask.dtype}"
            w = m._parameters["weight"]
            off = ~mask
            bad = int((w[off] != 0).sum())
            assert bad == 0, f"{name}: {bad} pruned weights are no longer zero after training"
            pruned += int(off.sum())
            total += w.numel()
    assert total > 0, "the in-place model has no masked weights"
    assert pruned == round(0.5 * total), f"in-place sparsity changed: {pruned}/{total}"
    return pruned, total


def run_config(optimizer: str, args: argparse.Namespace, variants: list[str]) -> dict:
    import torch

    from prunekit import native as kernels

    gen = torch.Generator().manual_seed(args.seed + 1)
    batches = [
        (torch.randn(args.batch, args.d, generator=gen), torch.randn(args.batch, args.d, generator=gen))
        for _ in range(args.batches)
    ]
    models = {v: make_variant(v, args) for v in variants}
    opts = {v: make_optimizer(models[v], optimizer, args.foreach) for v in variants}
    native_used: dict[str, bool] = {}
    times: dict[str, list[float]] = {v: [] for v in variants}
    all_times: dict[str, list[float]] = {v: [] for v in variants}
    round_loads: list[float] = []
    gc.collect()
    waited, _ = wait_quiet(args.quiet_load, 1.0, args.max_wait)
    r = 0
    quiet_rounds = 0
    with ForeignLoad() as load:
        # Warm-up rounds, then rounds until ``steps`` of them were quiet (other processes below
        # --quiet-load cores during the whole round) or --max-rounds is reached. A round times one
        # step of every variant, so dropping a disturbed round drops it for all variants alike.
        while r < args.warmup + args.max_rounds and (r < args.warmup or quiet_rounds < args.steps):
            x, y = batches[r % len(batches)]
            shift = r % len(variants)
            step_times = {}
            with ForeignLoad() as round_load:
                for v in variants[shift:] + variants[:shift]:
                    # the kernels are process-wide: off for the stock variant's steps only, switched
                    # (and an existing build loaded) outside the timed step
                    kernels.disable() if v == "prunekit-stock" else kernels.use_default()
                    native_used[v] = kernels.kernels() is not None
                    t0 = time.perf_counter()
                    train_step(models[v], opts[v], x, y)
                    step_times[v] = time.perf_counter() - t0
            if r >= args.warmup:
                round_loads.append(round_load.cores)
                for v in variants:
                    all_times[v].append(step_times[v])
                if round_load.cores < args.quiet_load:
                    quiet_rounds += 1
                    for v in variants:
                        times[v].append(step_times[v])
            r += 1
    if quiet_rounds < max(5, args.steps // 5):
        print(f"warning: only {quiet_rounds} quiet rounds ({optimizer}); using all "
              f"{len(all_times[variants[0]])} measured rounds", flush=True)
        times = all_times
    kernels.use_default()
    check = {}
    for v in INPLACE_VARIANTS:
        if v in models:
            pruned, total = check_inplace_zeros(models[v])
            check[v] = {"pruned": pruned, "total": total, "still_zero": True}
    out = {"optimizer": optimizer, "label": OPTIMIZERS[optimizer][0], "settings": OPTIMIZERS[optimizer][2],
           "foreach": args.foreach, "native_kernels_used": native_used,
           "variants": {}, "inplace_zero_check": check, "foreign_load_cores": load.cores,
           "waited_for_quiet_s": waited, "rounds_measured": len(round_loads), "rounds_total": r, "rounds_quiet": quiet_rounds,
           "round_loads": round_loads,
           "all_rounds": {v: {"median_s": statistics.median(ts), "steps": len(ts)} for v, ts in all_times.items()}}
    dense_median = statistics.median(times["dense"]) if "dense" in times else None
    for v in variants:
        ts = sorted(times[v])
        med = statistics.median(ts)
        out["variants"][v] = {
            "median_s": med,
            "mean_s": statistics.fmean(ts),
            "p10_s": ts[int(0.1 * (len(ts) - 1))],
            "p90_s": ts[int(0.9 * (len(ts) - 1))],
            "steps": len(ts),
            "ratio_to_dense": med / dense_median if dense_median else None,
        }
    del models, opts
    gc.collect()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 blocks, 2 warm-up + 5 measured rounds")
    parser.add_argument("--blocks", type=int, default=None, help="default 6 (2 with --quick)")
    parser.add_argument("--d", type=int, default=768)
    parser.add_argument("--hidden", type=int, default=3072)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--batches", type=int, default=4, help="distinct random batches cycled through")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up rounds (default 10, 2 with --quick)")
    parser.add_argument("--steps", type=int, default=None, help="quiet measured rounds (default 50, 5 with --quick)")
    parser.add_argument("--max-rounds", type=int, default=None,
                        help="most measured rounds while waiting for quiet ones (default 4 x --steps)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    parser.add_argument("--optimizers", default=",".join(OPTIMIZERS),
                        help=f"comma-separated optimizer row sets, from {', '.join(OPTIMIZERS)}")
    parser.add_argument("--foreach", choices=("on", "default"), default="on",
                        help="on: foreach=True for every optimizer (default); default: torch's own choice")
    parser.add_argument("--build-native", action="store_true",
                        help="build prunekit.native's kernels first where no build exists (a one-off compile, "
                             "cached), so that the default in-place path finds them")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--quiet-load", type=float, default=0.25,
                        help="before each timed run wait until other processes use fewer cores than this")
    parser.add_argument("--max-wait", type=float, default=180.0, help="longest wait for a quiet machine, seconds")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    source = provenance()  # the prunekit source measured, taken before the run
    args.blocks = args.blocks or (2 if args.quick else 6)
    args.warmup = args.warmup if args.warmup is not None else (2 if args.quick else 10)
    args.steps = args.steps or (5 if args.quick else 50)
    args.max_rounds = args.max_rounds or 4 * args.steps
    foreach_label = args.foreach
    args.foreach = True if args.foreach == "on" else None

    import torch

    from prunekit import native

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    for v in variants:
        if v not in VARIANTS:
            parser.error(f"unknown variant {v!r}")
    optimizers = [o.strip() for o in args.optimizers.split(",") if o.strip()]
    for o in optimizers:
        if o not in OPTIMIZERS:
            parser.error(f"unknown optimizer {o!r} (choose from {', '.join(OPTIMIZERS)})")
    if args.build_native:
        missing = native.missing_requirements()
        if missing:
            print(f"--build-native: cannot build the kernels here ({'; '.join(missing)})", flush=True)
        else:
            native.enable()  # builds where no build of this version exists, else loads it
    existed = native._library_path() is not None
    native.use_default()
    default_native = native.kernels() is not None  # loads a build, or builds once where a compiler exists
    default_path = (f"compiled kernels ({'existing build' if existed else 'built now, by the default path,'} in "
                    f"{native.build_directory()})" if default_native
                    else "stock torch ops (prunekit.native cannot be built here, or PRUNEKIT_NATIVE=0)")
    params = sum(p.numel() for p in build_model(args.blocks, args.d, args.hidden, args.seed).parameters())
    print(f"train step: {args.blocks} blocks of Linear({args.d}->{args.hidden}), GELU, Linear({args.hidden}->{args.d}) "
          f"= {params / 1e6:.1f}M params, batch {args.batch}, MSE, optimizers {', '.join(optimizers)} "
          f"(foreach {foreach_label}); torch {torch.__version__}, {threads} threads, {os.cpu_count()} CPUs; "
          f"median of {args.steps} quiet rounds after {args.warmup} warm-up, variants interleaved; "
          f"prunekit at {source}", flush=True)
    print(f"default in-place path here: {default_path}", flush=True)
    configs = []
    for optimizer in optimizers:
        configs.append(run_config(optimizer, args, variants))
    header = f"{'optimizer':<18} {'variant':<18} {'median ms':>10} {'p10 ms':>8} {'p90 ms':>8} {'x dense':>8}"
    lines = []
    for c in configs:
        for v, r in c["variants"].items():
            ratio = f"{r['ratio_to_dense']:.3f}x" if r["ratio_to_dense"] else "-"
            lines.append(f"{c['label']:<18} {v:<18} {r['median_s'] * 1e3:>10.1f} {r['p10_s'] * 1e3:>8.1f} "
                         f"{r['p90_s'] * 1e3:>8.1f} {ratio:>8}")
    print()
    print_table(header, lines)
    print()
    for c in configs:
        opt = c["label"]
        print(f"{opt}: other processes used {c['foreign_load_cores']:.2f} cores on average during the timed loop; "
              f"{c['rounds_quiet']} of {c['rounds_measured']} measured rounds were quiet (< {args.quiet_load} cores) "
              f"and are the ones reported; medians over all rounds: "
              + ", ".join(f"{v} {r['median_s'] * 1e3:.1f} ms" for v, r in c["all_rounds"].items()))
        for v, chk in c["inplace_zero_check"].items():
            print(f"{opt}: after {c['rounds_total']} steps the {v} model's {chk['pruned']} pruned weights "
                  f"(of {chk['total']}) are all exactly 0")
        for v in INPLACE_VARIANTS:
            r = c["variants"].get(v)
            if r and r["ratio_to_dense"]:
                ok = r["ratio_to_dense"] <= INPLACE_TARGET
                path = "compiled kernels" if c["native_kernels_used"].get(v) else "stock ops"
                print(f"{opt}: target {v} ({path}) <= {INPLACE_TARGET}x dense: "
                      f"{'met' if ok else 'MISSED'} ({r['ratio_to_dense']:.3f}x)")
    if args.json:
        meta = {
            **run_meta(source, "train_step", threads),
            "params": params,
            "blocks": args.blocks,
            "batch": args.batch,
            "warmup": args.warmup,
            "steps": args.steps,
            "target_inplace_ratio": INPLACE_TARGET,
            "nice": os.nice(0),
            "quiet_load": args.quiet_load,
            "foreach": foreach_label,
            "default_inplace_path": default_path,
            "default_uses_native_kernels": default_native,
        }
        write_json(args.json, {"meta": meta, "configs": configs})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
