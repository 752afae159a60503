"""Importance scores: one protocol, one registry, tagged by unit space (see :mod:`.registry`).

Element-like scores (:class:`Criterion`: one score per entry, reduced by the
structure to its units) live in one module per family: :mod:`.magnitude`
(magnitude / L1, L2, L_p, random), :mod:`.init` (SNIP, GraSP, SynFlow),
:mod:`.second_order` (OBD), :mod:`.deconstructing` (Zhou et al. 2019).
Calibration scores of one-shot pruning (:class:`LayerScore`: Wanda, SparseGPT)
follow :mod:`.calibration`.
"""

from .base import OLD_DATA_KEYS, Criterion, FunctionCriterion, context_with_data
from .registry import (
    MASK_SPACES,
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
from .calibration import InputStats, LayerScore, Wanda
from .magnitude import Magnitude, Random
from .init import SNIP, GraSP, SynFlow
from .second_order import OBD, diagonal_fisher
from .deconstructing import (
    LargeFinal,
    LargeInit,
    LargeInitLargeFinal,
    MagnitudeIncrease,
    Movement,
    SmallFinal,
    SmallInit,
)
from .element import as_criterion, criterion_names
from . import heads  # noqa: F401  (registers the head and neuron scores)
from .groups import GroupCriterion  # registers the channel-group scores
from .units import group_score_factory, score_units

__all__ = [
    "MASK_SPACES",
    "NEEDS",
    "OBD",
    "OLD_DATA_KEYS",
    "SCORES",
    "SNIP",
    "UNIT_SPACES",
    "Criterion",
    "FunctionCriterion",
    "GraSP",
    "InputStats",
    "LargeFinal",
    "LargeInit",
    "LargeInitLargeFinal",
    "LayerScore",
    "Magnitude",
    "MagnitudeIncrease",
    "Movement",
    "Random",
    "ScoreEntry",
    "ScoreRegistry",
    "GroupCriterion",
    "SmallFinal",
    "SmallInit",
    "SynFlow",
    "Wanda",
    "as_criterion",
    "group_score_factory",
    "score_units",
    "context_with_data",
    "create_score",
    "criterion_names",
    "diagonal_fisher",
    "list_scores",
    "register_score",
    "score_entry",
]
