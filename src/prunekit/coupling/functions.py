"""Coupling rules of torch functions and tensor methods, by canonical name
(``"add"`` for ``operator.add``, ``torch.add``, ``Tensor.add_`` ...): the tables
of which rule serves which function, reductions, indexing, and functional
layers (``F.linear(x, self.weight)``) whose parameters are traced values.

A function not in :data:`FUNCTION_RULES` that touches tracked channels is
``unknown``: finding groups refuses those channels.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from .graph import Graph, _arg, _dims, _has_spaces, _out, _tensors, _where
from .layers import _keep_other_dims, layer_norm, per_channel
from .ops_generic import along_dim, channelwise_by_behaviour, elementwise, keep_leading, matmul, pad, sdpa, unary, unknown
from .ops_shape import cat, expand, getitem, permute, reshape, split, stack
from .trace import Op, Value, _iter_values

__all__ = ["FUNCTION_RULES", "apply_function"]


_UNARY = {
    "relu", "relu6", "gelu", "silu", "sigmoid", "tanh", "leaky_relu", "elu", "selu", "celu", "hardswish",
    "hardsigmoid", "hardtanh", "mish", "softplus", "softsign", "tanhshrink", "logsigmoid", "dropout", "dropout1d",
    "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout", "contiguous", "clone", "detach", "float",
    "half", "double", "bfloat16", "to", "type_as", "type", "abs", "exp", "log", "sqrt", "rsqrt", "square", "neg",
    "sin", "cos", "erf", "sign", "clamp", "clip", "clamp_min", "clamp_max", "reciprocal", "threshold", "cpu", "cuda",
    "requires_grad", "masked_fill", "nan_to_num", "round", "floor", "ceil", "trunc", "relu_", "identity",
}
_NARY = {"normal", "add", "sub", "mul", "truediv", "div", "floordiv", "pow", "maximum", "minimum", "where", "rsub", "addcmul", "addcdiv", "lerp", "fmod", "remainder"}
_SPATIAL = {
    "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d",
    "adaptive_avg_pool2d", "adaptive_avg_pool3d", "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d",
    "interpolate", "upsample", "upsample_nearest", "upsample_bilinear", "lp_pool1d", "lp_pool2d",
    "max_pool2d_with_indices", "adaptive_max_pool2d_with_indices",
}
_RESHAPE = {"view", "reshape", "flatten", "unflatten", "squeeze", "unsqueeze", "view_as", "reshape_as"}
_PERMUTE = {"permute", "transpose", "swapaxes", "swapdims", "t", "movedim", "moveaxis"}
_EXPAND = {"expand", "expand_as", "repeat", "tile", "broadcast_to"}
_MIXING = {"softmax", "log_softmax", "softmin", "normalize", "cumsum", "cumprod", "logcumsumexp"}
_REDUCE = {"mean", "sum", "amax", "amin", "prod", "std", "var", "norm", "logsumexp", "max", "min", "argmax", "argmin", "nansum", "nanmean", "all", "any", "count_nonzero", "median"}
_INDEXING = {"index_select": 1, "gather": 1, "narrow": 1, "select": 1, "take_along_dim": 2, "scatter": 1, "scatter_add": 1, "index_add": 1, "index_copy": 1, "index_fill": 1, "sort": 1, "argsort": 1, "topk": 2, "roll": 2, "flip": 1, "kthvalue": 2}
# whole samples scaled or dropped (stochastic depth: torchvision's ``stochastic_depth``, a
# ``torch.fx.wrap`` leaf, and timm's ``drop_path``): each channel alone, as an activation
_SAMPLEWISE = {"stochastic_depth", "drop_path"}
# a tensor shaped like the input (``torch.rand_like(x)``) or refilled in place
# (``mask.bernoulli_(p)``): element by element, no channel mixed
_LIKE = {
    "empty_like", "zeros_like", "ones_like", "full_like", "rand_like", "randn_like", "randint_like", "bernoulli",
    "uniform", "fill", "zero", "random", "exponential", "geometric", "cauchy", "log_normal",
}
# a new tensor made from the input's dtype and device only (``x.new_empty(shape)``): its shape comes
# from the code (sizes read from tracked channels are followed as size uses)
_NEW = {"new_empty", "new_zeros", "new_ones", "new_full", "new_tensor"}
_REFUSED = {
    "channel_shuffle": "shuffles channels",
    "native_channel_shuffle": "shuffles channels",
    "pixel_shuffle": "moves channels into space",
    "pixel_unshuffle": "moves space into channels",
}


# statistics that, taken along channels with ``keepdim=True``, normalise them (a LayerNorm or
# RMSNorm written out, ConvNeXt-V2's global response normalisation): approximate, as LayerNorm
_STATISTICS = {"mean", "sum", "norm", "var", "std", "nansum", "nanmean"}


def _reduce(g: Graph, op: Op) -> None:
    values = _tensors(op)
    if op.target in ("max", "min") and len(values) > 1:
        elementwise(g, op)
        return
    shift = 1 if op.target == "norm" else 0  # torch.norm(input, p, dim, keepdim)
    dim = _arg(op, 1 + shift, "dim", None)
    if isinstance(dim, Value):
        dim = None
    keepdim = False
    if op.target in _STATISTICS:  # var/std(input, dim, unbiased, keepdim): keepdim read by name only
        keepdim = op.kwargs.get("keepdim", False) if op.target in ("var", "std") else _arg(op, 2 + shift, "keepdim", False)
    if keepdim is True and dim is not None:
        along_dim(g, op, dim, "approx", "statistics (which removing channels changes) of")
    else:
        along_dim(g, op, dim, "fixed", "reduction")


def _fresh(g: Graph, op: Op) -> None:
    """``x.new_empty(shape)`` and friends: the result carries none of ``x``'s channels."""


