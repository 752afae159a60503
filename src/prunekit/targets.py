"""Selecting what to prune: (module, parameter name) pairs called targets.

A target is one parameter of one module, named by its qualified name (for
example ``"features.0.weight"``). It may be in one of three states:

* ``"dense"``: a plain parameter (possibly with exact zeros);
* ``"reparam"``: pruned in the ``torch.nn.utils.prune`` way, with
  ``<name>_orig`` (parameter), ``<name>_mask`` (buffer) and a forward pre-hook;
* ``"inplace"``: pruned in prunekit's lean mode, with the parameter zeroed in
  place and a boolean ``<name>_mask`` buffer.
"""

from __future__ import annotations

import fnmatch
import functools
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from .errors import InvalidParameterError

logger = logging.getLogger(__name__)

__all__ = [
    "Target",
    "select_targets",
    "DEFAULT_TYPES",
    "find_reparam_hook",
    "tensor_state",
    "pattern_matches",
    "check_pattern",
    "check_materialised",
    "logical_tensors",
]

#: Module types whose weights are pruned unless told otherwise. Hugging Face's
#: ``Conv1D`` (GPT-2) is matched by class name so transformers need not be installed.
DEFAULT_TYPES: tuple[type[nn.Module] | str, ...] = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    "Conv1D",
)


def find_reparam_hook(module: nn.Module, name: str) -> torch_prune.BasePruningMethod | None:
    """The ``torch.nn.utils.prune`` hook acting on ``module.<name>``, if any."""
    for hook in module._forward_pre_hooks.values():
        if isinstance(hook, torch_prune.BasePruningMethod) and hook._tensor_name == name:
            return hook
    return None


def tensor_state(module: nn.Module, name: str) -> str:
    """``"reparam"``, ``"inplace"`` or ``"dense"`` for ``module.<name>``."""
    if name + "_orig" in module._parameters and find_reparam_hook(module, name) is not None:
        return "reparam"
    if name in module._parameters and name + "_mask" in module._buffers:
        return "inplace"
    return "dense"


#: The ``weight`` dim holding the outputs, per module type (or class name) with a layer
#: handler: filled by :func:`prunekit.coupling.register_layer_handler` from the handler's
#: ``weight_out_dim`` (1 for Hugging Face's ``Conv1D``, whose weight is ``(in, out)``),
#: since this module sits below :mod:`prunekit.coupling`. Values: ``(dim, matches)``.
WEIGHT_OUT_DIMS: dict[type | str, tuple[int, Callable[[nn.Module], bool] | None]] = {}


def weight_out_dim(module: nn.Module) -> int:
    """The dim of ``module.weight`` along which outputs lie: that of the first class along
    the MRO registered in :data:`WEIGHT_OUT_DIMS` (by class or name), else 0."""
    for cls in type(module).__mro__:
        entry = WEIGHT_OUT_DIMS.get(cls) or WEIGHT_OUT_DIMS.get(cls.__name__)
        if entry is not None and (entry[1] is None or entry[1](module)):
            return entry[0]
    return 0


@dataclass(frozen=True, eq=False)
class Target:
    """One prunable tensor: ``module.<param_name>`` named ``name`` in the model."""

    name: str
    module_name: str
    module: nn.Module
    param_name: str

    # -- state ---------------------------------------------------------------
    @property
    def state(self) -> str:
        return tensor_state(self.module, self.param_name)

    @property
    def original(self) -> torch.Tensor:
        """The underlying parameter (``<name>_orig`` when reparametrised)."""
        if self.state == "reparam":
            return self.module._parameters[self.param_name + "_orig"]
        return getattr(self.module, self.param_name)

    @property
    def shape(self) -> torch.Size:
        return self.original.shape

    @property
    def numel(self) -> int:
        return self.original.numel()

    def keep_mask(self) -> torch.Tensor | None:
        """Current mask as a bool tensor (True = kept), or None when dense."""
        if self.state == "dense":
            return None
        mask = self.module._buffers[self.param_name + "_mask"]
        return mask if mask.dtype == torch.bool else mask != 0

    @torch.no_grad()
    def effective(self) -> torch.Tensor:
        """The tensor the module computes with now (mask applied), detached."""
        mask = self.keep_mask()
        tensor = self.original.detach()
        if mask is None or self.state == "inplace":
            return tensor
        return tensor * mask.to(tensor.dtype)

    # -- layout --------------------------------------------------------------
    @property
    def out_dim(self) -> int:
        """Dimension of the outputs (filters, neurons) of this tensor."""
        if self.original.dim() == 2:
            return weight_out_dim(self.module)
        return 0

    @property
    def in_dim(self) -> int | None:
        """Dimension of the inputs of this tensor, or None for 1-D tensors."""
        if self.original.dim() < 2:
            return None
        return 0 if self.out_dim == 1 else 1

    def __repr__(self) -> str:
        return f"Target({self.name!r}, shape={tuple(self.shape)}, state={self.state!r})"


