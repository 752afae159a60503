"""Multiply-accumulate (MAC) counts from a real forward pass.

:func:`count_macs` runs ``model`` once on an example input with forward hooks
on every module (and a ``TorchFunctionMode`` for functional attention and
matrix products) and counts, from the shapes actually seen:

========================  ==========================================================
layer                     dense MACs (effective: replace ``numel(W)`` by ``nnz(W)``)
========================  ==========================================================
Linear                    ``leading · numel(W)``, ``leading = numel(out) / out_features``
                          (every leading dimension: batch, tokens, ...)
Conv1d/2d/3d              ``positions · numel(W)``, ``positions = numel(out) / out_channels``
                          (batch × output spatial positions). ``W`` is
                          ``(C_out, C_in/groups, *k)`` so grouped and depthwise convs
                          are covered: each output uses ``C_in/groups · Πk`` weights.
ConvTranspose1d/2d/3d     ``positions · numel(W)``, ``positions = numel(in) / in_channels``
                          (each input position is scattered through every weight).
HF ``Conv1D`` (GPT-2)     as Linear, with ``W`` of shape ``(in, out)``.
nn.MultiheadAttention,    ``N·L·E·I`` (q proj) + ``N·S·kdim·I`` (k proj) + ``N·S·vdim·I``
PrunedMultiheadAttention  (v proj) + ``N·L·S'·I`` (QKᵀ over all heads) + ``N·L·S'·I``
                          (AV) + ``N·L·I·E`` (out proj); ``I = num_heads · head_dim``
                          (``= E`` before head pruning), ``S' = S`` (+1 with
                          ``bias_k``, +1 with ``add_zero_attn``). Effective: the four
                          projections use the non-zeros of their (sliced) weights; QKᵀ and
                          AV are products of activations and stay dense.
registered types          ``rule(module, args, kwargs, output, weight)``
                          (:func:`register_mac_rule`).
scaled_dot_product_att.   ``B·L·S·E`` (QKᵀ) + ``B·L·S·Ev`` (AV), ``B`` = batch × heads of
                          the output (grouped-query attention included). Effective = dense.
matmul, mm, bmm,          ``numel(out) · K`` with ``K`` the contracted size (only with
addmm, baddbmm            ``matmul=True``; products of activations, effective = dense).
BatchNorm/InstanceNorm,   ``numel(out)``: one MAC per output element for the normalise
LayerNorm, GroupNorm,     and affine step ``y = x·a + b``; computing the statistics is
RMSNorm                   not counted. ``norms=False`` reports them with 0 MACs.
Embedding, EmbeddingBag   0 (a table look-up).
========================  ==========================================================

Not counted: biases (additions), activations, softmax, pooling, dropout,
residual additions, ``einsum`` and any module or function not listed. Modules
with parameters of their own that no rule covers are listed in
:attr:`MacReport.uncounted`. Functional attention and products inside a
module that already has a rule (for example the SDPA inside
``nn.MultiheadAttention``) are not counted twice. Attention masks do not reduce
the count: masked scores are computed too. Zero-padded conv positions are
counted, as in the usual dense convention.

Effective MACs are the MACs left when every multiplication by an exact zero
weight is skipped. Each weight entry of a Linear/conv is used exactly once per
output position (``positions`` above), so ``effective = positions · nnz(W)``
exactly, where ``W`` is the effective weight: ``orig * mask`` for
reparametrised tensors, the parameter itself when masked in place or zeroed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from ..errors import InvalidParameterError, is_shape
from ..targets import weight_out_dim
from ._results import dump_json, row_named, table_lines
from .mac_rules import mha_macs, registered_rule
from .params import _check_model, count_parameters, effective_tensor, module_param_counts

__all__ = ["MacRow", "MacReport", "count_macs", "mac_rule", "prepare_input", "run_model", "eval_mode"]

logger = logging.getLogger(__name__)


# -- results ---------------------------------------------------------------------


@dataclass
class MacRow:
    """MACs of one module (or of functional ops run directly inside one).

    ``name`` is the module's qualified name (``""`` for the model itself);
    rows of functional ops are named ``<module>[sdpa]`` or ``<module>[matmul]``.
    ``params``/``nonzero`` are the parameters of the module and of its
    submodules (whose MACs its row holds, e.g. ``nn.MultiheadAttention``'s ``out_proj``).
    """

    name: str
    type: str
    dense_macs: int = 0
    effective_macs: int = 0
    params: int = 0
    nonzero: int = 0
    calls: int = 0

    @property
    def density(self) -> float:
        """``effective_macs / dense_macs`` (1.0 when nothing is counted)."""
        return self.effective_macs / self.dense_macs if self.dense_macs else 1.0


@dataclass
class MacReport:
    """Rows per module plus totals; ``params``/``nonzero`` are the whole model's."""

    rows: list[MacRow]
    params: int
    nonzero: int
    uncounted: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def dense_macs(self) -> int:
        """Σ dense MACs over the rows."""
        return sum(r.dense_macs for r in self.rows)

    @property
    def effective_macs(self) -> int:
        """Σ effective MACs over the rows."""
        return sum(r.effective_macs for r in self.rows)

    @property
    def ratio(self) -> float:
        """``effective_macs / dense_macs`` (1.0 when nothing is counted)."""
        return self.effective_macs / self.dense_macs if self.dense_macs else 1.0

    def __getitem__(self, name: str) -> MacRow:
        return row_named(self.rows, name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "modules": [{**asdict(r), "density": r.density} for r in self.rows],
            "total": {
                "dense_macs": self.dense_macs,
                "effective_macs": self.effective_macs,
                "ratio": self.ratio,
                "params": self.params,
                "nonzero": self.nonzero,
            },
            "uncounted": list(self.uncounted),
            "settings": dict(self.settings),
        }

    def to_json(self, path: str | os.PathLike[str] | None = None, indent: int = 2) -> str:
        """The report as JSON; written atomically to ``path`` when given."""
        return dump_json(self.to_dict(), path, indent)

    def table(self) -> str:
        """A plain-text table of the rows and the total."""
        header = ("module", "type", "params", "dense MACs", "effective MACs", "density")
        lines = [
            (r.name or "(model)", r.type, f"{r.params:,}", f"{r.dense_macs:,}", f"{r.effective_macs:,}",
             f"{100 * r.density:.2f}%")
            for r in self.rows
        ]
        total = ("total", "", f"{self.params:,}", f"{self.dense_macs:,}", f"{self.effective_macs:,}",
                 f"{100 * self.ratio:.2f}%")
        body = [line.rstrip() for line in table_lines(header, lines, total, left=(0, 1))]
        if self.uncounted:
            body.append(
                "no MAC rule (only functional products inside are counted, as dense): "
                + ", ".join(n or "(model)" for n in self.uncounted)
            )
        return "\n".join(body)

    def __str__(self) -> str:
        return self.table()


# -- inputs and running ---------------------------------------------------------------


def _first_float(model: nn.Module) -> torch.Tensor | None:
    for tensor in list(model.parameters()) + list(model.buffers()):
        if tensor.is_floating_point():
            return tensor
    return None


def prepare_input(
    model: nn.Module,
    example_input: Any = None,
    input_shape: Sequence[int] | None = None,
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``(args, kwargs)`` for ``model(*args, **kwargs)``.

    ``example_input`` may be a tensor (one argument), a tuple/list (positional
    arguments) or a dict (keyword arguments). Otherwise ``input_shape`` (batch
    dimension included) makes a seeded ``randn`` tensor of the model's
    floating dtype and device.
    """
    if example_input is not None and input_shape is not None:
        raise InvalidParameterError(
            "input_shape", "None when example_input is given", tuple(input_shape),
            "Fix: pass either example_input or input_shape, not both.",
        )
    if example_input is None:
        if input_shape is None:
            raise InvalidParameterError(
                "example_input", "a tensor, a tuple of arguments or a dict of keyword arguments", None,
                "Fix: pass example_input=torch.randn(1, 3, 224, 224) or input_shape=(1, 3, 224, 224).",
            )
        if not is_shape(input_shape):
            raise InvalidParameterError(
                "input_shape", "a non-empty sequence of positive ints, batch dimension first", input_shape,
                "Fix: e.g. input_shape=(1, 3, 32, 32).",
            )
        ref = _first_float(model)
        dtype = ref.dtype if ref is not None else torch.float32
        device = ref.device if ref is not None else torch.device("cpu")
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(tuple(int(d) for d in input_shape), generator=generator, dtype=torch.float32)
        return (x.to(device=device, dtype=dtype),), {}
    if isinstance(example_input, torch.Tensor):
        return (example_input,), {}
    if isinstance(example_input, (tuple, list)):
        return tuple(example_input), {}
    if isinstance(example_input, Mapping):
        if not all(isinstance(k, str) for k in example_input):
            raise InvalidParameterError("example_input", "a dict with str keys (keyword arguments)", example_input)
        return (), dict(example_input)
    raise InvalidParameterError(
        "example_input",
        "a tensor, a tuple/list of positional arguments or a dict of keyword arguments",
        f"<{type(example_input).__name__}>",
        "Fix: e.g. example_input=torch.randn(1, 3, 32, 32).",
    )


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every module in eval mode; restore each one's ``training`` flag on exit."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, flag in flags:
            module.training = flag


def run_model(model: nn.Module, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
    """``model(*args, **kwargs)``."""
    return model(*args, **kwargs)


# -- counting -------------------------------------------------------------------------

_NORMS: tuple[type[nn.Module], ...] = tuple(
    t
    for t in (
        nn.modules.batchnorm._NormBase,  # BatchNorm*d, InstanceNorm*d, SyncBatchNorm
        nn.LayerNorm,
        nn.GroupNorm,
        getattr(nn, "RMSNorm", None),
    )
    if t is not None
)

_MATMUL_FUNCS = {
    torch.matmul: 0,
    torch.Tensor.matmul: 0,
    torch.Tensor.__matmul__: 0,
    torch.mm: 0,
    torch.Tensor.mm: 0,
    torch.bmm: 0,
    torch.Tensor.bmm: 0,
    torch.addmm: 1,
    torch.Tensor.addmm: 1,
    torch.baddbmm: 1,
    torch.Tensor.baddbmm: 1,
}


def mac_rule(module: nn.Module) -> str | None:
    """The rule :func:`count_macs` counts ``module`` by: ``registered`` (a rule given to
    :func:`~prunekit.measure.register_mac_rule`), ``conv_transpose``, ``conv``, ``linear``,
    ``hf_conv1d``, ``mha``; None for a module it does not count."""
    if registered_rule(module) is not None:
        return "registered"
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        return "conv_transpose"
    if isinstance(module, nn.modules.conv._ConvNd):
        return "conv"
    if isinstance(module, nn.Linear):
        return "linear"
    weight = getattr(module, "weight", None)
    if isinstance(weight, torch.Tensor) and weight.dim() == 2 and weight_out_dim(module) == 1:
        return "hf_conv1d"  # a Linear whose weight is (in, out), as its layer handler declares (Conv1D)
    if isinstance(module, nn.MultiheadAttention):
        return "mha"
    if isinstance(module, _NORMS):
        return "norm"
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
        return "embedding"
    return None


def _first_tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)):
        for item in value:
            found = _first_tensor(item)
            if found is not None:
                return found
    return None


class _Counter:
    def __init__(self, model: nn.Module, norms: bool, matmul: bool) -> None:
        self.names = {id(m): n for n, m in model.named_modules(remove_duplicate=False)}
        self.norms = norms
        self.matmul = matmul
        self.rows: dict[tuple[str, str], MacRow] = {}
        self.stack: list[tuple[nn.Module, bool]] = []
        self.suppress = 0
        self.weights: dict[tuple[int, str], tuple[int, int]] = {}
        self.uncounted: list[str] = []

    # bookkeeping
    def row(self, name: str, kind: str, module: nn.Module | None = None) -> MacRow:
        key = (name, kind)
        row = self.rows.get(key)
        if row is None:
            row = MacRow(name, kind)
            if module is not None:
                for m in module.modules():  # its children's MACs are in this row
                    p, nz = module_param_counts(m)
                    row.params += p
                    row.nonzero += nz
            self.rows[key] = row
        return row

    def weight(self, module: nn.Module, name: str, rows: slice | None = None) -> tuple[int, int]:
        """``(numel, nnz)`` of the effective ``module.<name>`` (optionally a row slice)."""
        key = (id(module), f"{name}{rows}")
        if key not in self.weights:
            w = effective_tensor(module, name)
            if rows is not None:
                w = w[rows]
            self.weights[key] = (w.numel(), int(torch.count_nonzero(w)))
        return self.weights[key]

    # hooks
    def pre(self, module: nn.Module, args: Any) -> None:
        counting = self.suppress == 0
        self.stack.append((module, counting))
        if counting and mac_rule(module) is not None:
            self.suppress += 1

    def post(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        if not self.stack or self.stack[-1][0] is not module:
            return
        _, counting = self.stack.pop()
        rule = mac_rule(module)
        if not counting:
            return
        name = self.names.get(id(module), "?")
        if rule is None:
            if module._parameters and any(p is not None for p in module._parameters.values()):
                if name not in self.uncounted:
                    self.uncounted.append(name)
                    logger.debug("no MAC rule for %s (%s); its parameters are not counted", name, type(module).__name__)
            return
        self.suppress -= 1
        dense, effective = getattr(self, "_" + rule)(module, args, kwargs, output)
        row = self.row(name, type(module).__name__, module)
        row.dense_macs += int(dense)
        row.effective_macs += int(effective)
        row.calls += 1

    # rules: each returns (dense, effective)
    def _linear(self, module: nn.Module, args: Any, kwargs: Any, output: Any) -> tuple[int, int]:
        out = _first_tensor(output)
        numel, nnz = self.weight(module, "weight")
        leading = out.numel() // module.out_features
        return leading * numel, leading * nnz

    def _hf_conv1d(self, module: nn.Module, args: Any, kwargs: Any, output: Any) -> tuple[int, int]:
        out = _first_tensor(output)
        numel, nnz = self.weight(module, "weight")
        leading = out.numel() // int(module.nf)
        return leading * numel, leading * nnz

    def _conv(self, module: nn.Module, args: Any, kwargs: Any, output: Any) -> tuple[int, int]:
        out = _first_tensor(output)
        numel, nnz = self.weight(module, "weight")
        positions = out.numel() // module.out_channels
        return positions * numel, positions * nnz

    def _conv_transpose(self, module: nn.Module, args: Any, kwargs: Any, output: Any) -> tuple[int, int]:
        x = args[0] if args else kwargs.get("input")
        numel, nnz = self.weight(module, "weight")
        positions = x.numel() // module.in_channels
        return positions * numel, positions * nnz

    def _norm(self, module: nn.Module, args: Any, kwargs: Any, output: Any) -> tuple[int, int]:
        if not self.norms:
            return 0, 0
        out = _first_tensor(output)
        return out.numel(), out.numel()

    def _embedding(self, module: nn.Module, args: Any, kwargs: Any, output: Any) -> tuple[int, int]:
        return 0, 0

    def _mha(self, module: nn.Module, args: Any, kwargs: Any, output: Any) -> tuple[int, int]:
        return mha_macs(module, args, kwargs, output, self.weight)

    def _registered(self, module: nn.Module, args: Any, kwargs: Any, output: Any) -> tuple[int, int]:
        rule = registered_rule(module)
        return rule(module, args, kwargs, output, self.weight)

    # functional ops
    def op(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
        if self.suppress:
            return
        if func is F.scaled_dot_product_attention:
            q = args[0] if args else kwargs["query"]
            k = args[1] if len(args) > 1 else kwargs["key"]
            L, E, S = q.shape[-2], q.shape[-1], k.shape[-2]
            ev = out.shape[-1]
            batch = out.numel() // max(L * ev, 1)
            macs = batch * L * S * (E + ev)
            suffix = "sdpa"
        elif self.matmul and func in _MATMUL_FUNCS and isinstance(out, torch.Tensor):
            index = _MATMUL_FUNCS[func]  # position of the left factor
            first = args[index] if len(args) > index else kwargs.get("mat1", kwargs.get("batch1"))
            macs = out.numel() * int(first.shape[-1]) if first.dim() else out.numel()
            suffix = "matmul"
        else:
            return
        owner = self.names.get(id(self.stack[-1][0]), "?") if self.stack else ""
        row = self.row(f"{owner}[{suffix}]", getattr(func, "__name__", str(func)))
        row.dense_macs += macs
        row.effective_macs += macs
        row.calls += 1


class _OpMode(TorchFunctionMode):
    def __init__(self, counter: _Counter) -> None:
        super().__init__()
        self.counter = counter

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func is F.scaled_dot_product_attention or func in _MATMUL_FUNCS:
            self.counter.op(func, args, kwargs, out)
        return out


@contextmanager
def _no_fastpath() -> Iterator[None]:
    """Disable the fused MHA/Transformer fast path, which bypasses module calls."""
    mha = getattr(torch.backends, "mha", None)
    if mha is None or not hasattr(mha, "set_fastpath_enabled"):
        yield
        return
    before = mha.get_fastpath_enabled()
    mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        mha.set_fastpath_enabled(before)


def count_macs(
    model: nn.Module,
    example_input: Any = None,
    *,
    input_shape: Sequence[int] | None = None,
    norms: bool = True,
    matmul: bool = True,
) -> MacReport:
    """Dense and effective MACs of one forward pass of ``model``, per module.

    Args:
        model: the network (any pruning state). It is run once in eval mode
            under ``torch.no_grad``; each module's ``training`` flag is
            restored afterwards and every hook is removed.
        example_input: a tensor, a tuple/list of positional arguments or a dict
            of keyword arguments. MACs are counted for exactly this input
            (its batch size included).
        input_shape: instead of ``example_input``: a shape (batch first) for a
            seeded ``randn`` input of the model's dtype.
        norms: count BatchNorm/LayerNorm/GroupNorm/RMSNorm as ``numel(out)``
            MACs (True) or report them with 0 (False).
        matmul: count ``matmul``/``@``/``mm``/``bmm``/``addmm``/``baddbmm``
            called outside the modules with rules (custom attention).

    Returns:
        A :class:`MacReport`; see the module docstring for every formula.
        ``effective = positions · nnz(W)`` for Linear/conv layers.

    Raises:
        InvalidParameterError: for a non-module ``model``, a missing or
            malformed input, or non-bool flags.
    """
    _check_model(model)
    for pname, value in (("norms", norms), ("matmul", matmul)):
        if not isinstance(value, bool):
            raise InvalidParameterError(pname, "True or False", value)
    args, kwargs = prepare_input(model, example_input, input_shape)
    counter = _Counter(model, norms, matmul)
    with ExitStack() as stack:
        for module in model.modules():
            stack.callback(module.register_forward_pre_hook(counter.pre).remove)
            stack.callback(module.register_forward_hook(counter.post, with_kwargs=True).remove)
        stack.enter_context(eval_mode(model))
        stack.enter_context(torch.no_grad())
        stack.enter_context(_no_fastpath())
        stack.enter_context(_OpMode(counter))
        run_model(model, args, kwargs)
    counts = count_parameters(model)
    report = MacReport(
        list(counter.rows.values()),
        counts.params,
        counts.nonzero,
        counter.uncounted,
        {"norms": norms, "matmul": matmul, "input_shapes": _shapes(args, kwargs)},
    )
    logger.info("counted %d dense / %d effective MACs over %d rows", report.dense_macs, report.effective_macs,
                len(report.rows))
    return report


def _shapes(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> list[Any]:
    def shape(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return list(value.shape)
        if isinstance(value, (tuple, list)):
            return [shape(v) for v in value]
        return type(value).__name__

    out: list[Any] = [shape(a) for a in args]
    out += [{k: shape(v)} for k, v in kwargs.items()]
    return out
