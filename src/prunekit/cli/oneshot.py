"""``prunekit oneshot``: one-shot pruning of a language model from a calibration text, with progress per block.

    prunekit oneshot gpt_tiny --weights model.safetensors --text input.txt --tokenizer char \
        --method sparsegpt --structure 2:4 --perplexity --out runs/gpt_24
    prunekit oneshot path/to/hf_model --text corpus.txt --method wanda --sparsity 0.5 --owl --out runs/w

MODEL is a Hugging Face folder (``config.json``; loaded with
``AutoModelForCausalLM.from_pretrained``, saved back with ``save_pretrained``)
or a registered zoo model (``--weights``; saved with ``save_sparse``).
A Hugging Face folder with ``--offload disk`` is streamed instead
(:func:`prunekit.oneshot.prune_pretrained`): blocks are read from MODEL's
safetensors and written to ``--out`` one at a time, so the whole model is
never in memory (``--out`` is required and must be new or empty;
``--perplexity`` needs the whole model and is refused).
Tokens: ``--tokenizer auto`` uses the folder's tokenizer, ``char`` the sorted
characters of the text file (prunekit's ``text_char``), ``bytes`` its UTF-8
bytes. The first ``1 − val_fraction`` of the tokens give ``--samples``
random calibration windows of ``--seq-len`` tokens; ``--perplexity`` measures
the last ``val_fraction`` before and after, in non-overlapping windows of ``--window``.
"""

from __future__ import annotations

import argparse
import inspect
import json
import numbers
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..data.text import CharTokenizer
from ..errors import InvalidParameterError, did_you_mean
from ..io import save_sparse
from ..oneshot.api import oneshot_prune
from ..oneshot.offload import OFFLOAD_MODES
from ..oneshot.perplexity import lm_perplexity
from ..params import ONESHOT_PARAMS as LIBRARY_PARAMS
from ..progress import ProgressEvent
from ..oneshot.pretrained import prune_pretrained
from ..validation import (
    REQUIRED,
    AnyOf,
    Device,
    Flag,
    Interval,
    JsonObject,
    Options,
    OutputDir,
    Param,
    PathLike,
    SEED,
    Strings,
    cli_values,
    declare,
)
from ..zoo import MODELS, create_model, list_models
from .command_reports import files_lines, write_oneshot_report
from .common import add_command, as_cli_error, load_weights, read_text_option, report_table
from .progress_bars import ProgressBars, progress_bars

__all__ = ["ONESHOT_PARAMS", "add_oneshot_parser", "sample_windows"]

#: a zoo model name, checked when MODEL is not a Hugging Face folder
LOAD_CHECK = Options(list_models, "zoo model name or a Hugging Face folder (with config.json)", "prunekit list models")


def _positive(example: int) -> Interval:
    return Interval(numbers.Integral, 1, None, example=example)


#: The parameters of :func:`prunekit.oneshot_prune` this command passes on as they are declared.
SHARED = ("method", "sparsity", "structure", "owl", "owl_lambda", "owl_m", "sequential")

ONESHOT_PARAMS = declare(
    Param("model", Strings("a Hugging Face folder or a zoo model name"), REQUIRED,
          "a Hugging Face model folder or a registered zoo model name; a folder with --offload disk is streamed "
          "block by block into --out, never loaded whole", option="model"),
    Param("weights", AnyOf(PathLike("file"), None), None, "safetensors / state dict for a zoo model",
          metavar="FILE"),
    Param("model_args", AnyOf(JsonObject(), None), None,
          "JSON of keyword arguments for the zoo model, e.g. '{\"n_layer\": 4}'", metavar="JSON"),
    Param("text", PathLike("file"), REQUIRED, "a UTF-8 text file: calibration data and held-out text",
          metavar="FILE"),
    Param("tokenizer", Options(("auto", "char", "bytes"), "tokenizer"), "auto",
          "auto (the folder's, or char for a zoo model), char (sorted characters of the text), bytes (UTF-8)"),
    *(LIBRARY_PARAMS[name] for name in SHARED),  # declared once, for oneshot_prune and recipes too
    Param("head", Flag(), False, "also prune the output head (from the final norm's outputs)"),
    Param("embeddings", Flag(), False,
          "also prune the token embedding by magnitude (a tied head needs --head --embeddings)"),
    Param("offload", Options(OFFLOAD_MODES, "offload mode"), "none",
          "where blocks wait: none, cpu, or disk (for a Hugging Face folder: read from it and written to --out one "
          "block at a time, so a model larger than memory can be pruned)"),
    Param("offload_dir", AnyOf(OutputDir(), None), None, "folder for --offload disk (default: a temporary one)",
          metavar="DIR"),
    Param("samples", _positive(128), 128, "calibration windows", metavar="N"),
    Param("seq_len", _positive(128), 128, "tokens per calibration window", metavar="N"),
    Param("val_fraction", Interval(numbers.Real, 0, 1, "neither", example=0.1), 0.1,
          "last share of the text held out", metavar="FRACTION"),
    Param("perplexity", Flag(), False, "held-out perplexity before and after"),
    Param("window", _positive(128), 128, "perplexity window length (non-overlapping)", metavar="N"),
    Param("device", AnyOf(Device(), None), None,
          "where blocks are pruned (default: the model's device)"),
    Param("seed", SEED, 0, "seed"),
    Param("out", AnyOf(OutputDir(), None), None, "output folder: the pruned model and report.json", metavar="DIR"),
)


