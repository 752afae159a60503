"""Importance of attention heads and MLP neurons, and which to remove for a ratio.

Two criteria, one score per unit (higher = keep):

* ``"magnitude"``: the L2 norm of every weight that belongs to the unit,
  ``I_h = sqrt(sum of w^2)`` over head ``h``'s rows of the query, key and
  value projections (with biases; under grouped-query attention the key/value
  rows of its group) and its columns of the output projection; for an MLP
  neuron, its rows of the producers and its column of the consumer.
* ``"gradient"``: Michel, Levy and Neubig 2019, "Are Sixteen Heads Really
  Better than One?" (NeurIPS), section 4.1: each head output is multiplied by
  a gate ``xi_h`` (all ones) and
  ``I_h = E_x |dL(x)/dxi_h|``,
  the expectation taken over the given batches (one absolute value per batch,
  as in the authors' and Hugging Face's bertology code), then normalised per layer by the L2 norm,
  ``I_h / ||I^(l)||_2`` (section 4.2). The gates are
  :func:`prunekit.surgery.heads.head_gates`; the model runs in eval mode
  (no dropout). The same with a gate on each MLP hidden neuron gives its
  score.

Selection (:func:`select_heads`, :func:`select_neurons`) removes the lowest scores, the same number
in every layer (``scope="local"``) or across layers (``scope="global"``,
normalised scores compared directly). Grouped-query attention: ``gqa="query"``
removes the same number of query heads from every key/value group (keeping
every KV head), ``gqa="group"`` removes whole groups ranked by their summed
score.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn

from ..errors import InvalidParameterError, check_choice
from ..losses import BatchLoss, batch_loss
from .heads import AttentionSpec, Block, MlpSpec, head_gates, neuron_gates

__all__ = [
    "IMPORTANCES",
    "default_loss",
    "head_scores",
    "neuron_scores",
    "resolve_scores",
    "score_heads",
    "score_mlp_neurons",
    "select_heads",
    "select_neurons",
]

logger = logging.getLogger(__name__)

IMPORTANCES = ("magnitude", "gradient")
LossFn = BatchLoss
default_loss = batch_loss


def _block_sq(model: nn.Module, block: Block, count: int) -> torch.Tensor:
    """Sum of squares of each unit's entries in a block, shape ``(count,)``."""
    module = model.get_submodule(block.module)
    total = torch.zeros(count)
    for tensor, dim in block.tensors:
        t = getattr(module, tensor).detach().float().movedim(dim, 0)
        t = t[block.offset: block.offset + count * block.unit].reshape(count, -1)
        total += t.pow(2).sum(dim=1).cpu()
    return total


def _magnitude_head(model: nn.Module, spec: AttentionSpec) -> torch.Tensor:
    sq = sum((_block_sq(model, b, spec.num_heads) for b in spec.query + spec.output), torch.zeros(spec.num_heads))
    kv = sum((_block_sq(model, b, spec.num_kv_heads) for b in spec.key_value), torch.zeros(spec.num_kv_heads))
    return (sq + kv.repeat_interleave(spec.group_size)).sqrt()


def _magnitude_mlp(model: nn.Module, spec: MlpSpec) -> torch.Tensor:
    return sum((_block_sq(model, b, spec.size) for b in spec.producers + spec.consumers), torch.zeros(spec.size)).sqrt()


def _gradient(
    model: nn.Module, gates_cm: Any, batches: Iterable[Any] | None, loss_fn: LossFn | None, normalize: bool
) -> dict[Any, torch.Tensor]:
    if batches is None:
        raise InvalidParameterError(
            "batches", "an iterable of batches for importance='gradient'", None,
            "Fix: pass batches=[(inputs, targets), ...] or dicts with labels.",
        )
    loss_fn = loss_fn or default_loss
    was_training = model.training
    model.eval()
    try:
        with gates_cm as gates:
            keys = list(gates)
            total = {k: torch.zeros(gates[k].shape) for k in keys}
            count = 0
            for batch in batches:
                loss = loss_fn(model, batch)
                grads = torch.autograd.grad(loss, [gates[k] for k in keys], allow_unused=True)
                for k, g in zip(keys, grads):
                    if g is not None:
                        total[k] += g.detach().abs().cpu()
                count += 1
    finally:
        model.train(was_training)
    if count == 0:
        raise InvalidParameterError("batches", "at least one batch", "<empty>")
    scores = {k: v / count for k, v in total.items()}
    if normalize:
        scores = {k: v / v.norm().clamp_min(1e-20) for k, v in scores.items()}
    return scores


def _scores(
    model: nn.Module,
    specs: Mapping[Any, Any],
    importance: str,
    magnitude: Callable[[nn.Module, Any], torch.Tensor],
    gates: Callable[..., Any],
    batches: Iterable[Any] | None,
    loss_fn: LossFn | None,
    normalize: bool,
) -> dict[Any, torch.Tensor]:
    check_choice("importance", importance, IMPORTANCES)
    if importance == "magnitude":
        return {k: magnitude(model, s) for k, s in specs.items()}
    return _gradient(model, gates(model, specs, requires_grad=True), batches, loss_fn, normalize)


def head_scores(
    model: nn.Module,
    specs: Mapping[Any, AttentionSpec],
    importance: str = "magnitude",
    *,
    batches: Iterable[Any] | None = None,
    loss_fn: LossFn | None = None,
    normalize: bool = True,
) -> dict[Any, torch.Tensor]:
    """One score per head and layer, ``{layer: Tensor(num_heads)}`` (see the module doc)."""
    return _scores(model, specs, importance, _magnitude_head, head_gates, batches, loss_fn, normalize)