# -- selection -----------------------------------------------------------------


def _type_matches(module: nn.Module, types: Sequence[type[nn.Module] | str] | None) -> bool:
    if types is None:
        return True
    for t in types:
        if isinstance(t, str):
            if t == type(module).__name__ or t == type(module).__qualname__:
                return True
        elif isinstance(module, t):
            return True
    return False


@functools.lru_cache(maxsize=256)
def _compile(regex: str) -> re.Pattern[str]:
    return re.compile(regex)


def check_pattern(pattern: object, param: str = "pattern") -> str:
    """``pattern`` checked: a string, and for ``"re:<regex>"`` a valid regular expression."""
    if not isinstance(pattern, str):
        raise InvalidParameterError(param, "a glob pattern or 're:<regex>' (a string)", pattern,
                                    f"Fix: pass a string such as {param}='fc*' or 're:^fc[0-9]$'.")
    if pattern.startswith("re:"):
        try:
            _compile(pattern[3:])
        except re.error as exc:
            raise InvalidParameterError(
                param, "a glob pattern or 're:<regex>' with a valid regular expression", pattern,
                f"Fix: correct the regular expression ({exc}), or drop 're:' to match a glob such as 'fc*'.",
            ) from None
    return pattern


def pattern_matches(pattern: str, *names: str, param: str = "pattern") -> bool:
    """True if the glob ``pattern`` (or ``"re:<regex>"``, searched) matches any of ``names``.

    Raises:
        InvalidParameterError: naming ``param`` if the regular expression is invalid.
    """
    if check_pattern(pattern, param).startswith("re:"):
        regex = _compile(pattern[3:])
        return any(regex.search(n) for n in names)
    return any(fnmatch.fnmatchcase(n, pattern) for n in names)


