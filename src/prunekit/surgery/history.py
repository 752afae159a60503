"""The removals a model has been through, kept on the model so that
:func:`prunekit.surgery.save_shrunk` can describe the new shapes."""

from __future__ import annotations

from torch import nn

from .slicing import SurgeryRecord

__all__ = ["add_history", "surgery_history"]

_ATTR = "_prunekit_surgery_history"


def surgery_history(model: nn.Module) -> SurgeryRecord:
    """Every removal applied to ``model`` so far (plain data; empty if none)."""
    history = model.__dict__.get(_ATTR)
    return SurgeryRecord() if history is None else SurgeryRecord.from_json(history.to_json())


def add_history(model: nn.Module, record: SurgeryRecord) -> None:
    """Append ``record``'s removals (and ``extra`` entries, e.g. config changes) to
    the model's history. :func:`prune_groups` calls it; other surgery (heads) should too."""
    history = model.__dict__.get(_ATTR)
    if history is None:
        history = SurgeryRecord()
        model.__dict__[_ATTR] = history
    history.removals.extend(record.removals)
    history.extra.update(record.extra)
    for name, kept in record.kept.items():
        history.kept[name] = list(kept)
