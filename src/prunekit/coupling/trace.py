"""Trace a model into a flat list of operations on tensor values.

Two tracers fill the same small representation (:class:`Value`, :class:`Op`):

* :func:`trace_fx` uses ``torch.fx.symbolic_trace`` and runs ``example_inputs``
  through the graph with an interpreter, so every value has its real shape;
* :func:`trace_run` is the fallback for models fx cannot trace (Python control
  flow on tensor values): it runs one forward pass under a
  ``TorchFunctionMode`` that records every torch function and tensor method
  called outside the built-in ``torch.nn`` modules, which are recorded as one
  operation each through forward hooks. The graph is that of this one pass:
  branches not taken with ``example_inputs`` are not seen.

:func:`trace` traces the model in eval mode and, where its code differs in
train mode (auxiliary heads, ``F.dropout(x, p, self.training)``), in train mode
too, and joins both graphs. Leaves no rule may know (an fx-wrapped function, a
layer without a handler) are tried on their real inputs (:mod:`.probe`).

Built-in ``torch.nn`` modules (not containers), and modules of a type with a
layer handler (:mod:`.handlers`), are leaves in both tracers, as in fx. Parameters and buffers used directly by functions become values with a
``ref`` (module name, tensor name).
"""

from __future__ import annotations

import logging
import operator
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn
from torch.overrides import TorchFunctionMode

from ..errors import InvalidParameterError
from .handlers import _CONTAINERS, handler_for, is_leaf
from .probe import channelwise_dims

__all__ = ["Value", "Op", "Trace", "trace", "trace_fx", "trace_run", "is_leaf"]

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class Value:
    """One tensor flowing through the model: its shape, and (for a parameter or
    buffer) which one it is. ``spaces`` maps a dim to its channel space (filled
    by :mod:`prunekit.coupling.rules`)."""

    shape: tuple[int, ...]
    ref: tuple[str, str] | None = None
    spaces: dict[int, Any] = field(default_factory=dict)
    ref_dims: dict[int, int] | None = None  # dim -> dim of ``ref`` (a view of a parameter); None: the same dims

    @property
    def ndim(self) -> int:
        return len(self.shape)


@dataclass(eq=False)
class Op:
    """One call: ``kind`` is ``"module"`` (``target`` the module, ``module_name``
    its qualified name) or ``"function"`` (``target`` a canonical function or
    method name such as ``"add"``, ``"cat"``, ``"view"``). ``args``/``kwargs``
    hold :class:`Value` objects where tensors were passed, and ``out`` the result
    (a Value, a tuple of Values, or a plain Python value)."""

    kind: str
    name: str
    target: Any
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    out: Any
    module_name: str | None = None
    # same structure as ``args``: True where the value was computed in the graph (fx),
    # False where it is a constant of the model's code; None when unknown (fallback tracer)
    computed: Any = None
    # sizes of tracked tensors this op uses: (value, dim, output dim) where the size is
    # passed as is as the size of output dim (view/reshape/expand), else (value, dim, None)
    size_uses: list[tuple[Value, int, int | None]] = field(default_factory=list)
    # the innermost module whose forward made this call (qualified name, class), or None
    scope: tuple[str, type] | None = None
    # for a leaf the rules may not know (an fx-wrapped function, a layer without a handler): the dims
    # along which it acts on each channel alone, tried on its real inputs (:mod:`.probe`); None: not tried
    channelwise_dims: frozenset[int] | None = None


@dataclass
class Trace:
    inputs: list[Value]
    ops: list[Op]
    outputs: list[Value]
    method: str  # "fx" or "run"; "fx+train" / "run+train" when train-mode-only operations were joined in


def canonical_name(func: Any) -> str:
    """``"add"`` for ``operator.add``, ``torch.add``, ``Tensor.__add__``, ``Tensor.add_`` ..."""
    if isinstance(func, str):
        name = func
    else:
        name = getattr(func, "__name__", None) or repr(func)
    if name.startswith("__") and name.endswith("__"):
        name = name[2:-2]
        if name[:1] in ("r", "i") and name[1:] in _BINARY_DUNDER:
            name = name[1:]
    if name.endswith("_") and not name.endswith("__") and len(name) > 1:
        name = name[:-1]  # in-place variant
    return name.lstrip("_") or name


_BINARY_DUNDER = {"add", "sub", "mul", "truediv", "floordiv", "matmul", "pow", "and", "or", "xor", "mod"}


