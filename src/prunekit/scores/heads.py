"""Importance of attention heads and MLP neurons: scores of the ``head`` and ``neuron`` unit spaces.

A head/neuron score is called as ``score(model, specs)`` with ``specs``
``{layer: AttentionSpec}`` or ``{layer: MlpSpec}``
(:func:`prunekit.coupling.attention_layers`, :func:`prunekit.coupling.mlp_layers`)
and returns ``{layer: Tensor(units)}``, higher = keep. Registered in
:data:`prunekit.scores.SCORES` for the unit spaces ``("head", "neuron")``:

==============  ==================================================================
name            score of head / neuron ``u``
==============  ==================================================================
``magnitude``   the **L1** norm ``sum |w|`` of every weight that belongs to the unit:
                head ``h``'s rows of the query, key and value projections (with
                biases; under grouped-query attention the key/value rows of its
                group) and its columns of the output projection; for an MLP neuron,
                its rows of the producers and its column of the consumer. (Before
                the one score registry this name meant the L2 norm; that is now
                ``l2``, as for weights and channel groups.)
``l2``          ``sqrt(sum w²)`` over the same entries
``gradient``    Michel, Levy and Neubig 2019, "Are Sixteen Heads Really Better than
                One?" (NeurIPS), section 4.1: each head output is multiplied by a
                gate ``xi_h`` (all ones) and ``I_h = E_x |dL(x)/dxi_h|`` over the
                batches of ``data`` (one absolute value per batch, as in the authors'
                and Hugging Face's bertology code), then normalised per layer by the
                L2 norm ``I_h / ||I^(l)||_2`` (section 4.2). Since ``dL/dxi_h`` is
                ``sum w·dL/dw`` over the head's output-projection columns, this is the
                first-order Taylor score of the head: ``taylor`` names it too. The
                gates are :func:`prunekit.coupling.head_gates`; the model runs in eval
                mode. The same with a gate on each MLP hidden neuron scores neurons.
==============  ==================================================================

:func:`head_scores` / :func:`neuron_scores` / :func:`score_heads` /
:func:`score_mlp_neurons` keep their names and resolve ``importance`` through
:func:`prunekit.scores.create_score`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn

from ..coupling.families import attention_layers, mlp_layers
from ..coupling.unit_gates import head_gates, neuron_gates
from ..coupling.units import AttentionSpec, MlpSpec, UnitSlice
from ..deprecation import renamed_value
from ..errors import InvalidParameterError
from ..losses import BatchLoss, batch_loss
from .registry import SCORES, create_score, list_scores, register_score, score_entry

__all__ = [
    "IMPORTANCES",
    "HeadMagnitude",
    "HeadGradient",
    "default_loss",
    "head_scores",
    "neuron_scores",
    "resolve_scores",
    "score_heads",
    "score_mlp_neurons",
]

logger = logging.getLogger(__name__)

#: The head/neuron scores registered here (see :func:`prunekit.scores.list_scores` for all).
IMPORTANCES = ("magnitude", "l2", "gradient", "taylor")
default_loss = batch_loss
Scores = dict[Any, torch.Tensor]


def _slice_norm(model: nn.Module, block: UnitSlice, count: int, p: int) -> torch.Tensor:
    """Sum of ``|w|^p`` of each unit's entries in a unit slice, shape ``(count,)``."""
    module = model.get_submodule(block.module)
    total = torch.zeros(count, dtype=torch.float64)
    for tensor, dim in block.tensors:
        t = getattr(module, tensor).detach().double().movedim(dim, 0)
        t = t[block.offset: block.offset + count * block.unit].reshape(count, -1)
        total += t.abs().pow(p).sum(dim=1).cpu()
    return total


def _units(spec: AttentionSpec | MlpSpec) -> int:
    return spec.num_heads if isinstance(spec, AttentionSpec) else spec.size


