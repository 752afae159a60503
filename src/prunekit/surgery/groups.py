"""Deprecated module: dependency groups moved to :mod:`prunekit.coupling.groups`."""

from __future__ import annotations

from ..deprecation import moved_names

__getattr__ = moved_names(
    "prunekit.surgery.groups",
    {name: "prunekit.coupling.groups" for name in
     ("ROLES", "Group", "Slice", "UnsupportedOperationError", "find_groups", "group_map")},
)
