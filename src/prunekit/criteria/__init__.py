"""Importance criteria: one module per family of scores, all in one registry."""

from .base import CRITERIA, Criterion, FunctionCriterion, create_criterion, list_criteria, register_criterion
from .magnitude import Magnitude, Random
from .deconstructing import (
    LargeFinal,
    LargeInit,
    LargeInitLargeFinal,
    MagnitudeIncrease,
    Movement,
    SmallFinal,
    SmallInit,
)
from .second_order import OBD, diagonal_fisher

__all__ = [
    "CRITERIA",
    "Criterion",
    "FunctionCriterion",
    "LargeFinal",
    "LargeInit",
    "LargeInitLargeFinal",
    "MagnitudeIncrease",
    "Movement",
    "OBD",
    "SmallFinal",
    "SmallInit",
    "Magnitude",
    "Random",
    "create_criterion",
    "diagonal_fisher",
    "list_criteria",
    "register_criterion",
]
