"""The ``prunekit`` command line.

    prunekit prune MODEL --sparsity 0.8 [--criterion ...] [--structure ...] [--scope ...] --out DIR
    prunekit report CHECKPOINT [--all] [--json PATH]
    prunekit list {criteria,structures,models} [PATTERN]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Sequence

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
    from .measure.size import dense_state_dict
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
        with tempfile.TemporaryDirectory() as tmp:
            dense_path = Path(tmp) / "dense.pt"
            torch.save(dense_state_dict(model), dense_path)
            dense_bytes = dense_path.stat().st_size
        sparse_bytes = save_sparse(model, out / "model.safetensors", metadata={"model": args.model})
        report.extras.update({"dense_bytes": dense_bytes, "sparse_bytes": sparse_bytes})
        report.to_json(out / "report.json")
        console.print(
            f"saved {out / 'model.safetensors'}: {sparse_bytes:,} bytes "
            f"({sparse_bytes / dense_bytes:.3f}× the {dense_bytes:,} bytes of the dense fp32 state dict); "
            f"report in {out / 'report.json'}"
        )
    return 0


def _cmd_list(args: argparse.Namespace, console: Console) -> int:
    from .criteria import list_criteria
    from .structures import list_structures
    from .zoo import list_models

    lister = {"criteria": list_criteria, "structures": list_structures, "models": list_models}[args.kind]
    for name in lister(args.pattern):
        console.print(name)
    return 0


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
    p.add_argument("--scope", default="local", choices=["local", "global"])
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

    ls = sub.add_parser("list", help="list registered criteria, structures or models")
    ls.add_argument("kind", choices=["criteria", "structures", "models"])
    ls.add_argument("pattern", nargs="?", default="*", help="wildcard pattern")
    ls.set_defaults(func=_cmd_list)
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
