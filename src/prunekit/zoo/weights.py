"""Loading pretrained weights into zoo models (strict, by key, never unpickling code)."""

from __future__ import annotations

import os

from torch import nn

from ..errors import CheckpointError
from ..io import load_state_dict_file

__all__ = ["load_weights"]


def load_weights(model: nn.Module, path: str | os.PathLike[str], *, strict: bool = True) -> nn.Module:
    """Load a state dict file (safetensors, or a torch file read with
    ``weights_only=True``) into ``model`` key for key and return the model.

    Raises :class:`~prunekit.errors.CheckpointError` naming the file, the
    missing and unexpected keys and the shapes that differ.
    """
    state = load_state_dict_file(path)
    own = model.state_dict()
    if strict:
        # BatchNorm fills in a missing ``num_batches_tracked`` itself (files
        # saved without it, such as many safetensors exports, load strictly)
        missing = sorted(k for k in set(own) - set(state) if not k.endswith(".num_batches_tracked"))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            raise CheckpointError(
                f"{os.fspath(path)!r} does not match {type(model).__name__}: expected its "
                f"{len(own)} keys, found {len(state)}; missing {missing[:8]}"
                f"{' ...' if len(missing) > 8 else ''}, unexpected {unexpected[:8]}"
                f"{' ...' if len(unexpected) > 8 else ''}. "
                "Fix: build the model with the architecture the checkpoint was saved from "
                "(e.g. the shortcut option or depth), or pass strict=False."
            )
    wrong = [
        f"{k}: expected {tuple(own[k].shape)}, found {tuple(v.shape)}"
        for k, v in state.items()
        if k in own and tuple(own[k].shape) != tuple(v.shape)
    ]
    if wrong:
        raise CheckpointError(
            f"{os.fspath(path)!r} has tensors of other shapes than {type(model).__name__}: "
            + "; ".join(wrong[:8])
            + ". Fix: build the model with the width / classes the checkpoint was saved with."
        )
    model.load_state_dict(state, strict=strict)
    return model
