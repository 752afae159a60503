"""``prunekit prune ... --shrink``: remove channels physically, save the smaller model,
and measure dense and shrunk side by side.

The model is traced with one example input at batch 1 (``--input-shape``, or
the input the zoo model declares, :func:`prunekit.zoo.model_input_shape`).
``--structure channel``: :func:`prunekit.structural_prune` removes channels to
``--sparsity``, ``--macs-target`` or ``--latency-target``. ``--structure head``
and ``--structure neuron``: :func:`prunekit.prune_heads` /
:func:`prunekit.prune_mlp_neurons` remove that fraction of the attention heads /
MLP hidden neurons (:mod:`.shrink_units`). Then :func:`prunekit.save_shrunk` writes
``DIR/model.safetensors`` and the command checks that
``prunekit.load_shrunk(prunekit.create_model(MODEL), DIR/model.safetensors)``
gives the shrunk model's outputs before it reports success. The table shows,
for the dense and the shrunk model: parameters, MACs (Conv/Linear layers and
attention, norms not counted, as ``macs_target`` counts them), file bytes
(dense: the state dict as safetensors), median latency at batch 1 over
``--latency-repeats`` forwards (:func:`prunekit.measure.latency.measure_latency`),
and the speedup ``dense median / shrunk median``.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import nn

from ..errors import InvalidParameterError, PrunekitError
from ..measure.latency import measure_latency
from ..measure.macs import count_macs
from ..measure.params import count_parameters
from ..measure.size import dense_bytes
from ..params import STRUCTURAL_PARAMS
from ..scores import SCORES
from ..surgery.api import structural_prune
from ..surgery.save import load_shrunk, save_shrunk
from ..validation import Constraint, validate
from ..zoo import create_model, model_input_shape
from ..zoo import example_input as zoo_example_input
from .command_reports import files_lines, rich_table, shrink_caption, shrink_rows, write_shrink_report
from .common import as_cli_error
from .progress_bars import working

__all__ = ["SHAPE", "UNIT_STRUCTURES", "example_input", "load_line", "run_shrink", "save_and_report"]

#: ``--structure`` values whose units are removed by head / neuron surgery rather than channel coupling
UNIT_STRUCTURES = ("head", "neuron")

_SHAPE_TEXT = re.compile(r"^\s*\d+(\s*[,x×]\s*\d+)*\s*$")


class Shape(Constraint):
    """A shape, batch first: ``1,3,32,32`` (commas or x)."""

    def accepts(self, value: Any) -> bool:
        return isinstance(value, tuple) and len(value) > 0 and all(isinstance(d, int) and d > 0 for d in value)

    def describe(self) -> str:
        return "a shape of positive ints, batch first, e.g. 1,3,32,32"

    def from_text(self, text: str, name: str) -> Any:
        if not _SHAPE_TEXT.match(text):
            raise InvalidParameterError(name, self.describe(), text, f"Fix: e.g. {name} 1,3,32,32.")
        return self.convert(tuple(int(d) for d in re.split(r"[,x×]", text)), name)


SHAPE = Shape()


def example_input(model: nn.Module, shape: tuple[int, ...] | None, name: str) -> torch.Tensor:
    """A seeded example input of ``shape`` (or, at batch 1, the one the zoo model declares), checked by one
    forward pass; token ids for a language model."""
    if shape is None:
        try:
            shape = (1, *model_input_shape(name))
        except InvalidParameterError:
            raise InvalidParameterError("--input-shape", f"the input shape of {name} (it declares none)", None,
                                        "Fix: add --input-shape N,C,H,W.") from None
    example = zoo_example_input(name, shape=shape)
    try:
        with torch.no_grad():
            model.eval()(example)
    except (RuntimeError, ValueError, IndexError) as exc:
        raise InvalidParameterError("--input-shape", f"an input shape {name} accepts", ",".join(map(str, shape)),
                                    f"Fix: pass the model's input shape, batch first ({exc}).") from None
    return example


def load_line(model: str, path: Path) -> str:
    """The one line of Python that loads the shrunk model back."""
    return f"prunekit.load_shrunk(prunekit.create_model({model!r}), {str(path)!r})"


def _measures(model: nn.Module, example: torch.Tensor, repeats: int, warmup: int) -> dict[str, Any]:
    latency = measure_latency(model, example, warmup=warmup, repeats=repeats)
    return {"params": count_parameters(model).params, "macs": count_macs(model, example, norms=False).dense_macs,
            "latency_ms": latency.median_ms, "latency_p10_ms": latency.p10_ms, "latency_p90_ms": latency.p90_ms,
            "threads": latency.threads}


def _structural_options(values: dict[str, Any]) -> dict[str, Any]:
    """``structural_prune``'s keyword arguments from the command line, checked against its declarations."""
    if values["structure"] != "channel":
        raise InvalidParameterError(
            "--structure", "channel, head or neuron with --shrink (coupled channel groups, attention heads or "
            "MLP hidden neurons are removed)", values["structure"],
            "Fix: --structure channel, or drop --shrink to prune with masks.")
    targets = {k: values[k] for k in ("sparsity", "macs_target", "latency_target") if values[k] is not None}
    if len(targets) != 1:
        raise InvalidParameterError(
            "--sparsity", "exactly one of --sparsity, --macs-target and --latency-target with --shrink",
            " ".join(f"--{k.replace('_', '-')} {v}" for k, v in targets.items()) or None,
            "Fix: e.g. --macs-target 0.5 (half the MACs) or --sparsity 0.3 (30% of each group's channels).")
    if values["out"] is None:
        raise InvalidParameterError("--out", "a folder for the shrunk model with --shrink", None,
                                    "Fix: add --out DIR (model.safetensors and report.json are written there).")
    options = {"sparsity": values["sparsity"], "macs_target": values["macs_target"],
               "latency_target": values["latency_target"], "criterion": values["criterion"], "scope": values["scope"],
               "max_layer_ratio": values["max_layer_ratio"], "round_to": values["round_to"],
               "allocation": values["allocation"], "exclude": values["exclude"] or (),
               "approximate": bool(values["approximate"])}
    try:
        options = validate(STRUCTURAL_PARAMS, options)
    except InvalidParameterError as exc:
        raise as_cli_error(exc, STRUCTURAL_PARAMS) from None
    needs = {e.name: e.needs["group"] for e in SCORES.entries(unit_space="group")}
    name = options["criterion"] if isinstance(options["criterion"], str) else None
    if name is not None and needs.get(SCORES.resolve(name)) != "nothing":
        free = [n for n, need in needs.items() if need == "nothing"]
        raise InvalidParameterError("--criterion", "a group criterion that needs no data on the command line ("
                                    + ", ".join(free) + ")", options["criterion"],
                                    "Fix: --criterion l2, or call prunekit.structural_prune with data= from "
                                    "Python.")
    return options


