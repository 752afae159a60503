"""``prunekit lottery``: an IMP run of a zoo model on a registered data set, resumable.

    prunekit lottery lenet_300_100 --data mnist --data-path ../shared/data/mnist --out runs/lt \
        --levels 19 --rate 0.2 --output-rate 0.1 --steps 2000 --reset lottery --control reinit

The last ``--val-fraction`` of the training split is held out for the
early-stop iteration. Run the same command again to resume.
"""

from __future__ import annotations

import argparse
import numbers
from collections.abc import Callable
from typing import Any

from rich.console import Console

from ..data import create_dataset, list_datasets
from ..analysis.instability import instability_analysis
from ..errors import InvalidParameterError, PrunekitError
from ..files import read_json_object
from ..lottery.config import CONTROLS, RESETS, LotteryConfig
from ..lottery.levels import LotteryRun
from ..lottery.loop import as_tensors
from ..progress import ProgressEvent
from ..validation import (
    REQUIRED,
    SEED,
    AnyOf,
    Flag,
    Interval,
    Options,
    OutputDir,
    Param,
    cli_values,
    declare,
)
from ..zoo import list_models
from .common import ExistingPath, add_command
from .lottery_report import instability_summary, lottery_report, summary_table, write_lottery_report
from .progress_bars import ProgressBars, progress_bars

__all__ = ["LOTTERY_ALIASES", "LOTTERY_PARAMS", "add_lottery_parser"]

_RATE = Interval(numbers.Real, 0, 1, "neither", example=0.2)

LOTTERY_PARAMS = declare(
    Param("model", Options(list_models, "model", "prunekit list models"), REQUIRED,
          "a registered model name (see `prunekit list models`)", option="model"),
    Param("data", Options(list_datasets, "data set", "prunekit list datasets"), REQUIRED,
          "a registered data set (see `prunekit list datasets`)", metavar="NAME"),
    Param("data_path", AnyOf(ExistingPath(), None), None, "the data set's folder (or file: mnist_embedded reads "
          "another .npz of its layout)", metavar="PATH"),
    Param("out", OutputDir(), REQUIRED, "run directory; the same command again resumes it", metavar="DIR"),
    Param("levels", Interval(numbers.Integral, 0, None, example=19), 19, "pruning levels after the dense level 0",
          metavar="N"),
    Param("rate", _RATE, 0.2, "fraction of the remaining weights pruned per level", metavar="FRACTION"),
    Param("output_rate", AnyOf(_RATE, None), None, "the output layer's rate (default rate/2)", metavar="FRACTION"),
    Param("scope", Options(("local", "global"), "scope"), "local", "local (each layer) or global (one ranking)"),
    Param("reset", Options(RESETS, "reset"), "lottery", "what the weights return to after each level"),
    Param("rewind_step", Interval(numbers.Integral, 0, None, example=500), 0, "k, in iterations (rewind, "
          "lr_rewind)", metavar="K"),
    Param("steps", Interval(numbers.Integral, 1, None, example=5000), 5000, "training iterations T per level",
          metavar="T"),
    Param("batch_size", Interval(numbers.Integral, 1, None, example=60), 60, "training batch size", metavar="N"),
    Param("optimizer", Options(("sgd", "adam", "adamw"), "optimizer"), "adam", "the optimizer"),
    Param("lr", Interval(numbers.Real, 0, None, "neither", example=1.2e-3), 1.2e-3, "learning rate"),
    Param("lr_schedule", Options(("none", "cosine", "step"), "schedule"), "none", "learning-rate schedule"),
    Param("eval_every", Interval(numbers.Integral, 1, None, example=500), 500, "iterations between evaluations",
          metavar="N"),
    Param("control", AnyOf(Options(CONTROLS, "control"), None), None, "a control per level (repeatable)",
          repeat=True),
    Param("val_fraction", Interval(numbers.Real, 0, 1, "neither", example=0.1), 1 / 12,
          "share of the training split held out", metavar="FRACTION"),
    Param("seed", SEED, 0, "seed"),
    Param("instability", Flag(), False, "after the levels, measure each pruned level's instability: two copies "
          "trained from θ_k (--rewind-step) with other data orders, the test error along the line between them "
          "(kept in --out/instability/ and reused)"),
    Param("restart", Flag(), False, "discard earlier results in --out and start over"),
)

#: the library's names of the parameters behind the options (``LotteryConfig``'s fields, ``LotteryRun``'s
#: directory, ``create_dataset``'s folder): an error naming one of them names the option
LOTTERY_ALIASES = {"train_steps": "steps", "controls": "control", "out_dir": "out", "path": "data_path"}


def add_lottery_parser(sub: Any) -> argparse.ArgumentParser:
    """Register the ``lottery`` subcommand on ``sub`` (argparse subparsers)."""
    return add_command(sub, "lottery", LOTTERY_PARAMS, _cmd_lottery,
                       help="iterative magnitude pruning in levels (lottery tickets, rewinding); resumable")