def _iter_values(obj: Any) -> Iterator[Value]:
    if isinstance(obj, Value):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from _iter_values(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _iter_values(item)


def _tensor_refs(model: nn.Module) -> dict[int, tuple[str, str]]:
    refs: dict[int, tuple[str, str]] = {}
    for module_name, module in model.named_modules():
        for name, tensor in list(module._parameters.items()) + list(module._buffers.items()):
            if tensor is not None:
                refs.setdefault(id(tensor), (module_name, name))
    return refs


# -- torch.fx -------------------------------------------------------------------------


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return is_leaf(m)


class _Recorder(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm)
        self.results: dict[fx.Node, Any] = {}

    def run_node(self, n: fx.Node) -> Any:
        result = super().run_node(n)
        self.results[n] = result
        return result


def _wrap(obj: Any, ref: tuple[str, str] | None = None) -> Any:
    if isinstance(obj, torch.Tensor):
        return Value(tuple(obj.shape), ref)
    if isinstance(obj, (list, tuple)) and any(isinstance(o, torch.Tensor) for o in obj):
        return tuple(_wrap(o) for o in obj)
    return obj


def _scope(node: fx.Node) -> tuple[str, type] | None:
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return None
    found = list(stack.values())[-1]
    if isinstance(found, tuple) and len(found) == 2 and isinstance(found[1], type):
        return str(found[0]), found[1]
    return None


def trace_fx(model: nn.Module, example_inputs: tuple[Any, ...], graph: fx.Graph | None = None) -> Trace:
    """Trace with ``torch.fx`` (raises whatever fx raises when it cannot); ``graph``: the model's
    symbolic graph when already traced."""
    graph = _Tracer().trace(model) if graph is None else graph
    gm = fx.GraphModule(model, graph)
    recorder = _Recorder(gm)
    with torch.no_grad():
        recorder.run(*example_inputs)
    values: dict[fx.Node, Any] = {}
    inputs: list[Value] = []
    ops: list[Op] = []
    outputs: list[Value] = []

    def load(arg: Any) -> Any:
        return fx.node.map_arg(arg, lambda n: values[n])

    sizes = _SizeTracker(values)
    for node in graph.nodes:
        result = recorder.results.get(node)
        if node.op == "placeholder":
            values[node] = _wrap(result)
            inputs.extend(_iter_values(values[node]))
        elif node.op == "get_attr":
            module_name, _, tensor_name = node.target.rpartition(".")
            values[node] = _wrap(result, (module_name, tensor_name) if isinstance(result, torch.Tensor) else None)
        elif node.op == "output":
            outputs.extend(_iter_values(load(node.args[0])))
        else:
            values[node] = _wrap(result)
            if not _has_tensor(result):
                sizes.non_tensor(node)
                continue
            uses = sizes.uses(node)
            if node.op == "call_module":
                module = gm.get_submodule(node.target)
                ops.append(Op("module", node.name, module, load(node.args), load(node.kwargs), values[node], str(node.target), None, uses))
                handler = handler_for(module)
                if handler is None or handler.couple is None:
                    ops[-1].channelwise_dims = _probe(module, node, recorder)
            else:
                target = "getitem" if node.target is operator.getitem else canonical_name(node.target)
                computed = fx.node.map_aggregate(node.args, lambda a: isinstance(a, fx.Node))
                ops.append(Op("function", node.name, target, load(node.args), load(node.kwargs), values[node], None, computed, uses,
                              _scope(node)))
                if _is_wrapped_leaf(node.target):
                    ops[-1].channelwise_dims = _probe(node.target, node, recorder)
    return Trace(inputs, ops, outputs, "fx")


def _is_wrapped_leaf(target: Any) -> bool:
    """A Python function of the model's own code that fx kept as one call (``torch.fx.wrap``)."""
    module = getattr(target, "__module__", None) or ""
    return isinstance(target, types.FunctionType) and module != "torch" and not module.startswith("torch.")


def _probe(fn: Callable[..., Any], node: fx.Node, recorder: _Recorder) -> frozenset[int]:
    args = fx.node.map_arg(node.args, lambda n: recorder.results.get(n))
    kwargs = fx.node.map_arg(node.kwargs, lambda n: recorder.results.get(n))
    return channelwise_dims(fn, tuple(args), dict(kwargs))


_SIZE_TAKERS = {"view", "reshape", "expand", "repeat", "tile", "broadcast_to"}


class _SizeTracker:
    """Where the graph's integers come from: ``x.shape``, ``x.size(d)`` and arithmetic
    on them. A size of a tracked tensor passed as is to view/reshape/expand is a
    constraint (checked once the channels are joined); any other use of it means the
    code computes with it, so those channels are kept. ``numel()`` is not followed."""

    def __init__(self, values: dict[fx.Node, Any]) -> None:
        self.values = values
        self.sources: dict[fx.Node, list[tuple[Value, int]]] = {}
        self.direct: dict[fx.Node, tuple[Value, int]] = {}
        self.shape_of: dict[fx.Node, Value] = {}

    def non_tensor(self, node: fx.Node) -> None:
        args = list(node.args)
        first = self.values.get(args[0]) if args and isinstance(args[0], fx.Node) else None
        name = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")
        if isinstance(first, Value) and (name == "size" or (name == "getattr" and args[1] == "shape")):
            if name == "size" and (len(args) > 1 or "dim" in node.kwargs):
                d = int(node.kwargs.get("dim", args[1] if len(args) > 1 else 0)) % first.ndim
                self.direct[node] = (first, d)
                self.sources[node] = [(first, d)]
            else:
                self.shape_of[node] = first
                self.sources[node] = [(first, d) for d in range(first.ndim)]
            return
        if node.target is operator.getitem and isinstance(args[0], fx.Node) and args[0] in self.shape_of:
            shape = self.shape_of[args[0]]
            index = args[1]
            if isinstance(index, int):
                self.direct[node] = (shape, index % shape.ndim)
                self.sources[node] = [self.direct[node]]
            else:
                self.sources[node] = [(shape, d) for d in range(shape.ndim)[index]] if isinstance(index, slice) else self.sources[args[0]]
            return
        if name in ("numel", "nelement", "dim"):
            return
        found: list[tuple[Value, int]] = []
        for arg in node.all_input_nodes:
            found.extend(self.sources.get(arg, []))
        if found:
            self.sources[node] = found

    def uses(self, node: fx.Node) -> list[tuple[Value, int, int | None]]:
        out: list[tuple[Value, int, int | None]] = []
        name = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")
        size_args: list[Any] = []
        if name in _SIZE_TAKERS:
            size_args = list(node.args[1:])
            if len(size_args) == 1 and isinstance(size_args[0], (list, tuple)):
                size_args = list(size_args[0])
        placed = set()
        for od, arg in enumerate(size_args):
            if isinstance(arg, fx.Node) and arg in self.direct:
                value, d = self.direct[arg]
                out.append((value, d, od))
                placed.add(arg)
        for arg in node.all_input_nodes:
            if arg in placed:
                continue
            for value, d in self.sources.get(arg, []):
                out.append((value, d, None))
        return out


# -- fallback: record one forward pass --------------------------------------------------

_IGNORED = {"get", "size", "dim", "numel", "shape", "dtype", "device", "is_floating_point", "requires_grad", "ndim"}


class _Recording(TorchFunctionMode):
    def __init__(self, refs: dict[int, tuple[str, str]]) -> None:
        super().__init__()
        self.refs = refs
        self.depth = 0
        self.values: dict[int, Value] = {}
        self.alive: list[torch.Tensor] = []  # keeps ids unique while tracing
        self.ops: list[Op] = []
        self.scopes: list[tuple[str, type]] = []  # the user modules (not leaves) being run, outermost first

    def value(self, obj: Any) -> Any:
        if isinstance(obj, torch.Tensor):
            key = id(obj)
            if key not in self.values:
                self.values[key] = Value(tuple(obj.shape), self.refs.get(key))
                self.alive.append(obj)
            return self.values[key]
        if isinstance(obj, (list, tuple)):
            return type(obj)(self.value(o) for o in obj) if not hasattr(obj, "_fields") else tuple(self.value(o) for o in obj)
        if isinstance(obj, dict):
            return {k: self.value(v) for k, v in obj.items()}
        return obj

    def produced(self, obj: Any) -> Any:
        """A fresh Value for each tensor in a result (an in-place op's result is a new value)."""
        if isinstance(obj, torch.Tensor):
            self.values[id(obj)] = Value(tuple(obj.shape))
            self.alive.append(obj)
            return self.values[id(obj)]
        if isinstance(obj, (list, tuple)) and any(isinstance(o, torch.Tensor) for o in obj):
            return tuple(self.produced(o) for o in obj)
        return obj

    def __torch_function__(self, func: Callable, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        name = canonical_name(func)
        if self.depth == 0 and args and isinstance(args[0], torch.Tensor) and id(args[0]) in self.values:
            self.size_read(func, name, args, kwargs)
        if self.depth == 0 and name not in _IGNORED and _has_tensor(result):
            in_args, in_kwargs = self.value(args), self.value(kwargs)
            self.ops.append(Op("function", f"{name}_{len(self.ops)}", name, tuple(in_args), in_kwargs, self.produced(result),
                               scope=self.scopes[-1] if self.scopes else None))
        return result

    def size_read(self, func: Callable, name: str, args: tuple, kwargs: dict) -> None:
        """The code reads a size (``x.shape``, ``x.size(d)``, ``len(x)``): the fallback
        cannot follow what is done with it, so it is recorded as a use of those dims."""
        value = self.values[id(args[0])]
        owner = getattr(getattr(func, "__self__", None), "__name__", None)
        if name == "size" and (len(args) > 1 or "dim" in kwargs):
            dims = [int(kwargs.get("dim", args[1] if len(args) > 1 else 0)) % max(value.ndim, 1)]
        elif (name == "size") or (name == "get" and owner == "shape"):
            dims = list(range(value.ndim))
        elif name == "len":
            dims = [0]
        else:
            return
        label = {"get": "shape", "len": "len"}.get(name, name)
        self.ops.append(Op("function", f"{label}_{len(self.ops)}", "size_read", (value,), {}, None,
                           size_uses=[(value, d, None) for d in dims]))

    def enter_scope(self, name: str, module: nn.Module) -> None:
        self.scopes.append((name, type(module)))

    def leave_scope(self) -> None:
        if self.scopes:
            self.scopes.pop()

    def enter(self, module: nn.Module, args: Any, kwargs: Any) -> None:
        if self.depth == 0:
            module._prunekit_trace_inputs = (self.value(args), self.value(kwargs))  # type: ignore[attr-defined]
        self.depth += 1

    def leave(self, name: str, module: nn.Module, result: Any) -> None:
        self.depth -= 1
        if self.depth == 0:
            args, kwargs = module.__dict__.pop("_prunekit_trace_inputs")
            self.ops.append(Op("module", name, module, tuple(args), kwargs, self.produced(result), name))


def _has_tensor(obj: Any) -> bool:
    if isinstance(obj, torch.Tensor):
        return True
    return isinstance(obj, (list, tuple)) and any(isinstance(o, torch.Tensor) for o in obj)


def trace_run(model: nn.Module, example_inputs: tuple[Any, ...]) -> Trace:
    """Record one forward pass (the fallback when fx cannot trace ``model``)."""
    recording = _Recording(_tensor_refs(model))
    handles = []
    for name, module in model.named_modules():
        if name and not is_leaf(module) and not isinstance(module, _CONTAINERS):
            handles.append(module.register_forward_pre_hook(lambda m, a, rec=recording, n=name: rec.enter_scope(n, m)))
            handles.append(module.register_forward_hook(lambda m, a, r, rec=recording: rec.leave_scope(), always_call=True))
        if name and is_leaf(module):
            handles.append(
                module.register_forward_pre_hook(
                    lambda m, a, k, rec=recording: rec.enter(m, a, k), prepend=True, with_kwargs=True
                )
            )
            handles.append(
                module.register_forward_hook(lambda m, a, r, rec=recording, n=name: rec.leave(n, m, r), always_call=True)
            )
    try:
        inputs = list(_iter_values(recording.value(tuple(example_inputs))))
        with torch.no_grad(), recording:
            result = model(*example_inputs)
        outputs = list(_iter_values(recording.value(result if not hasattr(result, "to_tuple") else result.to_tuple())))
    finally:
        for handle in handles:
            handle.remove()
    return Trace(inputs, recording.ops, outputs, "run")


def trace(model: nn.Module, example_inputs: tuple[Any, ...]) -> Trace:
    """The model's operations in eval mode and, where its code differs in training (auxiliary
    heads run only then, ``F.dropout(x, p, self.training)``), in train mode too: the union of both
    graphs, so that channels seen in either mode are coupled.

    :func:`trace_fx`, or :func:`trace_run` (logged) where fx fails. The train-mode pass runs with
    BatchNorm/InstanceNorm layers in eval mode (their statistics are not updated, and a batch of one
    works), the model's buffers restored and the random state forked; the modules' modes are
    restored afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        _check_meta(model)
        traced, graph = _trace(model, example_inputs)
        training = _trace_training(model, example_inputs, traced, graph)
        if training is not None:
            logger.info("%s runs other operations in train mode: both modes traced", type(model).__name__)
            traced = Trace(traced.inputs, traced.ops + training.ops, traced.outputs + training.outputs,
                           f"{traced.method}+train")
        return traced
    finally:
        for module, training_mode in modes:
            module.training = training_mode


def _signature(ops: list[Op]) -> list[tuple[str, Any]]:
    return [(op.kind, op.module_name if op.kind == "module" else op.target) for op in ops]


def _trace_training(model: nn.Module, example_inputs: tuple[Any, ...], traced: Trace,
                    graph: fx.Graph | None) -> Trace | None:
    """The train-mode trace when it differs from eval mode's (None when it is the same)."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._NormBase):
            module.eval()
    try:
        train_graph = None
        if graph is not None:
            try:
                train_graph = _Tracer().trace(model)
            except Exception:  # noqa: BLE001 - fx raises many kinds; the fallback records a run instead
                train_graph = None
            if train_graph is not None and str(train_graph) == str(graph):
                return None  # the same code in both modes: nothing to run
        training = _run_training(model, example_inputs, train_graph)
        if train_graph is None and _signature(training.ops) == _signature(traced.ops):
            return None
        return training
    except Exception as error:  # noqa: BLE001 - a model may refuse to run in train mode without targets
        logger.warning(
            "%s cannot be traced in train mode (%s: %s); only its eval-mode graph is used (operations that run only "
            "in training are not seen)", type(model).__name__, type(error).__name__,
            str(error).splitlines()[0][:200] if str(error) else "")
        return None


def _run_training(model: nn.Module, example_inputs: tuple[Any, ...], graph: fx.Graph | None) -> Trace:
    """One train-mode pass (fx's ``graph``, or the fallback recording), with the buffers restored and the
    random state (CPU, and the CUDA devices the model is on) as it was."""
    saved = [(module, name, buffer, buffer.detach().clone())
             for module in model.modules() for name, buffer in module._buffers.items() if buffer is not None]
    devices = sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})
    try:
        with torch.random.fork_rng(devices=devices):
            return trace_fx(model, example_inputs, graph) if graph is not None else trace_run(model, example_inputs)
    finally:
        with torch.no_grad():
            for module, name, buffer, copy in saved:
                if buffer.shape == copy.shape:
                    buffer.copy_(copy)
                module._buffers[name] = buffer