def save_and_report(values: dict[str, Any], dense: nn.Module, model: nn.Module, example: torch.Tensor,
                    details: dict[str, Any], console: Console, removed: tuple[str, ...] = ()) -> dict[str, Any]:
    """Save the shrunk ``model``, check that the printed line loads it back, measure it and ``dense``,
    write ``report.json`` (with ``details``, what was removed), ``report.md`` and ``report.html`` (with
    ``removed``, lines saying what was removed) and print the table; return the report."""
    out = Path(values["out"])
    out.mkdir(parents=True, exist_ok=True)
    path = out / "model.safetensors"
    shrunk_bytes = save_shrunk(model, path)
    loaded = load_shrunk(create_model(values["model"]), path).eval()
    with torch.no_grad():
        expected, got = model.eval()(example), loaded(example)
    if not torch.equal(expected, got):
        raise PrunekitError(f"{path} does not load back to the shrunk model (largest output difference "
                            f"{float((expected - got).abs().max()):.3g}); nothing is reported as done.")
    repeats, warmup = values["latency_repeats"], values["latency_warmup"]
    measured = {"dense": {**_measures(dense, example, repeats, warmup),
                          "bytes": dense_bytes(dense, dense_format="safetensors")},
                "shrunk": {**_measures(model, example, repeats, warmup), "bytes": shrunk_bytes}}
    speedup = measured["dense"]["latency_ms"] / measured["shrunk"]["latency_ms"]
    line = load_line(values["model"], path)
    report = {"model": values["model"], "weights": values["weights"], "input_shape": list(example.shape),
              **details, **measured, "speedup": speedup,
              "latency": {"batch": 1, "repeats": repeats, "warmup": warmup}, "load": line}
    written = write_shrink_report(out, report, json.dumps(report, indent=2), removed)
    console.print(rich_table(shrink_rows(measured["dense"], measured["shrunk"]), f"{values['model']}: dense vs shrunk",
                             shrink_caption(measured["shrunk"])))
    console.print(f"saved {path} ({shrunk_bytes:,} bytes)", highlight=False)
    for wrote in files_lines(written):
        console.print(wrote, highlight=False, soft_wrap=True)
    console.print(f"load it back with: {line}", highlight=False, soft_wrap=True)
    return report


def run_shrink(values: dict[str, Any], model: nn.Module, console: Console) -> int:
    """Shrink ``model``'s channels as ``values`` say, save it, check the load-back, print the table."""
    options = _structural_options(values)
    example = example_input(model, values["input_shape"], values["model"])
    dense = copy.deepcopy(model)
    try:
        with working("search", "channels to remove") as bars:
            result = structural_prune(model, example, **options, progress=bars)
    except InvalidParameterError as exc:
        raise as_cli_error(exc, STRUCTURAL_PARAMS) from None
    report = save_and_report(values, dense, model, example, {"structural_prune": result.to_dict()}, console)
    measured_ratio = report["shrunk"]["latency_ms"] / report["dense"]["latency_ms"]
    if options["latency_target"] is not None and measured_ratio > options["latency_target"]:
        modelled = result.latency_model_ms
        model_note = f" (modelled: {modelled[1] / modelled[0]:.3f})" if modelled else ""
        console.print(f"[yellow]warning:[/] measured latency after / before is {measured_ratio:.3f}, above "
                      f"--latency-target {options['latency_target']:g}, which was met on the layer latency "
                      f"model{model_note}", highlight=False)
    return 0
