"""Moved to :mod:`prunekit.coupling.groups`; kept so ``from .groups import Group``
in :mod:`.allocate` and :mod:`.latency` works until they import it from there."""

from __future__ import annotations

from ..coupling.groups import ROLES, Group, Slice, UnsupportedOperationError, find_groups, group_map

__all__ = ["ROLES", "Group", "Slice", "UnsupportedOperationError", "find_groups", "group_map"]
