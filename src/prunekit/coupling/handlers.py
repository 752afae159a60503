"""Layer handlers: what structural pruning knows about one module type.

A module the tracer meets is either traced through (its ``forward`` is
recorded function by function) or handled as one operation by the
:class:`LayerHandler` registered for its type. Built-in ``torch.nn`` layers
and Hugging Face's ``Conv1D`` have handlers (:mod:`.builtin_handlers`); a
user's own layer type takes part in channel coupling and surgery once it has
one, the way Torch-Pruning's ``customized_pruners`` do::

    from prunekit.coupling import LayerHandler, linear

    class ScaledLinear(nn.Module):          # y = (x Wᵀ + b) · s, one scale per output
        ...

    def couple(g, op, name, module):
        space = linear(g, op, name)         # weight (out, in), bias: as nn.Linear
        if space is not None:
            g.bind(name, "scale", 0, space, "norm")   # the scale follows the outputs

    def update(module):
        module.out_features, module.in_features = module.weight.shape

    prunekit.register_layer_handler(ScaledLinear, LayerHandler(couple=couple, update_attributes=update))

The protocol (every field optional):

``couple(g, op, name, module)``
    The coupling rule, called once per call of the module in the traced
    forward pass. ``op.args`` / ``op.kwargs`` hold :class:`~.trace.Value`
    objects for the tensors passed (``op.args[0]`` the input, ``op.out`` the
    output); ``value.spaces`` maps a dim to its channel :class:`~.graph.Space`.
    The rule sets ``op.out.spaces`` and ties spaces to the module's tensors
    with ``g.bind(name, tensor, dim, space, role)`` (role ``"out"`` for the
    rows that produce channels, ``"in"`` for the columns that consume them,
    ``"norm"`` for per-channel tensors). ``g.mark(space, "fixed", why)`` keeps
    channels; ``g.mark(space, "refuse", why)`` refuses them. The rules of
    :mod:`.layers` and :mod:`.ops_generic` (``linear``, ``conv``,
    ``per_channel``, ``unary``, ``keep_leading``, ``unknown`` ...) are the
    building blocks. A handler with ``couple`` makes the module a leaf of the
    trace (its forward is not traced through).
``update_attributes(module)``
    Called after the module's tensors were sliced: re-derive its shape
    attributes (``in_features``, ``out_channels``, ...) from its tensors, so
    ``repr``, ``save``/``load`` and its forward agree with the new shapes.
``weight_out_dim``
    The dim of ``module.weight`` along which outputs lie (0 for
    ``nn.Linear``, 1 for ``Conv1D`` whose weight is ``(in, out)``); head and
    neuron surgery and :class:`prunekit.targets.Target` (``out_dim``: what
    "channel" and "N:M along the input" mean) read it through
    :func:`weight_out_dim`.
``attention(name, module)``
    For an attention module whose heads can be removed: its
    :class:`~.units.AttentionSpec`.
``mlp(name, module)``
    For an MLP module whose hidden neurons can be removed: its
    :class:`~.units.MlpSpec`. (:func:`.families.attention_layers` and
    :func:`.families.mlp_layers` collect these for models outside the
    Hugging Face families; ``prunekit.zoo``'s GPT registers both.)
``matches(module)``
    An extra test for a handler registered by class *name* (``"Conv1D"`` with
    an ``nf`` attribute), so optional packages need not be imported.

Lookup (:func:`handler_for`) walks ``type(module).__mro__``: the first class
registered (by the class itself, or by its ``__name__``) wins, so a handler
registered for a base class serves its subclasses. A user's subclass of a
``torch.nn`` layer is not a leaf unless its own class (or a non-``torch.nn``
base) is registered: it is traced through, as its ``forward`` may differ.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..errors import InvalidParameterError
from ..targets import WEIGHT_OUT_DIMS
from ..targets import weight_out_dim as weight_out_dim

__all__ = [
    "LayerHandler",
    "register_layer_handler",
    "unregister_layer_handler",
    "list_layer_handlers",
    "handler_for",
    "is_leaf",
    "weight_out_dim",
]


@dataclass(frozen=True)
class LayerHandler:
    """What structural pruning knows about one module type (see the module docstring)."""

    couple: Callable[..., None] | None = None
    update_attributes: Callable[[nn.Module], None] | None = None
    weight_out_dim: int = 0
    attention: Callable[[str, nn.Module], Any] | None = None
    mlp: Callable[[str, nn.Module], Any] | None = None
    matches: Callable[[nn.Module], bool] | None = None


_BY_TYPE: dict[type, LayerHandler] = {}
_BY_NAME: dict[str, LayerHandler] = {}


def _key(module_type: Any) -> type | str:
    if isinstance(module_type, type) and issubclass(module_type, nn.Module):
        return module_type
    if isinstance(module_type, str) and module_type:
        return module_type
    raise InvalidParameterError(
        "module_type", "an nn.Module subclass or a class name", module_type,
        "Fix: pass the layer class, e.g. register_layer_handler(MyLayer, handler).",
    )


def register_layer_handler(module_type: type[nn.Module] | str, handler: LayerHandler | Callable[..., None]) -> None:
    """Register ``handler`` for ``module_type`` (a class, or a class name matched along the MRO).

    ``handler`` is a :class:`LayerHandler`, or a plain function taken as its
    ``couple`` rule. Registering a type again replaces its handler.
    """
    key = _key(module_type)
    if callable(handler) and not isinstance(handler, LayerHandler):
        handler = LayerHandler(couple=handler)
    if not isinstance(handler, LayerHandler):
        raise InvalidParameterError(
            "handler", "a prunekit.coupling.LayerHandler or a couple(g, op, name, module) function",
            f"<{type(handler).__name__}>", "Fix: wrap your rule, LayerHandler(couple=rule).",
        )
    if isinstance(handler.weight_out_dim, bool) or not isinstance(handler.weight_out_dim, int):
        raise InvalidParameterError("handler.weight_out_dim", "an int dim of the weight", handler.weight_out_dim)
    if isinstance(key, str):
        _BY_NAME[key] = handler
    else:
        _BY_TYPE[key] = handler
    # targets (below coupling) reads the weight layout from its own table
    WEIGHT_OUT_DIMS[key] = (handler.weight_out_dim, handler.matches)


def unregister_layer_handler(module_type: type[nn.Module] | str) -> None:
    """Remove the handler registered for ``module_type`` (an error if there is none)."""
    key = _key(module_type)
    table: dict[Any, LayerHandler] = _BY_NAME if isinstance(key, str) else _BY_TYPE
    if key not in table:
        raise InvalidParameterError(
            "module_type", "a type with a registered layer handler", getattr(key, "__name__", key),
            "Fix: see prunekit.list_layer_handlers().",
        )
    del table[key]
    WEIGHT_OUT_DIMS.pop(key, None)


def list_layer_handlers() -> list[str]:
    """The module types with a handler, as qualified class names (names for name-keyed ones), sorted."""
    return sorted([f"{t.__module__}.{t.__qualname__}" for t in _BY_TYPE] + list(_BY_NAME))


def _is_torch_nn(cls: type) -> bool:
    return cls.__module__.startswith("torch.nn")


def handler_for(module: nn.Module, *, user_types_only: bool = False) -> LayerHandler | None:
    """The handler of ``module``'s type: the first registered class along its MRO (None if none).

    ``user_types_only`` skips classes defined in ``torch.nn`` (see :func:`is_leaf`).
    """
    for cls in type(module).__mro__:
        if cls is nn.Module:
            break
        if user_types_only and _is_torch_nn(cls):
            continue
        handler = _BY_TYPE.get(cls) or _BY_NAME.get(cls.__name__)
        if handler is not None and (handler.matches is None or handler.matches(module)):
            return handler
    return None


_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def is_leaf(module: nn.Module) -> bool:
    """Whether the tracer records ``module`` as one operation: built-in ``torch.nn``
    modules other than containers, and modules whose type (or a base outside
    ``torch.nn``) has a handler with a ``couple`` rule."""
    if isinstance(module, _CONTAINERS):
        return False
    if _is_torch_nn(type(module)):
        return True
    handler = handler_for(module, user_types_only=True)
    return handler is not None and handler.couple is not None
