"""Second-order criteria: Optimal Brain Damage with a diagonal Fisher Hessian.

LeCun, Denker & Solla 1990, "Optimal Brain Damage" (NeurIPS 2): near a
minimum, removing weight ``w_k`` raises the loss by about the saliency

    s_k = ½ · h_kk · w_k²

where ``h_kk`` is the diagonal of the Hessian. OBD computes ``h_kk`` by a
second backward pass; here it is approximated, as is usual now, by the
diagonal of the empirical Fisher (the Gauss-Newton matrix of the
log-likelihood with the data's labels):

    h_kk ≈ F_kk = (1/N) Σ_n (∂ℓ_n/∂w_k)²

the mean over the ``N`` examples of the squared *per-example* gradient of the
loss. Two ways to get it (``fisher=``):

* ``"per_sample"`` (default): exact per-example gradients with
  ``torch.func.vmap(grad(...))``, ``chunk_size`` examples at a time.
* ``"batch"``: one gradient per minibatch ``ḡ_b`` (the mean over its ``B``
  examples), ``F ≈ mean_b(B·ḡ_b²)``. For ``B = 1`` this is exact; in
  general ``E[B·ḡ²] = σ² + B·μ²`` against ``E[g²] = σ² + μ²`` (μ, σ² the
  mean and variance of per-example gradients), so it is close near a minimum
  where ``μ ≈ 0`` and much cheaper for models ``vmap`` cannot run.

The network runs in eval mode while the Fisher is computed (dropout off,
batch norm on its running statistics), then goes back to its mode.

Structured units (channels, neurons, kernels) score the sum of their entries'
saliencies, the change of loss of removing them all under the same diagonal
approximation (:meth:`Criterion.reduce`).
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.utils._pytree import tree_map

from ..batches import forward_logits, split_batch, to_device
from ..deprecation import renamed_argument, renamed_value
from ..errors import InvalidParameterError, check_choice
from ..losses import LossFn, classification_loss
from ..targets import Target, check_materialised
from .base import Criterion, context_with_data
from .gradients import check_labels, model_logits
from .registry import MASK_SPACES, SCORES

__all__ = ["OBD", "diagonal_fisher"]

logger = logging.getLogger(__name__)

FISHER_MODES = ("per_sample", "batch")



def _batches(data: Any) -> Iterable[Any]:
    """A single ``(inputs, targets)`` batch, or an iterable of them."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[1], torch.Tensor):
        return [data]
    if data is None or isinstance(data, (torch.Tensor, str)) or not hasattr(data, "__iter__"):
        raise InvalidParameterError(
            "data",
            "an (inputs, targets) batch or an iterable of them (a DataLoader)",
            f"<{type(data).__name__}>",
            "Fix: pass data=loader (and max_batches=N to use its first N batches).",
        )
    return data


def _is_count(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_max_batches(max_batches: Any) -> None:
    if max_batches is not None and (isinstance(max_batches, bool) or not isinstance(max_batches, numbers.Integral)
                                    or max_batches < 1):
        raise InvalidParameterError("max_batches", "a positive int or None (all)", max_batches)


def _param_names(model: nn.Module, targets: Sequence[Target]) -> list[str]:
    """Qualified names, in ``model.named_parameters()``, of the targets' tensors."""
    by_id = {id(p): n for n, p in model.named_parameters()}
    names = []
    for target in targets:
        name = by_id.get(id(target.original))
        if name is None:
            raise InvalidParameterError(
                "targets", "parameters of the model given to prepare()", target.name,
                "Fix: build the targets from the same model.",
            )
        names.append(name)
    return names


class _Bound:
    """Calls ``model`` with some parameters replaced (for :func:`forward_logits`)."""

    def __init__(self, model: nn.Module, params: dict[str, torch.Tensor]) -> None:
        self.model = model
        self.params = params

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return functional_call(self.model, self.params, args, kwargs)


def diagonal_fisher(
    model: nn.Module,
    targets: Sequence[Target],
    data: Any,
    *,
    loss_fn: LossFn | None = None,
    max_batches: int | None = None,
    fisher: str = "per_sample",
    chunk_size: int | None = 64,
    batches: int | None = None,
) -> list[torch.Tensor]:
    """Diagonal of the empirical Fisher ``(1/N) Σ_n (∂ℓ_n/∂w)²`` of each target (float32).

    Args:
        model: the network (its mode is restored afterwards).
        targets: the tensors whose Fisher diagonal is wanted.
        data: one ``(inputs, targets)`` batch or an iterable of them.
        loss_fn: ``loss(logits, labels)`` averaged over the batch; default
            cross-entropy (:func:`prunekit.training.classification_loss`).
        max_batches: use at most this many batches (default: all of ``data``).
        fisher: ``"per_sample"`` (exact) or ``"batch"`` (squared minibatch
            gradients times the batch size; see the module docstring).
        chunk_size: examples per ``vmap`` chunk in ``per_sample`` mode
            (None: the whole batch at once).
        batches: deprecated name of ``max_batches``.
    """
    max_batches = renamed_value(batches, "batches", "max_batches",
                                "prunekit.scores.diagonal_fisher", new_value=max_batches)
    fisher = check_choice("fisher", fisher, FISHER_MODES)
    _check_max_batches(max_batches)
    if chunk_size is not None and (
        isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral) or chunk_size < 1
    ):
        raise InvalidParameterError("chunk_size", "a positive int or None", chunk_size)
    if loss_fn is None:
        loss_fn = classification_loss
    source = _batches(data)
    names = _param_names(model, targets)
    params = {n: t.original.detach() for n, t in zip(names, targets)}
    sums = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    device = next(iter(params.values())).device
    seen = 0

    def batch_loss(p: dict[str, torch.Tensor], inputs: Any, labels: torch.Tensor) -> torch.Tensor:
        return loss_fn(forward_logits(_Bound(model, p), inputs), labels)  # type: ignore[arg-type]

    def example_loss(p: dict[str, torch.Tensor], inputs: Any, label: torch.Tensor) -> torch.Tensor:
        return batch_loss(p, tree_map(lambda t: t.unsqueeze(0), inputs), label.unsqueeze(0))

    per_example = vmap(grad(example_loss), in_dims=(None, 0, 0), chunk_size=chunk_size)
    was_training = model.training
    model.eval()
    try:
        for index, batch in enumerate(source):
            if max_batches is not None and index >= max_batches:
                break
            inputs, labels = split_batch(batch, index)
            inputs, labels = to_device(inputs, device), labels.to(device)
            if index == 0:  # the inputs and targets checked once, before vmap hides where they fail
                with torch.no_grad():
                    logits = model_logits(model, inputs, index)
                if loss_fn is classification_loss:
                    check_labels(logits, labels, index)
            size = int(labels.shape[0])
            if fisher == "per_sample":
                grads = per_example(params, inputs, labels)
                for n, g in grads.items():
                    sums[n] += g.float().pow(2).sum(0)
            else:
                grads = grad(batch_loss)(params, inputs, labels)
                for n, g in grads.items():
                    sums[n] += g.float().pow(2) * size * size  # B·ḡ² for each of the B examples
            seen += size
    finally:
        model.train(was_training)
    if seen == 0:
        raise InvalidParameterError("data", "at least one example", "<no batches>", "Fix: pass a non-empty loader.")
    logger.info("diagonal Fisher (%s) of %d tensors from %d examples", fisher, len(targets), seen)
    return [sums[n].div_(seen) for n in names]


