"""ONNX export of pruned models, checked with onnxruntime, and their latency in onnxruntime.

:func:`export_onnx` writes a model that other runtimes load as it is:

* a shrunk model (``structural_prune``, ``prune_heads``, ``prune_mlp_neurons``)
  is exported as the smaller network it is;
* a masked model (reparametrised, in place, or ``torch.nn.utils.prune``) is
  exported with its effective weights, zeros in place: the masks are made
  permanent for the export only (no forward pre-hook reaches the exporter) and
  the model is put back exactly as it was afterwards.

The exporter is torch's dynamo-based one (``torch.onnx.export(..., dynamo=True)``).
The file is written to a temporary name, opened with onnxruntime, run on the
example inputs and compared with the model's own outputs; only when every output
agrees within ``|onnx − torch| <= atol + rtol·|torch|`` is it moved to ``path``.
Otherwise :class:`OnnxExportError` says by how much they differ and no file is left.

The file is self-contained (weights inside the one ``.onnx`` file), which
protobuf limits to 2 GB: larger models are refused by the exporter.

Needs the optional packages ``onnx``, ``onnxscript`` and ``onnxruntime``
(``pip install 'prunekit[onnx]'``); without them :class:`MissingDependencyError`.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils import _pytree as pytree

from ..errors import InvalidParameterError, PrunekitError
from ..files import atomic_write
from ..masks import make_permanent
from ..masks.transaction import ModelSnapshot
from ..timing import interleaved_medians

__all__ = ["MissingDependencyError", "OnnxExport", "OnnxExportError", "export_onnx", "onnx_latency",
           "require_onnx"]

logger = logging.getLogger(__name__)

_PACKAGES = ("onnx", "onnxscript", "onnxruntime")


class MissingDependencyError(PrunekitError, ImportError):
    """An optional package a call needs is not installed; the message names the extra to install."""


class OnnxExportError(PrunekitError):
    """The exported ONNX model does not run in onnxruntime, or its outputs differ from the model's."""


def require_onnx(what: str = "export_onnx", packages: Sequence[str] = _PACKAGES) -> None:
    """Raise :class:`MissingDependencyError` naming every package of ``packages`` that is not installed."""
    missing = []
    for name in packages:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise MissingDependencyError(
            f"{what} needs {', '.join(packages)}; not installed: {', '.join(missing)}. "
            "Fix: pip install 'prunekit[onnx]' (or pip install onnx onnxscript onnxruntime).")


@dataclass(frozen=True)
class OnnxExport:
    """What :func:`export_onnx` wrote: the file, its size, the opset and the agreement with the model."""

    path: Path
    bytes: int
    opset: int | None
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    max_abs_error: float


def _arguments(example_inputs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,), {}
    if isinstance(example_inputs, tuple):
        return example_inputs, {}
    if isinstance(example_inputs, list):
        return tuple(example_inputs), {}
    if isinstance(example_inputs, Mapping):
        return (), dict(example_inputs)
    raise InvalidParameterError("example_inputs", "a tensor, a tuple of positional arguments or a dict of keyword "
                                "arguments", f"<{type(example_inputs).__name__}>",
                                "Fix: e.g. example_inputs=torch.randn(1, 3, 32, 32).")


def _tensors(value: Any) -> list[torch.Tensor]:
    return [leaf for leaf in pytree.tree_leaves(value) if isinstance(leaf, torch.Tensor)]


def _session(path: str | os.PathLike[str], threads: int | None = None) -> Any:
    import onnxruntime as ort  # optional dependency, checked by require_onnx

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def _feed(session: Any, inputs: Sequence[torch.Tensor]) -> dict[str, np.ndarray]:
    names = [i.name for i in session.get_inputs()]
    if len(names) != len(inputs):
        raise OnnxExportError(f"the ONNX model takes {len(names)} inputs ({', '.join(names)}) but the example has "
                              f"{len(inputs)} tensors. Fix: pass only the tensors the model uses as example_inputs.")
    return {name: t.detach().cpu().numpy() for name, t in zip(names, inputs)}