def add_oneshot_parser(sub: Any) -> argparse.ArgumentParser:
    """Register the ``oneshot`` subcommand on ``sub`` (argparse subparsers)."""
    return add_command(sub, "oneshot", ONESHOT_PARAMS, _cmd_oneshot,
                       help="one-shot pruning of a language model block by block (Wanda, SparseGPT, OWL)")


def sample_windows(ids: torch.Tensor, samples: int, length: int, seed: int = 0) -> torch.Tensor:
    """``samples`` random windows of ``length`` tokens of ``ids`` (seeded), as ``(samples, length)``."""
    if len(ids) <= length:
        raise InvalidParameterError("seq_len", f"fewer than the {len(ids)} calibration tokens", length)
    gen = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(ids) - length, (samples,), generator=gen)
    return torch.stack([ids[s: s + length] for s in starts.tolist()])


#: files of which a Hugging Face folder with a tokenizer has at least one
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt",
                   "spiece.model")


def _is_hf_folder(model: str) -> bool:
    return (Path(model) / "config.json").is_file()


def _load_model(args: argparse.Namespace) -> tuple[Any, bool]:
    if _is_hf_folder(args.model):
        from transformers import AutoModelForCausalLM  # optional dependency

        return AutoModelForCausalLM.from_pretrained(args.model), True
    LOAD_CHECK.convert(args.model, "model")
    _check_model_args(args.model, args.model_args or {})
    torch.manual_seed(args.seed)
    model = create_model(args.model, **(args.model_args or {}))
    if args.weights:
        load_weights(model, args.weights, args.model)
    return model, False


def _check_model_args(name: str, model_args: dict[str, Any]) -> None:
    """Refuse ``--model-args`` keys that the zoo model's factory does not take."""
    signature = inspect.signature(MODELS.get(name))
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values()):
        return
    unknown = sorted(set(model_args) - set(signature.parameters))
    if unknown:
        known = ", ".join(signature.parameters) or "none"
        raise InvalidParameterError("--model-args", f"keyword arguments of {name} ({known})", unknown,
                                    "Fix: drop the unknown keys." + did_you_mean(unknown[0], signature.parameters))


def _tokens(args: argparse.Namespace, hf: bool) -> torch.Tensor:
    text = read_text_option(args.text)
    kind = args.tokenizer
    if kind == "auto":
        kind = "hf" if hf else "char"
    if kind == "char":
        return CharTokenizer.from_text(text).encode(text)
    if kind == "bytes":
        return torch.tensor(list(text.encode("utf-8")), dtype=torch.long)
    if not any((Path(args.model) / name).is_file() for name in TOKENIZER_FILES):
        raise InvalidParameterError(
            "--tokenizer", f"a model folder with a tokenizer ({', '.join(TOKENIZER_FILES[:3])}, ...) for "
            f"--tokenizer {args.tokenizer}", f"<{args.model} without tokenizer files>",
            "Fix: save the model's tokenizer into the folder (tokenizer.save_pretrained(folder)), or use "
            "--tokenizer bytes or char when the model was trained on them.")
    from transformers import AutoTokenizer  # optional dependency

    return torch.tensor(AutoTokenizer.from_pretrained(args.model)(text)["input_ids"], dtype=torch.long)


def _check_streamed(args: argparse.Namespace, console: Any) -> int | None:
    """The vocabulary size of a folder streamed with ``--offload disk`` (from its config), after the checks."""
    from transformers import AutoConfig  # optional dependency

    if not args.out:
        raise InvalidParameterError("--out", "an output folder with --offload disk on a Hugging Face folder",
                                    None, "Fix: add --out DIR (the pruned model is written there block by block).")
    if args.perplexity:
        raise InvalidParameterError("--perplexity", "off with --offload disk on a Hugging Face folder (it streams "
                                    "the model; perplexity needs it whole)", True,
                                    "Fix: drop --perplexity, or use --offload cpu to load the model.")
    if args.offload_dir:
        console.print("note: --offload-dir is not used when a folder is streamed (blocks go to --out)",
                      highlight=False)
    return getattr(AutoConfig.from_pretrained(args.model).get_text_config(), "vocab_size", None)