def _describe(obj: Any) -> str:
    if isinstance(obj, torch.Tensor):
        return f"{tuple(obj.shape)} {str(obj.dtype).removeprefix('torch.')} on {obj.device}"
    if isinstance(obj, (list, tuple)):
        return "(" + ", ".join(_describe(o) for o in obj) + ")"
    return type(obj).__name__


def _check_meta(model: nn.Module) -> None:
    """Refuse a meta-device model."""
    meta = next((name for name, p in model.named_parameters() if p.is_meta), None)
    if meta is not None:
        raise InvalidParameterError(
            "model", "a model whose parameters hold values (not on the meta device)", f"<{meta} on the meta device>",
            "Fix: materialise the model first (model.to_empty on the cpu), then load its weights.")


def _check_inputs(model: nn.Module, example_inputs: tuple[Any, ...]) -> None:
    """Refuse inputs the model cannot take (one plain forward, in eval mode without
    gradients), before the fallback tracer hides where they fail. Run only when fx
    fails: a successful fx trace has run the model on these inputs already."""
    try:
        with torch.no_grad():
            model(*example_inputs)
    except (RuntimeError, ValueError, IndexError, TypeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidParameterError(
            "example_inputs", "inputs the model accepts (the shape, dtype and device it was built for)",
            f"<{_describe(example_inputs)}>",
            f"Fix: pass an input batch the model runs on, e.g. one real batch (the model said: {reason}).",
        ) from exc


def _trace(model: nn.Module, example_inputs: tuple[Any, ...]) -> tuple[Trace, fx.Graph | None]:
    """The trace, and fx's graph (None when the fallback recorded it)."""
    try:
        graph = _Tracer().trace(model)
        return trace_fx(model, example_inputs, graph), graph
    except Exception as error:  # noqa: BLE001 - fx raises many kinds (TraceError, TypeError, ...)
        _check_inputs(model, example_inputs)
        logger.warning(
            "torch.fx cannot trace %s (%s: %s); recording one forward pass instead (branches not taken "
            "with example_inputs are not seen)",
            type(model).__name__,
            type(error).__name__,
            str(error).splitlines()[0][:200] if str(error) else "",
        )
        return trace_run(model, example_inputs), None
