"""Masks learned by training: supermasks on frozen weights, movement pruning,
and learned scores as a criterion."""

from .movement import MovementPruning
from .scores import LearnedScores, ScoredWeight, ScoreWrapper, topk_mask
from .supermask import Supermask

__all__ = ["LearnedScores", "MovementPruning", "ScoreWrapper", "ScoredWeight", "Supermask", "topk_mask"]