def _as_list(value: str | Iterable[str] | None, param: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [check_pattern(value, param)]
    if not isinstance(value, Iterable):
        example = "['weight', 'bias']" if param == "params" else "['fc*', 're:^conv[0-9]$']"
        raise InvalidParameterError(param, "a string or a list of strings (globs, or 're:<regex>')", value,
                                    f"Fix: pass e.g. {param}={example}.")
    return [check_pattern(item, param) for item in value]


def _normalise_types(
    types: str | type[nn.Module] | Sequence[type[nn.Module] | str] | None,
) -> Sequence[type[nn.Module] | str] | None:
    if types is None:
        return DEFAULT_TYPES
    if isinstance(types, str):
        return None if types == "all" else (types,)
    if isinstance(types, type):
        types = (types,)
    if not isinstance(types, Iterable):
        raise InvalidParameterError("types", "module classes, class names such as 'Linear', or 'all'", types,
                                    "Fix: pass e.g. types=[torch.nn.Linear, 'Conv2d'].")
    out = []
    for t in types:
        if isinstance(t, str) or (isinstance(t, type) and issubclass(t, nn.Module)):
            out.append(t)
        else:
            raise InvalidParameterError(
                "types",
                "module classes, class names such as 'Linear', or 'all'",
                t,
                "Fix: pass e.g. types=[torch.nn.Linear, 'Conv2d'].",
            )
    return tuple(out)


def _logical_params(module: nn.Module) -> list[str]:
    """Parameter names of ``module`` itself, with ``X_orig`` reported as ``X``."""
    names = []
    for pname in module._parameters:
        if module._parameters[pname] is None:
            continue
        if pname.endswith("_orig") and find_reparam_hook(module, pname[:-5]) is not None:
            names.append(pname[:-5])
        else:
            names.append(pname)
    return names


def select_targets(
    model: nn.Module,
    *,
    types: str | type[nn.Module] | Sequence[type[nn.Module] | str] | None = None,
    include: str | Iterable[str] | None = None,
    exclude: str | Iterable[str] | None = None,
    params: str | Iterable[str] = "weight",
) -> list[Target]:
    """Select the tensors of ``model`` to prune.

    Args:
        model: the network.
        types: module classes or class names to consider; default
            :data:`DEFAULT_TYPES` (Linear, Conv1d/2d/3d, Hugging Face Conv1D);
            ``"all"`` for every module.
        include: glob patterns (or ``"re:<regex>"``) matched against the
            qualified parameter name (``"fc1.weight"``) or module name
            (``"fc1"``); when given, only matching tensors are kept.
        exclude: patterns of the same form; matching tensors are dropped.
        params: parameter names or globs (``"weight"``, ``"bias"``, ``"*"``).

    Returns:
        Targets in the order of ``model.named_modules()``.

    Raises:
        InvalidParameterError: if nothing matches; the message lists what the
            model has so the selection can be fixed.
    """
    if not isinstance(model, nn.Module):
        raise InvalidParameterError("model", "a torch.nn.Module", type(model).__name__)
    type_filter = _normalise_types(types)
    includes = _as_list(include, "include")
    excludes = _as_list(exclude, "exclude") or []
    param_patterns = _as_list(params, "params") or ["weight"]

    found: list[Target] = []
    for module_name, module in model.named_modules():
        if not _type_matches(module, type_filter):
            continue
        for pname in _logical_params(module):
            if not any(fnmatch.fnmatchcase(pname, p) for p in param_patterns):
                continue
            qualified = f"{module_name}.{pname}" if module_name else pname
            if includes is not None and not any(pattern_matches(p, qualified, module_name, param="include")
                                                for p in includes):
                continue
            if any(pattern_matches(p, qualified, module_name, param="exclude") for p in excludes):
                continue
            found.append(Target(qualified, module_name, module, pname))
    empty = [t.name for t in found if t.numel == 0]
    if empty:  # nothing to prune in them, and no units to rank
        logger.info("skipping %d empty tensors: %s", len(empty), ", ".join(empty))
        found = [t for t in found if t.numel > 0]
    if not found and empty:
        raise InvalidParameterError(
            "targets", "a selection with at least one non-empty tensor", f"<only empty tensors: {', '.join(empty)}>",
            "Fix: every selected tensor has a zero-sized dimension, so there is nothing to prune; select other "
            "layers (include=...) or build the layers with a positive size.",
        )
    if not found:
        raise InvalidParameterError(
            "targets",
            "a selection matching at least one parameter",
            _describe_selection(type_filter, includes, excludes, param_patterns),
            "Fix: widen the selection. The model has " + describe_model(model) + ".",
        )
    return found


def check_materialised(targets: Sequence[Target]) -> None:
    """Refuse tensors on the meta device: they have a shape but no values to score (selecting
    them is fine: one-shot pruning selects the targets of blocks still on meta)."""
    meta = [t.name for t in targets if t.original.is_meta]
    if meta:
        raise InvalidParameterError(
            "model", "a model whose parameters hold values (not on the meta device)",
            f"<{len(meta)} of {len(targets)} tensors on the meta device, e.g. {meta[0]}>",
            "Fix: materialise the model first (model.to_empty on the cpu), then load its weights with "
            "load_state_dict.",
        )


def _describe_selection(types, includes, excludes, params) -> str:
    type_names = "all" if types is None else [t if isinstance(t, str) else t.__name__ for t in types]
    return f"<nothing for types={type_names}, include={includes}, exclude={excludes}, params={params}>"


def describe_model(model: nn.Module, limit: int = 12) -> str:
    """A short summary of module types and parameter names, for error messages."""
    counts: dict[str, int] = {}
    params: list[str] = []
    for module_name, module in model.named_modules():
        pnames = _logical_params(module)
        if pnames:
            counts[type(module).__name__] = counts.get(type(module).__name__, 0) + 1
        for p in pnames:
            params.append(f"{module_name}.{p}" if module_name else p)
    if not params:
        return "no parameters at all"
    kinds = ", ".join(f"{n}×{c}" for n, c in sorted(counts.items()))
    shown = ", ".join(params[:limit]) + (f", … ({len(params)} in all)" if len(params) > limit else "")
    return f"modules with parameters: {kinds}; parameters: {shown}"


def logical_tensors(state_dict: Mapping[str, torch.Tensor]) -> dict[str, tuple[str, torch.Tensor, torch.Tensor | None]]:
    """Logical tensors of a state dict: name -> (state, tensor, mask)."""
    out: dict[str, tuple[str, torch.Tensor, torch.Tensor | None]] = {}
    for key, tensor in state_dict.items():
        if key.endswith("_orig") and key[:-5] + "_mask" in state_dict:
            out[key[:-5]] = ("reparam", tensor, state_dict[key[:-5] + "_mask"])
        elif key.endswith("_mask") and (key[:-5] + "_orig" in state_dict or key[:-5] in state_dict):
            continue
        elif key + "_mask" in state_dict:
            out[key] = ("inplace", tensor, state_dict[key + "_mask"])
        else:
            out[key] = ("dense", tensor, None)
    return out
