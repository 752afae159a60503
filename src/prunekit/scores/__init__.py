"""Importance scores: one protocol, one registry, tagged by unit space (see :mod:`.registry`)."""

from .registry import (
    NEEDS,
    SCORES,
    UNIT_SPACES,
    ScoreEntry,
    ScoreRegistry,
    create_score,
    list_scores,
    register_score,
    score_entry,
)

__all__ = [
    "NEEDS",
    "SCORES",
    "UNIT_SPACES",
    "ScoreEntry",
    "ScoreRegistry",
    "create_score",
    "list_scores",
    "register_score",
    "score_entry",
]
