"""Deprecated module: the latency table moved to :mod:`prunekit.measure.layer_latency`."""

from __future__ import annotations

from ..deprecation import moved_names

__getattr__ = moved_names(
    "prunekit.surgery.latency",
    {name: "prunekit.measure.layer_latency" for name in
     ("LayerSpec", "LatencyTable", "LayerSite", "layer_sites", "predict_latency", "site_spec")},
)
