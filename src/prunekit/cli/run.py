"""``prunekit run RECIPE.yaml`` and ``prunekit demo``: a recipe run with progress bars and a results table.

    prunekit run recipe.yaml --out runs/r [--restart]
    prunekit demo [--out DIR] [--quick] [--restart]
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from typing import Any

import torch
from rich import box
from rich.console import Console
from rich.table import Table

from ..measure.report import results_tables
from ..recipes import example_recipe_path, load_recipe
from ..runner import Runner
from ..validation import (
    AnyOf,
    Flag,
    OutputDir,
    Param,
    PathLike,
    cli_values,
    declare,
)
from .common import add_command
from .progress_bars import progress_bars, stage_events

__all__ = ["DEMO_PARAMS", "RUN_PARAMS", "add_demo_parser", "add_run_parser", "quick_recipe"]

RUN_PARAMS = declare(
    Param("recipe", PathLike(), help="the recipe file (see prunekit/recipe_examples/demo.yaml)", option="recipe"),
    Param("out", OutputDir(), help="output folder; run again with the same folder to resume", metavar="DIR"),
    Param("restart", Flag(), False, "discard earlier results in --out and start over"),
)
DEMO_PARAMS = declare(
    Param("out", AnyOf(OutputDir(), None), None, "output folder (default prunekit-demo, or prunekit-demo-quick)",
          metavar="DIR"),
    Param("quick", Flag(), False, "a small, fast version (fewer samples, one epoch)"),
    Param("restart", Flag(), False, "discard earlier results in --out"),
)


def add_run_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``run`` on ``sub`` (argparse subparsers)."""
    return add_command(sub, "run", RUN_PARAMS, _cmd_run,
                       help="run a YAML recipe (dense model, pruners, fine-tuning, report); resumable")


def add_demo_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``demo`` on ``sub`` (argparse subparsers)."""
    return add_command(sub, "demo", DEMO_PARAMS, _cmd_demo,
                       help="train LeNet-5 on the embedded MNIST subset and compare pruning methods")


#: The report's columns the terminal shows (the HTML report has them all), with shorter headers.
_COLUMNS = (
    {"run": "run", "realisation": "realisation", "sparsity": "sparsity", "accuracy": "accuracy",
     "perplexity": "perplexity", "Δ vs dense": "Δ", "training steps": "steps"},
    {"run": "run", "parameters": "params", "non-zeros": "nnz", "MACs × dense": "MACs ×",
     "bytes compressed": "file", "latency (ms)": "ms", "speedup": "speed", "sparse kernels": "sparse"},
)


def _cell(column: str, text: str) -> str:
    """The terminal's short form of a report cell."""
    if column in ("Δ vs dense", "non-zeros"):
        return text.split(" (")[0]
    if column == "sparse kernels":  # "1.37× (1/2)" -> "1.37×"; "dense (0/2)" -> "dense"
        return text.split(" (")[0]
    if column == "bytes compressed":  # "897.58 KiB" -> "898K", "1.65 MiB" -> "1.65M": three digits
        number, _, unit = text.partition(" ")
        try:
            value = float(number)
        except ValueError:
            return text
        digits = 0 if value >= 100 else 1 if value >= 10 else 2
        return f"{value:.{digits}f}{unit[:1] if unit != 'B' else ''}"
    return text


