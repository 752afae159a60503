"""torch's relative ``amount`` as prunekit's absolute level.

``torch.nn.utils.prune`` prunes ``amount`` of the units *still unpruned*: a
fraction (``round(amount * unpruned)`` units) or an int count. prunekit's
``sparsity`` is absolute (the fraction zero afterwards). A unit is an entry
(``structure="element"``, as ``l1_unstructured``) or a slice of the structure
(a channel along ``dim`` for ``"channel:<dim>"``, as ``ln_structured`` and
``random_structured``; a kernel; a block); it is unpruned while any of its
entries is kept, as torch's ``PruningContainer`` counts channels.
:func:`absolute_levels` converts from the current masks to the level pruned
afterwards:

    count = pruned + round(amount * unpruned)     (float amount)
    count = pruned + amount                       (int amount)

* ``scope="local"``: one count of units per target (torch's ``ln_structured``
  on each tensor);
* ``scope="global"`` with single-entry units, or an int amount: one count of
  units over all targets (torch's ``global_unstructured``; prunekit's int
  ``sparsity`` counts units, each unit one, in a global ranking);
* any other case (a float amount with multi-entry units globally, ``"lamp"``,
  ``"erk"``): the fraction of all target *entries* zero afterwards,
  ``s_new = s_old + amount * (1 - s_old)``, which the size-weighted global
  ranking realises to within one unit (torch has no global structured pruning
  to follow here; this keeps ``amount`` "a fraction of what remains" in entries).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

from ..errors import InvalidParameterError
from ..structures import Element, Structure
from ..targets import Target
from .budget import Sparsity

__all__ = ["absolute_counts", "absolute_levels", "check_amount", "check_level"]


def check_amount(amount: object) -> float | int:
    """``amount`` as torch takes it: a float in [0, 1] or a non-negative int."""
    if isinstance(amount, bool) or not isinstance(amount, numbers.Real):
        raise InvalidParameterError("amount", "a float in [0, 1] (fraction of the unpruned units) or an int count",
                                    amount, "Fix: amount=0.2 prunes a fifth of the units still unpruned.")
    if isinstance(amount, numbers.Integral):
        if amount < 0:
            raise InvalidParameterError("amount", "a non-negative int count", amount, "Fix: amount=10.")
        return int(amount)
    if not 0.0 <= float(amount) <= 1.0:
        raise InvalidParameterError("amount", "a float in [0, 1] (fraction of the unpruned units)", amount,
                                    "Fix: amount=0.2, or an int count of units.")
    return float(amount)


def check_level(sparsity: object, amount: object) -> None:
    """Exactly one level at most: ``sparsity`` (absolute) or ``amount`` (relative, as torch)."""
    if sparsity is not None and amount is not None:
        raise InvalidParameterError(
            "amount", "None when sparsity is given (sparsity is absolute, amount relative to what remains)",
            amount, "Fix: give only one of sparsity= and amount=.")
    if amount is not None:
        check_amount(amount)


def _unit_counts(target: Target, structure: Structure) -> tuple[int, int]:
    """(units pruned, units unpruned) of ``target`` under ``structure``."""
    units = structure.num_units(target)
    keep = target.keep_mask()
    if keep is None:
        return 0, units
    alive = int(structure.unit_alive(keep, target).sum())
    return units - alive, alive


def _more(amount: float | int, left: int, where: str) -> int:
    more = amount if isinstance(amount, int) else round(amount * left)
    if more > left:
        raise InvalidParameterError("amount", f"at most the {left} units still unpruned in {where}", amount,
                                    "Fix: a smaller count, or a fraction such as 0.5.")
    return more


def absolute_levels(targets: Sequence[Target], amount: float | int, scope: str,
                    structure: Structure | None = None) -> list[Sparsity]:
    """The absolute level after pruning ``amount`` of the unpruned units (module docstring):
    one int count of units per target (``scope="local"``), else one level for all targets
    (an int count of units, or a float fraction of the entries)."""
    amount = check_amount(amount)
    structure = structure if structure is not None else Element()
    counts = [_unit_counts(t, structure) for t in targets]
    if scope == "local":
        return [now + _more(amount, left, t.name) for t, (now, left) in zip(targets, counts)]
    single = all(structure.unit_size(t) == 1 for t in targets) or isinstance(structure, Element)
    if scope == "global" and (single or isinstance(amount, int)):
        now, left = sum(c[0] for c in counts), sum(c[1] for c in counts)
        return [now + _more(amount, left, "all global targets")]
    if isinstance(amount, int):
        raise InvalidParameterError(
            "amount", f"a float fraction of what remains with scope={scope!r}", amount,
            "Fix: pass amount as a float (e.g. 0.2), or use scope='global' for a count of units.")
    total = sum(t.numel for t in targets)
    zero = 0
    for t in targets:
        keep = t.keep_mask()
        zero += 0 if keep is None else int(t.numel - keep.sum())
    old = zero / max(1, total)
    return [min(1.0, old + amount * (1.0 - old))]


def absolute_counts(targets: Sequence[Target], amount: float | int, scope: str) -> list[int]:
    """Entries pruned after pruning ``amount`` of the unpruned ones: one count per target
    (``scope="local"``) or one over all targets (any other scope)."""
    return [int(c) for c in absolute_levels(targets, amount, "local" if scope == "local" else "global")]
