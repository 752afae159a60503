"""Lottery tickets on LeNet-300-100 / MNIST (Frankle & Carbin 2019, figures 3-4), with prunekit.lottery.

Iterative magnitude pruning, 20% of the remaining weights per level (output
layer 10%), per layer, for ``--levels`` levels (19 levels: 1.44% remaining),
Adam lr 1.2e-3, batch 60, 5,000 training images held out for validation
(the early-stop iteration is the iteration of minimum validation loss, as in
the paper). Three methods side by side, level by level:

* ``ticket``  survivors reset to θ₀ (the lottery ticket);
* ``reinit``  the ticket's mask on a fresh random init (the paper's control);
* ``rewind``  survivors reset to θ_k, k = ``--rewind-step`` iterations
  (weight rewinding, Frankle et al. 2020), trained from k to T.

The paper trains 50,000 iterations per level; to fit 2 shared CPU cores this
trains ``--steps`` iterations per level (default 2,000, about 2.2 epochs),
evaluated every ``--eval-every`` iterations. Runs are cached and resumable
under ``benchmarks/cache/lottery_lenet/`` (one directory per method and
config): run it again after a kill and it continues where it stopped.

Wall time per method is the sum of its levels' training+evaluation time
(reported with the load of other processes: on a busy machine it is
indicative only); peak memory is the process's peak RSS while that method
trained (the data set in memory included), sampled from /proc/self/status.

    nice -n 10 python benchmarks/lottery_lenet.py --json benchmarks/results/lottery_lenet.json
    python benchmarks/lottery_lenet.py --quick
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    SHARED_DATA,
    REPO_ROOT,
    ForeignLoad,
    PeakRSS,
    print_table,
    provenance,
    run_meta,
    write_json,
)

PAPER = ("Frankle & Carbin 2019 (LeNet-300-100, MNIST): winning tickets reach at least the dense "
         "test accuracy and learn faster down to about 3.6% remaining; randomly reinitialised "
         "tickets learn slower and lose accuracy from about 21% remaining.")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(SHARED_DATA / "mnist"))
    p.add_argument("--levels", type=int, default=19)
    p.add_argument("--steps", type=int, default=2000, help="training iterations per level (paper: 50,000)")
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--rewind-step", type=int, default=100, help="k of weight rewinding, in iterations")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cache", default=str(REPO_ROOT / "benchmarks" / "cache" / "lottery_lenet"))
    p.add_argument("--plots", default=None, help="folder for the PNG figures (default: none)")
    p.add_argument("--instability", type=int, default=None, metavar="LEVEL",
                   help="also the instability analysis (two copies from θ_k, data orders 0 and 1) of this level, "
                        "for the ticket (k=0) and weight rewinding (k=--rewind-step); cached")
    p.add_argument("--quick", action="store_true", help="smoke test: 3 levels, 60 iterations, 6,000 images")
    p.add_argument("--json", default=None)
    return p.parse_args(argv)


def load_data(folder: str, quick: bool):
    from prunekit.data import create_dataset

    train = create_dataset("mnist", path=folder, split="train", normalize="mnist")
    test = create_dataset("mnist", path=folder, split="test", normalize="mnist")
    x, y = train.tensors()
    tx, ty = test.tensors()
    if quick:
        x, y, tx, ty = x[:6000], y[:6000], tx[:1000], ty[:1000]
    held = len(x) // 12  # 5,000 of 60,000 for validation, as in the paper
    return (x[:-held], y[:-held]), (x[-held:], y[-held:]), (tx, ty)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    from prunekit.lottery import LotteryConfig, LotteryRun

    if args.quick:
        args.levels, args.steps, args.eval_every, args.rewind_step = 3, 60, 20, 10
    train, val, test = load_data(args.data, args.quick)
    common = {"model": "lenet_300_100", "levels": args.levels, "rate": 0.2, "output_rate": 0.1, "scope": "local",
                  "train_steps": args.steps, "batch_size": 60, "optimizer": "adam", "lr": 1.2e-3,
                  "eval_every": args.eval_every, "seed": args.seed}
    configs = {
        "ticket": LotteryConfig(reset="lottery", controls=("reinit",), **common),
        "rewind": LotteryConfig(reset="rewind", rewind_step=args.rewind_step, **common),
    }
    runs = {name: LotteryRun(cfg, Path(args.cache) / f"{name}-{cfg.fingerprint()[:12]}", train=train,
                             val=val, test=test) for name, cfg in configs.items()}
    peaks: dict[str, int] = {}
    loads: dict[str, list[float]] = {"ticket": [], "reinit": [], "rewind": []}
    start = time.perf_counter()
    for level in range(args.levels + 1):
        for name, run in runs.items():
            with PeakRSS() as peak, ForeignLoad() as load:
                run.level(level, controls=False)
            if name == "ticket" and level > 0:
                with PeakRSS() as cpeak, ForeignLoad() as cload:
                    run.control(level, "reinit")
                if (level, "reinit") in run.computed:
                    peaks["reinit"] = max(peaks.get("reinit", 0), cpeak.peak)
                    loads["reinit"].append(cload.cores)
            if (level, None) in run.computed:
                peaks[name] = max(peaks.get(name, 0), peak.peak)
                loads[name].append(load.cores)
        done = runs["ticket"].metrics(level)
        print(f"level {level:2d} done ({100 * done['remaining']:.2f}% remaining) "
              f"at {time.perf_counter() - start:.0f} s", flush=True)

    rows = []
    ticket_rows = runs["ticket"].results()
    rewind_rows = runs["rewind"].results()
    for t, r in zip(ticket_rows, rewind_rows):
        ticket, reinit, rewind = t["ticket"], t.get("reinit"), r["ticket"]
        rows.append({"level": ticket["level"], "remaining": ticket["remaining"],
                     "layers_remaining": ticket["layers_remaining"],
                     **{f"{m}_{key}": (v[key] if v else None)
                        for m, v in (("ticket", ticket), ("reinit", reinit), ("rewind", rewind))
                        for key in ("accuracy", "early_stop_accuracy", "early_stop_iteration", "seconds")}})

    def fmt(v, pct=True):
        return "-" if v is None else (f"{100 * v:6.2f}" if pct else f"{v:6d}")

    print_table(
        "level remain%  ticket acc@ES  ES-iter | reinit acc@ES  ES-iter | rewind acc@ES  ES-iter | final acc: ticket reinit rewind",
        [f"{r['level']:5d} {100 * r['remaining']:7.2f}  {fmt(r['ticket_early_stop_accuracy']):>13} "
         f"{fmt(r['ticket_early_stop_iteration'], False):>8} | {fmt(r['reinit_early_stop_accuracy']):>13} "
         f"{fmt(r['reinit_early_stop_iteration'], False):>8} | {fmt(r['rewind_early_stop_accuracy']):>13} "
         f"{fmt(r['rewind_early_stop_iteration'], False):>8} | {fmt(r['ticket_accuracy'])} "
         f"{fmt(r['reinit_accuracy'])} {fmt(r['rewind_accuracy'])}" for r in rows])
    totals = {m: sum(r[f"{m}_seconds"] or 0.0 for r in rows) for m in ("ticket", "reinit", "rewind")}
    side = Path(args.cache) / f"resources-{configs['ticket'].fingerprint()[:12]}.json"
    stored = json.loads(side.read_text()) if side.is_file() else {"peak_rss": {}, "foreign_load": {}}
    for m in totals:
        if m in peaks:
            stored["peak_rss"][m] = max(stored["peak_rss"].get(m, 0), peaks[m])
            stored["foreign_load"][m] = stored["foreign_load"].get(m, []) + loads[m]
    side.write_text(json.dumps(stored, indent=2))
    print_table("method   train+eval s   peak RSS MB   mean load of other processes (cores)",
                [f"{m:8s} {totals[m]:12.1f} {stored['peak_rss'].get(m, 0) / 2**20:13.0f} "
                 f"{(sum(stored['foreign_load'].get(m, [])) / max(1, len(stored['foreign_load'].get(m, [])))):10.2f}"
                 for m in totals])
    print(PAPER)
    instability = {}
    if args.instability is not None:
        from prunekit.analysis import instability_analysis

        for name, run in runs.items():
            cached = run.out / "instability" / f"instability_{args.instability:03d}_0_1.json"
            if cached.is_file():
                instability[name] = json.loads(cached.read_text())
            else:
                plots = Path(args.plots) if args.plots else None
                result = instability_analysis(run, args.instability, seeds=(0, 1), points=11)
                instability[name] = result.to_dict()
                if plots is not None:
                    result.plot(plots / f"lottery_lenet_instability_{name}.png",
                                title=f"LeNet-300-100, {100 * run.metrics(args.instability)['remaining']:.1f}% "
                                      f"remaining, k={run.config.rewind_step}: instability "
                                      f"{100 * result.instability:.2f} points")
        print_table("instability (Frankle et al. 2020): level, k, errors along the path (%), instability (points)",
                    [f"{name:8s} level {v['level']} k={v['start_iteration']:<4d} "
                     f"{' '.join(f'{100 * e:.2f}' for e in v['errors'])}  -> {100 * v['instability']:.2f}"
                     for name, v in instability.items()])
    if args.plots:
        from prunekit.measure.plots import plot_metric_vs_sparsity

        out = Path(args.plots)
        dense = rows[0]["ticket_early_stop_accuracy"]
        series = {label: [(1 - r["remaining"], r[f"{m}_early_stop_accuracy"]) for r in rows[1:]]
                  for m, label in (("ticket", "lottery ticket (reset to θ₀)"), ("reinit", "random reinit"),
                                   ("rewind", f"weight rewinding (k={args.rewind_step})"))}
        plot_metric_vs_sparsity(series, out / "lottery_lenet_accuracy.png", dense=dense, metric_name="accuracy",
                                title="LeNet-300-100 / MNIST: test accuracy at the early-stop iteration")
        iters = {k: [(x, float(r[f"{m}_early_stop_iteration"])) for (x, _), r in zip(v, rows[1:])]
                 for (k, v), m in zip(series.items(), ("ticket", "reinit", "rewind"))}
        plot_metric_vs_sparsity(iters, out / "lottery_lenet_early_stop.png",
                                dense=float(rows[0]["ticket_early_stop_iteration"]),
                                metric_name="early-stop iteration", higher_is_better=False,
                                title="LeNet-300-100 / MNIST: early-stop iteration (min validation loss)")
        print(f"wrote plots to {out}")
    if args.json:
        write_json(args.json, {"meta": run_meta(provenance(), "lottery_lenet", args.threads),
                               "config": {k: configs[k].to_dict() for k in configs}, "paper": PAPER,
                               "rows": rows, "seconds": totals, "resources": stored,
                               "instability": instability})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
