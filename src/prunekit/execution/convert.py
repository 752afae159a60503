"""``to_sparse``: replace each pruned Linear by the fastest of dense and the sparse kernels.

For every ``nn.Linear`` (subclasses that keep Linear's ``forward``) and every
1×1 ``nn.Conv2d`` (stride 1, no padding, one group: a matrix product over
channels) called by ``model(example_inputs)``:

1. its input is captured with a forward pre-hook during one forward pass
   (the layer's real shape: tokens × batch rows);
2. its effective weight is read (prunekit's or ``torch.nn.utils.prune``'s
   reparametrisation ``weight_orig · weight_mask``, the in-place mode's
   zeroed ``weight``, or a plain weight with zeros);
3. dense ``F.linear`` and each requested kernel (:mod:`.candidates`) are timed
   on that input in interleaved rounds at the given thread count;
4. a kernel replaces the layer where ``dense_ms / kernel_ms > min_speedup``
   (the fastest such kernel); otherwise the layer stays dense.

Then the outputs of the converted model are checked against the dense ones
(float tolerance), and both are timed end to end in interleaved forwards
(plain dense Linears holding the effective weights are swapped in for the
dense rounds, so a reparametrised model's mask product is not charged to dense). Everything
happens all or nothing: on any error the model is left as it was.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidParameterError
from ..masks.transaction import all_or_nothing
from ..measure.macs import eval_mode, prepare_input
from ..native import NativeBuildError
from ..progress import ProgressArg, ProgressEvent, check_progress, progress_reporter
from ..targets import Target
from .candidates import build_candidates
from .compressed import DTYPES
from .matmul import kernel_path
from .module import KERNELS, is_conv1x1
from .native_kernel import kernel
from .outputs import check_close, swap_modules, time_dense_and_sparse
from .report import LayerChoice, SparseConversion
from ..timing import interleaved_medians

__all__ = ["to_sparse"]

logger = logging.getLogger(__name__)


def _check_int(name: str, value: Any, minimum: int, fix: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidParameterError(name, f"an int >= {minimum}", value, fix)
    return value


def _check_kernels(kernels: str | Sequence[str]) -> tuple[str, ...]:
    if kernels == "auto":
        try:
            kernel()  # built once (cached by torch); 30-90 s the first time
        except NativeBuildError as exc:
            logger.warning("to_sparse: prunekit's compiled kernel is not used (%s); timing torch's kernels only", exc)
            return tuple(k for k in KERNELS if k != "prunekit")
        return KERNELS
    names = (kernels,) if isinstance(kernels, str) else kernels
    if not isinstance(names, Sequence) or not names or any(n not in KERNELS for n in names):
        raise InvalidParameterError("kernels", "'auto' or a non-empty sequence of " + ", ".join(map(repr, KERNELS)),
                                    kernels, "Fix: kernels='auto', or e.g. kernels=('prunekit', 'csr').")
    if "prunekit" in names:
        kernel()  # NativeBuildError (what is missing, the fix) before anything changes
    return tuple(dict.fromkeys(names))


def _matmul_layers(model: nn.Module) -> dict[str, nn.Module]:
    return {name: m for name, m in model.named_modules()
            if (isinstance(m, nn.Linear) and type(m).forward is nn.Linear.forward) or is_conv1x1(m)}


def _capture(model: nn.Module, layers: dict[str, nn.Linear], args: tuple, kwargs: dict) -> tuple[dict[str, torch.Tensor], Any]:
    """Each layer's first input in one forward of the model, and the model's output."""
    inputs: dict[str, torch.Tensor] = {}

    def hook(name: str):
        def record(_module: nn.Module, inp: tuple) -> None:
            if name not in inputs and inp and isinstance(inp[0], torch.Tensor):
                inputs[name] = inp[0].detach().clone()
        return record

    handles = [m.register_forward_pre_hook(hook(name)) for name, m in layers.items()]
    try:
        output = model(*args, **kwargs)
    finally:
        for handle in handles:
            handle.remove()
    return inputs, output


def _effective(name: str, module: nn.Module, param: str) -> torch.Tensor | None:
    if getattr(module, param, None) is None:
        return None
    return Target(f"{name}.{param}", name, module, param).effective()


def _plain_layer(name: str, module: nn.Module) -> nn.Module:
    weight, bias = _effective(name, module, "weight"), _effective(name, module, "bias")
    kind = nn.Conv2d if weight.dim() == 4 else nn.Linear
    extra = dict(kernel_size=1) if kind is nn.Conv2d else {}
    plain = kind(weight.shape[1], weight.shape[0], bias=bias is not None, dtype=weight.dtype,
                 device=weight.device, **extra)
    plain.weight.data = weight
    if bias is not None:
        plain.bias.data = bias
    return plain


def _choose(name: str, module: nn.Module, x: torch.Tensor | None, kernels: tuple[str, ...], *,
            min_speedup: float, repeats: int, warmup: int) -> tuple[LayerChoice, nn.Module | None]:
    weight = _effective(name, module, "weight")
    bias = _effective(name, module, "bias")
    conv = weight.dim() == 4
    dense_fn = F.conv2d if conv else F.linear
    weight2d = weight.reshape(weight.shape[0], -1)
    shape = (int(weight.shape[0]), int(weight2d.shape[1]))
    sparsity = 1.0 - torch.count_nonzero(weight).item() / max(1, weight.numel())
    base = dict(name=name, shape=shape, dtype=str(weight.dtype).replace("torch.", ""), sparsity=sparsity,
                rows=0 if x is None else x.numel() // max(1, shape[1]), kind="conv1x1" if conv else "linear")
    if x is None:
        return LayerChoice(**base, choice="dense", reason="not called by example_inputs"), None
    if weight.dtype not in DTYPES or weight.device.type != "cpu" or x.device.type != "cpu":
        return LayerChoice(**base, choice="dense", reason=f"no sparse kernel for {weight.dtype} on {weight.device}"), None
    if sparsity == 0.0:
        return LayerChoice(**base, choice="dense", reason="no zero weights"), None
    layers, refused = build_candidates(weight2d, bias, kernels, conv=conv)
    fns = {"dense": lambda: dense_fn(x, weight, bias)}
    fns.update({k: (lambda layer=layer: layer(x)) for k, layer in layers.items()})
    medians = interleaved_medians(fns, repeats=repeats, warmup=warmup)
    dense_ms = medians.pop("dense") * 1e3
    kernel_ms = {k: v * 1e3 for k, v in medians.items()}
    if "prunekit" in layers and "prunekit" in kernel_ms:  # the kernel's path at these rows, for the report
        path = kernel_path(layers["prunekit"].compressed, base["rows"])
        refused = {"prunekit": f"{path} path", **refused}
    notes = "; ".join(f"{k}: {why}" for k, why in refused.items())
    best = min(kernel_ms, key=kernel_ms.get) if kernel_ms else None
    if best is None or dense_ms / kernel_ms[best] <= min_speedup:
        reason = f"no kernel faster than dense by more than {min_speedup:g}x" + (f" ({notes})" if notes else "")
        return LayerChoice(**base, choice="dense", reason=reason, dense_ms=dense_ms, kernel_ms=kernel_ms), None
    reason = "fastest" + (f" ({notes})" if notes else "")
    return LayerChoice(**base, choice=best, reason=reason, dense_ms=dense_ms, kernel_ms=kernel_ms), layers[best]


def _timing_figures(choice: LayerChoice) -> dict[str, float]:
    """The figures of a layer's progress event: its dense time and best speedup, where timed."""
    if choice.dense_ms is None:
        return {}
    best = min(choice.kernel_ms.values()) if choice.kernel_ms else None
    return {"dense_ms": choice.dense_ms, **({"speedup": choice.dense_ms / best} if best else {})}


