"""Training-step time of a 50%-pruned model against the same dense model.

Model: 6 blocks of Linear(768->3072), GELU, Linear(3072->768) (28.3M
parameters), batch 64, MSE loss on fixed random data, torch.optim.SGD(lr=0.01)
and, as a second row set, SGD(lr=0.01, momentum=0.9). Variants, built from the
same seed and trained side by side in one process:

* ``dense``             no pruning
* ``torch-reparam``     torch.nn.utils.prune.l1_unstructured(amount=0.5) on every Linear weight
* ``prunekit-reparam``  prunekit.prune(model, 0.5, mode="reparam")  (torch-compatible layout)
* ``prunekit-inplace``  prunekit.prune(model, 0.5, mode="inplace")  (lean mode)

One step = zero_grad, forward, loss, backward, optimizer.step, timed with
time.perf_counter. The variants are interleaved within every round (the order
rotates each round) so that drift of the machine affects all alike; the
figure is the median step time over the measured rounds after the warm-up, and
its ratio to dense. After training the script asserts that the pruned entries
of the in-place model are still exactly zero (and at 50%).

    python benchmarks/train_step.py
    python benchmarks/train_step.py --quick
    python benchmarks/train_step.py --json out.json
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import platform
import statistics
import sys
import time

VARIANTS = ("dense", "torch-reparam", "prunekit-reparam", "prunekit-inplace")
INPLACE_TARGET = 1.03  # prunekit's in-place step at most 1.03x dense


def torch_optim_workaround() -> bool:
    """Make ``torch.optim.optimizer`` reachable as an attribute again; True if it was missing.

    prunekit's in-place mode (src/prunekit/masks.py, ``_ensure_optimizer_hook``)
    calls ``torch.optim.optimizer.register_optimizer_step_post_hook``, but
    ``torch/optim/__init__.py`` ends with ``del optimizer``, so on torch 2.13 the
    attribute does not exist and ``mode="inplace"`` raises AttributeError. The
    benchmark puts the (already imported) submodule back on ``torch.optim``;
    prunekit's own code is not touched.
    """
    import torch

    if hasattr(torch.optim, "optimizer"):
        return False
    torch.optim.optimizer = importlib.import_module("torch.optim.optimizer")
    return True


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

        prunekit.prune(model, 0.5, criterion="magnitude", mode=name.split("-", 1)[1])
    model.train()
    del torch
    return model


def make_optimizer(model, momentum: float):
    import torch

    return torch.optim.SGD(model.parameters(), lr=0.01, momentum=momentum)


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


def run_config(momentum: float, args: argparse.Namespace, variants: list[str]) -> dict:
    import torch

    gen = torch.Generator().manual_seed(args.seed + 1)
    batches = [
        (torch.randn(args.batch, args.d, generator=gen), torch.randn(args.batch, args.d, generator=gen))
        for _ in range(args.batches)
    ]
    models = {v: make_variant(v, args) for v in variants}
    opts = {v: make_optimizer(models[v], momentum) for v in variants}
    times: dict[str, list[float]] = {v: [] for v in variants}
    rounds = args.warmup + args.steps
    gc.collect()
    for r in range(rounds):
        x, y = batches[r % len(batches)]
        shift = r % len(variants)
        for v in variants[shift:] + variants[:shift]:
            t0 = time.perf_counter()
            train_step(models[v], opts[v], x, y)
            dt = time.perf_counter() - t0
            if r >= args.warmup:
                times[v].append(dt)
    check = None
    if "prunekit-inplace" in models:
        pruned, total = check_inplace_zeros(models["prunekit-inplace"])
        check = {"pruned": pruned, "total": total, "still_zero": True}
    out = {"momentum": momentum, "variants": {}, "inplace_zero_check": check}
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
    parser.add_argument("--steps", type=int, default=None, help="measured rounds (default 50, 5 with --quick)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    parser.add_argument("--momentum", default="0,0.9", help="comma-separated SGD momenta, one table row set each")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--no-workaround", action="store_true",
                        help="do not restore torch.optim.optimizer (prunekit's inplace mode then fails on torch 2.13)")
    args = parser.parse_args(argv)
    args.blocks = args.blocks or (2 if args.quick else 6)
    args.warmup = args.warmup if args.warmup is not None else (2 if args.quick else 10)
    args.steps = args.steps or (5 if args.quick else 50)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    for v in variants:
        if v not in VARIANTS:
            parser.error(f"unknown variant {v!r}")
    workaround = False
    if "prunekit-inplace" in variants and not args.no_workaround:
        import prunekit  # noqa: F401

        workaround = torch_optim_workaround()
    params = sum(p.numel() for p in build_model(args.blocks, args.d, args.hidden, args.seed).parameters())
    print(f"train step: {args.blocks} blocks of Linear({args.d}->{args.hidden}), GELU, Linear({args.hidden}->{args.d}) "
          f"= {params / 1e6:.1f}M params, batch {args.batch}, MSE, SGD lr=0.01; torch {torch.__version__}, "
          f"{threads} threads, {os.cpu_count()} CPUs; median of {args.steps} steps after {args.warmup} warm-up, "
          f"variants interleaved", flush=True)
    if workaround:
        print("note: torch.optim.optimizer was missing; restored by the benchmark so that prunekit's inplace mode "
              "can run (bug in src/prunekit/masks.py _ensure_optimizer_hook)")
    configs = []
    for momentum in [float(m) for m in args.momentum.split(",")]:
        configs.append(run_config(momentum, args, variants))
    header = f"{'optimizer':<22} {'variant':<18} {'median ms':>10} {'p10 ms':>8} {'p90 ms':>8} {'x dense':>8}"
    print()
    print(header)
    print("-" * len(header))
    for c in configs:
        opt = "SGD" if c["momentum"] == 0 else f"SGD momentum={c['momentum']:g}"
        for v, r in c["variants"].items():
            ratio = f"{r['ratio_to_dense']:.3f}x" if r["ratio_to_dense"] else "-"
            print(f"{opt:<22} {v:<18} {r['median_s'] * 1e3:>10.1f} {r['p10_s'] * 1e3:>8.1f} {r['p90_s'] * 1e3:>8.1f} {ratio:>8}")
    print()
    for c in configs:
        opt = "SGD" if c["momentum"] == 0 else f"SGD momentum={c['momentum']:g}"
        chk = c["inplace_zero_check"]
        if chk:
            print(f"{opt}: after {args.warmup + args.steps} steps the in-place model's {chk['pruned']} pruned weights "
                  f"(of {chk['total']}) are all exactly 0")
        r = c["variants"].get("prunekit-inplace")
        if r and r["ratio_to_dense"]:
            ok = r["ratio_to_dense"] <= INPLACE_TARGET
            print(f"{opt}: target prunekit-inplace <= {INPLACE_TARGET}x dense: "
                  f"{'met' if ok else 'MISSED'} ({r['ratio_to_dense']:.3f}x)")
    if args.json:
        meta = {
            "benchmark": "train_step",
            "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
            "torch": torch.__version__,
            "threads": threads,
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "params": params,
            "blocks": args.blocks,
            "batch": args.batch,
            "warmup": args.warmup,
            "steps": args.steps,
            "torch_optim_workaround": workaround,
            "target_inplace_ratio": INPLACE_TARGET,
        }
        with open(args.json, "w") as handle:
            json.dump({"meta": meta, "configs": configs}, handle, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