def _cmd_oneshot(args: argparse.Namespace, console: Any) -> int:
    args = argparse.Namespace(**cli_values(args, ONESHOT_PARAMS))
    streamed = _is_hf_folder(args.model) and args.offload == "disk"
    model: Any = None
    if streamed:
        hf, vocab = True, _check_streamed(args, console)
    else:
        model, hf = _load_model(args)
        model.eval()
        embedding = next((m for m in model.modules() if isinstance(m, torch.nn.Embedding)), None)
        vocab = None if embedding is None else embedding.num_embeddings
    ids = _tokens(args, hf)
    if len(ids) <= args.seq_len:
        raise InvalidParameterError("--text", f"a text of more than --seq-len {args.seq_len} tokens",
                                    f"<{len(ids)} tokens from {args.text}>",
                                    "Fix: use a longer text, or a smaller --seq-len.")
    if vocab is not None and int(ids.max()) >= vocab:
        raise InvalidParameterError(
            "--tokenizer", f"token ids below the model's vocabulary of {vocab}",
            f"{args.tokenizer} ids up to {int(ids.max())}",
            "Fix: use the tokenizer the model was trained with (e.g. --tokenizer char on the same text).",
        )
    cut = int(len(ids) * (1.0 - args.val_fraction))
    calibration = sample_windows(ids[:cut], args.samples, args.seq_len, args.seed)
    held_out = ids[cut:]
    summary: dict[str, Any] = {"model": args.model, "text": args.text, "calibration": list(calibration.shape)}
    if args.perplexity:
        summary["perplexity_dense"] = lm_perplexity(model, held_out, args.window).perplexity
        console.print(f"dense perplexity {summary['perplexity_dense']:.4f} (held-out {len(held_out):,} tokens, "
                      f"windows of {args.window})", highlight=False)
    with progress_bars() as bars:
        options: dict[str, Any] = {
            "method": args.method, "sparsity": args.sparsity, "structure": args.structure, "owl": args.owl,
            "owl_lambda": args.owl_lambda, "owl_m": args.owl_m, "sequential": args.sequential, "device": args.device,
            "progress": _naming_method(bars, args.method), "head": args.head, "embeddings": args.embeddings}
        if streamed:
            try:
                result = prune_pretrained(args.model, args.out, data=calibration, **options)
            except InvalidParameterError as exc:
                raise as_cli_error(exc, ONESHOT_PARAMS) from None
        else:
            try:
                result = oneshot_prune(model, data=calibration, offload=args.offload, offload_dir=args.offload_dir,
                                       **options)
            except InvalidParameterError as exc:
                raise as_cli_error(exc, ONESHOT_PARAMS) from None
    title = f"{args.model}: {result.method} {result.structure} at {result.sparsity:g} in {result.seconds:.1f} s"
    console.print(report_table(result.report, title))
    invalid = result.report.extras.get("nm_invalid_groups")
    if invalid is not None:
        bad = {k: v for k, v in invalid.items() if v}
        console.print(f"{result.structure} groups with more than N non-zeros: "
                      + (", ".join(f"{k}: {v}" for k, v in bad.items()) if bad else "none in any layer"),
                      highlight=False)
    summary["result"] = result.to_dict()
    if args.perplexity:
        summary["perplexity_pruned"] = lm_perplexity(model, held_out, args.window).perplexity
        console.print(f"pruned perplexity {summary['perplexity_pruned']:.4f} (dense "
                      f"{summary['perplexity_dense']:.4f})", highlight=False)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        if streamed:
            console.print(f"saved {out} (block by block, {len(result.block_sparsities) + 1} shards)",
                          highlight=False)
        elif hf:
            model.save_pretrained(out)
            console.print(f"saved {out} (save_pretrained)", highlight=False)
        else:
            size = save_sparse(model, out / "model.safetensors", metadata={"model": args.model})
            console.print(f"saved {out / 'model.safetensors'} ({size:,} bytes, save_sparse)", highlight=False)
        written = write_oneshot_report(out, summary, result.report, json.dumps(summary, indent=2), title)
        for wrote in files_lines(written):
            console.print(wrote, highlight=False, soft_wrap=True)
    return 0


def _naming_method(bars: ProgressBars, method: str) -> Callable[[ProgressEvent], None]:
    """The one-shot events on ``bars``, the pruning stage's detail naming ``method`` ("wanda, block 2")."""
    def on_event(event: ProgressEvent) -> None:
        if event.stage == "prune":
            event = ProgressEvent(event.stage, event.done, event.total, event.figures, f"{method}, {event.detail}",
                                  event.parent)
        bars(event)

    return on_event
