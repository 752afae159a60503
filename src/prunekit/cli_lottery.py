"""``prunekit lottery``: an IMP run of a zoo model on a registered data set, resumable.

    prunekit lottery lenet_300_100 --data mnist --data-path ../shared/data/mnist --out runs/lt \
        --levels 19 --rate 0.2 --output-rate 0.1 --steps 2000 --reset lottery --control reinit

The last ``--val-fraction`` of the training split is held out for the
early-stop iteration. Run the same command again to resume.
"""

from __future__ import annotations

import argparse
from typing import Any

from .lottery.config import CONTROLS, RESETS

__all__ = ["add_lottery_parser"]


def add_lottery_parser(sub: Any) -> argparse.ArgumentParser:
    """Register the ``lottery`` subcommand on ``sub`` (argparse subparsers)."""
    p = sub.add_parser("lottery", help="iterative magnitude pruning in levels (lottery tickets, rewinding); resumable")
    p.add_argument("model", help="a registered model name (see `prunekit list models`)")
    p.add_argument("--data", required=True, help="a registered data set (see `prunekit list datasets`)")
    p.add_argument("--data-path", help="the data set's folder")
    p.add_argument("--out", required=True, help="run directory; the same command again resumes it")
    p.add_argument("--levels", type=int, default=19)
    p.add_argument("--rate", type=float, default=0.2, help="fraction of the remaining weights pruned per level")
    p.add_argument("--output-rate", type=float, default=None, help="the output layer's rate (default rate/2)")
    p.add_argument("--scope", default="local", choices=["local", "global"])
    p.add_argument("--reset", default="lottery", choices=list(RESETS))
    p.add_argument("--rewind-step", type=int, default=0, help="k, in iterations (rewind, lr_rewind)")
    p.add_argument("--steps", type=int, default=5000, help="training iterations T per level")
    p.add_argument("--batch-size", type=int, default=60)
    p.add_argument("--optimizer", default="adam", choices=["sgd", "adam", "adamw"])
    p.add_argument("--lr", type=float, default=1.2e-3)
    p.add_argument("--lr-schedule", default="none", choices=["none", "cosine", "step"])
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--control", action="append", choices=list(CONTROLS), help="a control per level (repeatable)")
    p.add_argument("--val-fraction", type=float, default=1 / 12, help="held out of the training split")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_lottery)
    return p


def _cmd_lottery(args: argparse.Namespace, console: Any) -> int:
    from .data import create_dataset
    from .errors import InvalidParameterError
    from .lottery.config import LotteryConfig
    from .lottery.levels import LotteryRun
    from .lottery.loop import as_tensors

    config = LotteryConfig(
        model=args.model, levels=args.levels, rate=args.rate, output_rate=args.output_rate, scope=args.scope,
        reset=args.reset, rewind_step=args.rewind_step, train_steps=args.steps, batch_size=args.batch_size,
        optimizer=args.optimizer, lr=args.lr, lr_schedule=args.lr_schedule, eval_every=args.eval_every,
        seed=args.seed, controls=tuple(args.control or ()))
    if not 0.0 < args.val_fraction < 1.0:
        raise InvalidParameterError("--val-fraction", "a fraction in (0, 1)", args.val_fraction)
    x, y = as_tensors(create_dataset(args.data, path=args.data_path, split="train"), "train")
    test = as_tensors(create_dataset(args.data, path=args.data_path, split="test"), "test")
    held = max(1, int(len(x) * args.val_fraction))
    run = LotteryRun(config, args.out, train=(x[:-held], y[:-held]), val=(x[-held:], y[-held:]), test=test,
                     callback=None)

    def line(level: int, metrics: dict[str, Any], name: str) -> str:
        return (f"level {level:3d} {name:8s} {100 * metrics['remaining']:7.2f}% remaining  "
                f"accuracy {100 * metrics['accuracy']:.2f}%  early stop {metrics['early_stop_iteration']} "
                f"({100 * metrics['early_stop_accuracy']:.2f}%)  {metrics['seconds']:.1f} s")

    for level in range(config.levels + 1):
        metrics = run.level(level)
        console.print(line(level, metrics, "ticket"), highlight=False)
        for control in config.controls if level else ():
            console.print(line(level, run.metrics(level, control), control), highlight=False)
    console.print(f"run directory: {args.out} ({len(run.computed)} trained, {len(run.skipped)} reused)",
                  highlight=False)
    return 0