def _compare(expected: list[torch.Tensor], got: list[np.ndarray], rtol: float, atol: float) -> float:
    if len(expected) != len(got):
        raise OnnxExportError(f"onnxruntime gave {len(got)} outputs, the model {len(expected)}. Fix: export a "
                              "model whose forward returns tensors (or a tuple / dict of them).")
    worst = 0.0
    for i, (ref, out) in enumerate(zip(expected, got)):
        ref_np = ref.detach().cpu().float().numpy() if ref.is_floating_point() else ref.detach().cpu().numpy()
        out_np = np.asarray(out)
        if ref_np.shape != out_np.shape:
            raise OnnxExportError(f"output {i}: onnxruntime gave shape {out_np.shape}, the model {ref_np.shape}.")
        diff = np.abs(out_np.astype(np.float64) - ref_np.astype(np.float64))
        worst = max(worst, float(diff.max()) if diff.size else 0.0)
        if diff.size and not np.all(diff <= atol + rtol * np.abs(ref_np.astype(np.float64))):
            raise OnnxExportError(
                f"output {i}: onnxruntime differs from the model by up to {float(diff.max()):.3g} (allowed "
                f"{atol:g} + {rtol:g}·|output|). Fix: export in float32 with the model in eval mode, or widen "
                "rtol/atol if the difference is expected.")
    return worst


