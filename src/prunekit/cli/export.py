"""``prunekit export``: a pruned checkpoint written for other runtimes, as ONNX or plain dense safetensors.

    prunekit export resnet20 --weights runs/r20/model.safetensors --out r20.onnx --latency
    prunekit export lenet5 --weights runs/lenet5/model.safetensors --format dense --out lenet5.dense.safetensors

``--weights`` is a masked checkpoint (``prunekit prune``, ``save_sparse``, a torch
state dict) or a shrunk one (``prunekit prune --shrink``, ``save_shrunk``). ONNX
files are checked in onnxruntime against the model before they are written
(``prunekit.export_onnx``); ``--latency`` also exports the unpruned architecture
and times both in onnxruntime. ``--format dense`` writes the effective weights,
zeros in place, under a plain model's names (``prunekit.save_dense``).
"""

from __future__ import annotations

import argparse
import numbers
import tempfile
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from ..errors import CheckpointError, InvalidParameterError
from ..export import export_onnx, onnx_latency, require_onnx, save_dense
from ..surgery.save import load_shrunk, read_history
from ..validation import REQUIRED, SEED, AnyOf, Flag, Interval, Options, Param, PathLike, cli_values, declare
from ..zoo import create_model, list_models
from .common import OutputFile, add_command, load_weights
from .shrink import SHAPE, example_input

__all__ = ["EXPORT_PARAMS", "add_export_parser", "load_pruned"]

EXPORT_PARAMS = declare(
    Param("model", Options(list_models, "model", "prunekit list models"), REQUIRED,
          "the registered model the checkpoint was pruned from (see `prunekit list models`)", option="model"),
    Param("weights", PathLike("file"), REQUIRED, "the pruned checkpoint: masked (prunekit prune) or shrunk "
          "(prunekit prune --shrink)", metavar="FILE"),
    Param("out", OutputFile("model.onnx"), REQUIRED, "the file to write (.onnx, or .safetensors with --format dense)",
          metavar="FILE"),
    Param("format", Options(("onnx", "dense"), "format"), "onnx", "onnx (checked in onnxruntime) or dense "
          "(plain safetensors, zeros in place, for masked checkpoints)"),
    Param("input_shape", AnyOf(SHAPE, None), None, "with --format onnx: the example input's shape, batch first "
          "(default: the zoo model's, at batch 1)", metavar="N,C,H,W"),
    Param("opset", AnyOf(Interval(numbers.Integral, 7, None, example=18), None), None,
          "with --format onnx: the ONNX opset (default: the exporter's)", metavar="N"),
    Param("dynamic_batch", Flag(), False, "with --format onnx: a dynamic first (batch) dimension"),
    Param("latency", Flag(), False, "with --format onnx: also export the unpruned architecture and time both "
          "in onnxruntime (interleaved medians)"),
    Param("threads", AnyOf(Interval(numbers.Integral, 1, None, example=2), None), None,
          "with --latency: onnxruntime's intra-op threads (default: its own)", metavar="N"),
    Param("repeats", Interval(numbers.Integral, 1, None, example=50), 50, "with --latency: timed rounds",
          metavar="N"),
    Param("seed", SEED, 0, "seed for the model's initialisation before the checkpoint is loaded"),
)

_ONNX_ONLY = ("input_shape", "opset", "dynamic_batch", "latency", "threads", "repeats")


def add_export_parser(sub: Any) -> argparse.ArgumentParser:
    """Register the ``export`` subcommand on ``sub`` (argparse subparsers)."""
    return add_command(sub, "export", EXPORT_PARAMS, _cmd_export,
                       help="write a pruned checkpoint for other runtimes: ONNX (checked in onnxruntime) or plain "
                       "dense safetensors",
                       description="Load a pruned checkpoint (masked or shrunk) into its zoo model and write it as "
                       "ONNX, checked in onnxruntime, or as plain dense safetensors (zeros in place) that a fresh "
                       "model loads with load_state_dict.")


def load_pruned(name: str, weights: Any, seed: int) -> tuple[nn.Module, bool]:
    """The zoo model ``name`` with the checkpoint ``weights`` loaded, and whether it is shrunk
    (a file of ``save_shrunk``, replayed by ``load_shrunk``) rather than masked."""
    torch.manual_seed(seed)
    model = create_model(name)
    try:
        read_history(weights)
    except CheckpointError:
        load_weights(model, weights, name)
        return model, False
    try:
        return load_shrunk(model, weights), True
    except (InvalidParameterError, CheckpointError) as exc:
        raise InvalidParameterError("--weights", f"a checkpoint shrunk from {name}", str(weights),
                                    f"Fix: name the model it was shrunk from ({' '.join(str(exc).split())}).") from None


def _cmd_export(args: argparse.Namespace, console: Console) -> int:
    v = cli_values(args, EXPORT_PARAMS)
    out = Path(v["out"])
    if out.is_dir():
        name = "model.onnx" if v["format"] == "onnx" else "model.dense.safetensors"
        raise InvalidParameterError("--out", "a file path, not a folder", str(out), f"Fix: e.g. --out {out / name}.")
    if v["format"] == "dense":
        for name in _ONNX_ONLY:
            param = EXPORT_PARAMS[name]
            if getattr(args, name, None) not in (None, False):
                raise InvalidParameterError(param.cli_name, f"no {param.cli_name} with --format dense",
                                            getattr(args, name), "Fix: drop it, or use --format onnx.")
        model, shrunk = load_pruned(v["model"], v["weights"], v["seed"])
        if shrunk:
            raise InvalidParameterError(
                "--format", "onnx for a shrunk checkpoint (its tensors no longer fit a fresh "
                f"{v['model']}, so a plain dense file could not be loaded into one)", "dense",
                "Fix: use --format onnx, or load it with prunekit.load_shrunk.")
        size = save_dense(model, out, metadata={"model": v["model"]})
        console.print(f"saved {out}: {size:,} bytes, plain dense safetensors (zeros in place); load with "
                      f"model.load_state_dict(safetensors.torch.load_file({str(out)!r}))", highlight=False)
        return 0
    require_onnx("prunekit export --format onnx")
    model, shrunk = load_pruned(v["model"], v["weights"], v["seed"])
    example = example_input(model, v["input_shape"], v["model"])
    result = export_onnx(model, example, out, opset=v["opset"], dynamic_batch=v["dynamic_batch"])
    table = Table(title=f"{v['model']} ({'shrunk' if shrunk else 'masked'}) exported to ONNX", title_justify="left")
    for column in ("file", "bytes", "inputs", "outputs", "max |onnx - torch|"):
        table.add_column(column, justify="right" if column == "bytes" else "left")
    table.add_row(str(out), f"{result.bytes:,}", ", ".join(result.inputs), ", ".join(result.outputs),
                  f"{result.max_abs_error:.3g}")
    console.print(table)
    if v["latency"]:
        with tempfile.TemporaryDirectory(prefix="prunekit-export-") as tmp:
            torch.manual_seed(v["seed"])
            dense_file = Path(tmp) / "dense.onnx"
            export_onnx(create_model(v["model"]), example, dense_file, opset=v["opset"])
            times = onnx_latency({"dense": dense_file, "pruned": out}, example, threads=v["threads"],
                                 repeats=v["repeats"])
        latency = Table(title="onnxruntime latency (median of interleaved runs)", title_justify="left")
        for column in ("dense ms", "pruned ms", "speedup"):
            latency.add_column(column, justify="right")
        latency.add_row(f"{times['dense']:.3f}", f"{times['pruned']:.3f}", f"{times['dense'] / times['pruned']:.2f}x")
        console.print(latency)
    return 0
