"""``prunekit prune MODEL --structure head|neuron --sparsity F --shrink --out DIR``: remove
attention heads or MLP hidden neurons physically, save the smaller model, measure both.

``--structure head`` calls :func:`prunekit.prune_heads` (``--scope local``: the
same fraction of every layer's heads; ``global``: one ranking over layers, one
head kept per layer), ``--structure neuron`` :func:`prunekit.prune_mlp_neurons`
(the same fraction of every MLP); ``--round-to N`` keeps every layer's heads x
head size / MLP neurons a multiple of N (for a later N:M pass). ``--criterion`` is a score of the head /
neuron unit space (``prunekit list scores --unit-space head``): ``magnitude``
(L1 of the unit's weights), ``l2``, or ``gradient`` (Michel et al. 2019, the
gradient of the loss with respect to a gate on each unit), which needs data:
``--text FILE``, whose characters are the tokens (sorted, as ``prunekit oneshot
--tokenizer char`` and :class:`prunekit.data.text.CharTokenizer` number them),
cut into ``--samples`` seeded windows of the model's input length plus one
(inputs and next-token targets). Saving, the load-back check, the measurements
and the table are the channel command's (:func:`.shrink.save_and_report`).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from rich.console import Console
from torch import nn

from ..coupling.families import attention_layers, mlp_layers
from ..data.text import CharTokenizer
from ..errors import InvalidParameterError, did_you_mean
from ..params import PRUNE_PARAMS
from ..scores import SCORES
from ..surgery.heads import prune_heads, prune_mlp_neurons
from ..zoo import model_input
from .common import as_cli_error, read_text_option
from .oneshot import sample_windows
from .shrink import example_input, save_and_report

__all__ = ["TEXT_BATCH", "run_unit_shrink", "text_batches"]

#: windows per batch of the ``--text`` data
TEXT_BATCH = 8

_WHAT = {"head": "attention heads", "neuron": "MLP hidden neurons"}


def _criterion(values: Mapping[str, Any], space: str) -> str:
    """The canonical name of ``--criterion`` as a score of ``space``; a data-needing one only with ``--text``."""
    name = str(values["criterion"])
    serving = SCORES.names(unit_space=space)
    if name not in SCORES or space not in SCORES.entry(name).unit_spaces:
        raise InvalidParameterError(
            "--criterion", f"a {space} score ({', '.join(serving)})", name,
            ("Fix: --criterion magnitude (L1), l2, or gradient with --text FILE."
             + did_you_mean(name, serving)).strip())
    name = SCORES.resolve(name)
    needs = SCORES.entry(name).needs[space]
    free = [n for n in serving if SCORES.entry(n).needs[space] == "nothing"]
    if needs not in ("nothing", "gradients"):
        raise InvalidParameterError("--criterion", f"a {space} score that needs no data or gradients on the command "
                                    f"line", name, f"Fix: --criterion {free[0] if free else 'magnitude'}.")
    if needs == "gradients" and values["text"] is None:
        raise InvalidParameterError(
            "--criterion", f"a {space} score that needs no data ({', '.join(free)}) unless --text FILE gives data",
            name, "Fix: add --text FILE (a text in the model's characters) for the gradients, or use "
                  "--criterion magnitude.")
    if needs == "nothing" and values["text"] is not None:
        raise InvalidParameterError("--text", f"no --text with --criterion {name} (it scores the weights alone)",
                                    values["text"], "Fix: drop --text, or use --criterion gradient to read it.")
    return name


def text_batches(path: str, vocab: int, length: int, samples: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``samples`` seeded windows of ``length + 1`` character ids of the text at ``path``, as
    ``(inputs, next-token targets)`` batches of :data:`TEXT_BATCH` windows."""
    text = read_text_option(path)
    tokenizer = CharTokenizer.from_text(text)
    if len(tokenizer) > vocab:
        raise InvalidParameterError("--text", f"a text of at most {vocab} distinct characters (the model's "
                                    f"vocabulary)", f"{len(tokenizer)} distinct characters in {path}",
                                    "Fix: use the text the model was trained on.")
    ids = tokenizer.encode(text)
    if len(ids) <= length + 1:
        raise InvalidParameterError("--text", f"a text of more than {length + 1} characters (one window of the "
                                    f"model's input length and its targets)", f"{len(ids)} characters in {path}",
                                    "Fix: use a longer text, or a shorter --input-shape 1,T.")
    windows = sample_windows(ids, samples, length + 1, seed)
    return [(w[:, :-1], w[:, 1:]) for w in windows.split(TEXT_BATCH)]