def _indexing(g: Graph, op: Op) -> None:
    position = _INDEXING[op.target]
    default = -1 if op.target in ("sort", "argsort", "topk", "kthvalue") else None
    name = "dims" if op.target in ("flip", "roll") else "dim"
    dim = _arg(op, position, name, default)
    if dim is None or isinstance(dim, Value):
        unknown(g, op)
        return
    x = _tensors(op)[0]
    dims = _dims(dim, x.ndim)
    for d in dims:
        if d in x.spaces:
            g.mark(x.spaces[d], "refuse", f"{_where(op)} ({op.target}) reorders or indexes channels")
    out_values = list(_iter_values(op.out))
    for o in out_values:
        if o.ndim == x.ndim:
            for d, space in x.spaces.items():
                if d not in dims and o.shape[d] == x.shape[d]:
                    o.spaces[d] = space
        elif op.target == "select" and o.ndim == x.ndim - 1:
            for d, space in x.spaces.items():
                if d not in dims:
                    o.spaces[d if d < dims[0] else d - 1] = space


def apply_function(g: Graph, op: Op) -> None:
    name = op.target
    if not any(True for _ in _iter_values(op.out)):
        return  # x.shape, x.size(1), ...: no tensor comes out
    if name == "getitem":
        getitem(g, op)
        return
    values = _tensors(op)
    if name in ("cat", "concat", "concatenate", "stack"):
        values = [v for v in _iter_values(_arg(op, 0, "tensors"))]
    if not values:
        return
    refs = [v for v in _iter_values((op.args, op.kwargs)) if v.ref is not None]
    if not _has_spaces(op) and not (refs and name in ("linear", "conv1d", "conv2d", "conv3d", "embedding", *_RESHAPE)):
        return
    rule = FUNCTION_RULES.get(name)
    if rule is None:
        rule = unary if channelwise_by_behaviour(op) else unknown
    rule(g, op)


def _mixing(g: Graph, op: Op) -> None:
    along_dim(g, op, _arg(op, 1, "dim", 1 if op.target == "normalize" else None), "fixed", "channel-mixing")


def _refused(g: Graph, op: Op) -> None:
    unknown(g, op, _REFUSED[op.target])


def _direct(value: object) -> bool:
    """A parameter or buffer as it is (not a view: its dims are the tensor's)."""
    return isinstance(value, Value) and value.ref is not None and value.ref_dims is None


def _norm_module_weights(g: Graph, op: Op) -> bool:
    """``F.layer_norm``'s weight (and bias, if any) are those of one ``nn.LayerNorm``/``nn.RMSNorm`` module,
    whose ``normalized_shape`` the layer handler re-derives after slicing."""
    weight, bias = _arg(op, 2, "weight"), _arg(op, 3, "bias")
    if not _direct(weight) or weight.ref[1] != "weight":
        return False
    if bias is not None and (not _direct(bias) or bias.ref != (weight.ref[0], "bias")):
        return False
    norms = (nn.LayerNorm,) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())
    return isinstance(g.modules.get(weight.ref[0]), norms)