class HeadMagnitude:
    """L1 (``p=1``, the ``magnitude`` score) or L2 (``p=2``) norm of each head's / neuron's weights."""

    def __init__(self, p: int = 1) -> None:
        if p not in (1, 2):
            raise InvalidParameterError("p", "1 or 2", p)
        self.p = p
        self.name = "magnitude" if p == 1 else "l2"

    def _one(self, model: nn.Module, spec: AttentionSpec | MlpSpec) -> torch.Tensor:
        if isinstance(spec, AttentionSpec):
            h, kv = spec.num_heads, spec.num_kv_heads
            acc = sum((_slice_norm(model, b, h, self.p) for b in spec.query + spec.output), torch.zeros(h, dtype=torch.float64))
            shared = sum((_slice_norm(model, b, kv, self.p) for b in spec.key_value), torch.zeros(kv, dtype=torch.float64))
            total = acc + shared.repeat_interleave(spec.group_size)
        else:
            total = sum((_slice_norm(model, b, spec.size, self.p) for b in spec.producers + spec.consumers),
                        torch.zeros(spec.size, dtype=torch.float64))
        return (total if self.p == 1 else total.sqrt()).float()

    def __call__(self, model: nn.Module, specs: Mapping[Any, AttentionSpec | MlpSpec]) -> Scores:
        return {k: self._one(model, s) for k, s in specs.items()}


def _gates(model: nn.Module, specs: Mapping[Any, AttentionSpec | MlpSpec]) -> contextlib.AbstractContextManager[Scores]:
    if all(isinstance(s, AttentionSpec) for s in specs.values()):
        return head_gates(model, specs, requires_grad=True)
    if all(isinstance(s, MlpSpec) for s in specs.values()):
        return neuron_gates(model, specs, requires_grad=True)
    raise InvalidParameterError("specs", "attention specs only or MLP specs only", sorted(map(str, specs)))


class HeadGradient:
    """Gradient of the loss with respect to a gate on each unit (Michel et al. 2019).

    ``I_u = mean_batches |dL/dxi_u|`` for a gate ``xi_u`` on each unit, normalised per layer by the L2 norm when ``normalize`` (see the module docstring)."""

    name = "gradient"

    def __init__(self, data: Iterable[Any] | None = None, loss_fn: BatchLoss | None = None,
                 normalize: bool = True) -> None:
        self.data, self.loss_fn, self.normalize = data, loss_fn or default_loss, bool(normalize)

    def __call__(self, model: nn.Module, specs: Mapping[Any, AttentionSpec | MlpSpec]) -> Scores:
        if self.data is None:
            raise InvalidParameterError(
                "data", "an iterable of batches for importance='gradient'", None,
                "Fix: pass data=[(inputs, targets), ...] or dicts with labels.",
            )
        was_training = model.training
        model.eval()
        try:
            with _gates(model, specs) as gates:
                keys = list(gates)
                total = {k: torch.zeros(gates[k].shape) for k in keys}
                count = 0
                for batch in self.data:
                    loss = self.loss_fn(model, batch)
                    grads = torch.autograd.grad(loss, [gates[k] for k in keys], allow_unused=True)
                    for k, g in zip(keys, grads):
                        if g is not None:
                            total[k] += g.detach().abs().cpu()
                    count += 1
        finally:
            model.train(was_training)
        if count == 0:
            raise InvalidParameterError("data", "at least one batch", "<empty>")
        scores = {k: v / count for k, v in total.items()}
        if self.normalize:
            scores = {k: v / v.norm().clamp_min(1e-20) for k, v in scores.items()}
        return scores


_SPACES = ("head", "neuron")
register_score("magnitude", unit_spaces=_SPACES)(lambda: HeadMagnitude(1))
register_score("l2", unit_spaces=_SPACES)(lambda: HeadMagnitude(2))
register_score("gradient", unit_spaces=_SPACES, needs="gradients")(HeadGradient)
register_score("taylor", unit_spaces=_SPACES, needs="gradients")(HeadGradient)


