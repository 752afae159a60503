"""One registry for every importance score, tagged by the unit spaces it can score.

A *score* gives one tensor of importances per unit of a *unit space*, higher
meaning more important:

===========  ==============================================================
unit space   units
===========  ==============================================================
``element``  single entries of a parameter tensor
``nm``       entries ranked inside N:M groups along the input dimension
``block``    ``R×C`` tiles of a weight matrix
``kernel``   each ``k×k`` slice of a convolution weight
``channel``  output channels / neurons of one tensor (masks, no coupling)
``group``    a coupled channel group (a conv, its norm, the consumers' inputs)
``head``     attention heads of a transformer layer
``neuron``   hidden neurons of a transformer MLP
``layer``    whole blocks or layers
===========  ==============================================================

One *name* has one meaning in every unit space: ``magnitude`` is the L1 norm
(sum of absolute values) of a unit's weights, ``l2`` the L2 norm, whether the
unit is an entry, a channel group or a head. A name may therefore be
registered several times, once per unit space, by the module that knows how
to score that space (element criteria, group criteria, head importance,
one-shot activation statistics); :func:`create_score` picks the factory for
the unit space asked for, and :func:`list_scores` lists every name with its
spaces.

Each entry declares what it *needs* besides the weights:

``nothing``      weights only (magnitude, random, ...)
``batches``      forward passes over data (HRank, APoZ, ThiNet)
``gradients``    a backward pass, over data (Taylor, SNIP, GraSP, OBD) or data-free (SynFlow)
``activations``  input statistics of each layer on calibration data (Wanda)
``hessian``      the layer-wise Hessian ``X Xᵀ`` of calibration data (SparseGPT, OBS)
``training``     values recorded during training (movement, learned scores)
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidParameterError, check_choice
from ..registry import call_factory, drop_aliases, parse_spec, resolve_name
from .base import FunctionCriterion, is_score_function

__all__ = [
    "MASK_SPACES",
    "UNIT_SPACES",
    "NEEDS",
    "ScoreEntry",
    "ScoreRegistry",
    "SCORES",
    "register_score",
    "create_score",
    "list_scores",
    "score_entry",
]

UNIT_SPACES = ("element", "nm", "block", "kernel", "channel", "group", "head", "neuron", "layer")
#: The unit spaces an element-wise criterion serves through a structure's reduction.
MASK_SPACES = ("element", "nm", "block", "kernel", "channel")
NEEDS = ("nothing", "batches", "gradients", "activations", "hessian", "training")


@dataclass
class ScoreEntry:
    """One registered score name: a factory per unit space, plus what it needs."""

    name: str
    factories: dict[str, Callable[..., Any]] = field(default_factory=dict)
    needs: dict[str, str] = field(default_factory=dict)
    summary: str = ""
    aliases: tuple[str, ...] = ()

    @property
    def unit_spaces(self) -> tuple[str, ...]:
        return tuple(s for s in UNIT_SPACES if s in self.factories)


def _summary(obj: Any) -> str:
    doc = getattr(obj, "__doc__", None) or ""
    return doc.strip().splitlines()[0].strip() if doc.strip() else ""


class ScoreRegistry:
    """Score names → per-unit-space factories (see the module docstring)."""

    kind = "score"

    def __init__(self) -> None:
        self._entries: dict[str, ScoreEntry] = {}
        self._aliases: dict[str, str] = {}

    def register(
        self,
        name: str,
        factory: Callable[..., Any],
        *,
        unit_spaces: Iterable[str],
        needs: str = "nothing",
        aliases: tuple[str, ...] = (),
        summary: str | None = None,
    ) -> None:
        """Add ``factory`` as the score ``name`` for each of ``unit_spaces``.

        Registering a name again for other unit spaces extends its entry; the
        same (name, unit space) twice is an error.
        """
        key = str(name).lower()
        spaces = [check_choice("unit_spaces", s, UNIT_SPACES) for s in unit_spaces]
        if not spaces:
            raise InvalidParameterError(
                "unit_spaces", f"at least one of {', '.join(UNIT_SPACES)}", [], "Fix: name the unit spaces scored."
            )
        check_choice("needs", needs, NEEDS)
        if key in self._aliases:
            raise InvalidParameterError(
                "name", "a score name not yet used as an alias", key,
                f"Fix: choose another name; {key!r} is an alias of {self._aliases[key]!r}.",
            )
        entry = self._entries.get(key)
        taken = [s for s in spaces if entry is not None and s in entry.factories]
        if taken:
            raise InvalidParameterError(
                "name", "a (score name, unit space) pair not yet registered", f"{key} for {', '.join(taken)}",
                f"Fix: choose another name, or unregister {key!r} first; registered scores are {self.names()}.",
            )
        for alias in aliases:
            a = alias.lower()
            if a in self._entries or self._aliases.get(a, key) != key:
                raise InvalidParameterError(
                    "aliases", "aliases not yet registered", a, "Fix: choose another alias."
                )
        if entry is None:
            entry = self._entries[key] = ScoreEntry(key)
        for s in spaces:
            entry.factories[s] = factory
            entry.needs[s] = needs
        if not entry.summary:
            entry.summary = summary if summary is not None else _summary(factory)
        entry.aliases = tuple(dict.fromkeys((*entry.aliases, *(a.lower() for a in aliases))))
        for a in aliases:
            self._aliases[a.lower()] = key

    def unregister(self, name: str, unit_spaces: Iterable[str] | None = None) -> None:
        """Remove ``name`` (only for ``unit_spaces`` when given; the entry goes with its last space)."""
        key = self.resolve(name)
        entry = self._entries[key]
        for s in list(entry.factories) if unit_spaces is None else list(unit_spaces):
            entry.factories.pop(s, None)
            entry.needs.pop(s, None)
        if not entry.factories:
            del self._entries[key]
            drop_aliases(self._aliases, key)

    def resolve(self, name: str) -> str:
        """The canonical name of ``name`` (an alias or a name), or an error with a suggestion."""
        return resolve_name(name, "score", self._entries, self._aliases,
                            "Fix: use one of the registered names (prunekit list scores).")

    def entry(self, name: str) -> ScoreEntry:
        return self._entries[self.resolve(name)]

    def factory(self, name: str, unit_space: str) -> Callable[..., Any]:
        """The factory of ``name`` for ``unit_space``, or an error naming the spaces it does serve."""
        check_choice("unit_space", unit_space, UNIT_SPACES)
        entry = self.entry(name)
        if unit_space not in entry.factories:
            serving = self.names(unit_space=unit_space)
            raise InvalidParameterError(
                "score",
                f"a score that supports the {unit_space!r} unit space ({', '.join(serving) or 'none registered'})",
                f"{name!r} (supports {', '.join(entry.unit_spaces)})",
                f"Fix: pick one of {serving}, or use {name!r} with a unit space it supports.",
            )
        return entry.factories[unit_space]

    def create(self, spec: str, unit_space: str = "element", **kwargs: Any) -> Any:
        """Build the score named by ``spec`` (``name[:arg...]``) for ``unit_space``."""
        name, args = parse_spec(spec)
        return call_factory(self.factory(name, unit_space), name, args, kwargs, kind="score", spec=spec)

    def names(self, pattern: str = "*", unit_space: str | None = None) -> list[str]:
        """Registered names matching the wildcard ``pattern`` (and serving ``unit_space``), sorted."""
        if unit_space is not None:
            check_choice("unit_space", unit_space, UNIT_SPACES)
        return sorted(
            n for n, e in self._entries.items()
            if fnmatch.fnmatchcase(n, pattern.lower()) and (unit_space is None or unit_space in e.factories)
        )

    def entries(self, pattern: str = "*", unit_space: str | None = None) -> list[ScoreEntry]:
        return [self._entries[n] for n in self.names(pattern, unit_space)]

    def __contains__(self, name: object) -> bool:
        key = str(name).lower()
        return key in self._entries or key in self._aliases

    def __len__(self) -> int:
        return len(self._entries)


SCORES = ScoreRegistry()


def register_score(
    name: str,
    *,
    unit_spaces: Iterable[str],
    needs: str = "nothing",
    aliases: tuple[str, ...] = (),
) -> Callable[[Any], Any]:
    """Decorator: register a score class or factory under ``name`` for ``unit_spaces``.

    For element-like spaces (:data:`MASK_SPACES`) the object may be a
    :class:`~prunekit.Criterion` subclass or a plain function
    ``fn(target) -> tensor`` (same shape as the target, higher = keep), which
    is wrapped in a :class:`~prunekit.FunctionCriterion`. The decorated object
    is returned unchanged. Examples::

        @prunekit.register_score("neg_magnitude", unit_spaces=prunekit.scores.MASK_SPACES)
        def neg_magnitude(target):
            return -target.effective().abs()

        prunekit.prune(model, 0.5, criterion="neg_magnitude")

        @prunekit.register_score("my_norm", unit_spaces=("group",))
        class MyNorm(prunekit.GroupCriterion): ...
    """

    def add(obj: Any) -> Any:
        spaces = tuple(unit_spaces)
        factory = obj
        if is_score_function(obj) and spaces and all(s in MASK_SPACES for s in spaces):
            def factory() -> FunctionCriterion:
                return FunctionCriterion(obj, name)

        SCORES.register(name, factory, unit_spaces=spaces, needs=needs, aliases=aliases, summary=_summary(obj))
        return obj

    return add


def create_score(spec: str, unit_space: str = "element", **kwargs: Any) -> Any:
    """The score ``spec`` (``"magnitude"``, ``"lnorm:3"``) built for ``unit_space``."""
    return SCORES.create(spec, unit_space, **kwargs)


def list_scores(pattern: str = "*", unit_space: str | None = None) -> list[str]:
    """Names of registered scores matching ``pattern`` (wildcards), optionally only those serving ``unit_space``."""
    return SCORES.names(pattern, unit_space)


def score_entry(name: str) -> ScoreEntry:
    """The registry entry of ``name``: its unit spaces, what each needs, its summary."""
    return SCORES.entry(name)
