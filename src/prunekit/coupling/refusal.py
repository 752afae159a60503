"""The message of a refusal: which operations structural pruning cannot model, and fixes that work.

When an operation that would be mis-modelled (an unknown function or layer, a
channel shuffle, indexing along channels) reads channels that could otherwise
be pruned, :func:`prunekit.coupling.find_groups` refuses. Its message offers:

* the exact ``exclude=`` value that keeps those channels: for every refused
  channel one module holding it, the one that keeps the fewest other channels
  (excluding a module keeps every channel it holds, its inputs too), so that
  finding groups with that value no longer meets the refused operation;
* for an unknown call made inside a user's own layer (one the tracer traced
  through), or an unknown layer: a layer handler for that layer's class. For a
  layer without parameters that acts on each channel alone (it scales, masks
  or drops whole samples or entries, like stochastic depth) that is
  ``prunekit.register_layer_handler(Layer, prunekit.coupling.channelwise)``;
  a layer holding parameters needs a ``couple`` rule of its own.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from .graph import Graph
from .ops_generic import REFUSED_SCOPES

__all__ = ["refusal_message"]

_SHOWN = 5


def _exclude_names(g: Graph, refused: Sequence[tuple[int, str]], per_root: Mapping[int, Mapping[int, Any]]) -> list[str]:
    """Modules whose exclusion keeps every refused channel: for each refused channel not yet kept, the
    module holding it that keeps the fewest other channels (excluding a module keeps all the channels
    it holds, its inputs too), producers first, then in trace order; never the root module ("")."""
    holds: dict[str, set[int]] = defaultdict(set)
    for root, touched in per_root.items():
        for k in touched:
            binding = g.bindings[k]
            for name in [binding.module_name] + [m for m, _t in binding.aliases]:
                holds[name].add(root)
    refused_roots = {root for root, _reason in refused}
    names: list[str] = []
    kept: set[int] = set()
    for root, _reason in refused:
        if root in kept:
            continue
        ranked = []
        for k in sorted(per_root[root]):
            binding = g.bindings[k]
            for name in [binding.module_name] + [m for m, _t in binding.aliases]:
                if name:
                    role = ("out", "norm", "in").index(binding.role) if binding.role in ("out", "norm", "in") else 3
                    ranked.append((len(holds[name] - refused_roots), role, k, name))
        if ranked:
            name = min(ranked)[3]
            names.append(name)
            kept |= holds[name]
    return names


def _has_parameters(g: Graph, name: str) -> bool:
    module = g.modules.get(name)
    return module is not None and any(True for _ in module.parameters())


def refusal_message(g: Graph, refused: Sequence[tuple[int, str]],
                    per_root: Mapping[int, Mapping[int, Any]]) -> tuple[str, list[str]]:
    """The refusal's text (reasons, then fixes) and the ``exclude=`` value that avoids it.

    ``refused`` holds ``(root atom, reason)`` for each refused channel; ``per_root`` maps a root
    to the bindings it touches (see :func:`prunekit.coupling.find_groups`)."""
    reasons = list(dict.fromkeys(reason for _root, reason in refused))
    text = "structural pruning cannot model: " + "; ".join(reasons[:_SHOWN])
    if len(reasons) > _SHOWN:
        text += f" (and {len(reasons) - _SHOWN} more)"
    exclude = _exclude_names(g, refused, per_root)
    fixes = []
    scopes = REFUSED_SCOPES.get(g, {})
    found = list(dict.fromkeys(scopes[r] for r in reasons if r in scopes))
    # only a layer without parameters can be channel-wise as a whole (a block holding convs is not)
    plain = list(dict.fromkeys(t for name, t in found if not _has_parameters(g, name)))
    holding = [t for t in dict.fromkeys(t for _name, t in found) if t not in plain]
    if plain:
        names = ", ".join(t.__name__ for t in plain)
        fixes.append(
            f"register a layer handler for {names}: if it acts on each channel alone (it scales, masks or drops whole "
            "samples or entries), "
            + "; ".join(f"prunekit.register_layer_handler({t.__name__}, prunekit.coupling.channelwise)" for t in plain)
            + "; if it mixes channels, a couple rule of its own (help(prunekit.LayerHandler))"
        )
    if holding:
        names = ", ".join(t.__name__ for t in holding)
        fixes.append(f"register a layer handler for {names} whose couple rule says how it maps channels and binds "
                     "its parameters (help(prunekit.LayerHandler))")
    if exclude:
        fixes.append(f"keep these channels unpruned with exclude={exclude!r}")
    if not fixes:
        fixes.append("change the model, or prune it unstructured (prunekit.prune)")
    return text + ". Fix: " + "; or ".join(fixes) + ".", exclude
