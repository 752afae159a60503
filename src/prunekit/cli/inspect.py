"""``prunekit report`` (the sparsity table of a checkpoint) and ``prunekit list`` (what is registered).

    prunekit report runs/lenet5/model.safetensors --all --json report.json
    prunekit list models 'resnet*'
    prunekit list scores --unit-space group
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table

from ..scores import criterion_names as list_criteria
from ..data import list_datasets
from ..io import load_state_dict_file
from ..measure.sparsity import sparsity_report_from_state_dict
from ..schedules import list_schedules
from ..scores import SCORES, UNIT_SPACES, ScoreEntry
from ..masks import list_realisations
from ..structures import list_structures
from ..validation import (
    AnyOf,
    Flag,
    Options,
    Param,
    PathLike,
    Strings,
    cli_values,
    declare,
)
from ..zoo import list_models
from .common import OutputFile, add_command, refuse_given, report_table

__all__ = ["LISTERS", "LIST_PARAMS", "REPORT_PARAMS", "add_list_parser", "add_report_parser", "scores_table"]

#: ``prunekit list KIND``: the registry listing of each kind (``scores`` is a table of its own).
LISTERS: dict[str, Callable[[str], list[str]]] = {
    "criteria": list_criteria,
    "structures": list_structures,
    "realisations": list_realisations,
    "models": list_models,
    "datasets": list_datasets,
    "schedules": list_schedules,
}

REPORT_PARAMS = declare(
    Param("checkpoint", PathLike("file"), help="prunekit sparse safetensors, plain safetensors, or a torch state "
          "dict", option="checkpoint"),
    Param("all", Flag(), False, "include biases, norms and other tensors"),
    Param("json", AnyOf(OutputFile(), None), None, "also write the report as JSON to this path", metavar="PATH"),
)

LIST_PARAMS = declare(
    Param("kind", Options(("scores", *LISTERS), "kind"), help="what to list", option="kind"),
    Param("pattern", Strings("a wildcard pattern"), "*", "wildcard pattern", option="pattern"),
    Param("unit_space", AnyOf(Options(UNIT_SPACES, "unit space"), None), None,
          "with scores: only those serving this unit space", metavar="SPACE"),
)


def add_report_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``report`` on ``sub`` (argparse subparsers)."""
    return add_command(sub, "report", REPORT_PARAMS, _cmd_report,
                       help="sparsity table of a checkpoint")


def add_list_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``list`` on ``sub`` (argparse subparsers)."""
    return add_command(sub, "list", LIST_PARAMS, _cmd_list,
                       help="list registered scores, criteria, structures, models, datasets or schedules")


def _cmd_report(args: argparse.Namespace, console: Console) -> int:
    values = cli_values(args, REPORT_PARAMS)
    path = values["checkpoint"]
    state_dict = load_state_dict_file(path)
    report = sparsity_report_from_state_dict(state_dict, all_tensors=values["all"])
    report.extras["file_bytes"] = os.path.getsize(path)
    console.print(report_table(report, f"{path} ({report.extras['file_bytes']:,} bytes on disk)"))
    if values["json"]:
        report.to_json(values["json"])
        console.print(f"wrote {values['json']}", highlight=False)
    return 0


def _needs(entry: ScoreEntry) -> str:
    needs = [entry.needs[s] for s in entry.unit_spaces]
    if len(set(needs)) == 1:
        return needs[0]
    return ", ".join(f"{s}: {n}" for s, n in zip(entry.unit_spaces, needs))


def scores_table(entries: list[ScoreEntry], title: str) -> Table:
    """One row per registered score: name, aliases, unit spaces, what it needs, summary."""
    table = Table(title=title, title_justify="left")
    for column in ("name", "aliases", "unit spaces", "needs", "summary"):
        table.add_column(column)
    for e in entries:
        table.add_row(e.name, ", ".join(e.aliases), ", ".join(e.unit_spaces), _needs(e), e.summary)
    return table


def _cmd_list(args: argparse.Namespace, console: Console) -> int:
    values = cli_values(args, LIST_PARAMS)
    if values["kind"] == "scores":
        entries = SCORES.entries(values["pattern"], values["unit_space"])
        where = f" for the {values['unit_space']} unit space" if values["unit_space"] else ""
        console.print(scores_table(entries, f"{len(entries)} registered scores{where}"))
        return 0
    refuse_given(args, ("unit_space",), LIST_PARAMS, f"with `list {values['kind']}`", "Fix: drop it (only "
                 "`prunekit list scores` is by unit space).")
    for name in LISTERS[values["kind"]](values["pattern"]):
        console.print(name, highlight=False)
    return 0
