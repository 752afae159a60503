"""A declared parameter, declaration tables, and the checks and schema derived from them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidParameterError, did_you_mean
from .constraints import REQUIRED, Constraint, Strings

__all__ = ["Param", "declare", "defaults", "schema", "validate"]


@dataclass(frozen=True)
class Param:
    """One public parameter, declared once.

    Args:
        name: the Python keyword.
        constraint: what it accepts.
        default: its default (:data:`REQUIRED` when it has none).
        help: one line for ``--help``, docstrings and the recipe schema.
        option: the command-line spelling (default ``--`` + name with dashes; a name
            without dashes is a positional argument; ``None`` keeps it off the command line).
        repeat: on the command line, the option may be given several times (a list).
        metavar: the placeholder in ``--help``.
    """

    name: str
    constraint: Constraint
    default: Any = REQUIRED
    help: str = ""
    option: str | None = ""
    repeat: bool = False
    metavar: str | None = None
    cli_default: Any = field(default=REQUIRED, compare=False)  # the command line's own default, when it differs

    @property
    def cli_name(self) -> str | None:
        """The name the command line knows it by (``--sparsity``), or None."""
        if self.option is None:
            return None
        return self.option or "--" + self.name.replace("_", "-")

    @property
    def on_cli(self) -> bool:
        return self.option is not None

    def check(self, value: Any, name: str | None = None) -> Any:
        """``value`` checked against the constraint; errors name ``name`` (default: the Python name)."""
        where = name or self.name
        if self.repeat and isinstance(value, (list, tuple)) and not isinstance(self.constraint, Strings):
            return [self.constraint.convert(v, where) for v in value]
        return self.constraint.convert(value, where)


def declare(*params: Param) -> dict[str, Param]:
    """A declaration table ``{name: Param}`` (names must be unique)."""
    table: dict[str, Param] = {}
    for p in params:
        if p.name in table:
            raise InvalidParameterError("params", "parameters declared once each", p.name,
                                        "Fix: remove the second declaration.")
        table[p.name] = p
    return table


def validate(declarations: Mapping[str, Param], values: Mapping[str, Any]) -> dict[str, Any]:
    """Check ``values`` (``{name: value}``) against ``declarations``; return them checked.

    Only the names given are checked (no defaults are added; see :func:`defaults`).

    Raises:
        InvalidParameterError: naming the first parameter refused (an undeclared
            name included, with the closest declared one).
    """
    out: dict[str, Any] = {}
    for name, value in values.items():
        param = declarations.get(name)
        if param is None:
            raise InvalidParameterError(
                name, "a declared parameter (" + ", ".join(declarations) + ")", name,
                ("Fix: check the spelling." + did_you_mean(name, list(declarations))).strip(),
            )
        out[name] = param.check(value)
    return out


def defaults(declarations: Mapping[str, Param]) -> dict[str, Any]:
    """``{name: default}`` of the parameters that have one."""
    return {n: p.default for n, p in declarations.items() if p.default is not REQUIRED}


def schema(declarations: Mapping[str, Param]) -> dict[str, dict[str, Any]]:
    """The fragment of a recipe schema for ``declarations``: ``name -> {expected, default, help}``
    (``default`` absent for a required parameter; ``choices`` for a list of names)."""
    out: dict[str, dict[str, Any]] = {}
    for name, p in declarations.items():
        entry: dict[str, Any] = {"expected": p.constraint.describe(), "help": p.help}
        if p.default is not REQUIRED:
            entry["default"] = p.default
        choices = p.constraint.choices()
        if choices is not None:
            entry["choices"] = choices
        out[name] = entry
    return out
