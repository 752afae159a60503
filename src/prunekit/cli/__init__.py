"""The ``prunekit`` command line.

    prunekit prune MODEL --sparsity 0.8 [--criterion ...] [--structure ...] [--scope ...] --out DIR
    prunekit prune MODEL --structure channel --macs-target 0.5 --shrink --out DIR
    prunekit report CHECKPOINT [--all] [--json PATH]
    prunekit list {scores,criteria,structures,models,datasets,schedules} [PATTERN] [--unit-space SPACE]
    prunekit run RECIPE.yaml --out DIR [--restart]
    prunekit demo [--out DIR] [--quick] [--restart]
    prunekit oneshot MODEL --text FILE [--method wanda|sparsegpt|magnitude] [--structure 2:4]
    prunekit lottery MODEL --data NAME [--data-path DIR] --out DIR [--levels ...]
    prunekit export MODEL --weights FILE --out FILE [--format onnx|dense] [--latency]
    prunekit sparse MODEL --weights FILE --out DIR [--threads N] [--input-shape SHAPE] [--kernel K]

Every option is declared once with :mod:`prunekit.validation` (the tables
``PRUNE_PARAMS``/``STRUCTURAL_PARAMS`` of :mod:`prunekit.params`, and each
command's own); a bad value exits with status 2 and one line
``prunekit <command>: error: --option: expected ..., got .... Fix: ...`` on
stderr. A library error about a declared parameter is worded with its option.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from rich.console import Console

from .. import __version__
from ..errors import InvalidParameterError, PrunekitError
from ..params import PRUNE_PARAMS, STRUCTURAL_PARAMS
from .common import Parser, as_cli_error, print_error
from .export import EXPORT_PARAMS, add_export_parser
from .inspect import LIST_PARAMS, REPORT_PARAMS, add_list_parser, add_report_parser
from .lottery import LOTTERY_ALIASES, LOTTERY_PARAMS, add_lottery_parser
from .oneshot import ONESHOT_PARAMS, add_oneshot_parser
from .prune import CLI_PARAMS, add_prune_parser
from .sparse import SPARSE_PARAMS, add_sparse_parser
from .run import DEMO_PARAMS, RUN_PARAMS, add_demo_parser, add_run_parser, quick_recipe

__all__ = ["build_parser", "main", "quick_recipe"]

#: per command, the declarations whose Python names an error may carry (renamed to options)
_DECLARED = {
    "prune": (PRUNE_PARAMS, STRUCTURAL_PARAMS, CLI_PARAMS),
    "report": (REPORT_PARAMS,),
    "list": (LIST_PARAMS,),
    "run": (RUN_PARAMS,),
    "demo": (DEMO_PARAMS,),
    "oneshot": (ONESHOT_PARAMS,),
    "lottery": (LOTTERY_PARAMS,),
    "export": (EXPORT_PARAMS,),
    "sparse": (SPARSE_PARAMS,),
}

#: per command, the library's other names for its options' values (see :func:`.common.as_cli_error`)
_ALIASES = {
    "lottery": LOTTERY_ALIASES,
}


def build_parser() -> Parser:
    """The ``prunekit`` parser with every subcommand."""
    parser = Parser(prog="prunekit", description="Prune PyTorch networks and measure what it buys.")
    parser.add_argument("--version", action="version", version=f"prunekit {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_prune_parser(sub)
    add_report_parser(sub)
    add_list_parser(sub)
    add_run_parser(sub)
    add_demo_parser(sub)
    add_lottery_parser(sub)
    add_oneshot_parser(sub)
    add_export_parser(sub)
    add_sparse_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status (0, or 2 for bad input and refused requests)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or an argument error already printed
        return exc.code if isinstance(exc.code, int) else 2
    if args.command is None:
        parser.print_help()
        return 0
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    console = Console()
    try:
        return args.func(args, console)
    except InvalidParameterError as exc:
        print_error(f"prunekit {args.command}", as_cli_error(exc, *_DECLARED[args.command],
                                                                aliases=_ALIASES.get(args.command)))
        return 2
    except PrunekitError as exc:
        print_error(f"prunekit {args.command}", exc)
        return 2
