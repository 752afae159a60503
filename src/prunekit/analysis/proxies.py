"""Zero-cost proxies: one score per untrained network that predicts its trained accuracy.

From Abdelfattah et al. 2021, "Zero-Cost Proxies for Lightweight NAS" (ICLR),
each proxy sums a per-weight or per-channel saliency over the network, from
one mini-batch (the weights are those :func:`prunekit.select_targets` picks:
Linear and Conv weights by default):

* ``grad_norm``: ``Σ_layers ‖∂L/∂W_l‖₂``.
* ``snip``: ``Σ |∂L/∂w ⊙ w|`` (Lee et al. 2019), the sum of the registered
  ``snip`` score (:class:`prunekit.scores.SNIP`).
* ``synflow``: ``Σ |θ ⊙ ∂R/∂θ|`` of the sign-linearised float64 network on an
  all-ones input, data-free (Tanaka et al. 2020), the sum of the registered
  ``synflow`` score (:class:`prunekit.scores.SynFlow`).
* ``fisher``: ``Σ_layers Σ_channels ½·mean_n (Σ_spatial a ⊙ ∂L/∂a)²`` over the
  outputs ``a`` of the Linear/Conv layers (Theis et al. 2018, "Faster gaze
  prediction with dense networks and Fisher pruning").
* ``jacob_cov`` (Mellor et al. 2021, "Neural Architecture Search without
  Training", v1): ``J`` the Jacobians ``∂(Σ_c f_c(x_n))/∂x_n`` of the batch's
  inputs, ``σ_i`` the eigenvalues of their correlation matrix,
  ``−Σ_i [log(σ_i + k) + 1/(σ_i + k)]`` with ``k = 1e-5``.

Any other registered element score that needs nothing or gradients (``grasp``,
``obd``, ``magnitude``, a user's score; :func:`prunekit.list_scores`) may be
asked for by name too: its proxy is the sum of its per-weight scores.

Higher is better for every proxy. :func:`spearman` ranks a proxy against
trained accuracy over a population (average ranks for ties, then Pearson's r
of the ranks), without SciPy. The model is left as it was (weights, buffers,
modes; no ``.grad`` written).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..batches import forward_logits
from ..deprecation import renamed_value
from ..errors import InvalidParameterError, did_you_mean
from ..losses import LossFn
from ..scores import SCORES, as_criterion, criterion_names
from ..scores.gradients import as_batches, loss_gradients, preserved_state, resolve_loss
from ..targets import Target, select_targets

__all__ = ["PROXIES", "rankdata", "score_sum", "spearman", "zero_cost_proxies"]

PROXIES = ("grad_norm", "snip", "synflow", "fisher", "jacob_cov")
JACOB_COV_K = 1e-5



def _grad_norm(model: nn.Module, targets: Sequence[Target], batch: Any, loss_fn: LossFn | None) -> float:
    grads = loss_gradients(model, [t.original for t in targets], [batch], loss_fn)
    return float(sum(torch.linalg.vector_norm(g.double()) for g in grads))


#: What a score may need to be summed into a proxy from one batch.
_PROXY_NEEDS = ("nothing", "gradients")


def _proxy_scores() -> list[str]:
    """Registered element scores that one batch suffices for (the proxies beyond :data:`PROXIES`)."""
    return [n for n in criterion_names() if SCORES.entry(n).needs["element"] in _PROXY_NEEDS]


def score_sum(name: str, model: nn.Module, targets: Sequence[Target], data: Any = None,
              loss_fn: LossFn | None = None, *, batch: Any = None) -> float:
    """``Σ`` over ``targets`` of the registered element score ``name`` prepared on ``data``,
    one ``(inputs, targets)`` batch (``batch`` is its deprecated name)."""
    data = renamed_value(batch, "batch", "data", "prunekit.analysis.score_sum", new_value=data)
    if data is None:
        raise InvalidParameterError("data", "one (inputs, targets) batch", None, "Fix: score_sum(name, model, "
                                    "targets, (x, y)).")
    criterion = as_criterion(name)
    criterion.prepare(model, list(targets), data=[data], loss_fn=loss_fn)
    return float(sum(criterion.score(t).detach().double().sum() for t in targets))


def _fisher(model: nn.Module, targets: Sequence[Target], batch: Any, loss_fn: LossFn | None) -> float:
    loss_fn = resolve_loss(loss_fn)
    modules = list({id(t.module): t.module for t in targets}.values())
    acts: list[torch.Tensor] = []

    def keep(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
        acts.append(output)
        return output.clone()  # an in-place activation after the layer must not overwrite `output`

    handles = [m.register_forward_hook(keep) for m in modules]
    try:
        with preserved_state(model), torch.enable_grad():
            inputs, labels = batch
            loss = loss_fn(forward_logits(model, inputs), labels)
            live = [a for a in acts if a.requires_grad]
            grads = torch.autograd.grad(loss, live, allow_unused=True)
    finally:
        for handle in handles:
            handle.remove()
    total = 0.0
    for a, g in zip(live, grads):
        if g is None:
            continue
        prod = (a.detach().double() * g.double())
        per_channel = prod.sum(dim=tuple(range(2, prod.dim()))) if prod.dim() > 2 else prod
        total += float(0.5 * per_channel.pow(2).mean(dim=0).sum())
    return total


def _jacob_cov(model: nn.Module, targets: Sequence[Target], batch: Any, loss_fn: LossFn | None) -> float:
    inputs, _ = batch
    if not isinstance(inputs, torch.Tensor) or inputs.shape[0] < 2:
        raise InvalidParameterError(
            "data", "a batch of at least 2 tensor inputs for jacob_cov", f"<{type(inputs).__name__}>",
            "Fix: pass a batch of e.g. 32 or more examples.",
        )
    x = inputs.detach().clone().requires_grad_(True)
    with preserved_state(model), torch.enable_grad():
        out = forward_logits(model, x)
        (jac,) = torch.autograd.grad(out.sum(), x)
    j = jac.reshape(jac.shape[0], -1).double()
    j = j - j.mean(dim=1, keepdim=True)
    norms = torch.linalg.vector_norm(j, dim=1, keepdim=True)
    corr = (j / norms.clamp_min(1e-300)) @ (j / norms.clamp_min(1e-300)).T
    eig = torch.linalg.eigvalsh(corr).clamp_min(0.0)
    return float(-(torch.log(eig + JACOB_COV_K) + 1.0 / (eig + JACOB_COV_K)).sum())


_FUNCTIONS = {"grad_norm": _grad_norm, "fisher": _fisher, "jacob_cov": _jacob_cov}


def zero_cost_proxies(
    model: nn.Module,
    data: Any = None,
    names: Iterable[str] | None = None,
    *,
    loss_fn: LossFn | None = None,
    batch: Any = None,
    **select: Any,
) -> dict[str, float]:
    """``{proxy name: score}`` of ``model`` on ``data``: one ``(inputs, targets)`` batch
    (or an iterable of batches, of which the first is used; ``batch`` is its deprecated name).

    ``names``: a subset of :data:`PROXIES` (all by default), or registered element
    scores that need nothing or gradients (summed over the weights). ``select`` is passed
    to :func:`prunekit.select_targets` to choose the weights (``types``,
    ``include``, ``exclude``). The model runs in its current train/eval mode
    (SynFlow: eval) and is left unchanged.

    Example::

        scores = prunekit.zero_cost_proxies(model, (x, y), names=["synflow", "jacob_cov"])
    """
    data = renamed_value(batch, "batch", "data", "prunekit.zero_cost_proxies", new_value=data)
    chosen = list(PROXIES if names is None else [names] if isinstance(names, str) else names)
    known = list(PROXIES) + [n for n in _proxy_scores() if n not in PROXIES]
    for name in chosen:
        if name not in known:
            raise InvalidParameterError(
                "names", f"proxies among {', '.join(PROXIES)} or registered scores ({', '.join(known[len(PROXIES):])})",
                name, ("Fix: pick listed names." + did_you_mean(str(name), known)).strip(),
            )
    if not chosen:
        raise InvalidParameterError("names", f"some of {', '.join(PROXIES)}", [], "Fix: leave it out for all five.")
    (one,) = as_batches(data)[:1]
    targets = select_targets(model, **select)
    scores = {
        name: _FUNCTIONS[name](model, targets, one, loss_fn) if name in _FUNCTIONS
        else score_sum(name, model, targets, one, loss_fn)
        for name in chosen
    }
    bad = {k: v for k, v in scores.items() if not math.isfinite(v)}
    if bad:
        raise FloatingPointError(f"zero-cost proxies not finite: {bad}")
    return scores


def rankdata(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``values``, ties sharing the mean of their ranks (SciPy's ``"average"``)."""
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    ranks = np.empty(len(x), dtype=np.float64)
    start = 0
    while start < len(x):
        stop = start + 1
        while stop < len(x) and sorted_x[stop] == sorted_x[start]:
            stop += 1
        ranks[order[start:stop]] = 0.5 * (start + stop - 1) + 1.0
        start = stop
    return ranks


def spearman(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Spearman's rank correlation ρ: Pearson's r of the average ranks of ``x`` and ``y``.

    NaN when either has no spread (all values equal), as in SciPy.
    """
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    b = np.asarray(y, dtype=np.float64).reshape(-1)
    if a.shape != b.shape or a.size < 2:
        raise InvalidParameterError("y", f"as many values as x ({a.size}), at least 2", b.size)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise InvalidParameterError("x", "finite values (no NaN or inf)", "<non-finite values>")
    ra, rb = rankdata(a), rankdata(b)
    ra -= ra.mean()
    rb -= rb.mean()
    denom = math.sqrt(float((ra * ra).sum() * (rb * rb).sum()))
    return float("nan") if denom == 0.0 else float((ra * rb).sum() / denom)
