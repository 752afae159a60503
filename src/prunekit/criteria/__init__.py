"""Importance criteria: one module per family of scores, all in one registry."""

from .base import CRITERIA, Criterion, FunctionCriterion, create_criterion, list_criteria, register_criterion
from .magnitude import Magnitude, Random

__all__ = [
    "CRITERIA",
    "Criterion",
    "FunctionCriterion",
    "Magnitude",
    "Random",
    "create_criterion",
    "list_criteria",
    "register_criterion",
]
