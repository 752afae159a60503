"""``prunekit sparse``: a pruned checkpoint run with sparse kernels where they are faster (``prunekit.to_sparse``).

    prunekit sparse lenet5 --weights runs/lenet5/model.safetensors --out runs/lenet5_sparse --threads 2
    prunekit sparse gpt_tiny --weights W --input-shape 1,128 --kernel prunekit --kernel csr --out DIR

Each Linear (and 1×1 convolution) is timed dense against the sparse kernels on
the example input (the zoo model's shape at batch 1, or ``--input-shape``), and
the faster one is kept. The per-layer table and the end-to-end speedup are
printed; ``DIR/model.sparse.safetensors`` (``prunekit.execution.save_sparse_model``)
and ``DIR/report.json`` are written, and the saved file is loaded back and
checked against the converted model before the command succeeds.
"""

from __future__ import annotations

import argparse
import json
import numbers
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from ..errors import InvalidParameterError
from ..execution import KERNELS, load_sparse_model, save_sparse_model, to_sparse
from ..validation import (REQUIRED, SEED, AnyOf, Interval, Options, OutputDir, Param, PathLike, cli_values,
                          declare)
from ..zoo import create_model, list_models
from .command_reports import end_to_end_line, files_lines, rich_table, sparse_rows, write_sparse_report
from .common import add_command
from .export import load_pruned
from .progress_bars import working
from .shrink import SHAPE, example_input

__all__ = ["SPARSE_PARAMS", "add_sparse_parser"]

SPARSE_PARAMS = declare(
    Param("model", Options(list_models, "model", "prunekit list models"), REQUIRED,
          "the registered model the checkpoint was pruned from (see `prunekit list models`)", option="model"),
    Param("weights", PathLike("file"), REQUIRED, "the pruned checkpoint (masked, or shrunk then masked)",
          metavar="FILE"),
    Param("out", OutputDir(), REQUIRED, "folder for model.sparse.safetensors and report.json", metavar="DIR"),
    Param("input_shape", AnyOf(SHAPE, None), None, "the example input's shape, batch first: its rows (tokens x "
          "batch) decide which kernel wins (default: the zoo model's, at batch 1)", metavar="N,C,H,W"),
    Param("threads", AnyOf(Interval(numbers.Integral, 1, None, example=2), None), None,
          "threads for timing (default: torch's current count)", metavar="N"),
    Param("kernel", AnyOf(Options(KERNELS, "kernel"), None), None, "a kernel to time against dense (repeatable; "
          "default: every kernel that runs here, building prunekit's the first time)", repeat=True),
    Param("min_speedup", Interval(numbers.Real, 0, None, "neither", example=1.0), 1.0,
          "a kernel replaces a layer only where dense_ms / kernel_ms exceeds this", metavar="X"),
    Param("repeats", Interval(numbers.Integral, 1, None, example=20), 20, "interleaved timing rounds per layer",
          metavar="N"),
    Param("model_repeats", Interval(numbers.Integral, 0, None, example=10), 10,
          "interleaved end-to-end rounds (0 skips the end-to-end timing)", metavar="N"),
    Param("seed", SEED, 0, "seed for the model's initialisation and the example input"),
)


def add_sparse_parser(sub: Any) -> argparse.ArgumentParser:
    """Register the ``sparse`` subcommand on ``sub`` (argparse subparsers)."""
    return add_command(sub, "sparse", SPARSE_PARAMS, _cmd_sparse,
                       help="run a pruned checkpoint with sparse kernels where they are faster (to_sparse) and "
                       "save it",
                       description="Time each pruned Linear (and 1x1 convolution) dense against the sparse kernels "
                       "at the example input's shape, keep the faster, print the per-layer choices and the "
                       "end-to-end speedup, and save the converted model.")


def _cmd_sparse(args: argparse.Namespace, console: Console) -> int:
    v = cli_values(args, SPARSE_PARAMS)
    model, shrunk = load_pruned(v["model"], v["weights"], v["seed"])
    example = example_input(model, v["input_shape"], v["model"])
    with torch.no_grad():
        reference = model.eval()(example)
    with working("sparse-timing", f"each layer dense against the sparse kernels, {v['repeats']} rounds") as bars:
        conversion = to_sparse(model, example, kernels=tuple(v["kernel"]) if v["kernel"] else "auto",
                               threads=v["threads"], min_speedup=float(v["min_speedup"]), repeats=v["repeats"],
                               model_repeats=v["model_repeats"], progress=bars)
    title = f"{v['model']}: sparse kernels at input {tuple(example.shape)}, {conversion.threads} thread(s)"
    summary = conversion.to_dict()
    console.print(rich_table(sparse_rows(summary["layers"]), title))
    console.print(end_to_end_line(summary), highlight=False)
    out = Path(v["out"])
    out.mkdir(parents=True, exist_ok=True)
    path = out / "model.sparse.safetensors"
    save_sparse_model(conversion.model, path)
    fresh, _ = load_pruned(v["model"], v["weights"], v["seed"]) if shrunk else (create_model(v["model"]), False)
    with torch.no_grad():
        loaded = load_sparse_model(fresh, path).eval()(example)
    error = float((loaded - reference).abs().max()) if loaded.numel() else 0.0
    if not torch.allclose(loaded, reference, rtol=1e-4, atol=1e-4):
        raise InvalidParameterError("--out", "a saved model that reproduces the pruned model's outputs",
                                    f"<largest difference {error:.3g}>", "Fix: report this as a bug.")
    report = dict(conversion.to_dict(), model=v["model"], input_shape=list(example.shape), shrunk=shrunk,
                  saved_max_abs_error=error)
    written = write_sparse_report(out, report, json.dumps(report, indent=2, sort_keys=True), title)
    load = ("prunekit.load_shrunk(prunekit.create_model(...), WEIGHTS) then " if shrunk else
            f"prunekit.create_model({v['model']!r}) then ")
    console.print(f"saved {path}; load with {load}"
                  f"prunekit.execution.load_sparse_model(model, {str(path)!r})", highlight=False)
    for wrote in files_lines(written):
        console.print(wrote, highlight=False, soft_wrap=True)
    return 0