def _functional_layer(g: Graph, op: Op) -> None:
    """``F.linear(x, self.weight)`` and friends, with parameters as values."""
    name = op.target
    values = _tensors(op)
    x = values[1] if name == "embedding" else values[0]
    weight = _arg(op, 0 if name == "embedding" else 1, "weight")
    if name == "embedding":
        weight = values[1] if len(values) > 1 else None
        x = values[0]
    if name in ("batch_norm", "instance_norm"):
        params = values[1:]
        if not all(_direct(p) for p in params):
            unknown(g, op, "(functional normalisation with computed statistics)")
            return
        space = per_channel(g, op, "", ())
        if space is not None:
            for p in params:
                g.bind(p.ref[0], p.ref[1], 0, space, "norm")
        return
    if name == "layer_norm" and _norm_module_weights(g, op):
        # F.layer_norm(x, self.normalized_shape, self.weight, self.bias) inside a LayerNorm subclass
        # (timm's and torchvision's LayerNorm2d): the module's attributes follow its weight after slicing
        weight, bias = _arg(op, 2, "weight"), _arg(op, 3, "bias")
        layer_norm(g, op, weight.ref[0], tuple(_arg(op, 1, "normalized_shape", ())),
                   [t.ref[1] for t in (weight, bias) if isinstance(t, Value)])
        return
    if name in ("layer_norm", "group_norm"):
        # the normalised shape / group count is written in the calling code
        unary(g, op)
        g.mark_value(op.out, "fixed", f"{_where(op)}: functional normalisation, its size is in the model's code")
        return
    bias = _arg(op, 2, "bias") if name not in ("embedding", "prelu") else None
    if not _direct(weight) or (isinstance(bias, Value) and bias.ref is not None and not _direct(bias)):
        unknown(g, op, "(functional layer with a computed or reshaped weight)")
        return
    module_name, tensor = weight.ref
    if name == "prelu":
        space = per_channel(g, op, "", ())
        if space is not None and weight.shape[0] > 1:
            g.bind(module_name, tensor, 0, space, "norm")
        return
    if name == "embedding":
        out = _out(op)
        if out is not None:
            space = g.new_space(out.shape[-1])
            out.spaces[out.ndim - 1] = space
            g.bind(module_name, tensor, 1, space, "norm")
        return
    if name.startswith("conv") and int(_arg(op, 6, "groups", 1)) != 1:
        unknown(g, op, "(functional grouped convolution)")
        return
    out = _out(op)
    if out is None:
        return
    cdim = x.ndim - 1 if name == "linear" else 1
    if cdim in x.spaces:
        g.bind(module_name, tensor, 1, x.spaces[cdim], "in")
    if name != "linear":
        for d in set(range(2, x.ndim)) & set(x.spaces):
            g.mark(x.spaces[d], "fixed", f"{_where(op)} mixes values along dim {d}")
    _keep_other_dims(x, out, {cdim} | (set() if name == "linear" else set(range(2, x.ndim))))
    space = g.new_space(out.shape[cdim])
    out.spaces[cdim] = space
    g.bind(module_name, tensor, 0, space, "out")
    bias = _arg(op, 2, "bias")
    if isinstance(bias, Value) and bias.ref is not None:
        g.bind(bias.ref[0], bias.ref[1], 0, space, "norm")


_FUNCTIONAL_LAYERS = ("linear", "conv1d", "conv2d", "conv3d", "batch_norm", "layer_norm", "group_norm", "instance_norm", "embedding", "prelu")
FUNCTION_RULES: dict[str, Callable[[Graph, Op], None]] = {
    **dict.fromkeys(_UNARY, unary),
    **dict.fromkeys(_SAMPLEWISE | _LIKE, unary),
    **dict.fromkeys(_NEW, _fresh),
    **dict.fromkeys(_NARY, elementwise),
    **dict.fromkeys(_SPATIAL, keep_leading),
    **dict.fromkeys(_RESHAPE, reshape),
    **dict.fromkeys(_PERMUTE, permute),
    **dict.fromkeys(_EXPAND, expand),
    **dict.fromkeys(("cat", "concat", "concatenate"), cat),
    "stack": stack,
    **dict.fromkeys(("split", "chunk", "tensor_split", "unbind", "split_with_sizes"), split),
    "pad": pad,
    **dict.fromkeys(("matmul", "mm", "bmm"), matmul),
    "scaled_dot_product_attention": sdpa,
    **dict.fromkeys(_MIXING, _mixing),
    **dict.fromkeys(_REDUCE, _reduce),
    **dict.fromkeys(_INDEXING, _indexing),
    **dict.fromkeys(_REFUSED, _refused),
    **dict.fromkeys(_FUNCTIONAL_LAYERS, _functional_layer),
}