def _check_tolerance(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise InvalidParameterError(name, "a number >= 0", value, f"Fix: e.g. {name}=1e-4.")
    return float(value)


@torch.no_grad()
def export_onnx(model: nn.Module, example_inputs: Any, path: str | os.PathLike[str], *, opset: int | None = None,
                dynamic_batch: bool = False, rtol: float = 1e-4, atol: float = 1e-5) -> OnnxExport:
    """Export a shrunk or masked ``model`` to ONNX at ``path``, checked in onnxruntime against the model.

    Args:
        model: the pruned model (physically shrunk, or with masks in any mode);
            left exactly as it was (masks, hooks, training mode).
        example_inputs: a tensor, a tuple of positional arguments or a dict of
            keyword arguments; they fix the traced shapes and are the inputs
            of the check.
        path: the ``.onnx`` file to write (atomically; the parent is created).
        opset: the ONNX opset version; None takes the exporter's default.
        dynamic_batch: make the first dimension of every input dynamic.
        rtol, atol: the check's tolerance, ``|onnx − torch| <= atol + rtol·|torch|``
            for every output entry.

    Returns:
        :class:`OnnxExport` with the file's size, its input and output names and the largest difference.

    Raises:
        MissingDependencyError: onnx, onnxscript or onnxruntime is not installed.
        OnnxExportError: the exporter failed, or onnxruntime's outputs differ from the model's.
        InvalidParameterError: bad arguments.
    """
    if not isinstance(model, nn.Module):
        raise InvalidParameterError("model", "a torch.nn.Module", f"<{type(model).__name__}>",
                                    "Fix: pass the pruned model itself.")
    if not isinstance(path, (str, os.PathLike)):
        raise InvalidParameterError("path", "a file path (str or os.PathLike)", path, "Fix: e.g. path='model.onnx'.")
    if opset is not None and (isinstance(opset, bool) or not isinstance(opset, int) or opset < 7):
        raise InvalidParameterError("opset", "None or an int >= 7", opset, "Fix: e.g. opset=18, or leave it None.")
    rtol, atol = _check_tolerance("rtol", rtol), _check_tolerance("atol", atol)
    args, kwargs = _arguments(example_inputs)
    require_onnx()
    inputs = _tensors((args, kwargs))
    training = model.training
    model.eval()
    try:
        expected = _tensors(model(*args, **kwargs))
        shapes = None
        if dynamic_batch:
            batch = torch.export.Dim("batch")
            shapes = (tuple({0: batch} if isinstance(a, torch.Tensor) and a.dim() else None for a in args)
                      if not kwargs else {k: ({0: batch} if isinstance(v, torch.Tensor) and v.dim() else None)
                                          for k, v in kwargs.items()})
        result: dict[str, Any] = {}

        def write(tmp: str) -> None:
            snapshot = ModelSnapshot(model)
            try:
                make_permanent(model)  # effective weights, zeros in place, no pre-hooks in the traced graph
                program = torch.onnx.export(model, args, kwargs=kwargs or None, dynamo=True, opset_version=opset,
                                            dynamic_shapes=shapes, verbose=False)
                program.save(tmp, external_data=False)  # before restoring: the program reads the permanent weights
            except (RuntimeError, TypeError, ValueError, NotImplementedError) as exc:
                if isinstance(exc, PrunekitError):
                    raise
                raise OnnxExportError(f"torch.onnx.export (dynamo) could not export {type(model).__name__}: "
                                      f"{' '.join(str(exc).split())[:500]}") from exc
            finally:
                snapshot.restore()
            session = _session(tmp)
            got = session.run(None, _feed(session, inputs))
            result["error"] = _compare(expected, got, rtol, atol)
            result["inputs"] = tuple(i.name for i in session.get_inputs())
            result["outputs"] = tuple(o.name for o in session.get_outputs())
            result["opset"] = getattr(program.model, "opset_imports", {}).get("", opset)

        atomic_write(path, write)
    finally:
        model.train(training)
    size = os.path.getsize(path)
    logger.info("exported %s to %s (%d bytes); largest difference from the model %.3g", type(model).__name__, path,
                size, result["error"])
    return OnnxExport(Path(path), size, result["opset"], result["inputs"], result["outputs"], result["error"])


def onnx_latency(models: Mapping[str, str | os.PathLike[str]], example_inputs: Any, *, threads: int | None = None,
                 repeats: int = 50, warmup: int = 5) -> dict[str, float]:
    """Median milliseconds of one onnxruntime run of each ONNX file, timed in interleaved rounds.

    Each round runs every model once in turn, so all of them meet the same load
    drift; ``warmup`` untimed runs each come first. ``threads`` sets
    onnxruntime's intra-op threads (None: its default).

    Returns:
        ``{name: median ms}`` in the order of ``models``.
    """
    if not isinstance(models, Mapping) or not models:
        raise InvalidParameterError("models", "a non-empty mapping of names to ONNX files", models,
                                    "Fix: e.g. models={'dense': 'dense.onnx', 'shrunk': 'shrunk.onnx'}.")
    for name, value in (("repeats", repeats), ("warmup", warmup)):
        if isinstance(value, bool) or not isinstance(value, int) or value < (1 if name == "repeats" else 0):
            raise InvalidParameterError(name, f"an int >= {1 if name == 'repeats' else 0}", value,
                                        f"Fix: e.g. {name}={50 if name == 'repeats' else 5}.")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise InvalidParameterError("threads", "None or an int >= 1", threads, "Fix: e.g. threads=2.")
    require_onnx("onnx_latency", ("onnxruntime",))
    args, kwargs = _arguments(example_inputs)
    inputs = _tensors((args, kwargs))
    runs = {}
    for name, file in models.items():
        if not isinstance(file, (str, os.PathLike)) or not Path(file).is_file():
            raise InvalidParameterError("models", "ONNX files that exist", f"{name}={file!s}",
                                        "Fix: export the models with export_onnx first.")
        session = _session(file, threads)
        feed = _feed(session, inputs)
        runs[name] = (lambda s=session, f=feed: s.run(None, f))
    return {name: 1e3 * s for name, s in interleaved_medians(runs, repeats=repeats, warmup=warmup).items()}
