"""The parts of Lightning's ``ModelPruning`` interface that subclasses and tests reach into
(no Lightning import here).

* :func:`sanitize_parameters_to_prune`: Lightning's default selection (every
  ``nn.Parameter`` named in ``parameter_names`` of every leaf module) and its
  check of explicit ``(module, name)`` pairs;
* :func:`original_layers`: the lottery-ticket values in the layout of
  ``ModelPruning._original_layers`` (``{id(module): {"data": ..., "names":
  [(index, name), ...]}}``), a view of prunekit's saved values (nothing copied);
* :func:`sparsity_lines`: the lines ``verbose`` logs, worded as Lightning's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import InvalidParameterError
from ..targets import Target
from ._lightning_args import PARAMETER_NAMES

__all__ = ["SavedLayer", "original_layers", "sanitize_parameters_to_prune", "sparsity_lines"]

#: containers Lightning leaves out of its default selection (their children are visited).
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def _is_pair(item: Any) -> bool:
    return (isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], nn.Module)
            and isinstance(item[1], str))


def sanitize_parameters_to_prune(
    model: nn.Module,
    parameters_to_prune: Sequence[tuple[nn.Module, str]] = (),
    parameter_names: Sequence[str] = (),
) -> list[tuple[nn.Module, str]]:
    """``(module, name)`` pairs to prune, as Lightning's ``ModelPruning.sanitize_parameters_to_prune``.

    Without pairs: every leaf module's attribute named in ``parameter_names``
    (default ``("weight", "bias")``) that is an ``nn.Parameter``, names in the
    outer loop. With pairs: each module must be in ``model`` and have the
    attribute, else :class:`InvalidParameterError` lists the missing ones."""
    names = list(parameter_names) or list(PARAMETER_NAMES)
    modules = [m for m in model.modules() if not isinstance(m, _CONTAINERS)]
    if not parameters_to_prune:
        return [(m, p) for p in names for m in modules if isinstance(getattr(m, p, None), nn.Parameter)]
    if not isinstance(parameters_to_prune, (list, tuple)) or not all(_is_pair(p) for p in parameters_to_prune):
        raise InvalidParameterError(
            "parameters_to_prune", "a list of tuple with 2 elements: (nn.Module, parameter_name_to_prune) or None",
            parameters_to_prune, "Fix: parameters_to_prune=[(model.fc1, 'weight')].",
        )
    known = {id(m) for m in modules}
    missing_modules = [m for m, _ in parameters_to_prune if id(m) not in known]
    missing_names = [n for m, n in parameters_to_prune if id(m) in known and not hasattr(m, n)]
    if missing_modules or missing_names:
        raise InvalidParameterError(
            "parameters_to_prune",
            "pairs that exist in the model (some provided `parameters_to_prune` don't exist in the model)",
            f"<missing modules: {[type(m).__name__ for m in missing_modules]}, missing parameters: {missing_names}>",
            "Fix: take the modules from the model being trained, with their parameter names.",
        )
    return [(m, n) for m, n in parameters_to_prune]


class SavedLayer:
    """A module's saved lottery-ticket tensors as attributes (``saved.weight``), as Lightning's copy
    of the module gives them; ``module`` is the live module they belong to."""

    def __init__(self, module: nn.Module, values: Mapping[str, torch.Tensor]) -> None:
        self.module = module
        for name, value in values.items():
            setattr(self, name, value)

    def __repr__(self) -> str:
        return f"SavedLayer({type(self.module).__name__}: {', '.join(k for k in vars(self) if k != 'module')})"


def original_layers(pairs: Sequence[tuple[nn.Module, str]], targets: Sequence[Target],
                    initial: Mapping[str, torch.Tensor]) -> dict[int, dict[str, Any]]:
    """``{id(module): {"data": SavedLayer, "names": [(i, name), ...]}}`` from prunekit's saved values
    (``initial``: target name -> tensor); ``i`` indexes ``pairs``."""
    by_pair = {(id(t.module), t.param_name): t.name for t in targets}
    out: dict[int, dict[str, Any]] = {}
    values: dict[int, dict[str, torch.Tensor]] = {}
    for i, (module, name) in enumerate(pairs):
        saved = initial.get(by_pair.get((id(module), name), ""))
        if saved is None:
            continue
        values.setdefault(id(module), {})[name] = saved
        out.setdefault(id(module), {"data": None, "names": []})["names"].append((i, name))
    for key, entry in out.items():
        module = next(m for m, _ in pairs if id(m) == key)
        entry["data"] = SavedLayer(module, values[key])
    return out


def _pct(part: int, whole: int) -> str:
    return f"{part / whole:.2%}" if whole else "0.00%"


def sparsity_lines(name: str, targets: Sequence[Target], prev: Sequence[tuple[int, int]],
                   curr: Sequence[tuple[int, int]], how: str, per_tensor: bool) -> list[str]:
    """Lightning's ``verbose`` lines: the total, then (``per_tensor``) one per target, which names
    the module by its repr as Lightning does and ends with prunekit's qualified name."""
    total = sum(n for _, n in curr)
    before, after = sum(z for z, _ in prev), sum(z for z, _ in curr)
    lines = [f"Applied `{name}`. Pruned: {before}/{total} ({_pct(before, total)}) -> "
             f"{after}/{total} ({_pct(after, total)})"]
    if per_tensor:
        for t, (z0, n0), (z1, n1) in zip(targets, prev, curr):
            lines.append(f"Applied `{name}` to `{t.module!r}.{t.param_name}` with {how}. Pruned: "
                         f"{z0} ({_pct(z0, n0)}) -> {z1} ({_pct(z1, n1)}) [{t.name}]")
    return lines
