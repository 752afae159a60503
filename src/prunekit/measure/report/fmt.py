"""Formatting of report figures: counts, bytes, percentages, ratios, metrics, method labels."""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ...errors import InvalidParameterError


def _int(value: int | None) -> str:
    return "—" if value is None else f"{int(value):,}"


def _bytes(value: int | None) -> str:
    if value is None:
        return "—"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.2f} {unit}"
        size /= 1024
    return f"{value} B"  # pragma: no cover


def _pct(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{100 * value:.{digits}f}%"


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b or not math.isfinite(float(a)) or not math.isfinite(float(b)):
        return None
    return float(a) / float(b)


def _times(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}×"


def _metric(value: float | None, name: str) -> str:
    if value is None:
        return "—"
    value = float(value)
    if not math.isfinite(value):
        return str(value)
    if name == "accuracy":
        return f"{100 * value:.2f}%"
    if name == "perplexity":
        return f"{value:.3f}"
    return f"{value:.4f}"


def _delta(value: float | None, dense: float | None, name: str, higher_is_better: bool) -> str:
    if value is None or dense is None:
        return "—"
    diff = float(value) - float(dense)
    if not math.isfinite(diff):
        return str(diff)
    text = f"{100 * diff:+.2f} pp" if name == "accuracy" else f"{diff:+.3f}" if name == "perplexity" else f"{diff:+.4f}"
    if text.lstrip("+-").rstrip(" p") in ("0.00", "0.000", "0.0000"):
        return text
    worse = diff < 0 if higher_is_better else diff > 0
    return text + (" (worse)" if worse else " (better)")


def _latency(ms: float | None) -> str:
    if ms is None:
        return "—"
    return f"{ms:.3f}" if ms < 10 else f"{ms:.1f}"


def _sparsity_of(measures: Mapping[str, Any]) -> float | None:
    params = measures.get("params")
    return None if not params else 1.0 - measures["nonzero"] / params


def _method_label(method: Mapping[str, Any]) -> str:
    return " · ".join(str(method[k]) for k in ("criterion", "structure", "scope", "mode"))


def _method_details(method: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={_short(v)}" for k, v in method.items())


def _short(value: Any, limit: int = 80) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=_json_default, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _json_default(value: Any) -> Any:
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, Path):
        return str(value)
    raise InvalidParameterError(
        "report", "JSON-able values (str, numbers, bools, None, lists, dicts)", f"<{type(value).__name__}>",
        "Fix: convert the value to plain Python data before writing the report.",
    )

