"""SparseGPT: one-shot pruning with an approximate OBS update (Frantar & Alistarh 2023,
"SparseGPT: Massive Language Models Can Be Accurately Pruned in One-Shot", ICML, arXiv:2301.00774).

For one layer with weight ``W`` ``(out, in)`` and input Hessian
``H = 2 X Xᵀ`` (float32, :mod:`prunekit.oneshot.stats`) it minimises
``‖WX − ŴX‖²`` over sparse ``Ŵ``:

1. dead inputs (``H_jj = 0``) get ``H_jj = 1`` and ``W[:, j] = 0``;
2. dampening ``H += λ I`` with ``λ = 1%`` of the mean diagonal;
3. ``U = chol(H⁻¹)`` upper-triangular (``H⁻¹ = Uᵀ U``), the sequence of
   inverse Hessians of OBS with columns eliminated left to right;
4. columns are processed in blocks of ``B = 128``. Per block the mask is
   chosen from ``w_ij² / U_jj²``: unstructured, the lowest scores of the
   block (so that the whole matrix ends at its sparsity exactly); N:M, at
   every ``M``-th column the ``M − N`` lowest of each row's group;
5. column ``j`` of the block: ``q = w ⊙ keep``, ``err = (w − q) / U_jj``, the
   block's later columns get ``W[:, j:] −= err · U[j, j:]``; after the block,
   the columns to its right get ``W[:, end:] −= Err · U[block, end:]``.

A failed Cholesky factorisation multiplies the dampening by 10 and retries
(logged as a warning), up to ``max_retries`` times.
"""

from __future__ import annotations

import logging

import torch

from ..errors import PrunekitError
from ..structures import NM
from ..allocation.rows import prune_count

__all__ = ["inverse_hessian_cholesky", "sparsegpt_prune"]

logger = logging.getLogger(__name__)


def inverse_hessian_cholesky(
    hessian: torch.Tensor, percdamp: float = 0.01, max_retries: int = 4, name: str = ""
) -> torch.Tensor:
    """Upper Cholesky factor of ``(H + λI)⁻¹``, ``λ = percdamp · mean(diag H)``; retries with λ × 10.

    ``hessian`` is dampened in place (pass a copy you own); at most two more
    matrices of its size are alive at once.
    """
    mean_diag = float(hessian.diagonal().mean())
    damp = percdamp * mean_diag
    added = 0.0
    for attempt in range(max_retries + 1):
        hessian.diagonal().add_(damp - added)
        added = damp
        lower, info = torch.linalg.cholesky_ex(hessian)
        if int(info) == 0:
            inverse = torch.cholesky_inverse(lower)
            del lower
            upper, info = torch.linalg.cholesky_ex(inverse, upper=True)
            del inverse
            if int(info) == 0 and torch.isfinite(upper).all():
                return upper
        if attempt < max_retries:
            logger.warning("SparseGPT %s: Cholesky failed with dampening %.3g (%.3g%% of the mean diagonal); "
                           "retrying with %.3g", name, damp, 100 * damp / mean_diag, damp * 10)
            damp *= 10
    raise PrunekitError(
        f"SparseGPT {name}: the Hessian is not positive definite even with dampening {damp:.3g} "
        f"({100 * damp / mean_diag:.3g}% of its mean diagonal); use more calibration tokens or a larger percdamp."
    )


@torch.no_grad()
def sparsegpt_prune(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    sparsity: float,
    nm: NM | None = None,
    blocksize: int = 128,
    percdamp: float = 0.01,
    max_retries: int = 4,
    name: str = "",
    copy_hessian: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prune an ``(out, in)`` weight with SparseGPT; return ``(new_weight, keep)`` (float32, bool).

    Unstructured: exactly ``round(s · numel)`` weights are pruned; each column
    block prunes its share ``K(end) − K(start)`` with ``K(c) = round(s · out · c)``.
    ``copy_hessian=False`` lets it use (and overwrite) ``hessian`` as its workspace.
    """
    W = weight.detach().float().clone(memory_format=torch.contiguous_format)
    H = hessian.detach().float()
    if copy_hessian and H.data_ptr() == hessian.data_ptr():
        H = H.clone()
    rows, cols = W.shape
    dead = H.diagonal() == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    U = inverse_hessian_cholesky(H, percdamp, max_retries, name)
    del H
    keep = torch.ones_like(W, dtype=torch.bool)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        count = i2 - i1
        W1 = W[:, i1:i2].clone()
        U1 = U[i1:i2, i1:i2]
        d = U1.diagonal()
        err1 = torch.zeros_like(W1)
        prune1 = torch.zeros(rows, count, dtype=torch.bool, device=W.device)
        if nm is None:
            k = prune_count(sparsity, rows * i2) - prune_count(sparsity, rows * i1)
            if k:
                scores = (W1.square() / d.square().unsqueeze(0)).reshape(-1)
                prune1.view(-1)[scores.topk(k, largest=False).indices] = True
        for i in range(count):
            if nm is not None and i % nm.m == 0:
                group = W1[:, i:i + nm.m].square() / d[i:i + nm.m].square().unsqueeze(0)
                prune1[:, i:i + nm.m].scatter_(1, group.topk(nm.m - nm.n, dim=1, largest=False).indices, True)
            w = W1[:, i]
            q = w.masked_fill(prune1[:, i], 0.0)
            err = (w - q) / d[i]
            W1[:, i:] -= err.unsqueeze(1) * U1[i, i:].unsqueeze(0)
            W1[:, i] = q
            err1[:, i] = err
        W[:, i1:i2] = W1
        keep[:, i1:i2] = ~prune1
        W[:, i2:] -= err1 @ U[i1:i2, i2:]
    W[~keep] = 0.0
    return W, keep
