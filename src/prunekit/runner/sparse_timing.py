"""Masked runs timed again after :func:`prunekit.to_sparse` (``evaluate.latency.sparse``).

A masked run keeps its zeros inside dense tensors, so dense CPU kernels multiply them like any
other value and the run is no faster than the dense model. With ``sparse: true`` the runner
converts a copy of each masked run's model (masks folded in, then each pruned Linear and 1×1
convolution replaced by a sparse kernel where that kernel is faster at the latency batch and
thread count) and times it with the others, so the report shows when unstructured sparsity pays
and when it does not. Shrunk runs have nothing to convert (their tensors are dense and smaller).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..execution import save_sparse_model, to_sparse
from ..masks import make_permanent
from ..recipes import LatencySpec

__all__ = ["save_converted", "sparse_copies"]

logger = logging.getLogger(__name__)

#: Suffix of the timing key of a run's converted copy.
SUFFIX = "+sparse"


def sparse_copies(models: Mapping[str, nn.Module], masked: list[str], example: torch.Tensor,
                  lat: LatencySpec) -> tuple[dict[str, nn.Module], dict[str, dict[str, Any]]]:
    """For each name in ``masked``: a converted copy of its model (under ``name + "+sparse"``) when
    ``to_sparse`` made at least one layer sparse, and what it did: ``{"layers": "k/n", "converted":
    [...]}`` (``n`` the layers it considered, ``k`` those now sparse)."""
    copies: dict[str, nn.Module] = {}
    info: dict[str, dict[str, Any]] = {}
    for name in masked:
        model = make_permanent(copy.deepcopy(models[name]))
        result = to_sparse(model, example, threads=lat.threads, repeats=max(3, lat.repeats // 3),
                           warmup=min(lat.warmup, 3), model_repeats=3)
        converted = result.converted
        info[name] = {"layers": f"{len(converted)}/{len(result.layers)}", "converted": converted}
        if converted:
            copies[name + SUFFIX] = result.model
        else:
            logger.info("%s: no layer is faster with a sparse kernel at this batch; it stays dense", name)
    return copies, info


def save_converted(model: nn.Module, example: torch.Tensor, path: Path, threads: int | None) -> None:
    """``export.sparse``: a copy of ``model`` (masks folded in) converted by ``to_sparse`` at
    ``example``'s shape, saved with :func:`prunekit.execution.save_sparse_model` (the layers that
    stayed dense are saved dense)."""
    converted = to_sparse(make_permanent(copy.deepcopy(model)), example, threads=threads).model
    save_sparse_model(converted, path)