class OBD(Criterion):
    """Optimal Brain Damage saliency ``½·F_kk·w_k²``, diagonal Fisher from data (LeCun et al. 1990).

    ``F`` is the diagonal empirical Fisher of :func:`diagonal_fisher`.

    ``prepare(model, targets, data=loader)`` computes the Fisher; the keyword
    arguments of the constructor (``loss_fn``, ``max_batches``, ``fisher``,
    ``chunk_size``) may also be given to ``prepare`` for one step. ``w`` is
    the current (masked) weight. ``batches`` is the deprecated name of
    ``max_batches``. Example::

        prunekit.prune(model, 0.9, criterion="obd", scope="global", context={"data": loader})
        prunekit.prune(model, 0.5, criterion=OBD(max_batches=4), structure="channel", context={"data": loader})
    """

    name = "obd"
    needs = "gradients"
    requires = ("data",)
    fresh_scores = True
    nonnegative = True

    def __init__(
        self,
        loss_fn: LossFn | None = None,
        max_batches: int | None = None,
        fisher: str = "per_sample",
        chunk_size: int | None = 64,
        *,
        batches: int | None = None,
    ) -> None:
        max_batches = renamed_value(batches, "batches", "max_batches", "prunekit.scores.OBD", new_value=max_batches)
        _check_max_batches(max_batches)
        self.options = {"loss_fn": loss_fn, "max_batches": max_batches,
                        "fisher": check_choice("fisher", fisher, FISHER_MODES), "chunk_size": chunk_size}
        self._fisher: dict[int, torch.Tensor] = {}

    def prepare(self, model: nn.Module, targets: Sequence[Target], **context: Any) -> None:
        check_materialised(targets)
        context = dict(context)
        if _is_count(context.get("batches")):  # the old name of max_batches, not of data
            context["max_batches"] = renamed_argument(context, "batches", "max_batches", "OBD.prepare",
                                                      new_value=context.get("max_batches"))
        context = context_with_data(context)
        if context.get("data") is None:
            raise InvalidParameterError(
                "data", "a batch or loader for the OBD Fisher (criterion 'obd' requires data)", None,
                "Fix: pruner.step(sparsity, data=loader), or prune(..., context={'data': loader}).",
            )
        options = dict(self.options)
        options.update({k: context[k] for k in options if context.get(k) is not None})
        fishers = diagonal_fisher(model, targets, context["data"], **options)
        self._fisher = {id(t.original): f for t, f in zip(targets, fishers)}

    def fisher_of(self, target: Target) -> torch.Tensor:
        """The Fisher diagonal computed for ``target`` by the last :meth:`prepare`."""
        fisher = self._fisher.get(id(target.original))
        if fisher is None:
            raise InvalidParameterError(
                "criterion", f"prepare(model, targets, data=...) run for {target.name} before score()",
                "<no Fisher for this target>", "Fix: call prepare first (the Pruner does this at each step).",
            )
        return fisher

    def score(self, target: Target) -> torch.Tensor:
        weight = target.effective().float()
        return weight.pow(2).mul_(self.fisher_of(target)).mul_(0.5)

    def __repr__(self) -> str:
        return f"OBD(fisher={self.options['fisher']!r})"


SCORES.register("obd", OBD, unit_spaces=MASK_SPACES, needs=OBD.needs, aliases=("optimal_brain_damage",))