@torch.no_grad()
def to_sparse(
    model: nn.Module,
    example_inputs: Any,
    *,
    kernels: str | Sequence[str] = "auto",
    threads: int | None = None,
    min_speedup: float = 1.0,
    repeats: int = 20,
    warmup: int = 3,
    model_repeats: int = 10,
    progress: ProgressArg = None,
) -> SparseConversion:
    """Replace, in place, each pruned Linear (and 1×1 Conv2d) by a sparse kernel where one is faster
    at the real input shape; the rest stays dense.

    At one token a dense matrix-vector product runs at the speed of reading its
    weights, so a sparse kernel wins only by reading fewer bytes: at sparsity
    ``p`` the bitmask format reads ``1/8 + (1 − p)·s`` bytes an entry against
    ``s`` (``s`` = 4 for float32, 2 for bfloat16), see :mod:`prunekit.execution.compressed`.
    With many rows the product is compute-bound and the kernels win by skipping
    multiplications. Which one wins depends on the machine, so it is timed.

    Args:
        model: a pruned model (masks reparametrised, in place or written as zeros).
        example_inputs: a tensor, a tuple of positional arguments or a dict of
            keyword arguments, shaped as in use: the rows (tokens × batch)
            each layer sees decide which kernel wins.
        kernels: ``"auto"`` (every kernel that can run here) or names from
            ``"prunekit"``, ``"csr"``, ``"bsr"``.
        threads: intra-op threads for timing (and restored afterwards); None
            keeps ``torch.get_num_threads()``.
        min_speedup: a kernel replaces a layer only where
            ``dense_ms / kernel_ms > min_speedup``.
        repeats, warmup: interleaved timing rounds per layer, and untimed runs first.
        model_repeats: interleaved end-to-end rounds (0 skips the end-to-end timing).
        progress: ``True`` for a progress bar on stderr, or a callable receiving a
            :class:`~prunekit.progress.ProgressEvent` after each layer is timed (stage
            ``"sparse-timing"``, ``done`` layers of ``total``, ``detail`` the layer,
            ``figures`` ``dense_ms`` and ``speedup`` where timed). Default: logged at DEBUG only.

    Returns:
        :class:`~prunekit.execution.SparseConversion`: the model, one
        :class:`~prunekit.execution.LayerChoice` per Linear, the end-to-end
        medians and speedup, the largest output difference from dense.

    Raises:
        InvalidParameterError: bad arguments, or no Linear in ``model``.
        NativeBuildError: ``kernels`` names ``"prunekit"`` and it cannot be built here.
    """
    if not isinstance(model, nn.Module):
        raise InvalidParameterError("model", "a torch.nn.Module", f"<{type(model).__name__}>",
                                    "Fix: pass the pruned model itself.")
    if isinstance(min_speedup, bool) or not isinstance(min_speedup, (int, float)) or not min_speedup > 0:
        raise InvalidParameterError("min_speedup", "a number > 0", min_speedup, "Fix: e.g. min_speedup=1.0.")
    repeats = _check_int("repeats", repeats, 1, "Fix: e.g. repeats=20.")
    warmup = _check_int("warmup", warmup, 0, "Fix: e.g. warmup=3.")
    model_repeats = _check_int("model_repeats", model_repeats, 0, "Fix: e.g. model_repeats=10 (0 skips it).")
    if threads is not None:
        threads = _check_int("threads", threads, 1, "Fix: None (current thread count) or e.g. threads=2.")
    check_progress(progress)
    if example_inputs is None:
        raise InvalidParameterError("example_inputs", "a tensor, a tuple of arguments or a dict of keyword arguments",
                                    None, "Fix: pass an input shaped as in use, e.g. torch.randn(1, 128, 768).")
    names = _check_kernels(kernels)
    linears = _matmul_layers(model)
    if not linears:
        raise InvalidParameterError("model", "a model with nn.Linear (or 1x1 nn.Conv2d) layers",
                                    f"<{type(model).__name__} without Linear>",
                                    "Fix: pass a model with Linear layers (other layers have no sparse kernel).")
    args, kwargs = prepare_input(model, example_inputs)
    before = torch.get_num_threads()
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        with all_or_nothing(model), eval_mode(model), progress_reporter(progress) as report:
            inputs, reference = _capture(model, linears, args, kwargs)
            choices, replacements = [], {}
            for name, module in linears.items():
                choice, layer = _choose(name, module, inputs.get(name), names, min_speedup=float(min_speedup),
                                        repeats=repeats, warmup=warmup)
                choices.append(choice)
                if layer is not None:
                    replacements[name] = layer
                report(ProgressEvent("sparse-timing", len(choices), len(linears), _timing_figures(choice), name))
            # the dense baseline: plain Linears with the effective weights (no mask product per forward)
            baseline = {name: _plain_layer(name, linears[name]) for name in replacements}
            swap_modules(model, replacements)
            error = check_close(model(*args, **kwargs), reference)
            dense_ms = sparse_ms = None
            if model_repeats and replacements:
                dense_ms, sparse_ms = time_dense_and_sparse(model, baseline, replacements, args, kwargs,
                                                            repeats=model_repeats)
        used = torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
    result = SparseConversion(model=model, layers=tuple(choices), dense_ms=dense_ms, sparse_ms=sparse_ms,
                              threads=used, max_abs_error=error)
    logger.info("to_sparse: %d/%d Linear layers sparse; end-to-end speedup %s", len(replacements), len(choices),
                "not measured" if result.speedup is None else f"{result.speedup:.2f}x")
    return result

