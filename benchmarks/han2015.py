"""Han et al. 2015 on MNIST: LeNet-300-100 and LeNet-5, iterative magnitude pruning with retraining.

Han, Pool, Tran & Dally, "Learning both Weights and Connections for Efficient
Neural Networks" (NeurIPS 2015), Table 1: LeNet-300-100 1.64% error dense,
1.59% at 12× fewer weights; LeNet-5 (Caffe's, 431K parameters) 0.80% dense,
0.77% at 12×. This script trains each network dense (SGD with momentum,
cosine learning rate), then prunes it with prunekit's ``Pruner`` (magnitude,
masks kept during retraining) to each operating point in turn, retraining
after each step at a lower learning rate (0.02 against 0.05 dense, annealed to
0 within each retraining): prune, retrain, repeat. The
per-layer rates are the paper's Table 2 scaled along the curve (see
``_han_protocol.py``), or one global ranking with ``--schedule global``.

Compression = total weights of the pruned layers / weights left (biases are
neither pruned nor counted). Error = test error in % on the 10,000 MNIST test
images. Three seeds; the table gives mean ± sample standard deviation and
the range.

Every (model, seed, point) is cached under ``benchmarks/cache/han2015/`` when
done (atomic write): run the command again after a kill and it continues;
change a setting and only the points it affects are run again. The work goes
point by point over the seeds, so a run cut short has every seed up to the
same point.

    PYTHONPATH=src nice -n 5 python benchmarks/han2015.py
    PYTHONPATH=src python benchmarks/han2015.py --quick            # tiny smoke run
    PYTHONPATH=src python benchmarks/han2015.py --report-only      # table/plot/JSON from the cache

The data: ``--data`` (default ``$PRUNEKIT_SHARED_DATA/mnist``, else
``../shared/data/mnist``), or ``--synthetic`` (random MNIST-shaped images, for tests).
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO_ROOT, SHARED_DATA, cpu_model, provenance, run_meta  # noqa: E402

DEFAULTS = {
    # SGD momentum 0.9, weight decay 5e-4, batch 128, cosine lr within each stage; the retraining
    # lengths are what two shared CPU cores allowed (LeNet-5: fractions of an epoch between points)
    "lenet_300_100": {"dense_epochs": 20, "lr": 0.05, "retrain_lr": 0.02,
                      "compressions": (2.0, 4.0, 8.0, 12.0, 20.0, 30.0, 50.0),
                      "retrain_epochs": (5, 5, 5, 10, 5, 5, 5)},
    "lenet5": {"dense_epochs": 6, "lr": 0.05, "retrain_lr": 0.02,
               "compressions": (2.0, 4.0, 8.0, 12.0, 20.0, 30.0, 50.0),
               "retrain_epochs": (0.5, 0.5, 0.5, 2, 2, 2, 3)},
}
QUICK = {"dense_epochs": 1, "compressions": (2.0, 12.0), "retrain_epochs": (1, 1)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(SHARED_DATA / "mnist"), help="folder of the four MNIST IDX files")
    p.add_argument("--synthetic", action="store_true", help="random MNIST-shaped data instead of --data")
    p.add_argument("--models", nargs="+", default=["lenet_300_100", "lenet5"], choices=["lenet_300_100", "lenet5"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--schedule", default="table2", choices=["table2", "global"],
                   help="per-layer rates: Table 2 scaled along the curve, or one global magnitude ranking")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--jobs", type=int, default=1,
                   help="train the seeds in this many processes at once (one thread each), then report")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 512 train / 256 test images, 1 epoch per stage, points 2× and 12×")
    p.add_argument("--report-only", action="store_true", help="train nothing; report what the cache holds")
    p.add_argument("--no-report", action="store_true", help="train only (a --jobs worker)")
    p.add_argument("--cache", default=None, help="default benchmarks/cache/han2015[-quick]")
    p.add_argument("--json", default=None, help="default benchmarks/results/han2015[-quick].json")
    p.add_argument("--plot", default=None, help="PNG path (default docs/figures/han2015.png; none with --quick)")
    return p.parse_args(argv)


def load_data(args: argparse.Namespace):
    import torch

    from _han_protocol import synthetic_mnist

    if args.synthetic:
        (x, y), (tx, ty) = synthetic_mnist(2000, 500)
        tag = "synthetic"
    else:
        from prunekit.data import create_dataset

        x, y = create_dataset("mnist", path=args.data, split="train", normalize="mnist").tensors()
        tx, ty = create_dataset("mnist", path=args.data, split="test", normalize="mnist").tensors()
        tag = "mnist"
    if args.quick:
        x, y, tx, ty = x[:512], y[:512], tx[:256], ty[:256]
    tag += f"-{len(x)}-{len(tx)}"
    return (x.contiguous(), y.contiguous()), (tx.contiguous(), ty.to(torch.int64)), tag


def protocols(args: argparse.Namespace) -> dict:
    from _han_protocol import Protocol

    out = {}
    for name in args.models:
        settings = dict(DEFAULTS[name])
        if args.quick:
            settings.update(QUICK)
        out[name] = Protocol(schedule=args.schedule, **settings)
    return out


def run(args: argparse.Namespace, log=print) -> dict:
    """Train what the cache lacks (unless ``--report-only``); return {model: {seed: [StageResult or None]}}."""
    from _han_protocol import fixed_batches, load_model, load_result, run_stage, save_stage, stage_keys, stage_path

    train_xy, test_xy, tag = load_data(args)
    test = fixed_batches(*test_xy)
    cache = Path(args.cache)
    results: dict = {}
    for name, protocol in protocols(args).items():
        keys = {seed: stage_keys(name, seed, protocol, tag) for seed in args.seeds}
        paths = {seed: [stage_path(cache, name, seed, i, k) for i, k in enumerate(keys[seed])] for seed in args.seeds}
        found = {seed: [load_result(p) for p in paths[seed]] for seed in args.seeds}
        models: dict = {}
        for index in range(len(protocol.compressions) + 1):
            for seed in args.seeds:
                if found[seed][index] is not None or args.report_only:
                    continue
                if index > 0 and found[seed][index - 1] is None:
                    continue  # the chain is broken (report-only earlier): nothing to start from
                model = models.get(seed)
                if index > 0 and model is None:
                    model = load_model(paths[seed][index - 1], name)
                model, result = run_stage(model, name, seed, index, protocol, train_xy, test)
                save_stage(paths[seed][index], model, result)
                models[seed] = model
                found[seed][index] = result
                log(f"{name} seed {seed} stage {index}: {result.compression:.2f}x error {result.error:.2f}% "
                    f"({result.epochs} epochs, {result.seconds:.0f} s) at "
                    f"{datetime.datetime.now(datetime.timezone.utc):%H:%M:%S} UTC")
            for seed in args.seeds:  # a model not carried forward is freed
                if found[seed][index] is None:
                    models.pop(seed, None)
        results[name] = {"protocol": protocol, "stages": found}
    return results


def worker_argv(argv: list[str], seed: int, cache: str) -> list[str]:
    """The command line of the worker that trains ``seed``: ``argv`` without ``--seeds``/``--jobs``
    (and their values), plus ``--seeds SEED --jobs 1 --no-report --cache CACHE``."""
    keep, skip = [], False
    for a in argv:
        if a.startswith("--"):
            if a.startswith(("--seeds=", "--jobs=")):
                skip = False
                continue
            skip = a in ("--seeds", "--jobs")
        if not skip:
            keep.append(a)
    return [*keep, "--seeds", str(seed), "--jobs", "1", "--no-report", "--cache", cache]


def run_parallel(args: argparse.Namespace, argv: list[str]) -> None:
    """Train each seed in its own process (``--jobs`` at a time); they share the cache, and the
    report is then built from it. The processes stay in this one's process group."""
    import subprocess

    pending = list(args.seeds)
    running: list = []
    failed = []
    while pending or running:
        while pending and len(running) < args.jobs:
            seed = pending.pop(0)
            cmd = [sys.executable, __file__, *worker_argv(argv, seed, args.cache)]
            running.append((seed, subprocess.Popen(cmd)))
        seed, proc = running.pop(0)
        if proc.wait() != 0:
            failed.append(seed)
    if failed:
        raise RuntimeError(f"the workers of seeds {failed} failed; their log is above")


