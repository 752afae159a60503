"""The report of a lottery run: ``report.json``, ``report.md``, ``report.html`` and
``plots/*.png`` in its run directory, and the same levels as a terminal table.

Built from the finished levels alone (:meth:`prunekit.lottery.LotteryRun.results`),
so a resumed or interrupted run reports what it has. The instability results in
the run directory's ``instability/`` (written by
:func:`prunekit.analysis.instability_analysis`) are included where there are any.

``report.json``::

    {"title": str, "created": str, "kind": "lottery", "run_dir": str,
     "config": LotteryConfig.to_dict(), "data": {"name": str, "train": int, "val": int, "test": int},
     "controls": [str], "levels": [LEVEL], "instability": [{"level": int, "sparsity": float,
     "start_iteration": int, "seeds": [int, int], "instability": float, "errors": [float]}],
     "plots": {key: path relative to the run directory}}
    LEVEL = {"level": int, "remaining": float, "sparsity": float, "accuracy": float, "loss": float,
             "early_stop_iteration": int, "early_stop_accuracy": float, "steps": int, "seconds": float,
             "controls": {control: {"accuracy": float, "early_stop_accuracy": float, "remaining": float,
                                    "seconds": float}}}
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich import box
from rich.table import Table as RichTable

from ..files import read_json_object
from ..lottery.config import LotteryConfig
from ..lottery.levels import LotteryRun
from ..measure import plots as P
from ..measure.report import Heading, Image, Para, Table, write_document

__all__ = ["PLOTS", "instability_summary", "level_rows", "lottery_report", "summary_table", "write_lottery_report"]

PLOTS = {"accuracy_vs_sparsity": "plots/accuracy_vs_sparsity.png", "instability": "plots/instability.png"}

#: what each reset means, for the report's text
RESET_TEXT = {
    "lottery": "reset to the initial weights θ₀ after each level (Frankle & Carbin 2019)",
    "rewind": "rewound to the weights θ_k of iteration k after each level (Frankle et al. 2020)",
    "lr_rewind": "weights kept, learning-rate schedule rewound to iteration k (Renda et al. 2020)",
    "finetune": "weights kept and fine-tuned at the final learning rate (Renda et al. 2020)",
    "reinit": "re-initialised at random after each level",
}


def _instability(run: LotteryRun, config: LotteryConfig, sparsity: Mapping[int, float]) -> list[dict[str, Any]]:
    """The instability results stored in the run directory (``instability/instability_LLL_A_B.json``),
    with the sparsity of their level (``sparsity``, else the level's target)."""
    rows = []
    for path in sorted((run.out / "instability").glob("instability_[0-9][0-9][0-9]_*.json")):
        value = read_json_object(path, then="it is left out of the report")
        if value is None or not isinstance(value.get("level"), int) or not isinstance(
                value.get("instability"), (int, float)):
            continue
        level = value["level"]
        rows.append({"level": level, "sparsity": sparsity.get(level, 1 - (1 - config.rate) ** level),
                     "start_iteration": value.get("start_iteration"), "seeds": value.get("seeds"),
                     "instability": float(value["instability"]), "errors": value.get("errors"),
                     "file": path.relative_to(run.out).as_posix()})
    return rows


def lottery_report(run: LotteryRun, data_name: str, title: str | None = None) -> dict[str, Any]:
    """The report dict of ``run``'s finished levels (see the module docstring)."""
    config = run.config
    levels = []
    for row in run.results():
        ticket = row["ticket"]
        controls = {name: {"accuracy": m["accuracy"], "early_stop_accuracy": m["early_stop_accuracy"],
                           "remaining": m["remaining"], "seconds": m["seconds"]}
                    for name, m in row.items() if name != "ticket" and m is not None}
        levels.append({"level": ticket["level"], "remaining": ticket["remaining"],
                       "sparsity": 1 - ticket["remaining"], "accuracy": ticket["accuracy"], "loss": ticket["loss"],
                       "early_stop_iteration": ticket["early_stop_iteration"],
                       "early_stop_accuracy": ticket["early_stop_accuracy"], "steps": ticket["steps"],
                       "seconds": ticket["seconds"], "controls": controls})
    instability = _instability(run, config, {lv["level"]: lv["sparsity"] for lv in levels})
    plots = {"accuracy_vs_sparsity": PLOTS["accuracy_vs_sparsity"]} if levels else {}
    if instability:
        plots["instability"] = PLOTS["instability"]
    return {
        "title": title or f"Lottery run: {config.model} on {data_name}",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "kind": "lottery", "run_dir": str(run.out), "config": config.to_dict(),
        "data": {"name": data_name, **run.data_sizes}, "controls": list(config.controls),
        "levels": levels, "instability": instability, "plots": plots,
    }


def _pct(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{100 * value:.2f}%"


def level_rows(report: Mapping[str, Any]) -> tuple[list[str], list[list[str]], list[bool]]:
    """The levels table (header, rows, which columns are numeric), for every renderer."""
    controls = report["controls"]
    instability: dict[int, float] = {}
    for r in report["instability"]:
        instability.setdefault(r["level"], r["instability"])  # the first pair of seeds of each level
    header = ["level", "remaining", "sparsity", "accuracy", "early stop", "early-stop accuracy",
              *(f"{c} accuracy" for c in controls), *(["instability (points)"] if instability else []), "seconds"]
    rows = []
    for lv in report["levels"]:
        ctrl = [_pct(lv["controls"][c]["accuracy"]) if c in lv["controls"] else "-" for c in controls]
        unstable = [f"{100 * instability[lv['level']]:.2f}" if lv["level"] in instability else "-"] \
            if instability else []
        rows.append([str(lv["level"]), _pct(lv["remaining"]), _pct(lv["sparsity"]), _pct(lv["accuracy"]),
                     f"{lv['early_stop_iteration']:,}", _pct(lv["early_stop_accuracy"]), *ctrl, *unstable,
                     f"{lv['seconds']:.1f}"])
    return header, rows, [True] * len(header)


def _setup(report: Mapping[str, Any]) -> str:
    c = report["config"]
    reset = RESET_TEXT.get(c["reset"], c["reset"])
    k = f", k = {c['rewind_step']:,}" if c["reset"] in ("rewind", "lr_rewind", "finetune") else ""
    output = c["output_rate"] if c["output_rate"] is not None else c["rate"] / 2
    data = report["data"]
    return (f"Model {c['model']}; data {data['name']} ({data['train']:,} training, {data['val'] or 0:,} held out "
            f"for the early stop, {data['test']:,} test samples). {c['levels']} level{'s' if c['levels'] != 1 else ''} pruning {c['rate']:g} of "
            f"the remaining weights each by magnitude ({c['scope']}; output layer {output:g}); weights {reset}{k}. "
            f"Each level trains T = {c['train_steps']:,} iterations ({c['optimizer']}, lr {c['lr']:g}, "
            f"lr schedule {c['lr_schedule']}, batch {c['batch_size']}), seed {c['seed']}. Created {report['created']}.")


def _blocks(report: Mapping[str, Any]) -> list[Any]:
    header, rows, numeric = level_rows(report)
    blocks: list[Any] = [Heading(1, report["title"]), Para(_setup(report)), Heading(2, "Levels", "levels"),
                         Table(header, rows, numeric)]
    if report["controls"]:
        blocks.append(Para("Controls train beside each level on the same data order: reinit keeps the mask with "
                           "new random weights, shuffle keeps the weights with the mask permuted per layer. A "
                           "ticket beats them where its accuracy is higher at the same sparsity.", note=True))
    blocks.append(Para("accuracy: test accuracy after the last iteration; early stop: the iteration of the lowest "
                       "held-out loss, and the test accuracy there; remaining: share of the prunable weights "
                       "kept."))
    if report["instability"]:
        blocks += [Heading(2, "Instability", "instability"), Table(
            ["level", "sparsity", "from iteration", "seeds", "instability (points)", "stable (< 2 points)"],
            [[str(r["level"]), _pct(r["sparsity"]), str(r["start_iteration"]), " ".join(map(str, r["seeds"] or ())),
              f"{100 * r['instability']:.2f}", "yes" if r["instability"] < 0.02 else "no"]
             for r in report["instability"]], [True, True, True, False, True, False]),
            Para("Two copies trained from θ_k with different data orders; instability = the largest test error "
                 "on the straight line between them minus the mean of their errors (Frankle et al. 2020).")]
    if report["plots"]:
        blocks.append(Heading(2, "Plots", "plots"))
        blocks.append(Image(report["plots"]["accuracy_vs_sparsity"],
                            "test accuracy against sparsity per level (ticket, early stop, controls)"))
        if "instability" in report["plots"]:
            blocks.append(Image(report["plots"]["instability"], "instability against sparsity"))
    return blocks


def _plot_jobs(report: Mapping[str, Any]) -> dict[str, Any]:
    levels = report["levels"]
    if not levels:
        return {}
    pruned = [lv for lv in levels if lv["level"] > 0]
    series: dict[str, list[tuple[float, float]]] = {  # the tickets from the dense level 0 on
        "ticket": [(lv["sparsity"], lv["accuracy"]) for lv in levels],
        "ticket (early stop)": [(lv["sparsity"], lv["early_stop_accuracy"]) for lv in levels],
    }
    for control in report["controls"]:
        points = [(lv["sparsity"], lv["controls"][control]["accuracy"]) for lv in pruned if control in lv["controls"]]
        if points:
            series[control] = points
    dense = levels[0]["accuracy"] if levels[0]["level"] == 0 else None
    reset = report["config"]["reset"]
    jobs = {PLOTS["accuracy_vs_sparsity"]: lambda p: P.plot_metric_vs_sparsity(
        series, p, dense=dense, metric_name="accuracy", higher_is_better=True,
        title=f"test accuracy against sparsity, reset {reset}")}
    if report["instability"]:
        points = [(r["sparsity"], 100 * r["instability"]) for r in report["instability"]]
        jobs[PLOTS["instability"]] = lambda p: P.plot_metric_vs_sparsity(
            {"instability": points}, p, metric_name="instability (error points)", higher_is_better=False,
            title="instability against sparsity")
    return jobs


def write_lottery_report(report: Mapping[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write ``report`` as ``report.json``, ``report.md``, ``report.html`` and ``plots/*.png``
    into ``out_dir`` (each file atomically); returns the paths written."""
    return write_document(out_dir, json.dumps(report, indent=2, ensure_ascii=False) + "\n", report["title"],
                          _blocks(report), _plot_jobs(report))


#: the terminal's shorter headers (the reports have the long ones)
_SHORT = {"early stop": "stop at", "early-stop accuracy": "accuracy there", "seconds": "s",
          "instability (points)": "instab."}


def summary_table(report: Mapping[str, Any]) -> RichTable:
    """The levels as a terminal table (shorter headers; a caption says what they mean)."""
    header, rows, numeric = level_rows(report)
    c = report["config"]
    k = f" k={c['rewind_step']}" if c["reset"] in ("rewind", "lr_rewind", "finetune") else ""
    table = RichTable(title=f"{report['title']} (reset {c['reset']}{k})", title_justify="left", box=box.SIMPLE_HEAD,
                      padding=(0, 1), pad_edge=False, collapse_padding=True)
    for name, is_number in zip(header, numeric):
        table.add_column(_SHORT.get(name, name.removesuffix(" accuracy")), justify="right" if is_number else "left",
                         overflow="fold")
    for row in rows:
        table.add_row(*row)
    controls = ", ".join(report["controls"])
    table.caption = ("accuracy: test accuracy after T iterations; stop at: the early-stop iteration (lowest "
                     "held-out loss) and the test accuracy there" + (f"; {controls}: the controls' accuracy"
                                                                     if controls else "")
                     + ("; instab.: instability, error points" if report["instability"] else "")
                     + "; s: seconds trained")
    table.caption_justify = "left"
    return table


def instability_summary(report: Mapping[str, Any]) -> Sequence[str]:
    """One line per instability result, for the terminal."""
    return [f"instability at level {r['level']} ({_pct(r['sparsity'])} sparse, from iteration "
            f"{r['start_iteration']}): {100 * r['instability']:.2f} points" for r in report["instability"]]
