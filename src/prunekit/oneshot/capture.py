"""The calibration engine: capture the inputs of the first block, then run one block at a time.

The first block's inputs are caught by a forward pre-hook (``with_kwargs``)
that stores the hidden states together with every other argument the model
passes to its blocks (attention mask, ``position_ids``, the rotary
``position_embeddings`` (cos, sin) of the LLaMA family, GPT-2's positional
arguments …) and then raises :class:`_StopForward`, so the rest of the model
never runs. Hugging Face models are called with ``use_cache=False``. Each
later block is run on the previous block's outputs with the same extra
arguments, which these models compute once for all blocks.

Padding is not calibration data: the real positions of a dict batch are
those where its ``attention_mask`` is nonzero (:attr:`Captured.keep`), every
position of a batch without one; they travel with the block inputs so that
the statistics (:mod:`prunekit.oneshot.stats`) and the token count skip the
padded ones.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..batches import to_device
from ..errors import InvalidParameterError

__all__ = ["Captured", "calibration_batches", "capture_block_inputs", "check_token_ids", "run_block"]

logger = logging.getLogger(__name__)


class _StopForward(Exception):
    """Raised by the capture hook once the first block's inputs are stored."""


@dataclass
class Captured:
    """Inputs of one block for every calibration batch: ``hidden[i]`` with the
    extra positional ``args[i]`` and keyword ``kwargs[i]`` of the call, and the
    real positions ``keep[i]`` (bool, ``hidden[i].shape[:-1]``; None: all real)."""

    hidden: list[torch.Tensor] = field(default_factory=list)
    args: list[tuple[Any, ...]] = field(default_factory=list)
    kwargs: list[dict[str, Any]] = field(default_factory=list)
    keep: list[torch.Tensor | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.keep:
            self.keep = [None] * len(self.hidden)

    @property
    def tokens(self) -> int:
        """Real (not padding) positions over all batches."""
        return sum(int(h.shape[:-1].numel()) if k is None else int(k.sum())
                   for h, k in zip(self.hidden, self.keep))

    @property
    def nbytes(self) -> int:
        return sum(h.numel() * h.element_size() for h in self.hidden)


def calibration_batches(data: Any, batch_size: int = 8) -> list[Any]:
    """Normalise the calibration data to a list of model inputs.

    ``data``: a tensor of token ids ``(N, T)`` (cut into batches of
    ``batch_size`` rows), or an iterable whose items are id tensors ``(B, T)``,
    dicts of model keyword arguments, or ``(inputs, targets)`` pairs.
    """
    if data is None:
        raise InvalidParameterError(
            "data", "calibration data: token ids (N, T) or an iterable of batches", None,
            "Fix: pass data=ids[:128 * 256].view(128, 256) (128 windows of 256 tokens).",
        )
    if isinstance(data, torch.Tensor):
        if data.dim() != 2 or data.shape[0] == 0 or data.is_floating_point():
            raise InvalidParameterError(
                "data", "token ids of shape (samples, tokens)", f"<tensor {tuple(data.shape)} "
                f"{data.dtype}>", "Fix: e.g. data=ids[:128 * 256].view(128, 256).",
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidParameterError("batch_size", "a positive int", batch_size)
        return list(data.split(batch_size))
    if isinstance(data, (str, bytes, Mapping)) or not isinstance(data, Iterable):
        raise InvalidParameterError(
            "data", "a tensor of token ids (N, T) or an iterable of batches",
            f"<{type(data).__name__}>", "Fix: pass a LongTensor of shape (samples, tokens).",
        )
    batches = []
    for index, item in enumerate(data):
        if isinstance(item, (tuple, list)) and len(item) == 2:
            item = item[0]
        if not isinstance(item, (torch.Tensor, Mapping)):
            raise InvalidParameterError(
                "data", "batches of token-id tensors, dicts of model inputs or (inputs, targets)",
                f"<item {index}: {type(item).__name__}>",
            )
        batches.append(item)
    if not batches:
        raise InvalidParameterError("data", "at least one batch", "<empty>")
    return batches


def real_positions(batch: Any, index: int) -> torch.Tensor | None:
    """The real positions of a batch: ``attention_mask != 0`` of a dict batch (None when it has no
    mask or no padding: every position counts)."""
    if not isinstance(batch, Mapping) or batch.get("attention_mask") is None:
        return None
    mask = batch["attention_mask"]
    if not isinstance(mask, torch.Tensor) or mask.dim() != 2 or mask.is_floating_point() and not bool(
            ((mask == 0) | (mask == 1)).all()):
        got = f"<{type(mask).__name__}>" if not isinstance(mask, torch.Tensor) else \
            f"<tensor {tuple(mask.shape)} {mask.dtype}>"
        raise InvalidParameterError(
            "data", "an attention_mask of 0/1 of shape (batch, tokens)", f"batch {index}: {got}",
            "Fix: pass the tokenizer's attention_mask (1 for real tokens, 0 for padding).")
    keep = mask != 0
    if not bool(keep.any()):
        raise InvalidParameterError("data", "batches with at least one real token", f"batch {index}: all padding",
                                    "Fix: drop the empty batch.")
    return None if bool(keep.all()) else keep.detach().cpu()


def _check_keys(model: nn.Module, batch: Mapping[str, Any], index: int) -> None:
    """A dict batch names only arguments of the model's forward (else: which ones, before the call)."""
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    unknown = [key for key in batch if key not in params]
    if unknown:
        raise InvalidParameterError(
            "data", f"dict batches whose keys {type(model).__name__}.forward takes ({', '.join(params)})",
            f"batch {index} with {', '.join(map(repr, unknown))}",
            "Fix: pass token-id tensors (samples, tokens), unpadded"
            + (" (this model takes no attention mask)" if "attention_mask" in unknown else "") + ".")


def _call_model(model: nn.Module, batch: Any, device: torch.device) -> None:
    hf = hasattr(model, "config") and hasattr(model.config, "use_cache")
    batch = to_device(batch, device)
    if isinstance(batch, Mapping):
        model(**batch, **({"use_cache": False} if hf else {}))
    elif hf:
        model(input_ids=batch, use_cache=False)
    else:
        model(batch)


@torch.no_grad()
def capture_block_inputs(
    model: nn.Module, first_block: nn.Module, batches: list[Any], device: torch.device, store: torch.device
) -> Captured:
    """Run ``model`` on each batch up to ``first_block`` and keep that block's inputs on ``store``."""
    captured = Captured()

    def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        hidden = args[0] if args else kwargs.pop("hidden_states")
        captured.hidden.append(hidden.detach().to(store))
        captured.args.append(to_device(tuple(args[1:]), store))
        captured.kwargs.append(to_device(dict(kwargs), store))
        raise _StopForward

    handle = first_block.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for index, batch in enumerate(batches):
            keep = real_positions(batch, index)
            if isinstance(batch, Mapping):
                _check_keys(model, batch, index)
            try:
                _call_model(model, batch, device)
            except _StopForward:
                if keep is not None and tuple(captured.hidden[-1].shape[:-1]) != tuple(keep.shape):
                    raise InvalidParameterError(
                        "data", f"an attention_mask matching the block inputs {tuple(captured.hidden[-1].shape)}",
                        f"batch {index}: attention_mask {tuple(keep.shape)}",
                        "Fix: give input_ids and attention_mask of the same (batch, tokens) shape.") from None
                captured.keep.append(None if keep is None else keep.to(store))
                continue
            raise InvalidParameterError(
                "blocks", "the blocks the model's forward runs through", "<first block never called>",
                f"Fix: the forward of batch {index} did not reach the first block; pass blocks='<path>'.",
            )
    finally:
        handle.remove()
    logger.info("captured %d batches, %d real tokens of the first block's inputs", len(batches), captured.tokens)
    return captured


@torch.no_grad()
def run_block(block: nn.Module, inputs: Captured, device: torch.device, store: torch.device | None,
              positions: Callable[[torch.Tensor | None], None] | None = None) -> Captured:
    """Outputs of ``block`` for every captured batch (with the same extra arguments), kept on
    ``store``; with ``store=None`` the block only runs (for its hooks) and nothing is kept.
    ``positions`` is told each batch's real positions before it runs
    (:class:`prunekit.oneshot.stats.RealPositions`)."""
    out = Captured(args=inputs.args, kwargs=inputs.kwargs, keep=inputs.keep)
    for hidden, args, kwargs, keep in zip(inputs.hidden, inputs.args, inputs.kwargs, inputs.keep):
        if positions is not None:
            positions(keep)
        result = block(hidden.to(device), *to_device(args, device), **to_device(kwargs, device))
        if store is not None:
            if isinstance(result, (tuple, list)):
                result = result[0]
            out.hidden.append(result.detach().to(store))
    return out


def _input_embedding(model: nn.Module) -> nn.Embedding | None:
    getter = getattr(model, "get_input_embeddings", None)
    found = getter() if callable(getter) else None
    if isinstance(found, nn.Embedding):
        return found
    return next((m for m in model.modules() if isinstance(m, nn.Embedding)), None)


def check_token_ids(model: nn.Module, batches: Sequence[Any]) -> None:
    """Refuse calibration token ids outside the model's vocabulary (its input embedding's rows),
    before anything runs: the embedding would fail deep inside with an ``IndexError``."""
    embedding = _input_embedding(model)
    if embedding is None:
        return
    size = embedding.num_embeddings
    for index, batch in enumerate(batches):
        ids = batch.get("input_ids") if isinstance(batch, Mapping) else batch
        if not isinstance(ids, torch.Tensor) or ids.is_floating_point() or ids.numel() == 0:
            continue
        low, high = int(ids.min()), int(ids.max())
        if low < 0 or high >= size:
            raise InvalidParameterError(
                "data", f"token ids in [0, {size}) (the model's vocabulary)",
                f"<batch {index}: ids from {low} to {high}>",
                "Fix: tokenize the text with the model's own tokenizer or vocabulary.",
            )

