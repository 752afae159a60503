"""What every command shares: the parser that words its errors in prunekit's form,
the sparsity table, and the conversion of library errors to option names."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NoReturn

from rich.table import Table

from ..errors import InvalidParameterError
from ..measure.sparsity import SparsityReport
from ..validation import Param, add_arguments, cli_error

__all__ = ["Parser", "add_command", "as_cli_error", "print_error", "refuse_given", "report_table"]


class Parser(argparse.ArgumentParser):
    """``argparse`` with prunekit's error form: ``prunekit prune: error: --sparsity: expected ...``
    (argparse's own ``argument --sparsity:`` prefix dropped), usage first, exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message.removeprefix('argument ')}\n")


def add_command(sub: Any, name: str, params: Mapping[str, Param], func: Callable[..., int],
                **parser_kwargs: Any) -> argparse.ArgumentParser:
    """Register the subcommand ``name`` on ``sub`` (argparse subparsers): its options from the
    declared ``params``, run by ``func(args, console)``; ``parser_kwargs`` (``help``,
    ``description``) go to ``sub.add_parser``."""
    parser = sub.add_parser(name, **parser_kwargs)
    add_arguments(parser, params)
    parser.set_defaults(func=func)
    return parser


def print_error(prog: str, exc: BaseException) -> None:
    """One error line on stderr, in the same form as the parser's."""
    print(f"{prog}: error: {exc}", file=sys.stderr)


def as_cli_error(exc: InvalidParameterError, *tables: Mapping[str, Param]) -> InvalidParameterError:
    """``exc`` with a declared Python parameter renamed to its command-line option."""
    merged: dict[str, Param] = {}
    for table in tables:
        merged.update(table)
    return cli_error(exc, merged)


def refuse_given(args: argparse.Namespace, names: Iterable[str], table: Mapping[str, Param], why: str,
                 fix: str) -> None:
    """An error naming the first option of ``names`` given on the command line (they do not apply)."""
    for name in names:
        value = getattr(args, name, None)
        if value is not None:
            raise InvalidParameterError(table[name].cli_name or name, f"no {table[name].cli_name} {why}",
                                        value if not isinstance(value, list) or len(value) != 1 else value[0], fix)


def report_table(report: SparsityReport, title: str) -> Table:
    """Per-tensor sparsity, then the totals of the targets and of the whole model."""
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


def plain(value: Any) -> str:
    """A value as the command line shows it."""
    return " ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
