"""The layer handlers of built-in ``torch.nn`` layers and Hugging Face's ``Conv1D``.

Each handler pairs the coupling rule of a layer family (:mod:`.layers`,
:mod:`.ops_generic`, :mod:`.ops_shape`) with the update of its shape
attributes after slicing: Linear in/out_features, ConvNd in/out_channels and
groups (a depthwise conv loses whole groups; a grouped conv with several
inputs a group keeps its group count), BatchNorm num_features, LayerNorm
normalized_shape, GroupNorm num_channels (num_groups when whole groups were
removed), Embedding embedding_dim, PReLU num_parameters, Conv1D nf.
Registered on import of :mod:`prunekit.coupling`.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..targets import tensor_state
from .graph import Graph, _has_spaces, _tensors, _where
from .handlers import LayerHandler, register_layer_handler
from .layers import channelwise, conv, embedding, group_norm, layer_norm, linear, per_channel
from .ops_generic import along_dim, keep_leading, pad, unary, unknown
from .ops_shape import reshape
from .trace import Op
from .units import mha_spec

__all__ = ["ACTIVATIONS", "POOLS", "register_builtin_handlers"]

ACTIVATIONS = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardswish,
    nn.Hardsigmoid, nn.Hardtanh, nn.Mish, nn.Softplus, nn.Softsign, nn.Tanhshrink, nn.LogSigmoid, nn.Identity,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout, nn.Threshold,
)
POOLS = (
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
    nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d, nn.LPPool1d, nn.LPPool2d,
)
_NORM_TENSORS = ("weight", "bias", "running_mean", "running_var")
_PADS = (nn.modules.padding._ConstantPadNd, nn.modules.padding._ReflectionPadNd, nn.modules.padding._ReplicationPadNd)


def _shape(module: nn.Module, name: str) -> tuple[int, ...] | None:
    """Shape of the logical tensor ``module.<name>`` (``<name>_orig`` when reparametrised), or None."""
    if tensor_state(module, name) == "reparam":
        return tuple(module._parameters[name + "_orig"].shape)
    found = module._parameters.get(name)
    if found is None:
        found = module._buffers.get(name)
    return tuple(found.shape) if found is not None else None


def _when_tracked(rule: Callable[[Graph, Op, str, nn.Module], None]) -> Callable[[Graph, Op, str, nn.Module], None]:
    """Run ``rule`` only when the module reads tracked channels (layers that create none)."""

    def couple(g: Graph, op: Op, name: str, module: nn.Module) -> None:
        if _tensors(op) and _has_spaces(op):
            rule(g, op, name, module)

    couple.__doc__ = rule.__doc__
    return couple


# -- coupling rules per family ---------------------------------------------------------


def _linear(g: Graph, op: Op, name: str, module: nn.Module) -> None:
    linear(g, op, name)


def _hf_conv1d(g: Graph, op: Op, name: str, module: nn.Module) -> None:
    linear(g, op, name, transposed=True)


def _embedding(g: Graph, op: Op, name: str, module: nn.Module) -> None:
    embedding(g, op, name)


def _unary(g: Graph, op: Op, name: str, module: nn.Module) -> None:
    unary(g, op)


def _pool(g: Graph, op: Op, name: str, module: nn.Module) -> None:
    keep_leading(g, op)


def _batch_norm(g: Graph, op: Op, name: str, module: nn.Module) -> None:
    per_channel(g, op, name, _NORM_TENSORS)


def _without_affine(g: Graph, op: Op) -> None:
    # no parameter to slice, so nothing would carry its new shape into the saved model
    unary(g, op)
    g.mark_value(op.out, "fixed", f"{_where(op)} has no affine parameters to record its new size")


def _layer_norm(g: Graph, op: Op, name: str, module: nn.Module) -> None:
    if getattr(module, "weight", None) is None and isinstance(module, nn.LayerNorm):
        _without_affine(g, op)
    else:
        layer_norm(g, op, name, tuple(module.normalized_shape), ("weight", "bias"))


def _group_norm(g: Graph, op: Op, name: str, module: nn.Module) -> None:
    if getattr(module, "weight", None) is None:
        _without_affine(g, op)
    else:
        group_norm(g, op, name, module.num_groups)


def _prelu(g: Graph, op: Op, name: str, module: nn.Module) -> None:
    if module.num_parameters > 1:
        per_channel(g, op, name, ("weight",))
    else:
        unary(g, op)


def _reshape(g: Graph, op: Op, name: str, module: nn.Module) -> None:
    reshape(g, op)


def _softmax(g: Graph, op: Op, name: str, module: nn.Module) -> None:
    along_dim(g, op, module.dim, "fixed", "channel-mixing")


def _pad(g: Graph, op: Op, name: str, module: nn.Module) -> None:
    op.kwargs = {**op.kwargs, "pad": module.padding}
    pad(g, op)


def _refuse(why: str) -> Callable[[Graph, Op, str, nn.Module], None]:
    def couple(g: Graph, op: Op, name: str, module: nn.Module) -> None:
        unknown(g, op, why)

    return couple


def _attention(g: Graph, op: Op, name: str, module: nn.Module) -> None:
    g.mark_value(_tensors(op), "fixed", f"{_where(op)}: attention heads are pruned by prunekit.surgery.heads")


# -- attribute updates after slicing -----------------------------------------------------------


def _update_linear(module: nn.Module) -> None:
    weight = _shape(module, "weight")
    if weight is not None:
        module.out_features, module.in_features = weight


def _update_conv(module: nn.Module) -> None:
    weight = _shape(module, "weight")
    if weight is None:
        return
    if module.transposed:
        # weight: (in, out / groups, *k)
        module.in_channels = weight[0]
        module.out_channels = weight[1] * module.groups
        return
    # weight: (out, in / groups, *k)
    if module.groups > 1 and module.in_channels == module.groups:
        # one input channel a group (depthwise and its multiplier form): whole groups are removed
        per_group_out = module.out_channels // module.groups
        module.groups = weight[0] // per_group_out
        module.in_channels = module.groups
    else:
        module.in_channels = weight[1] * module.groups
    module.out_channels = weight[0]


def _update_norm_base(module: nn.Module) -> None:
    shape = _shape(module, "weight") or _shape(module, "running_mean")
    if shape is not None:
        module.num_features = shape[0]


def _update_layer_norm(module: nn.Module) -> None:
    weight = _shape(module, "weight")
    if weight is not None:
        module.normalized_shape = tuple(weight)


def _update_group_norm(module: nn.Module) -> None:
    weight = _shape(module, "weight")
    if weight is not None:
        per_group = module.num_channels // module.num_groups
        module.num_channels = weight[0]
        if module.num_groups > 1:  # whole groups removed; one group (approximate pruning) stays one
            module.num_groups = weight[0] // per_group


def _update_embedding(module: nn.Module) -> None:
    weight = _shape(module, "weight")
    if weight is not None:
        module.num_embeddings, module.embedding_dim = weight


def _update_prelu(module: nn.Module) -> None:
    weight = _shape(module, "weight")
    if weight is not None:
        module.num_parameters = weight[0]


def _update_hf_conv1d(module: nn.Module) -> None:
    weight = _shape(module, "weight")
    if weight is not None:
        module.nf = weight[1]


def _is_hf_conv1d(module: nn.Module) -> bool:
    return hasattr(module, "nf")


def _is_stochastic_depth(module: nn.Module) -> bool:
    """torchvision's ``StochasticDepth`` (``p`` and ``mode``) or timm's ``DropPath`` (``drop_prob``)."""
    return (hasattr(module, "p") and hasattr(module, "mode")) or hasattr(module, "drop_prob")


def register_builtin_handlers() -> None:
    """Register the handlers of the built-in layers (idempotent: registering replaces)."""
    register_layer_handler(nn.Linear, LayerHandler(_linear, _update_linear))
    register_layer_handler(nn.modules.conv._ConvNd, LayerHandler(conv_rule, _update_conv))
    register_layer_handler(nn.Embedding, LayerHandler(_embedding, _update_embedding))
    # Hugging Face's Conv1D (GPT-2): a Linear with weight (in, out), matched by name
    # so that transformers need not be installed
    register_layer_handler("Conv1D", LayerHandler(_hf_conv1d, _update_hf_conv1d, weight_out_dim=1,
                                                  matches=_is_hf_conv1d))
    for t in ACTIVATIONS:
        register_layer_handler(t, LayerHandler(_when_tracked(_unary)))
    for t in POOLS:
        register_layer_handler(t, LayerHandler(_when_tracked(_pool)))
    for t in (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm):
        register_layer_handler(t, LayerHandler(_when_tracked(_batch_norm), _update_norm_base))
    register_layer_handler(nn.LayerNorm, LayerHandler(_when_tracked(_layer_norm), _update_layer_norm))
    if hasattr(nn, "RMSNorm"):
        register_layer_handler(nn.RMSNorm, LayerHandler(_when_tracked(_layer_norm), _update_layer_norm))
    register_layer_handler(nn.GroupNorm, LayerHandler(_when_tracked(_group_norm), _update_group_norm))
    register_layer_handler(nn.PReLU, LayerHandler(_when_tracked(_prelu), _update_prelu))
    for t in (nn.Flatten, nn.Unflatten):
        register_layer_handler(t, LayerHandler(_when_tracked(_reshape)))
    for t in (nn.Softmax, nn.LogSoftmax, nn.Softmin):
        register_layer_handler(t, LayerHandler(_when_tracked(_softmax)))
    for t in _PADS:
        register_layer_handler(t, LayerHandler(_when_tracked(_pad)))
    register_layer_handler(nn.ChannelShuffle, LayerHandler(_when_tracked(_refuse("shuffles channels"))))
    register_layer_handler(nn.PixelShuffle, LayerHandler(_when_tracked(_refuse("moves channels into space"))))
    register_layer_handler(nn.PixelUnshuffle, LayerHandler(_when_tracked(_refuse("moves space into channels"))))
    # stochastic depth scales or drops whole samples (Huang et al., "Deep Networks with Stochastic
    # Depth", ECCV 2016): channel-wise; matched by name so torchvision and timm need not be imported
    for type_name in ("StochasticDepth", "DropPath"):
        register_layer_handler(type_name, LayerHandler(channelwise, matches=_is_stochastic_depth))
    register_layer_handler(nn.MultiheadAttention, LayerHandler(_when_tracked(_attention), attention=mha_spec))


def conv_rule(g: Graph, op: Op, name: str, module: nn.Module) -> None:
    """Convolutions: plain, depthwise, grouped and transposed (see :func:`.layers.conv`)."""
    conv(g, op, name, module)


register_builtin_handlers()
