"""Deprecated: the element criteria moved to :mod:`prunekit.scores`.

Every name of the former ``prunekit.criteria`` still works for one release and
warns once (a :class:`FutureWarning`): the criterion classes now live in
``prunekit.scores`` (one module per family), the registry is
:data:`prunekit.scores.SCORES` (``register_score``, ``create_score``,
``list_scores(unit_space="element")``).
"""

from __future__ import annotations

from ..deprecation import moved_names

_SCORES = "prunekit.scores"

__getattr__ = moved_names(
    "prunekit.criteria",
    {
        "CRITERIA": "prunekit.scores.element:CRITERIA",
        "Criterion": f"{_SCORES}:Criterion",
        "FunctionCriterion": f"{_SCORES}:FunctionCriterion",
        "GraSP": f"{_SCORES}:GraSP",
        "LargeFinal": f"{_SCORES}:LargeFinal",
        "LargeInit": f"{_SCORES}:LargeInit",
        "LargeInitLargeFinal": f"{_SCORES}:LargeInitLargeFinal",
        "Magnitude": f"{_SCORES}:Magnitude",
        "MagnitudeIncrease": f"{_SCORES}:MagnitudeIncrease",
        "Movement": f"{_SCORES}:Movement",
        "OBD": f"{_SCORES}:OBD",
        "Random": f"{_SCORES}:Random",
        "SNIP": f"{_SCORES}:SNIP",
        "SmallFinal": f"{_SCORES}:SmallFinal",
        "SmallInit": f"{_SCORES}:SmallInit",
        "SynFlow": f"{_SCORES}:SynFlow",
        "create_criterion": "prunekit.scores.element:as_criterion",
        "diagonal_fisher": f"{_SCORES}:diagonal_fisher",
        "list_criteria": "prunekit.scores.element:criterion_names",
        "register_criterion": "prunekit.scores.element:register_criterion",
    },
)

__all__: list[str] = []