def _data(values: Mapping[str, Any], example: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    if values["text"] is None:
        return None
    vocab = model_input(values["model"]).vocab
    if vocab is None or example.dim() != 2:
        raise InvalidParameterError("--text", f"a language model taking token ids ({values['model']} takes "
                                    f"{'real-valued inputs' if vocab is None else 'inputs of another shape'})",
                                    values["text"], "Fix: drop --text and use --criterion magnitude or l2.")
    return text_batches(values["text"], vocab, example.shape[1], values["samples"], values["seed"])


def _counts(specs: Mapping[Any, Any], space: str) -> dict[str, int]:
    return {str(k): (s.num_heads if space == "head" else s.size) for k, s in specs.items()}


def _check_units(model: nn.Module, values: Mapping[str, Any], space: str) -> None:
    if space == "head" and not attention_layers(model):
        raise InvalidParameterError(
            "--structure", "head for a model with attention layers whose heads can be removed", values["model"],
            "Fix: --structure channel, or register a LayerHandler(attention=...) for its attention type.")
    if space == "neuron":
        try:
            mlp_layers(model)
        except InvalidParameterError:
            raise InvalidParameterError(
                "--structure", "neuron for a transformer whose MLP hidden neurons can be removed", values["model"],
                "Fix: --structure channel (an MLP's hidden units are channel groups there).") from None


def run_unit_shrink(values: dict[str, Any], model: nn.Module, console: Console) -> int:
    """Remove ``--sparsity`` of ``model``'s heads or MLP neurons, then save, check, measure and print."""
    space = values["structure"]
    if values["sparsity"] is None:
        raise InvalidParameterError("--sparsity", f"the fraction of {_WHAT[space]} to remove with --structure "
                                    f"{space} --shrink", None, "Fix: e.g. --sparsity 0.5.")
    if not 0.0 <= values["sparsity"] < 1.0:
        raise InvalidParameterError("--sparsity", f"a fraction in [0, 1) of {_WHAT[space]} (one is kept in every "
                                    "layer)", values["sparsity"], "Fix: e.g. --sparsity 0.5.")
    scopes = ("local", "global") if space == "head" else ("local",)
    if values["scope"] not in scopes:
        raise InvalidParameterError("--scope", f"{' or '.join(scopes)} with --structure {space} --shrink",
                                    values["scope"], "Fix: --scope local (the same fraction of every layer).")
    if values["out"] is None:
        raise InvalidParameterError("--out", "a folder for the shrunk model with --shrink", None,
                                    "Fix: add --out DIR (model.safetensors and report.json are written there).")
    criterion = _criterion(values, space)
    _check_units(model, values, space)
    example = example_input(model, values["input_shape"], values["model"])
    data = _data(values, example)
    find = attention_layers if space == "head" else mlp_layers
    before = _counts(find(model), space)
    dense = copy.deepcopy(model)
    options: dict[str, Any] = {"sparsity": values["sparsity"], "importance": criterion, "data": data,
                               "round_to": values["round_to"], "uniform": values["uniform"]}
    try:
        if space == "head":
            record = prune_heads(model, scope=values["scope"], **options)
        else:
            record = prune_mlp_neurons(model, **options)
    except InvalidParameterError as exc:
        raise as_cli_error(exc, PRUNE_PARAMS) from None
    after = _counts(find(model), space)
    key = "prune_heads" if space == "head" else "prune_mlp_neurons"
    details = {key: {"sparsity": values["sparsity"], "criterion": criterion, "scope": values["scope"],
                     "round_to": values["round_to"], "uniform": values["uniform"],
                     "data": None if data is None else {"text": str(values["text"]), "windows": values["samples"],
                                                         "length": int(example.shape[1]) + 1},
                     "before": before, "after": after, "removals": len(record.removals)}}
    removed = f"{_WHAT[space]} per layer: " + ", ".join(f"{k} {before[k]} → {after[k]}" for k in before)
    save_and_report(values, dense, model, example, details, console, (removed,))
    console.print(removed, highlight=False, soft_wrap=True)
    return 0
