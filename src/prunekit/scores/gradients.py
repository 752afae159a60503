"""Gradients for scores: loss gradients, Hessian-gradient products and synaptic flow.

The machinery of the gradient-based scores (:mod:`prunekit.scores.init`,
zero-cost proxies): each function leaves the model as it was (weights,
buffers such as BN running statistics, every module's train/eval mode) and
writes no ``.grad`` (gradients come from :func:`torch.autograd.grad`).

Data is one ``(inputs, targets)`` batch or a sequence of them
(:func:`as_batches`), and the loss ``loss_fn(logits, targets)`` the mean
cross-entropy unless given (:func:`prunekit.losses.classification_loss`).
"""

from __future__ import annotations

import contextlib
import logging
import numbers
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from ..batches import forward_logits, split_batch
from ..losses import LossFn, classification_loss
from ..errors import InvalidParameterError, is_shape

__all__ = [
    "as_batches",
    "check_input_shape",
    "check_labels",
    "check_positive",
    "hessian_gradient_product",
    "input_flow",
    "input_shape_of",
    "loss_gradients",
    "model_logits",
    "preserved_state",
    "resolve_loss",
    "synaptic_flow",
]

logger = logging.getLogger(__name__)

Batch = tuple[Any, torch.Tensor]


# -- keeping the model as it was ---------------------------------------------------------------


@contextlib.contextmanager
def preserved_state(model: nn.Module, *, eval_mode: bool = False) -> Iterator[None]:
    """Run a block and put back every module's ``training`` flag and every buffer
    (BN running statistics, counters; masks excepted, they are the pruner's).

    With ``eval_mode`` the block runs with the whole model in eval mode.
    """
    modes = [(m, m.training) for m in model.modules()]
    saved = [
        (buf, buf.detach().clone())
        for name, buf in model.named_buffers()
        if not name.endswith("_mask")
    ]
    if eval_mode:
        model.eval()
    try:
        yield
    finally:
        with torch.no_grad():
            for buf, copy in saved:
                buf.copy_(copy)
        for module, mode in modes:
            module.training = mode


@contextlib.contextmanager
def _requiring_grad(tensors: Sequence[torch.Tensor]) -> Iterator[None]:
    """Let autograd reach ``tensors`` even when frozen; restore the flags after."""
    flags = [t.requires_grad for t in tensors]
    for t in tensors:
        t.requires_grad_(True)
    try:
        yield
    finally:
        for t, flag in zip(tensors, flags):
            t.requires_grad_(flag)


# -- data -----------------------------------------------------------------------------------


def _is_single_batch(value: Any) -> bool:
    # a batch is (inputs, targets-tensor); in a sequence of batches the second item is a batch, not a tensor
    return isinstance(value, (tuple, list)) and len(value) == 2 and isinstance(value[1], torch.Tensor)


def as_batches(data: Any, param: str = "data") -> list[Batch]:
    """``data`` as a list of ``(inputs, targets)`` batches: one batch, or a sequence /
    iterable of them (a ``DataLoader`` is read to its end: pass a few batches)."""
    if data is None:
        raise InvalidParameterError(
            param, "an (inputs, targets) batch or a list of them", None,
            "Fix: pass data=(x, y) with a batch of training data (SNIP and GraSP need data).",
        )
    if _is_single_batch(data):
        return [(data[0], data[1])]
    try:
        items = list(data)
    except TypeError:
        raise InvalidParameterError(param, "an (inputs, targets) batch or a list of them",
                                    f"<{type(data).__name__}>") from None
    if not items:
        raise InvalidParameterError(param, "at least one (inputs, targets) batch", "<empty>")
    return [split_batch(batch, i) for i, batch in enumerate(items)]


def resolve_loss(loss_fn: Any) -> LossFn:
    """``loss_fn``, checked, or the mean cross-entropy of :func:`prunekit.losses.classification_loss`."""
    if loss_fn is None:
        return classification_loss
    if not callable(loss_fn):
        raise InvalidParameterError("loss_fn", "a function (logits, targets) -> scalar loss", loss_fn)
    return loss_fn


