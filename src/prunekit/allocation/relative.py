"""torch's relative ``amount`` as prunekit's absolute level.

``torch.nn.utils.prune`` prunes ``amount`` of the entries *still unpruned*: a
fraction (``round(amount * unpruned)`` entries) or an int count. prunekit's
``sparsity`` is absolute (the fraction zero afterwards). :func:`absolute_counts`
converts from the current masks: the number of entries pruned afterwards,

    count = pruned + round(amount * unpruned)     (float amount)
    count = pruned + amount                       (int amount)

per target (``scope="local"``) or once over all targets (``"global"``), which
prunekit's int ``sparsity`` (a count of entries) then realises exactly.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

from ..errors import InvalidParameterError
from ..targets import Target

__all__ = ["absolute_counts", "check_amount", "check_level"]


def check_amount(amount: object) -> float | int:
    """``amount`` as torch takes it: a float in [0, 1] or a non-negative int."""
    if isinstance(amount, bool) or not isinstance(amount, numbers.Real):
        raise InvalidParameterError("amount", "a float in [0, 1] (fraction of the unpruned entries) or an int count",
                                    amount, "Fix: amount=0.2 prunes a fifth of the entries still unpruned.")
    if isinstance(amount, numbers.Integral):
        if amount < 0:
            raise InvalidParameterError("amount", "a non-negative int count", amount, "Fix: amount=10.")
        return int(amount)
    if not 0.0 <= float(amount) <= 1.0:
        raise InvalidParameterError("amount", "a float in [0, 1] (fraction of the unpruned entries)", amount,
                                    "Fix: amount=0.2, or an int count of entries.")
    return float(amount)


def check_level(sparsity: object, amount: object) -> None:
    """Exactly one level at most: ``sparsity`` (absolute) or ``amount`` (relative, as torch)."""
    if sparsity is not None and amount is not None:
        raise InvalidParameterError(
            "amount", "None when sparsity is given (sparsity is absolute, amount relative to what remains)",
            amount, "Fix: give only one of sparsity= and amount=.")
    if amount is not None:
        check_amount(amount)


def absolute_counts(targets: Sequence[Target], amount: float | int, scope: str) -> list[int]:
    """Entries pruned after pruning ``amount`` of the unpruned ones: one count per target
    (``scope="local"``) or one over all targets (any other scope)."""
    amount = check_amount(amount)
    pruned, unpruned = [], []
    for target in targets:
        keep = target.keep_mask()
        kept = target.numel if keep is None else int(keep.sum())
        pruned.append(target.numel - kept)
        unpruned.append(kept)
    groups = list(zip(pruned, unpruned)) if scope == "local" else [(sum(pruned), sum(unpruned))]
    counts = []
    for now, left in groups:
        more = amount if isinstance(amount, int) else round(amount * left)
        if more > left:
            raise InvalidParameterError("amount", f"at most the {left} entries still unpruned", amount,
                                        "Fix: a smaller count, or a fraction such as 0.5.")
        counts.append(now + more)
    return counts
