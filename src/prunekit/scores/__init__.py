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
from . import heads  # noqa: F401  (registers the head and neuron scores)
from .groups import GroupCriterion  # registers the channel-group scores

__all__ = [
    "NEEDS",
    "SCORES",
    "UNIT_SPACES",
    "ScoreEntry",
    "ScoreRegistry",
    "GroupCriterion",
    "create_score",
    "list_scores",
    "register_score",
    "score_entry",
]
