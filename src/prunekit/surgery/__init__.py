"""Structural surgery: dependency groups and physical removal of channels,
neurons and heads, so the dense model really is smaller and faster."""

from __future__ import annotations

from .slicing import ParamSwap, Removal, SurgeryRecord, keep_slices, replay, update_module_attributes

__all__ = [
    "keep_slices",
    "update_module_attributes",
    "Removal",
    "ParamSwap",
    "SurgeryRecord",
    "replay",
]
