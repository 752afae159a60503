"""What every command shares: the parser that words its errors in prunekit's form,
the sparsity table, and the conversion of library errors to option names."""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path
from typing import Any, NoReturn

from rich.table import Table

import torch

from ..data.text import read_text
from ..errors import CheckpointError, InvalidParameterError
from ..io import load_pruned_state_dict, load_state_dict_file
from ..targets import logical_tensors
from ..measure.sparsity import SparsityReport
from ..validation import Flag, Param, PathLike, add_arguments, cli_error

__all__ = ["ExistingPath", "OutputFile", "Parser", "add_command", "as_cli_error", "load_weights", "print_error", "read_text_option", "refuse_given", "report_table"]


class OutputFile(PathLike):
    """A file to write: new, or an existing file (replaced), but not a folder."""

    def __init__(self, example: str = "report.json") -> None:
        super().__init__(None)
        self.example = example

    def accepts(self, value: Any) -> bool:
        return super().accepts(value) and not Path(value).is_dir()

    def describe(self) -> str:
        return "a file to write (new or existing), not a folder"

    def fix(self, value: Any, name: str) -> str | None:
        if isinstance(value, (str, os.PathLike)) and Path(value).is_dir():
            return f"Fix: {str(value)!r} is a folder; name a file in it, e.g. {str(Path(value) / self.example)!r}."
        return None


class ExistingPath(PathLike):
    """An existing file or folder (a data set reads either, as its kind needs)."""

    def __init__(self) -> None:
        super().__init__(None)

    def accepts(self, value: Any) -> bool:
        return super().accepts(value) and Path(value).exists()

    def describe(self) -> str:
        return "an existing file or folder"

    def fix(self, value: Any, name: str) -> str | None:
        return f"Fix: check the path (the current folder is {os.getcwd()})."


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


def load_weights(model: torch.nn.Module, path: Any, model_name: str, option: str = "--weights") -> None:
    """Load the checkpoint ``path`` into the freshly built ``model``, after checking that it
    reads and that its tensors are the model's (names and shapes); else an error naming ``option``."""
    try:
        state = load_state_dict_file(path)
    except CheckpointError as exc:
        reason = str(exc)
        raise InvalidParameterError(option, "a safetensors or torch state-dict file", str(path),
                                    reason if "Fix:" in reason else f"{reason}. Fix: pass a checkpoint saved by "
                                    "prunekit or torch.") from None
    have = {name: tuple(tensor.shape) for name, (_state, tensor, _mask) in logical_tensors(state).items()}
    want = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    # BatchNorm fills a missing num_batches_tracked itself (checkpoints of older torch lack it)
    missing = sorted(n for n in set(want) - set(have) if not n.endswith("num_batches_tracked"))
    unexpected = sorted(set(have) - set(want))
    resized = sorted(n for n in set(want) & set(have) if want[n] != have[n])
    if missing or unexpected or resized:
        parts = [f"{len(v)} {what}, e.g. {v[0]}" + (f" {have[v[0]]} for {want[v[0]]}" if what == "of another shape"
                                                    else "")
                 for what, v in (("missing", missing), ("unexpected", unexpected), ("of another shape", resized))
                 if v]
        raise InvalidParameterError(
            option, f"a checkpoint of {model_name} ({len(want)} tensors)", f"<{path}: tensors {'; '.join(parts)}>",
            f"Fix: pass weights saved from {model_name}, or name the model they were saved from.")
    load_pruned_state_dict(model, state)


def read_text_option(path: Any, option: str = "--text") -> str:
    """The UTF-8 text file ``path`` given as ``option``; its errors name the option."""
    try:
        return read_text(path)
    except InvalidParameterError as exc:
        raise InvalidParameterError(option, exc.expected, exc.got, exc.fix) from None


def print_error(prog: str, exc: BaseException) -> None:
    """One error line on stderr, in the same form as the parser's (a message that spans
    lines, such as one quoting torch, is joined into one)."""
    print(f"{prog}: error: {' '.join(str(exc).split())}", file=sys.stderr)


def as_cli_error(exc: InvalidParameterError, *tables: Mapping[str, Param],
                 aliases: Mapping[str, str] | None = None) -> InvalidParameterError:
    """``exc`` worded for the command line: a declared Python parameter renamed to its option
    (``macs_target`` -> ``--macs-target``), in the parameter itself and in the expected form and
    the fix (``macs_target=0.5`` -> ``--macs-target 0.5``); a parameter that is no option keeps
    its name, but the options in its text are still worded so. ``aliases`` maps the library's
    other names for an option's value to the declared name (``{"path": "data_path"}``: the
    data set's folder is ``create_dataset(path=...)``, given as ``--data-path``)."""
    merged: dict[str, Param] = {}
    for table in tables:
        merged.update(table)
    aliases = dict(aliases or {})
    names = {p.name: p.cli_name for p in merged.values() if p.cli_name and p.cli_name.startswith("-")}
    names.update({alias: names[name] for alias, name in aliases.items() if name in names})
    param = aliases.get(exc.param, exc.param)
    renamed = cli_error(InvalidParameterError(param, exc.expected, exc.got, exc.fix), merged)
    flags = {name for name, p in merged.items() if isinstance(p.constraint, Flag)}
    flags.update(alias for alias, name in aliases.items() if name in flags)
    got = renamed.got
    if isinstance(got, str) and got.startswith("<"):  # a description, e.g. <nothing for include=['x']>
        got = _words(got, names, flags)
    return InvalidParameterError(renamed.param, _words(renamed.expected, names, flags), got,
                                 _words(renamed.fix, names, flags))


def _words(text: str, names: Mapping[str, str], flags: Collection[str] = ()) -> str:
    """``text`` with ``name=`` written ``--option ``, a switch's ``name=True`` written ``--option``,
    and a snake_case ``name`` written ``--option``."""
    if not text:
        return text
    for name, option in names.items():
        if name in flags:
            text = re.sub(rf"(?<![\w-]){re.escape(name)}=True\b", option, text)
        text = re.sub(rf"(?<![\w-]){re.escape(name)}=", f"{option} ", text)
        if "_" in name:
            text = re.sub(rf"(?<![\w-]){re.escape(name)}\b", option, text)
    return text


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