def _results_tables(report: dict[str, Any], runner: Any) -> list[Table]:
    """The report's two results tables (quality and budget; size and speed), the columns of
    :data:`_COLUMNS`, with the seconds each stage took added to the first."""
    tables = []
    computed = results_tables(report)
    for i, (header, rows, numeric) in enumerate(computed):
        first, shown = i == 0, _COLUMNS[i]
        keep = [k for k, name in enumerate(header) if name in shown]
        table = Table(title=report["title"] if first else None, title_justify="left", box=box.SIMPLE_HEAD,
                      padding=(0, 1), pad_edge=False, collapse_padding=True)
        for k in keep:
            table.add_column(shown[header[k]], justify="right" if numeric[k] else "left",
                             no_wrap=header[k] == "run", overflow="fold")
        if first:
            table.add_column("s", justify="right", overflow="fold")
        for j, row in enumerate(rows):
            cells = [_cell(header[k], row[k]) for k in keep]
            if first:
                seconds = runner.timings.get(row[0])
                cells.append("-" if seconds is None else f"{seconds:.1f}{'*' if row[0] in runner.skipped else ''}")
            table.add_row(*cells)
            if j == 0:
                table.add_section()
        tables.append(table)
    dense = report["dense"]
    sparse_note = (" sparse: dense ms / the run's ms after prunekit.to_sparse (sparse kernels where faster; 'dense': "
                   "no layer was; the report says which layers)." if "sparse kernels" in computed[1][0] else "")
    tables[-1].caption = (f"Δ: vs dense, in points; steps: training steps of each model in all; nnz: non-zero "
                          "parameters; MACs ×: MACs with zeros skipped, over dense; file: the "
                          f"compressed checkpoint (bytes, K = KiB, M = MiB); ms: median latency at batch "
                          f"{dense['latency_batch']}, every model timed in turn; speed: dense ms / the run's; s: "
                          "seconds the stage took (* reused from an earlier start). Masked runs keep the dense "
                          "shapes; shrunk runs are smaller." + sparse_note)
    tables[-1].caption_justify = "left"
    return tables


def _execute(recipe: Any, out: str, restart: bool, console: Console) -> int:
    start = time.perf_counter()
    with progress_bars() as bars:
        runners: list[Runner] = []
        events = stage_events(bars, bars.progress.console.print, lambda: 1 + len(runners[0].runs))
        runners.append(Runner(recipe, out, restart=restart, progress=events))
        runner = runners[0]
        report = runner.run()
    wall = time.perf_counter() - start
    for table in _results_tables(report, runner):
        console.print(table)
    computed = sum(runner.timings.get(n, 0.0) for n in runner.computed)
    console.print(
        f"wall time {wall:.1f} s ({len(runner.computed)} stages computed in {computed:.1f} s, "
        f"{len(runner.skipped)} reused); threads {torch.get_num_threads()}", highlight=False)
    for kind, path in runner.files.items():
        console.print(f"wrote {kind}: {path}", highlight=False)
    for warning in runner.warnings:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    return 0


def _cmd_run(args: argparse.Namespace, console: Console) -> int:
    values = cli_values(args, RUN_PARAMS)
    return _execute(load_recipe(values["recipe"]), values["out"], values["restart"], console)


def quick_recipe(recipe: Any) -> Any:
    """The demo made small: fewer samples, one epoch, fewer latency repeats (a smoke test)."""
    latency = recipe.evaluate.latency
    if latency is not None:
        latency = dataclasses.replace(latency, repeats=3, warmup=1)
    return dataclasses.replace(
        recipe,
        title=(recipe.title or "demo") + " (quick)",
        data=dataclasses.replace(recipe.data, limit_train=256, limit_test=128),
        train=dataclasses.replace(recipe.train, epochs=1) if recipe.train is not None else None,
        finetune=dataclasses.replace(recipe.finetune, epochs=1),
        evaluate=dataclasses.replace(recipe.evaluate, latency=latency),
    )


def _cmd_demo(args: argparse.Namespace, console: Console) -> int:
    values = cli_values(args, DEMO_PARAMS)
    path = example_recipe_path("demo")
    recipe = load_recipe(path)
    if values["quick"]:
        recipe = quick_recipe(recipe)
    out = values["out"] or ("prunekit-demo-quick" if values["quick"] else "prunekit-demo")
    console.print(f"demo recipe: {path}{' (--quick: reduced)' if values['quick'] else ''}; output: {out}",
                  highlight=False)
    return _execute(recipe, out, values["restart"], console)