def check_positive(param: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        raise InvalidParameterError(param, "a positive number", value)
    return float(value)


def _describe_inputs(inputs: Any) -> str:
    if isinstance(inputs, torch.Tensor):
        return f"{tuple(inputs.shape)} {str(inputs.dtype).removeprefix('torch.')}"
    if isinstance(inputs, (tuple, list)):
        return "(" + ", ".join(_describe_inputs(x) for x in inputs) + ")"
    if isinstance(inputs, Mapping):
        return "{" + ", ".join(f"{k}: {_describe_inputs(v)}" for k, v in inputs.items()) + "}"
    return type(inputs).__name__


def model_logits(model: Any, inputs: Any, index: int = 0, param: str = "data") -> torch.Tensor:
    """``forward_logits(model, inputs)``; inputs the model cannot take (a wrong shape or
    dtype) raise :class:`InvalidParameterError` naming ``param`` and the inputs given."""
    try:
        return forward_logits(model, inputs)
    except (RuntimeError, ValueError, IndexError, TypeError) as exc:
        if isinstance(exc, InvalidParameterError):
            raise
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidParameterError(
            param, "inputs the model accepts (the shape and dtype it was built for)",
            f"<batch {index}: inputs {_describe_inputs(inputs)}>",
            f"Fix: give inputs of the model's own shape, batch first (the model said: {reason}).",
        ) from exc


def check_labels(logits: torch.Tensor, targets: Any, index: int = 0, param: str = "data") -> None:
    """Targets fit for :func:`prunekit.losses.classification_loss` with these ``logits``:
    one class index per prediction, each in ``[0, classes)`` (``-100`` is ignored)."""
    classes = int(logits.shape[-1]) if logits.dim() else 0
    if not isinstance(targets, torch.Tensor) or classes == 0:
        return
    predictions = logits.numel() // classes
    if targets.numel() != predictions:
        raise InvalidParameterError(
            param, f"one target per prediction ({predictions} for logits of shape {tuple(logits.shape)})",
            f"<batch {index}: {targets.numel()} targets of shape {tuple(targets.shape)}>",
            "Fix: pair each batch of inputs with its own targets (x, y), y of shape (batch,).",
        )
    labels = targets.long()
    wrong = (labels != -100) & ((labels < 0) | (labels >= classes))
    if bool(wrong.any()):
        raise InvalidParameterError(
            param, f"class indices in [0, {classes}) (the model has {classes} outputs)",
            f"<batch {index}: targets from {int(labels.min())} to {int(labels.max())}>",
            "Fix: use labels 0 .. classes - 1, or pass loss_fn=... for another kind of target.",
        )


# -- gradients ------------------------------------------------------------------------------


def _batch_losses(
    model: nn.Module, tensors: Sequence[torch.Tensor], batches: Sequence[Batch], loss_fn: LossFn | None,
    temperature: float,
) -> Iterator[torch.Tensor]:
    """The loss of each batch, ``loss_fn(logits / temperature, targets)``, with autograd
    reaching ``tensors``; buffers and modes are restored once all are consumed."""
    loss_fn = resolve_loss(loss_fn)
    with preserved_state(model), _requiring_grad(tensors), torch.enable_grad():
        for index, (inputs, targets) in enumerate(batches):
            logits = model_logits(model, inputs, index)
            if loss_fn is classification_loss:
                check_labels(logits, targets, index)
            yield loss_fn(logits / temperature if temperature != 1.0 else logits, targets)


def _accumulate(into: list[torch.Tensor], grads: Sequence[torch.Tensor | None]) -> None:
    for acc, g in zip(into, grads):
        if g is not None:
            acc.add_(g.detach())


def loss_gradients(
    model: nn.Module,
    tensors: Sequence[torch.Tensor],
    batches: Sequence[Batch],
    loss_fn: LossFn | None = None,
    *,
    temperature: float = 1.0,
) -> list[torch.Tensor]:
    """``∂L/∂t`` for each of ``tensors`` (leaf parameters of ``model``), ``L`` the mean
    over ``batches`` of ``loss_fn(logits / temperature, targets)``. The model's
    buffers and modes are restored; no ``.grad`` is written."""
    grads = [torch.zeros_like(t) for t in tensors]
    for loss in _batch_losses(model, tensors, batches, loss_fn, temperature):
        _accumulate(grads, torch.autograd.grad(loss, tensors, allow_unused=True))
    return [g.div_(len(batches)) for g in grads]


def hessian_gradient_product(
    model: nn.Module,
    tensors: Sequence[torch.Tensor],
    batches: Sequence[Batch],
    loss_fn: LossFn | None = None,
    *,
    temperature: float = 1.0,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """``(g, Hg)``: the gradient ``g`` of the mean loss over ``batches`` with respect
    to ``tensors``, and the Hessian-gradient product ``Hg = ∂(∇L · stop(g))/∂θ``
    (double back-propagation, Pearlmutter 1994), batch by batch."""
    g = loss_gradients(model, tensors, batches, loss_fn, temperature=temperature)
    hg = [torch.zeros_like(t) for t in tensors]
    for loss in _batch_losses(model, tensors, batches, loss_fn, temperature):
        grads = torch.autograd.grad(loss, tensors, create_graph=True, allow_unused=True)
        dot = sum((gb * gs).sum() for gb, gs in zip(grads, g) if gb is not None and gb.requires_grad)
        if isinstance(dot, torch.Tensor):  # otherwise the loss is linear in every tensor: H = 0
            _accumulate(hg, torch.autograd.grad(dot, tensors, allow_unused=True))
    return g, [h.div_(len(batches)) for h in hg]


@contextlib.contextmanager
def _reparam_attributes_kept(model: nn.Module) -> Iterator[None]:
    """``torch.nn.utils.prune`` hooks set ``module.<name>`` in every forward pass;
    put back the tensors they held before a forward pass on borrowed tensors."""
    kept = []
    for module in model.modules():
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, torch_prune.BasePruningMethod) and hook._tensor_name in module.__dict__:
                kept.append((module, hook._tensor_name, module.__dict__[hook._tensor_name]))
    try:
        yield
    finally:
        for module, name, value in kept:
            setattr(module, name, value)


def synaptic_flow(
    model: nn.Module,
    input_shape: Sequence[int],
    tensors: Sequence[torch.Tensor] = (),
    *,
    fill: float = 1.0,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``(R, [|θ| ⊙ ∂R/∂θ for θ in tensors])`` of the sign-linearised network
    (Tanaka et al. 2020): all parameters and floating buffers replaced by their
    absolute values in float64, eval mode, ``R = Σ model(1)`` on an all-ones
    input of shape ``(1, *input_shape)`` (``fill`` instead of 1 when given).
    Without biases ``R`` is the sum over all input-output paths of the product
    of the absolute weights on the path. Nothing of the model is modified."""
    shape = check_input_shape(input_shape)
    wanted = {id(t): i for i, t in enumerate(tensors)}
    state: dict[str, torch.Tensor] = {}
    leaves: list[torch.Tensor | None] = [None] * len(tensors)
    for name, param in model.named_parameters():
        value = param.detach().abs().to(torch.float64)
        if id(param) in wanted:
            value.requires_grad_(True)
            leaves[wanted[id(param)]] = value
        state[name] = value
    missing = [i for i, leaf in enumerate(leaves) if leaf is None]
    if missing:
        raise InvalidParameterError("tensors", "parameters of the model", f"<{len(missing)} tensors that are not>")
    for name, buf in model.named_buffers():
        state[name] = buf.detach().abs().to(torch.float64) if buf.is_floating_point() else buf
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    ones = torch.full((1, *shape), float(fill), dtype=torch.float64, device=device)
    with preserved_state(model, eval_mode=True), _reparam_attributes_kept(model), torch.enable_grad():
        out = model_logits(lambda x: torch.func.functional_call(model, state, (x,)), ones,  # type: ignore[arg-type]
                           param="input_shape")
        flow = out.sum()
        if not tensors:
            return flow.detach(), []
        grads = torch.autograd.grad(flow, leaves, allow_unused=True)  # type: ignore[arg-type]
    scores = [
        (leaf.detach() * g).abs() if g is not None else torch.zeros_like(leaf.detach())  # type: ignore[union-attr]
        for leaf, g in zip(leaves, grads)
    ]
    return flow.detach(), scores


def input_flow(model: nn.Module, input_shape: Sequence[int]) -> float:
    """``R(1) − R(0)`` of the sign-linearised network (see :func:`synaptic_flow`):
    the flow that depends on the input. Biases are counted out, so it is 0
    exactly when no path joins the input to the output any more (layer
    collapse, Tanaka et al. 2020) and positive otherwise."""
    ones, _ = synaptic_flow(model, input_shape)
    zeros, _ = synaptic_flow(model, input_shape, fill=0.0)
    return float(ones - zeros)


def check_input_shape(input_shape: Any) -> tuple[int, ...]:
    if not is_shape(input_shape):
        raise InvalidParameterError(
            "input_shape", "the shape of one input without the batch dimension, e.g. (3, 32, 32)", input_shape,
            "Fix: pass input_shape=(channels, height, width) for images, (features,) for MLPs.",
        )
    return tuple(int(d) for d in input_shape)


def input_shape_of(data: Any) -> tuple[int, ...]:
    """The shape of one input of the first batch of ``data`` (batch dimension dropped)."""
    inputs = as_batches(data)[0][0]
    if not isinstance(inputs, torch.Tensor):
        raise InvalidParameterError("input_shape", "given when the inputs are not a single tensor",
                                    f"<{type(inputs).__name__} inputs>")
    return tuple(inputs.shape[1:])