def _build(importance: str, unit_space: str, data: Any, loss_fn: BatchLoss | None, normalize: bool) -> Callable[..., Scores]:
    if not isinstance(importance, str):
        raise InvalidParameterError(
            "importance", f"a score name among {list_scores(unit_space=unit_space)} or {{layer: scores}}",
            f"<{type(importance).__name__}>",
        )
    if importance not in SCORES or unit_space not in SCORES.entry(importance).factories:
        raise InvalidParameterError(
            "importance", f"a {unit_space} score among {list_scores(unit_space=unit_space)} or {{layer: scores}}",
            importance, "Fix: e.g. importance='magnitude' (L1), 'l2' or 'gradient' (with data=).",
        )
    if score_entry(importance).needs[unit_space] == "nothing":
        if data is not None:
            logger.info("score %r uses no data; data is ignored", importance)
        return create_score(importance, unit_space)
    return create_score(importance, unit_space, data=data, loss_fn=loss_fn, normalize=normalize)


def _scores(model: nn.Module, specs: Mapping[Any, Any], importance: str, unit_space: str, data: Any,
            loss_fn: BatchLoss | None, normalize: bool) -> Scores:
    return _build(importance, unit_space, data, loss_fn, normalize)(model, specs)


def head_scores(
    model: nn.Module,
    specs: Mapping[Any, AttentionSpec],
    importance: str = "magnitude",
    *,
    data: Iterable[Any] | None = None,
    loss_fn: BatchLoss | None = None,
    normalize: bool = True,
    batches: Iterable[Any] | None = None,
) -> Scores:
    """One score per head and layer, ``{layer: Tensor(num_heads)}`` (see the module doc).

    ``batches=`` is the deprecated name of ``data=``."""
    data = renamed_value(batches, "batches", "data", "head_scores", new_value=data)
    return _scores(model, specs, importance, "head", data, loss_fn, normalize)


def neuron_scores(
    model: nn.Module,
    specs: Mapping[Any, MlpSpec],
    importance: str = "magnitude",
    *,
    data: Iterable[Any] | None = None,
    loss_fn: BatchLoss | None = None,
    normalize: bool = True,
    batches: Iterable[Any] | None = None,
) -> Scores:
    """One score per MLP hidden neuron and layer, ``{layer: Tensor(size)}``.

    ``batches=`` is the deprecated name of ``data=``."""
    data = renamed_value(batches, "batches", "data", "neuron_scores", new_value=data)
    return _scores(model, specs, importance, "neuron", data, loss_fn, normalize)


def resolve_scores(
    model: nn.Module,
    specs: Mapping[Any, Any],
    importance: str | Mapping[Any, torch.Tensor],
    scorer: Callable[..., Scores],
    **kwargs: Any,
) -> Mapping[Any, torch.Tensor]:
    """Scores from a score name, or the user's own ``{layer: scores}``."""
    if isinstance(importance, Mapping):
        return importance
    return scorer(model, specs, importance, **kwargs)


def score_heads(
    model: nn.Module,
    importance: str = "magnitude",
    *,
    data: Iterable[Any] | None = None,
    loss_fn: BatchLoss | None = None,
    normalize: bool = True,
    batches: Iterable[Any] | None = None,
) -> Scores:
    """Score every head of ``model``: ``{layer: Tensor(num_heads)}``, keys as in
    :func:`prunekit.coupling.attention_layers`; ``data``, ``loss_fn`` and
    ``normalize`` as for :func:`head_scores` (scores in the module doc;
    ``batches=`` is the deprecated name of ``data=``)."""
    data = renamed_value(batches, "batches", "data", "score_heads", new_value=data)
    return head_scores(model, attention_layers(model), importance, data=data, loss_fn=loss_fn, normalize=normalize)


def score_mlp_neurons(
    model: nn.Module,
    importance: str = "magnitude",
    *,
    data: Iterable[Any] | None = None,
    loss_fn: BatchLoss | None = None,
    normalize: bool = True,
    batches: Iterable[Any] | None = None,
) -> Scores:
    """Score every MLP hidden neuron of a Hugging Face transformer: ``{layer: Tensor(size)}``
    (arguments as for :func:`score_heads`; ``batches`` is the deprecated name of ``data``)."""
    data = renamed_value(batches, "batches", "data", "score_mlp_neurons", new_value=data)
    return neuron_scores(model, mlp_layers(model), importance, data=data, loss_fn=loss_fn, normalize=normalize)