def neuron_scores(
    model: nn.Module,
    specs: Mapping[Any, MlpSpec],
    importance: str = "magnitude",
    *,
    batches: Iterable[Any] | None = None,
    loss_fn: LossFn | None = None,
    normalize: bool = True,
) -> dict[Any, torch.Tensor]:
    """One score per MLP hidden neuron and layer, ``{layer: Tensor(size)}``."""
    return _scores(model, specs, importance, _magnitude_mlp, neuron_gates, batches, loss_fn, normalize)


def _check_ratio(ratio: Any) -> float:
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 <= ratio < 1.0 or math.isnan(ratio):
        raise InvalidParameterError("ratio", "a fraction in [0, 1) of units to remove", ratio)
    return float(ratio)


def _lowest(scores: torch.Tensor, n: int) -> list[int]:
    """Indices of the ``n`` lowest scores (ties: lower index first), sorted."""
    order = sorted(range(len(scores)), key=lambda i: (float(scores[i]), i))
    return sorted(order[:n])


def _check_scores(scores: Mapping[Any, torch.Tensor], sizes: Mapping[Any, int]) -> None:
    for key, size in sizes.items():
        s = scores.get(key)
        if not isinstance(s, torch.Tensor) or s.shape != (size,):
            raise InvalidParameterError(
                "importance", f"a score tensor of shape ({size},) for layer {key!r}",
                f"<{type(s).__name__}{'' if s is None else ' ' + str(tuple(getattr(s, 'shape', ())))}>",
            )


def select_neurons(
    sizes: Mapping[Any, int], scores: Mapping[Any, torch.Tensor], ratio: float, *, scope: str = "local"
) -> dict[Any, list[int]]:
    """Units to remove: the lowest ``round(ratio * size)`` per layer (local), or the
    lowest ``round(ratio * total)`` over all layers keeping one per layer (global)."""
    ratio = _check_ratio(ratio)
    check_choice("scope", scope, ("local", "global"))
    _check_scores(scores, sizes)
    if scope == "local":
        return {k: _lowest(scores[k], min(round(ratio * n), n - 1)) for k, n in sizes.items()}
    pool = sorted((float(scores[k][i]), j, i, k) for j, (k, n) in enumerate(sizes.items()) for i in range(n))
    budget = round(ratio * sum(sizes.values()))
    left = dict(sizes)
    chosen: dict[Any, list[int]] = {k: [] for k in sizes}
    for _, _, i, k in pool:
        if budget == 0:
            break
        if left[k] > 1:
            chosen[k].append(i)
            left[k] -= 1
            budget -= 1
    return {k: sorted(v) for k, v in chosen.items()}


def select_heads(
    specs: Mapping[Any, AttentionSpec],
    scores: Mapping[Any, torch.Tensor],
    ratio: float,
    *,
    gqa: str = "query",
    scope: str = "local",
) -> dict[Any, list[int]]:
    """Heads to remove for ``ratio`` (see the module doc); GQA layers keep equal groups."""
    check_choice("gqa", gqa, ("query", "group"))
    grouped = {k: s for k, s in specs.items() if s.group_size > 1}
    if not grouped:
        return select_neurons({k: s.num_heads for k, s in specs.items()}, scores, ratio, scope=scope)
    ratio = _check_ratio(ratio)
    if scope != "local":
        raise InvalidParameterError(
            "scope", "'local' for grouped-query attention (groups must stay equal)", scope, "Fix: scope='local'.",
        )
    _check_scores(scores, {k: s.num_heads for k, s in specs.items()})
    plan: dict[Any, list[int]] = {}
    for key, spec in specs.items():
        g, kv, s = spec.group_size, spec.num_kv_heads, scores[key]
        if gqa == "query":
            m = min(round(ratio * g), g - 1)
            plan[key] = sorted(grp * g + i for grp in range(kv) for i in _lowest(s[grp * g:(grp + 1) * g], m))
        else:
            m = min(round(ratio * kv), kv - 1)
            groups = _lowest(s.view(kv, g).sum(dim=1), m)
            plan[key] = [grp * g + i for grp in groups for i in range(g)]
        if len(plan[key]) != round(ratio * spec.num_heads):
            logger.info("%s: %d heads removed for ratio %.3f (rounded to whole %s units of grouped-query attention)",
                        key, len(plan[key]), ratio, gqa)
    return plan


def resolve_scores(
    model: nn.Module,
    specs: Mapping[Any, Any],
    importance: str | Mapping[Any, torch.Tensor],
    scorer: Callable[..., dict[Any, torch.Tensor]],
    **kwargs: Any,
) -> Mapping[Any, torch.Tensor]:
    """Scores from a criterion name, or the user's own ``{layer: scores}``."""
    if isinstance(importance, Mapping):
        return importance
    return scorer(model, specs, importance, **kwargs)


def score_heads(model: nn.Module, importance: str = "magnitude", **kwargs: Any) -> dict[Any, torch.Tensor]:
    """Score every head of ``model``: ``{layer: Tensor(num_heads)}``, keys as in
    :func:`prunekit.surgery.heads.attention_layers`; ``kwargs`` are ``batches``,
    ``loss_fn`` and ``normalize`` of :func:`head_scores` (criteria in the module doc)."""
    from .heads import attention_layers

    return head_scores(model, attention_layers(model), importance, **kwargs)


def score_mlp_neurons(model: nn.Module, importance: str = "magnitude", **kwargs: Any) -> dict[Any, torch.Tensor]:
    """Score every MLP hidden neuron of a Hugging Face transformer: ``{layer: Tensor(size)}``
    (``kwargs`` as for :func:`score_heads`)."""
    from .heads import mlp_layers

    return neuron_scores(model, mlp_layers(model), importance, **kwargs)
