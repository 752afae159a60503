"""The ``prunekit`` command line.

    prunekit prune MODEL --sparsity 0.8 [--criterion ...] [--structure ...] [--scope ...] --out DIR
    prunekit report CHECKPOINT [--all] [--json PATH]
    prunekit list {criteria,structures,models} [PATTERN]
    prunekit run RECIPE.yaml --out DIR [--restart]
    prunekit demo [--out DIR] [--quick] [--restart]
    prunekit oneshot MODEL --text FILE [--method wanda|sparsegpt|magnitude] [--structure 2:4] (see prunekit.cli_oneshot)
    prunekit lottery MODEL --data NAME [--data-path DIR] --out DIR [--levels ...] (see prunekit.cli_lottery)
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from rich.console import Console
from rich.table import Table

from . import __version__
from .errors import PrunekitError
from .measure.sparsity import SparsityReport

__all__ = ["main", "build_parser"]


def _report_table(report: SparsityReport, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("tensor")
    table.add_column("shape")
    table.add_column("params", justify="right")
    table.add_column("non-zero", justify="right")
    table.add_column("sparsity", justify="right")
    table.add_column("state")
    for row in report.rows:
        table.add_row(
            row.name, "×".join(map(str, row.shape)), f"{row.params:,}", f"{row.nonzero:,}",
            f"{100 * row.sparsity:.2f}%", row.state,
        )
    table.add_section()
    table.add_row("total", "", f"{report.params:,}", f"{report.nonzero:,}", f"{100 * report.sparsity:.2f}%", "")
    table.add_row(
        "model (all parameters)", "", f"{report.model_params:,}", f"{report.model_nonzero:,}",
        f"{100 * report.model_sparsity:.2f}%", "",
    )
    return table


def _parse_sparsity(text: str) -> float | int:
    try:
        return int(text)
    except ValueError:
        return float(text)


def _cmd_report(args: argparse.Namespace, console: Console) -> int:
    from .io import load_state_dict_file
    from .measure.sparsity import sparsity_report_from_state_dict

    state_dict = load_state_dict_file(args.checkpoint)
    report = sparsity_report_from_state_dict(state_dict, all_tensors=args.all)
    report.extras["file_bytes"] = os.path.getsize(args.checkpoint)
    console.print(_report_table(report, f"{args.checkpoint} ({report.extras['file_bytes']:,} bytes on disk)"))
    if args.json:
        report.to_json(args.json)
        console.print(f"wrote {args.json}")
    return 0


def _cmd_prune(args: argparse.Namespace, console: Console) -> int:
    from .io import load_pruned_state_dict, load_state_dict_file, save_sparse
    from .measure.size import dense_bytes
    from .measure.sparsity import sparsity_report
    from .pruner import Pruner
    from .zoo import create_model

    torch.manual_seed(args.seed)
    model = create_model(args.model)
    if args.weights:
        load_pruned_state_dict(model, load_state_dict_file(args.weights))
    overrides = {}
    for item in args.override or []:
        pattern, _, value = item.rpartition("=")
        overrides[pattern] = _parse_sparsity(value)
    pruner = Pruner(
        model,
        criterion=args.criterion,
        structure=args.structure,
        scope=args.scope,
        include=args.include,
        exclude=args.exclude,
        params=args.params,
        overrides=overrides or None,
        mode=args.mode,
    )
    pruner.step(None if args.sparsity is None else _parse_sparsity(args.sparsity))
    report = sparsity_report(model)
    console.print(_report_table(report, f"{args.model} pruned: {pruner!r}"))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        dense = dense_bytes(model, dense_format="torch")
        sparse_bytes = save_sparse(model, out / "model.safetensors", metadata={"model": args.model})
        report.extras.update({"dense_bytes": dense, "sparse_bytes": sparse_bytes})
        report.to_json(out / "report.json")
        console.print(
            f"saved {out / 'model.safetensors'}: {sparse_bytes:,} bytes "
            f"({sparse_bytes / dense:.3f}× the {dense:,} bytes of the dense fp32 state dict); "
            f"report in {out / 'report.json'}"
        )
    return 0


def _cmd_list(args: argparse.Namespace, console: Console) -> int:
    from .scores import criterion_names as list_criteria
    from .data import list_datasets
    from .schedules import list_schedules
    from .structures import list_structures
    from .zoo import list_models

    lister = {
        "criteria": list_criteria,
        "structures": list_structures,
        "models": list_models,
        "datasets": list_datasets,
        "schedules": list_schedules,
    }[args.kind]
    for name in lister(args.pattern):
        console.print(name)
    return 0


def _progress_callback(progress: Any, console: Console) -> Callable[[Any], None]:
    """Drive two rich bars from :class:`prunekit.runner.StageProgress` events:
    all stages, and the training steps of the current one."""
    tasks: dict[str, Any] = {}

    def label(event: Any, what: str) -> str:
        return f"[{event.index + 1}/{event.count}] {event.stage}: {what}"

    def on_event(event: Any) -> None:
        if "stages" not in tasks:
            tasks["stages"] = progress.add_task("stages", total=event.count, loss="")
            tasks["stage"] = progress.add_task("", total=1, loss="", visible=False)
        stage = tasks["stage"]
        if event.status == "start":
            what = "training" if event.stage == "dense" else "pruning + fine-tuning"
            progress.reset(stage, total=max(event.total, 1), completed=0, description=label(event, what),
                           loss="", visible=True)
        elif event.status == "step":
            loss = "" if event.loss is None else f"loss {event.loss:.4f}"
            progress.update(stage, completed=event.step, loss=loss)
        elif event.status == "measure":
            progress.update(stage, description=label(event, "measuring"))
        elif event.status in ("done", "skipped"):
            progress.advance(tasks["stages"])
            if event.status == "skipped":
                progress.console.print(f"{event.stage}: finished before, reused ({event.seconds or 0:.1f} s then)")
            else:
                progress.update(stage, description=label(event, f"done in {event.seconds:.1f} s"))

    return on_event


def _results_table(report: dict[str, Any], runner: Any) -> Table:
    from rich import box

    metric = report["metric"]["name"]
    dense = report["dense"]
    short = {"accuracy": "acc", "perplexity": "ppl"}.get(metric, metric)
    table = Table(title=report["title"], title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False, collapse_padding=True,
                  caption=f"{short}: {metric} (Δ: vs dense, in points for accuracy); KiB: the compressed sparse file (dense "
                          f"safetensors: {dense['bytes_dense'] / 1024:,.0f} KiB); ms: median latency at batch "
                          f"{dense['latency_batch']}; s: seconds the stage took (* reused from an earlier start)",
                  caption_justify="left")
    for name in ("run", "sparsity", short, "Δ", "non-zeros", "KiB", "ms", "s"):
        table.add_column(name, justify="left" if name == "run" else "right", no_wrap=True)

    def value(v: float) -> str:
        return f"{100 * v:.2f}%" if metric == "accuracy" else f"{v:.4f}"

    def row(name: str, sparsity: float, m: dict[str, Any], delta: str) -> list[str]:
        seconds = runner.timings.get(name)
        latency = "-" if m["latency_ms"] is None else f"{m['latency_ms']:.3f}"
        return [name, f"{100 * sparsity:.3g}%", value(m["metric"]), delta, f"{m['nonzero']:,}",
                f"{m['bytes_compressed'] / 1024:,.0f}",
                latency, "-" if seconds is None else f"{seconds:.1f}{'*' if name in runner.skipped else ''}"]

    table.add_row(*row("dense", 1 - dense["nonzero"] / dense["params"], dense, ""))
    table.add_section()
    for run in report["runs"]:
        m = run["measures"]
        delta = m["metric"] - dense["metric"]
        table.add_row(*row(run["name"], run["sparsity"], m,
                           f"{100 * delta:+.2f}" if metric == "accuracy" else f"{delta:+.4f}"))
    return table


def _execute(recipe: Any, out: str, restart: bool, console: Console) -> int:
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .runner import Runner

    start = time.perf_counter()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[loss]}"), TimeElapsedColumn(), console=console) as progress:
        runner = Runner(recipe, out, restart=restart, progress=_progress_callback(progress, console))
        report = runner.run()
    wall = time.perf_counter() - start
    console.print(_results_table(report, runner))
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
    from .recipes import load_recipe

    return _execute(load_recipe(args.recipe), args.out, args.restart, console)


def quick_recipe(recipe: Any) -> Any:
    """The demo made small: fewer samples, one epoch, fewer latency repeats (a smoke test)."""
    import dataclasses

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
    from .recipes import example_recipe_path, load_recipe

    path = example_recipe_path("demo")
    recipe = load_recipe(path)
    if args.quick:
        recipe = quick_recipe(recipe)
    out = args.out or ("prunekit-demo-quick" if args.quick else "prunekit-demo")
    console.print(f"demo recipe: {path}{' (--quick: reduced)' if args.quick else ''}; output: {out}",
                  highlight=False)
    return _execute(recipe, out, args.restart, console)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prunekit",
        description="Prune PyTorch networks and measure what it buys.",
    )
    parser.add_argument("--version", action="version", version=f"prunekit {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("prune", help="prune a zoo model and save a compressed sparse checkpoint")
    p.add_argument("model", help="a registered model name (see `prunekit list models`)")
    p.add_argument("--weights", help="a checkpoint to load first (safetensors or torch state dict)")
    p.add_argument("--sparsity", help="fraction pruned afterwards (0.8) or a count of units (int)")
    p.add_argument("--criterion", default="magnitude", help="criterion spec, e.g. magnitude, l2, lnorm:3, random")
    p.add_argument("--structure", default="element", help="element, 2:4, block:4x4, kernel, channel, channel:1")
    p.add_argument("--scope", default="local", choices=["local", "global", "lamp", "erk"])
    p.add_argument("--mode", default="reparam", choices=["reparam", "inplace"])
    p.add_argument("--include", action="append", help="glob or re:<regex> of tensors to prune (repeatable)")
    p.add_argument("--exclude", action="append", help="glob or re:<regex> of tensors to skip (repeatable)")
    p.add_argument("--params", action="append", help="parameter names to prune (default weight; repeatable)")
    p.add_argument("--override", action="append", help="PATTERN=SPARSITY, pruned locally at its own level")
    p.add_argument("--seed", type=int, default=0, help="seed for the model's initialisation and random criteria")
    p.add_argument("--out", help="directory for model.safetensors and report.json")
    p.set_defaults(func=_cmd_prune)

    r = sub.add_parser("report", help="sparsity table of a checkpoint")
    r.add_argument("checkpoint", help="prunekit sparse safetensors, plain safetensors, or a torch state dict")
    r.add_argument("--all", action="store_true", help="include biases, norms and other tensors")
    r.add_argument("--json", help="also write the report as JSON to this path")
    r.set_defaults(func=_cmd_report)

    ls = sub.add_parser("list", help="list registered criteria, structures, models, datasets or schedules")
    ls.add_argument("kind", choices=["criteria", "structures", "models", "datasets", "schedules"])
    ls.add_argument("pattern", nargs="?", default="*", help="wildcard pattern")
    ls.set_defaults(func=_cmd_list)

    run = sub.add_parser("run", help="run a YAML recipe (dense model, pruners, fine-tuning, report); resumable")
    run.add_argument("recipe", help="the recipe file (see prunekit/recipe_examples/demo.yaml)")
    run.add_argument("--out", required=True, help="output folder; run again with the same folder to resume")
    run.add_argument("--restart", action="store_true", help="discard earlier results in --out and start over")
    run.set_defaults(func=_cmd_run)

    demo = sub.add_parser("demo", help="train LeNet-5 on the embedded MNIST subset and compare pruning methods")
    demo.add_argument("--out", help="output folder (default prunekit-demo, or prunekit-demo-quick)")
    demo.add_argument("--quick", action="store_true", help="a small, fast version (fewer samples, one epoch)")
    demo.add_argument("--restart", action="store_true", help="discard earlier results in --out")
    demo.set_defaults(func=_cmd_demo)

    from .cli_lottery import add_lottery_parser

    add_lottery_parser(sub)

    from .cli_oneshot import add_oneshot_parser

    add_oneshot_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "prune" and args.params is None:
        args.params = ["weight"]
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    console = Console()
    try:
        return args.func(args, console)
    except PrunekitError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        return 2


if __name__ == "__main__":
    sys.exit(main())