def _cmd_lottery(args: argparse.Namespace, console: Console) -> int:
    v = cli_values(args, LOTTERY_PARAMS)
    config = LotteryConfig(
        model=v["model"], levels=v["levels"], rate=v["rate"], output_rate=v["output_rate"], scope=v["scope"],
        reset=v["reset"], rewind_step=v["rewind_step"], train_steps=v["steps"], batch_size=v["batch_size"],
        optimizer=v["optimizer"], lr=v["lr"], lr_schedule=v["lr_schedule"], eval_every=v["eval_every"],
        seed=v["seed"], controls=tuple(v["control"] or ()))
    x, y = as_tensors(_dataset(v["data"], v["data_path"], "train"), "train")
    test = as_tensors(_dataset(v["data"], v["data_path"], "test"), "test")
    held = max(1, int(len(x) * v["val_fraction"]))
    with progress_bars() as bars:
        run = LotteryRun(config, v["out"], train=(x[:-held], y[:-held]), val=(x[-held:], y[-held:]), test=test,
                         progress=_training_steps(bars), restart=v["restart"])
        with run.locked():
            _levels(run, config, bars)
            if v["instability"]:
                _instability(run, config, bars)
        report = lottery_report(run, v["data"])
        files = write_lottery_report(report, run.out)
    console.print(summary_table(report))
    for line in instability_summary(report):
        console.print(line, highlight=False)
    console.print(f"run directory: {v['out']} ({len(run.computed)} trained, {len(run.skipped)} reused)",
                  highlight=False)
    for kind in ("json", "markdown", "html"):
        console.print(f"wrote {kind}: {files[kind]}", highlight=False)
    return 0


def _dataset(name: str, path: Any, split: str) -> Any:
    """``split`` of the registered data set ``name``; a path it cannot read is an error naming --data-path."""
    try:
        return create_dataset(name, path=path, split=split)
    except OSError as exc:
        if isinstance(exc, PrunekitError):
            raise
        raise InvalidParameterError("--data-path", f"the files of the data set {name}", str(path),
                                    f"Fix: it could not be read ({exc.strerror or exc}); give the file or folder "
                                    f"{name} reads, or leave --data-path out where {name} ships with prunekit.") from None


def _training_steps(bars: ProgressBars) -> Callable[[ProgressEvent], None]:
    """The run's ``fit`` events (each training's steps, below the ``lottery`` stage, counted from
    the start of the level's segment) on the bars; the ``lottery`` stage itself counts levels here
    (:func:`_levels`), as the command trains them one call at a time."""
    def on_event(event: ProgressEvent) -> None:
        if event.stage == "fit":
            bars(event)

    return on_event


def _instability(run: LotteryRun, config: LotteryConfig, bars: ProgressBars) -> None:
    """The instability of every pruned level (:func:`prunekit.analysis.instability_analysis`, seeds 0 and 1),
    unless its result is in the run directory already."""
    levels = range(1, config.levels + 1)
    bars(ProgressEvent("instability", 0, len(levels), {}, "level 1", "lottery"))
    for done, level in enumerate(levels, 1):
        stored = read_json_object(run.out / "instability" / f"instability_{level:03d}_0_1.json",
                                  then="it is measured again")
        if stored is None or not isinstance(stored.get("instability"), (int, float)):
            value = instability_analysis(run, level, seeds=(0, 1)).instability
        else:
            value = stored["instability"]
        bars(ProgressEvent("instability", done, len(levels), {"instability": value}, f"level {level}", "lottery"))


def _levels(run: LotteryRun, config: LotteryConfig, bars: ProgressBars) -> None:
    """Every level in order (resuming), the ``lottery`` stage counting the trainings done; one line per
    finished level and control above the bars."""
    def line(level: int, metrics: dict[str, Any], name: str) -> str:
        return (f"level {level:3d} {name:8s} {100 * metrics['remaining']:7.2f}% remaining  "
                f"accuracy {100 * metrics['accuracy']:.2f}%  early stop {metrics['early_stop_iteration']} "
                f"({100 * metrics['early_stop_accuracy']:.2f}%)  {metrics['seconds']:.1f} s")

    total = config.levels + 1
    bars(ProgressEvent("lottery", 0, total, {}, "level 0"))
    for level in range(total):
        metrics = run.level(level)
        bars.progress.console.print(line(level, metrics, "ticket"), highlight=False)
        for control in config.controls if level else ():
            bars.progress.console.print(line(level, run.metrics(level, control), control), highlight=False)
        bars(ProgressEvent("lottery", level + 1, total, {"accuracy": metrics["accuracy"],
                                                         "sparsity": 1 - metrics["remaining"]},
                           f"level {min(level + 1, config.levels)}" if level < config.levels else "done"))
