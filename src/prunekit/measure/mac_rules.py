"""MAC rules of module types beyond the built-in ones (:mod:`.macs`), registered by the
modules that define those types, and the rule of ``nn.MultiheadAttention``-like modules.

A rule is ``rule(module, args, kwargs, output, weight) -> (dense, effective)``
for one call of the module; ``weight(module, tensor, rows=None)`` gives
``(numel, nnz)`` of the effective tensor (``orig * mask`` when
reparametrised), optionally a row slice. Effective MACs use ``nnz`` where dense
MACs use ``numel``, as for every rule of :func:`.macs.count_macs`.
"""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from ..errors import InvalidParameterError

__all__ = ["MacRule", "WeightCounts", "mha_macs", "register_mac_rule", "registered_rule"]

#: ``weight(module, tensor, rows=None) -> (numel, nnz)`` of the effective ``module.<tensor>``
#: (optionally a row slice), as a MAC rule receives it.
WeightCounts = Callable[..., tuple[int, int]]
MacRule = Callable[[nn.Module, tuple[Any, ...], dict[str, Any], Any, WeightCounts], tuple[int, int]]
_REGISTERED: dict[type, MacRule] = {}


def register_mac_rule(module_type: type[nn.Module], rule: MacRule) -> None:
    """Count ``module_type`` (and its subclasses) with ``rule(module, args, kwargs, output, weight)``,
    which returns ``(dense, effective)`` MACs of one call; ``weight`` gives ``(numel, nnz)``
    of an effective tensor. Calls inside the module (its children, functional ops) are
    then not counted separately. Registering a type again replaces its rule."""
    if not (isinstance(module_type, type) and issubclass(module_type, nn.Module)):
        raise InvalidParameterError("module_type", "an nn.Module subclass", module_type,
                                    "Fix: pass the layer class, e.g. register_mac_rule(MyAttention, rule).")
    if not callable(rule):
        raise InvalidParameterError("rule", "a function (module, args, kwargs, output, weight) -> (dense, effective)",
                                    f"<{type(rule).__name__}>",
                                    "Fix: pass a function returning the call's (dense, effective) MACs.")
    _REGISTERED[module_type] = rule


def registered_rule(module: nn.Module) -> MacRule | None:
    """The rule registered for ``module``'s type (the first class along its MRO), or None."""
    for cls in type(module).__mro__:
        found = _REGISTERED.get(cls)
        if found is not None:
            return found
    return None


def mha_macs(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any,
             weight: WeightCounts) -> tuple[int, int]:
    """MACs of an ``nn.MultiheadAttention``-like call (formula in :mod:`.macs`): projections of
    ``I = num_heads · head_dim`` rows from ``in_proj_weight`` (or ``q/k/v_proj_weight``), QKᵀ and
    AV over ``I``, and ``out_proj``."""
    names = ("query", "key", "value")
    q, k, _v = (args[i] if len(args) > i else kwargs.get(n) for i, n in enumerate(names))
    inner = module.num_heads * module.head_dim
    if q.dim() == 2:  # unbatched (L, E)
        N, L, S = 1, q.shape[0], k.shape[0]
    elif module.batch_first:
        N, L, S = q.shape[0], q.shape[1], k.shape[1]
    else:
        L, N, S = q.shape[0], q.shape[1], k.shape[0]
    s_att = S + (1 if module.bias_k is not None else 0) + (1 if module.add_zero_attn else 0)
    if module.in_proj_weight is not None:
        wq = weight(module, "in_proj_weight", slice(0, inner))
        wk = weight(module, "in_proj_weight", slice(inner, 2 * inner))
        wv = weight(module, "in_proj_weight", slice(2 * inner, 3 * inner))
    else:
        wq = weight(module, "q_proj_weight")
        wk = weight(module, "k_proj_weight")
        wv = weight(module, "v_proj_weight")
    wo = weight(module.out_proj, "weight")
    attention = 2 * N * L * s_att * inner
    dense = N * L * wq[0] + N * S * wk[0] + N * S * wv[0] + attention + N * L * wo[0]
    effective = N * L * wq[1] + N * S * wk[1] + N * S * wv[1] + attention + N * L * wo[1]
    return dense, effective
