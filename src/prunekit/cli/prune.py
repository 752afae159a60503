"""``prunekit prune``: prune a zoo model with masks and save a compressed sparse checkpoint,
or, with ``--shrink``, remove channels, attention heads or MLP neurons physically and save
the smaller model.

    prunekit prune lenet5 --sparsity 0.8 --scope global --out runs/lenet5
    prunekit prune lenet5 --count 2 --structure channel --out runs/two_channels
    prunekit prune lenet5 --weights runs/lenet5/model.safetensors --amount 0.5 --out runs/lenet5_more
    prunekit prune resnet20 --weights W --structure channel --macs-target 0.5 --shrink --out runs/r20
    prunekit prune gpt_tiny --structure head --sparsity 0.5 --shrink --out runs/gpt_heads
    prunekit prune gpt_tiny --weights W --structure neuron --sparsity 0.5 --criterion gradient \
        --text input.txt --shrink --out runs/gpt_mlp

Every option is declared once (:data:`prunekit.params.PRUNE_PARAMS`,
:data:`prunekit.params.STRUCTURAL_PARAMS` and :data:`CLI_PARAMS` below); a bad
value exits with status 2 and an error naming the option.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import numbers
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from ..errors import InvalidParameterError
from ..export import save_dense
from ..io import save_sparse
from ..measure.size import dense_bytes
from ..measure.sparsity import sparsity_report
from ..params import COUNT, HEADS_PARAMS, PRUNE_PARAMS, STRUCTURAL_PARAMS
from ..pruner import Pruner
from ..structures import NM, create_structure
from ..targets import check_pattern
from ..validation import (
    REQUIRED,
    AnyOf,
    Constraint,
    Flag,
    Fraction,
    Interval,
    Options,
    OutputDir,
    Param,
    PathLike,
    SEED,
    Strings,
    cli_values,
    declare,
    validate,
)
from ..zoo import create_model, list_models
from .command_reports import files_lines, write_prune_report
from .common import add_command, as_cli_error, load_weights, refuse_given, report_table
from .shrink import SHAPE, UNIT_STRUCTURES, run_shrink
from .shrink_units import run_unit_shrink

__all__ = ["CLI_PARAMS", "add_prune_parser"]

log = logging.getLogger(__name__)


class Override(Constraint):
    """``PATTERN=SPARSITY``: tensors matching PATTERN pruned to their own fraction (written with a decimal point)."""

    def accepts(self, value: Any) -> bool:
        return isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str)

    def describe(self) -> str:
        return "PATTERN=SPARSITY, e.g. 'fc3.*=0.5'"

    def from_text(self, text: str, name: str) -> Any:
        pattern, sep, value = text.rpartition("=")
        if not sep or not pattern:
            raise InvalidParameterError(name, self.describe(), text, f"Fix: e.g. {name} 'fc3.*=0.5'.")
        check_pattern(pattern, name)
        try:
            return pattern, Fraction().from_text(value, name)
        except InvalidParameterError as exc:  # the fix gives the whole PATTERN=SPARSITY
            fix = (exc.fix or "").replace(f"{name} 0.5", f"{name} '{pattern}=0.5'") or None
            raise InvalidParameterError(name, exc.expected, exc.got, fix) from None


def _text(param: Param) -> Param:
    """``param`` read as text on the command line, checked after parsing (its table depends on --shrink)."""
    return dataclasses.replace(param, constraint=Strings(param.constraint.describe()))


CLI_PARAMS = declare(
    Param("model", Options(list_models, "model", "prunekit list models"), REQUIRED,
          "a registered model name (see `prunekit list models`)", option="model"),
    Param("weights", AnyOf(PathLike("file"), None), None, "a checkpoint to load first (safetensors or torch state "
          "dict)", metavar="FILE"),
    PRUNE_PARAMS["sparsity"],
    Param("count", AnyOf(COUNT, None), None, "instead of --sparsity: the number of units pruned per tensor",
          metavar="N"),
    dataclasses.replace(PRUNE_PARAMS["amount"], option="", metavar="FRACTION",
                        help="instead of --sparsity: torch's relative amount, the fraction of the units "
                             "(entries, channels, kernels, blocks) still unpruned after --weights' masks that is "
                             "pruned now, as torch's l1_unstructured / ln_structured count"),
    dataclasses.replace(_text(PRUNE_PARAMS["criterion"]), help="importance score of each weight or unit (see "
                        "`prunekit list criteria`); with --shrink, of each channel group (l1 = magnitude, l2, "
                        "slimming, random)"),
    _text(PRUNE_PARAMS["structure"]),
    _text(PRUNE_PARAMS["scope"]),
    PRUNE_PARAMS["normalize"],
    PRUNE_PARAMS["min_keep"],
    PRUNE_PARAMS["mode"],
    PRUNE_PARAMS["include"],
    PRUNE_PARAMS["exclude"],
    dataclasses.replace(PRUNE_PARAMS["params"], cli_default=["weight"]),
    Param("override", AnyOf(Override(), None), None, "PATTERN=SPARSITY, pruned locally at its own level (repeatable)",
          repeat=True, metavar="PATTERN=SPARSITY"),
    Param("seed", SEED, 0,
          "seed for the model's initialisation and random criteria"),
    Param("out", AnyOf(OutputDir(), None), None, "directory for model.safetensors and report.json", metavar="DIR"),
    Param("format", Options(("compressed", "dense"), "format"), "compressed", "how model.safetensors is written: "
          "compressed (prunekit's sparse format, masks kept) or dense (plain safetensors, zeros in place, names of "
          "an unpruned model: load_state_dict loads it without prunekit)"),
    Param("shrink", Flag(), False, "remove units physically and save the smaller model: channels "
          "(--structure channel, structural_prune), attention heads (head, prune_heads) or MLP hidden neurons "
          "(neuron, prune_mlp_neurons)"),
    STRUCTURAL_PARAMS["macs_target"],
    STRUCTURAL_PARAMS["latency_target"],
    dataclasses.replace(STRUCTURAL_PARAMS["round_to"], help="channels kept per group (--structure head|neuron: "
                        "heads x head size / MLP neurons kept per layer) rounded to a multiple of this"),
    STRUCTURAL_PARAMS["max_layer_ratio"],
    STRUCTURAL_PARAMS["allocation"],
    STRUCTURAL_PARAMS["approximate"],
    Param("input_shape", AnyOf(SHAPE, None), None, "with --shrink: the example input's shape, batch first "
          "(default: the zoo model's, at batch 1)", metavar="N,C,H,W"),
    Param("latency_repeats", Interval(numbers.Integral, 1, None, example=50), 50,
          "with --shrink: timed forwards for the latency median", metavar="N"),
    Param("latency_warmup", Interval(numbers.Integral, 0, None, example=10), 10,
          "with --shrink: untimed forwards first", metavar="N"),
    Param("text", AnyOf(PathLike("file"), None), None, "with --structure head|neuron --shrink: a UTF-8 text whose "
          "characters are the language model's tokens, data for --criterion gradient", metavar="FILE"),
    Param("samples", Interval(numbers.Integral, 1, None, example=16), 16,
          "with --text: seeded windows of the model's input length taken from it", metavar="N"),
    dataclasses.replace(HEADS_PARAMS["uniform"], help="with --structure head|neuron --shrink: the same number of "
                        "heads / MLP neurons kept in every layer (configs with one value for all layers)"),
)

#: options that only mean something with --shrink, and those that only mean something without it
SHRINK_ONLY = ("macs_target", "latency_target", "round_to", "max_layer_ratio", "allocation", "approximate",
               "input_shape", "latency_repeats", "latency_warmup")
MASK_ONLY = ("count", "amount", "normalize", "min_keep", "mode", "include", "params", "override", "format")
#: options of channel removal only, and those of head / neuron removal only
CHANNEL_ONLY = ("macs_target", "latency_target", "max_layer_ratio", "allocation", "exclude", "approximate")
UNIT_ONLY = ("text", "samples", "uniform")


def add_prune_parser(sub: Any) -> argparse.ArgumentParser:
    """Register the ``prune`` subcommand on ``sub`` (argparse subparsers)."""
    return add_command(sub, "prune", CLI_PARAMS, _cmd_prune,
                       help="prune a zoo model and save a compressed sparse checkpoint (or, with "
                       "--shrink, a physically smaller model: channels, heads or MLP neurons)",
                       description="Prune a zoo model. Without --shrink: masks, saved as a compressed sparse "
                       "checkpoint. With --shrink: channels (--structure channel), attention heads "
                       "(head) or MLP hidden neurons (neuron) removed, the smaller model saved with "
                       "save_shrunk, and dense vs shrunk measured side by side.")


def _load(values: dict[str, Any]) -> torch.nn.Module:
    torch.manual_seed(values["seed"])
    model = create_model(values["model"])
    if values["weights"]:
        load_weights(model, values["weights"], values["model"])
    else:
        log.warning("no --weights: pruning %s's random initialisation (seed %d); its scores mean nothing "
                    "for a trained model. Add --weights FILE to prune trained weights.",
                    values["model"], values["seed"])
    return model


def _check_one_level(values: dict[str, Any]) -> None:
    """At most one of --sparsity (absolute), --count (units per tensor) and --amount (torch's relative)."""
    given = [option for option, name in (("--sparsity", "sparsity"), ("--count", "count"), ("--amount", "amount"))
             if values[name] is not None]
    if len(given) > 1:
        second = given[1]
        raise InvalidParameterError(
            second, f"one of --sparsity, --count and --amount, not {' and '.join(given)}",
            values[second.removeprefix("--")],
            "Fix: drop one: --sparsity 0.5 leaves half of each tensor zero, --count 2 prunes 2 units of each, "
            "--amount 0.5 prunes half of the entries still unpruned (torch's relative amount).")


def _cmd_prune(args: argparse.Namespace, console: Console) -> int:
    values = cli_values(args, CLI_PARAMS)
    if values["shrink"]:
        refuse_given(args, MASK_ONLY, CLI_PARAMS, "with --shrink (units are removed, not masked)",
                     "Fix: drop it, or drop --shrink to prune with masks.")
        if values["structure"] in UNIT_STRUCTURES:
            refuse_given(args, CHANNEL_ONLY, CLI_PARAMS, f"with --structure {values['structure']} --shrink "
                         "(a fraction --sparsity of the units is removed)",
                         "Fix: drop it, or use --structure channel to remove channels.")
            return run_unit_shrink(values, _load(values), console)
        refuse_given(args, UNIT_ONLY, CLI_PARAMS, "without --structure head or neuron",
                     "Fix: drop it (--text, --samples and --uniform are for heads and MLP neurons).")
        if args.allocation is None and values["latency_target"] is not None:
            values["allocation"] = "latency"  # a latency target is met by the latency allocation
        return run_shrink(values, _load(values), console)
    refuse_given(args, SHRINK_ONLY + UNIT_ONLY, CLI_PARAMS, "without --shrink",
                 "Fix: add --shrink (and --structure channel, head or neuron) to remove units physically.")
    _check_one_level(values)
    sparsity = values["count"] if values["count"] is not None else values["sparsity"]
    amount = values["amount"]
    if amount is not None and values["override"]:
        pattern, level = values["override"][0]
        raise InvalidParameterError("--override", "no --override with --amount (an override is an absolute level)",
                                    f"{pattern}={level}", "Fix: give --sparsity with --override, or drop --override.")
    names = ("criterion", "structure", "scope", "normalize", "min_keep", "mode", "include", "exclude", "params")
    try:
        options = validate(PRUNE_PARAMS, {n: values[n] for n in names})
    except InvalidParameterError as exc:
        raise as_cli_error(exc, PRUNE_PARAMS) from None
    overrides = dict(values["override"] or [])
    if sparsity is None and amount is None and not overrides \
            and not isinstance(create_structure(options["structure"]), NM):
        raise InvalidParameterError("--sparsity", f"a fraction, --count or --amount for --structure "
                                    f"{options['structure']}", None,
                                    "Fix: add --sparsity 0.5 (half of each tensor), --count 2 (2 units of each) or "
                                    "--amount 0.5 (half of what remains unpruned); N:M structures such as 2:4 need "
                                    "none of them.")
    model = _load(values)
    try:
        pruner = Pruner(model, overrides=overrides or None, **options)
        pruner.step(sparsity, amount=amount)
    except InvalidParameterError as exc:
        if exc.param == "targets":  # the selection comes from these options: name the first one given
            given = next((n for n in ("include", "exclude", "params") if getattr(args, n, None) is not None), "include")
            exc = InvalidParameterError(given, exc.expected, exc.got, exc.fix)
        raise as_cli_error(exc, PRUNE_PARAMS, CLI_PARAMS) from None
    report = sparsity_report(model)
    level = "" if amount is None else f" by amount={amount} of what remained"
    title = f"{values['model']} pruned{level}: {pruner!r}"
    console.print(report_table(report, title))
    if values["out"]:
        out = Path(values["out"])
        out.mkdir(parents=True, exist_ok=True)
        dense = dense_bytes(model, dense_format="torch")
        if values["format"] == "dense":
            plain_bytes = save_dense(model, out / "model.safetensors", metadata={"model": values["model"]})
            report.extras.update({"dense_bytes": dense, "plain_dense_bytes": plain_bytes, "format": "dense"})
            written = write_prune_report(out, report, report.to_json() + "\n", title)
            console.print(f"saved {out / 'model.safetensors'}: {plain_bytes:,} bytes, plain dense safetensors "
                          "(zeros in place; load_state_dict of a fresh model loads it)", highlight=False)
            for wrote in files_lines(written):
                console.print(wrote, highlight=False, soft_wrap=True)
            return 0
        sparse_bytes = save_sparse(model, out / "model.safetensors", metadata={"model": values["model"]})
        report.extras.update({"dense_bytes": dense, "sparse_bytes": sparse_bytes})
        written = write_prune_report(out, report, report.to_json() + "\n", title)
        console.print(
            f"saved {out / 'model.safetensors'}: {sparse_bytes:,} bytes "
            f"({sparse_bytes / dense:.3f}× the {dense:,} bytes of the dense fp32 state dict)", highlight=False,
        )
        for wrote in files_lines(written):
            console.print(wrote, highlight=False, soft_wrap=True)
    return 0
