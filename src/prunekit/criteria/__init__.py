"""Deprecated: the element criteria moved to :mod:`prunekit.scores`.

Every name of the former ``prunekit.criteria`` still works for one release and
warns once (a :class:`FutureWarning`): the criterion classes now live in
``prunekit.scores`` (one module per family), the registry is
:data:`prunekit.scores.SCORES` (``register_score``, ``create_score``,
``list_scores(unit_space="element")``).
"""

from __future__ import annotations

from typing import Any

from ..deprecation import moved_names, warn_once
from ..scores.element import CRITERIA as _CRITERIA
from ..scores.element import register_criterion as _register_criterion

_SCORES = "prunekit.scores"

#: Names whose replacement is not the same object under a new path.
_REPLACED: dict[str, tuple[Any, str]] = {
    "CRITERIA": (_CRITERIA, "prunekit.scores.SCORES (a view of its element-like entries is kept)"),
    "register_criterion": (_register_criterion, "prunekit.register_score(name, unit_spaces=MASK_SPACES)"),
}

_moved = moved_names(
    "prunekit.criteria",
    {
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
        "create_criterion": f"{_SCORES}:as_criterion",
        "diagonal_fisher": f"{_SCORES}:diagonal_fisher",
        "list_criteria": f"{_SCORES}:criterion_names",
    },
)



def __getattr__(name: str) -> Any:
    if name in _REPLACED:
        value, new = _REPLACED[name]
        warn_once(f"prunekit.criteria.{name}", new)
        return value
    return _moved(name)


__all__: list[str] = []
