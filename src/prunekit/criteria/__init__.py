"""Importance criteria: one module per family of scores, all in one registry."""

from .base import CRITERIA, Criterion, FunctionCriterion, create_criterion, list_criteria, register_criterion
from .magnitude import Magnitude, Random
from .init import SNIP, GraSP, SynFlow
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
    "GraSP",
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
    "SNIP",
    "SynFlow",
    "create_criterion",
    "diagonal_fisher",
    "list_criteria",
    "register_criterion",
]
