"""The parts of a causal LM outside its blocks that ``oneshot_prune`` can also prune:
the output head (after the model's final norm) and the token embedding.

Located next to the block list (:func:`prunekit.oneshot.blocks.find_blocks`):
the final norm is the first of :data:`FINAL_NORM_NAMES` on the module holding
the blocks (LLaMA ``model.model.norm``, OPT ``model.decoder.final_layer_norm``
followed by ``project_out`` when present, GPT-2 ``transformer.ln_f``, the zoo
GPT's ``ln_f``); the head and the embedding come from Hugging Face's
``get_output_embeddings`` / ``get_input_embeddings``, else from ``lm_head`` on
the model and :data:`EMBEDDING_NAMES` on the block list's parent.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import InvalidParameterError
from ..structures import NM
from ..targets import Target
from .blocks import weight_matrix
from .capture import Captured
from .stats import InputStats

__all__ = ["EMBEDDING_NAMES", "FINAL_NORM_NAMES", "OutputParts", "find_output_parts", "head_input_stats"]

FINAL_NORM_NAMES: tuple[str, ...] = ("norm", "final_layer_norm", "ln_f")
EMBEDDING_NAMES: tuple[str, ...] = ("embed_tokens", "wte")


@dataclass
class OutputParts:
    """What :func:`find_output_parts` found; ``None`` for what was not asked."""

    norm: nn.Module | None
    project_out: nn.Module | None
    head: Target | None
    embedding: Target | None
    tied: bool


def _name_of(model: nn.Module, module: nn.Module) -> str | None:
    return next((name for name, m in model.named_modules() if m is module), None)


def _target(model: nn.Module, module: nn.Module | None, kind: type[nn.Module]) -> Target | None:
    name = _name_of(model, module) if isinstance(module, kind) else None
    return None if name is None else Target(f"{name}.weight", name, module, "weight")


def _hf(model: nn.Module, getter: str) -> nn.Module | None:
    get = getattr(model, getter, None)
    try:
        return get() if callable(get) else None
    except (NotImplementedError, AttributeError):
        return None


def _parent(model: nn.Module, block_path: str) -> nn.Module:
    parent = block_path.rpartition(".")[0]
    return model.get_submodule(parent) if parent else model


def _same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    """One parameter, or two sharing their storage (meta tensors have none: only identity counts)."""
    return a is b or (a.device.type != "meta" and a.device == b.device and a.data_ptr() == b.data_ptr())


def _check_flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise InvalidParameterError(name, "True or False", value)
    return value


def _check_nm(param: str, target: Target, nm: NM | None) -> None:
    width = weight_matrix(target).shape[1]
    if nm is not None and width % nm.m:
        raise InvalidParameterError("structure", f"an input size divisible by M={nm.m}",
                                    f"{target.name} with {width} columns",
                                    f"Fix: leave {param}=False or pick M dividing {width}.")


def find_output_parts(model: nn.Module, block_path: str, head: object, embeddings: object, nm: NM | None,
                      mode: str) -> OutputParts:
    """Validate ``head`` / ``embeddings`` of :func:`prunekit.oneshot_prune` and find their modules.

    Raises:
        InvalidParameterError: a flag that is not a bool; ``head=True`` on a model
            whose final norm or Linear head is not found; ``embeddings=True``
            without a token ``nn.Embedding``; a head tied to the embedding unless
            both flags are given (pruning one prunes the other) and
            ``mode="permanent"``; N:M with a width not divisible by M.
    """
    head, embeddings = _check_flag("head", head), _check_flag("embeddings", embeddings)
    parent = _parent(model, block_path)
    parts = OutputParts(None, None, None, None, False)
    head_target = _target(model, _hf(model, "get_output_embeddings") or getattr(model, "lm_head", None), nn.Linear)
    emb_module = _hf(model, "get_input_embeddings") or next(
        (getattr(parent, n) for n in EMBEDDING_NAMES if isinstance(getattr(parent, n, None), nn.Embedding)), None)
    emb_target = _target(model, emb_module, nn.Embedding)
    tied = head_target is not None and emb_target is not None and _same_tensor(head_target.original,
                                                                               emb_target.original)
    if head:
        parts.norm = next((m for n in FINAL_NORM_NAMES if isinstance(m := getattr(parent, n, None), nn.Module)),
                          None)
        if parts.norm is None or head_target is None:
            missing = "final norm (one of " + ", ".join(FINAL_NORM_NAMES) + f" beside {block_path!r})" \
                if parts.norm is None else "Linear output head (get_output_embeddings() or lm_head)"
            raise InvalidParameterError(
                "head", f"a model with a {missing}", f"<{type(model).__name__}>",
                "Fix: leave head=False (the default); the head's inputs are the final norm's outputs.")
        project_out = getattr(parent, "project_out", None)
        parts.project_out = project_out if isinstance(project_out, nn.Module) else None
        parts.head = head_target
        _check_nm("head", head_target, nm)
    if embeddings:
        if emb_target is None:
            raise InvalidParameterError("embeddings", "a model with a token nn.Embedding",
                                        f"<{type(model).__name__}>", "Fix: leave embeddings=False (the default).")
        parts.embedding = emb_target
        _check_nm("embeddings", emb_target, nm)
    if tied and (head or embeddings):
        if not (head and embeddings):
            flag = "head" if head else "embeddings"
            raise InvalidParameterError(
                flag, f"{flag}=False, or head=True with embeddings=True",
                f"{flag}=True on {head_target.name} tied to {emb_target.name}",  # type: ignore[union-attr]
                "Fix: pass head=True, embeddings=True to prune the shared matrix (once, from the head's "
                "inputs), or leave both False.")
        if mode != "permanent":
            raise InvalidParameterError("mode", "'permanent' for a head tied to the embedding", mode,
                                        "Fix: mode='permanent', or untie the head first.")
    parts.tied = tied
    for target in (parts.head, parts.embedding):
        if target is not None and mode != "permanent" and target.state not in ("dense", mode):
            raise InvalidParameterError("mode", f"{target.state!r}, the mode {target.name} is already pruned in",
                                        mode)
    return parts


@torch.no_grad()
def head_input_stats(parts: OutputParts, last: Captured, device: torch.device, norms: bool,
                     hessian: bool) -> dict[str, InputStats]:
    """Statistics of the head's inputs ``X = project_out(norm(h))`` over the real positions of the last
    block's outputs ``h``."""
    if parts.head is None or parts.norm is None:
        raise RuntimeError("head_input_stats needs the parts found with head=True")
    stats = InputStats(weight_matrix(parts.head).shape[1], norms, hessian, device)
    layers: Iterable[nn.Module] = [m for m in (parts.norm, parts.project_out) if m is not None]
    for hidden, keep in zip(last.hidden, last.keep):
        x = hidden.to(device)
        for layer in layers:
            x = layer(x)
        stats.add(x, keep)
    return {parts.head.name: stats}
