"""Requests structural pruning cannot meet, refused with a fix that works.

* No dependency group at all (every channel is the network's input or
  output, or kept because an operation mixes it): a structural request would
  change nothing, so it is refused rather than reported as a success at
  1.000× MACs.
* Channels that only a normalisation over channels (LayerNorm, RMSNorm, a
  one-group GroupNorm, statistics taken along channels) keeps from pruning:
  removing them changes the kept channels' values, so they are pruned only
  with ``approximate=True``; when exact pruning finds nothing, or cannot reach
  a MACs target, the error says so and names the option (as Torch-Pruning
  does by default, the normalisation's weights are then sliced with them).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from torch import nn

from ..coupling.groups import Group, find_groups
from ..errors import InvalidParameterError

__all__ = ["check_found_groups", "approximate_hint"]


def approximate_hint(model: nn.Module, example_inputs: Any, groups: Sequence[Group], *, exclude: str | Iterable[str],
                     extra_groups: Sequence[Any], approximate: bool) -> str | None:
    """The text naming ``approximate=True`` when it would offer more groups than ``groups`` (None if not)."""
    if approximate:
        return None
    more = find_groups(model, example_inputs, exclude=exclude, extra_groups=extra_groups, approximate=True)
    extra = len(more) - len(groups)
    if extra <= 0:
        return None
    return (f"approximate=True also prunes {extra} group(s) of channels that a normalisation "
            "over channels (LayerNorm, RMSNorm, statistics along channels) keeps: their removal changes the kept "
            "channels' values slightly, so fine-tune afterwards")


def check_found_groups(model: nn.Module, example_inputs: Any, groups: Sequence[Group], *,
                       exclude: str | Iterable[str], extra_groups: Sequence[Any], approximate: bool) -> None:
    """Raise :class:`~prunekit.errors.InvalidParameterError` when ``groups`` is empty: nothing would change."""
    if groups:
        return
    hint = approximate_hint(model, example_inputs, groups, exclude=exclude, extra_groups=extra_groups,
                            approximate=approximate)
    if hint is not None:
        fix = f"Fix: {hint}."
    elif exclude not in ((), [], "", None):
        fix = f"Fix: exclude fewer modules (exclude={exclude!r} keeps the channels they hold)."
    else:
        fix = ("Fix: nothing in it can be removed channel by channel (every channel is the network's input or output, "
               "or kept because an operation mixes it; the INFO log of prunekit.coupling.groups says why); prune its "
               "weights unstructured instead: prunekit.prune(model, sparsity=0.5).")
    raise InvalidParameterError(
        "model", "a model with channels structural pruning can remove (no dependency group was found)",
        f"<{type(model).__name__}>", fix)