def mean_spread(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def build_json(args: argparse.Namespace, results: dict) -> dict:
    from dataclasses import asdict

    from _han_protocol import PAPER

    payload: dict = {}
    missing = []
    protocol_out = {}
    schedules = {}
    for name, entry in results.items():
        stages = entry["stages"]
        seeds = args.seeds
        dense = [stages[s][0].error if stages[s][0] else None for s in seeds]
        points = []
        per_point = []
        for k, nominal in enumerate(entry["protocol"].compressions, start=1):
            done = [stages[s][k] for s in seeds]
            if all(r is None for r in done):
                missing.append(f"{name} {nominal:g}x: no seed")
                continue
            comps = {round(r.compression, 6) for r in done if r is not None}
            if len(comps) != 1:
                raise RuntimeError(f"{name} at {nominal}x: seeds differ in compression {sorted(comps)}")
            for s, r in zip(seeds, done):
                if r is None:
                    missing.append(f"{name} {nominal:g}x: seed {s}")
            first = next(r for r in done if r is not None)
            points.append({"compression": round(first.compression, 4), "errors": [r.error if r else None for r in done]})
            per_point.append({"nominal": nominal, "compression": round(first.compression, 4),
                              "layer_density": {n: round(d, 5) for n, d in first.layer_density.items()},
                              "table2_exponent": None if first.exponent is None else round(first.exponent, 4),
                              "retrain_epochs": first.epochs})
        if any(d is None for d in dense):
            missing.append(f"{name} dense: seeds {[s for s, d in zip(seeds, dense) if d is None]}")
        payload[name] = {"dense_error": dense, "points": points}
        protocol_out[name] = asdict(entry["protocol"])
        schedules[name] = per_point
    payload["machine"] = machine()
    payload["commit"] = provenance()["commit"]
    payload["date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    payload["protocol"] = {
        "seeds": args.seeds,
        "schedule": args.schedule,
        "schedule_meaning": ("table2: each layer keeps d_l ** a of its weights, d_l = Han et al. 2015 Table 2's "
                             "kept fraction, a solved for the compression" if args.schedule == "table2" else
                             "global: one magnitude ranking over all pruned layers"),
        "compression": "total weights of the pruned layers / weights left; biases are neither pruned nor counted",
        "error": "test error in % on the test set, after the retraining of each point",
        "iterative": "each point is pruned from the retrained model of the point before (prune, retrain, repeat)",
        "pruning": "prunekit.Pruner(criterion='magnitude', mode='inplace'); prunekit.fit (SGD, cosine lr)",
        "data": "synthetic" if args.synthetic else "MNIST 60,000 train / 10,000 test, normalised",
        "quick": bool(args.quick),
        "models": protocol_out,
        "points": schedules,
    }
    payload["paper"] = {name: {"dense_error": PAPER[name]["dense_error"], "compression": PAPER[name]["anchor"][0],
                               "error": PAPER[name]["anchor"][1], "table2_density": PAPER[name]["table2_density"]}
                        for name in results}
    payload["complete"] = not missing
    payload["missing"] = missing
    payload["meta"] = run_meta(provenance(), "han2015", args.threads)
    return payload


def machine() -> dict:
    """The machine as the JSON's ``machine`` field records it: CPU model and cores."""
    return {"cpu": cpu_model(), "cores": os.cpu_count()}


def markdown_table(payload: dict) -> str:
    """One table per model: paper | ours (mean ± sd over seeds, [min, max]) per point."""
    lines = []
    names = {"lenet_300_100": "LeNet-300-100", "lenet5": "LeNet-5"}
    for name in ("lenet_300_100", "lenet5"):
        if name not in payload:
            continue
        paper = payload["paper"][name]
        schedule = {p["compression"]: p for p in payload["protocol"]["points"][name]}
        lines += [f"**{names[name]}** (paper: dense {paper['dense_error']:.2f}%, "
                  f"{paper['compression']:g}× at {paper['error']:.2f}%)", "",
                  "| compression | kept | test error % (mean ± sd) | [min, max] | per seed | layers kept |",
                  "| ---: | ---: | ---: | ---: | --- | --- |"]
        rows = [(1.0, payload[name]["dense_error"], None)] + [
            (p["compression"], p["errors"], schedule[p["compression"]]) for p in payload[name]["points"]]
        for comp, errors, sched in rows:
            done = [e for e in errors if e is not None]
            if not done:
                continue
            mean, sd = mean_spread(done)
            layers = "dense" if sched is None else ", ".join(
                f"{n} {100 * d:.1f}%" for n, d in sched["layer_density"].items())
            seeds = " / ".join("-" if e is None else f"{e:.2f}" for e in errors)
            lines.append(f"| {comp:.1f}× | {100 / comp:.2f}% | {mean:.2f} ± {sd:.2f} | [{min(done):.2f}, "
                         f"{max(done):.2f}] | {seeds} | {layers} |")
        lines.append("")
    return "\n".join(lines)


def plot(payload: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = {"lenet_300_100": "LeNet-300-100", "lenet5": "LeNet-5 (Caffe)"}
    models = [n for n in ("lenet_300_100", "lenet5") if n in payload]
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4.2), squeeze=False)
    for ax, name in zip(axes[0], models):
        xs, means, lo, hi = [], [], [], []
        rows = [(1.0, payload[name]["dense_error"])] + [(p["compression"], p["errors"]) for p in payload[name]["points"]]
        for comp, errors in rows:
            done = [e for e in errors if e is not None]
            if done:
                m = statistics.fmean(done)
                xs.append(comp), means.append(m), lo.append(m - min(done)), hi.append(max(done) - m)
        ax.errorbar(xs, means, yerr=[lo, hi], marker="o", capsize=3, label="prunekit (mean, min-max of seeds)")
        paper = payload["paper"][name]
        ax.scatter([1.0, paper["compression"]], [paper["dense_error"], paper["error"]], marker="*", s=160,
                   color="tab:red", zorder=5, label="Han et al. 2015 (dense, 12×)")
        if xs:
            ax.axhline(means[0] + 0.1, color="grey", ls=":", lw=1, label="dense + 0.1 point")
        ax.set_xscale("log")
        ax.set_xticks([1, 2, 4, 8, 12, 20, 30, 50])
        ax.set_xticklabels(["1", "2", "4", "8", "12", "20", "30", "50"])
        ax.set_xlabel("compression (weights / weights left), log scale")
        ax.set_ylabel("test error (%)")
        ax.set_title(f"{names[name]} / MNIST")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    rates = ("per-layer rates: Table 2 scaled along the curve" if payload["protocol"]["schedule"] == "table2"
             else "one global magnitude ranking")
    fig.suptitle(f"Magnitude pruning, retrain, repeat ({rates}); seeds {payload['protocol']['seeds']}")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    suffix = "-quick" if args.quick else ""
    args.cache = args.cache or str(REPO_ROOT / "benchmarks" / "cache" / f"han2015{suffix}")
    args.json = args.json or str(REPO_ROOT / "benchmarks" / "results" / f"han2015{suffix}.json")
    if args.plot is None and not args.quick:
        args.plot = str(REPO_ROOT / "docs" / "figures" / "han2015.png")
    if args.jobs > 1 and not args.report_only:
        run_parallel(args, argv if argv is not None else sys.argv[1:])
        args.report_only = True
    results = run(args, log=lambda line: print(line, flush=True))
    if args.no_report:
        return 0
    payload = build_json(args, results)
    from prunekit.files import atomic_write_text
    import json

    atomic_write_text(args.json, json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.json}")
    print(markdown_table(payload))
    if payload["missing"]:
        print("NOT DONE: " + "; ".join(payload["missing"]))
    if args.plot:
        plot(payload, args.plot)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
