"""Command-line arguments derived from declared parameters (``argparse``), and errors worded with options."""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import InvalidParameterError
from .constraints import REQUIRED, Flag
from .params import Param

__all__ = ["add_arguments", "cli_error", "cli_values"]


class _TextConverter:
    """argparse ``type=``: command-line text to a checked value; errors in the error form."""

    def __init__(self, param: Param) -> None:
        self.param = param
        self.__name__ = param.name  # argparse names the type in some messages

    def __call__(self, text: str) -> Any:
        name = self.param.cli_name or self.param.name
        try:
            return self.param.constraint.from_text(text, name)
        except InvalidParameterError as exc:
            # argparse prefixes "argument <option>: "; the rest is the error form
            raise argparse.ArgumentTypeError(str(exc).removeprefix(f"{exc.param}: ")) from None


def _default_text(param: Param) -> str:
    default = param.cli_default if param.cli_default is not REQUIRED else param.default
    if default is REQUIRED or default is None or isinstance(param.constraint, Flag):
        return ""
    if isinstance(default, (list, tuple)):
        default = " ".join(map(str, default))
    return f" (default: {default})"


def add_arguments(parser: argparse.ArgumentParser, declarations: Mapping[str, Param],
                  names: Sequence[str] | None = None) -> None:
    """Add the command-line parameters of ``declarations`` (or of ``names`` only) to ``parser``.

    Options get ``default=None`` so that a command can tell what was given;
    :func:`cli_values` fills the declared defaults afterwards. The type
    conversion raises the error form naming the option (argparse exits with 2).
    """
    for name in names if names is not None else list(declarations):
        param = declarations[name]
        if not param.on_cli:
            continue
        option = param.cli_name
        choices = param.constraint.choices()
        help_text = param.help
        if choices is not None and len(choices) <= 12 and "{" not in (param.metavar or ""):
            help_text += f" [{', '.join(choices)}]"
        help_text += _default_text(param)
        kwargs: dict[str, Any] = {"help": help_text.strip().replace("%", "%%")}
        if isinstance(param.constraint, Flag):
            kwargs.update(action="store_true", default=None)
        else:
            kwargs.update(type=_TextConverter(param), default=None)
            if param.repeat:
                kwargs["action"] = "append"
            if param.metavar:
                kwargs["metavar"] = param.metavar
        if option is not None and not option.startswith("-"):
            kwargs.pop("default")
            if param.default is not REQUIRED:
                kwargs["nargs"] = "?"
                kwargs["default"] = None
            parser.add_argument(option, **kwargs)
        else:
            if param.default is REQUIRED and param.cli_default is REQUIRED:
                kwargs["required"] = True
            parser.add_argument(option, dest=param.name, **kwargs)


def cli_values(args: argparse.Namespace, declarations: Mapping[str, Param],
               names: Sequence[str] | None = None) -> dict[str, Any]:
    """``{name: value}`` of parsed ``args`` for the command-line parameters, with the
    declared defaults (the command line's own where declared) for those not given."""
    out: dict[str, Any] = {}
    for name in names if names is not None else list(declarations):
        param = declarations[name]
        if not param.on_cli:
            continue
        value = getattr(args, name if param.cli_name and param.cli_name.startswith("-") else param.cli_name, None)
        if value is None:
            value = param.cli_default if param.cli_default is not REQUIRED else param.default
            if value is REQUIRED:
                raise InvalidParameterError(param.cli_name or name, param.constraint.describe(), None,
                                            f"Fix: give {param.cli_name}.")
        out[name] = value
    return out


def cli_error(exc: InvalidParameterError, declarations: Mapping[str, Param]) -> InvalidParameterError:
    """``exc`` worded for the command line: a declared Python parameter named by its option
    (``macs_target`` -> ``--macs-target``), in the parameter and in ``name=value`` of the fix."""
    param = declarations.get(exc.param)
    if param is None or not param.cli_name:
        return exc
    fix = exc.fix
    if fix:
        for p in declarations.values():
            if p.cli_name and p.cli_name.startswith("-"):
                if isinstance(p.constraint, Flag):  # a switch: approximate=True -> --approximate
                    fix = re.sub(rf"\b{re.escape(p.name)}=True\b", p.cli_name, fix)
                fix = re.sub(rf"\b{re.escape(p.name)}=", f"{p.cli_name} ", fix)
                if "_" in p.name:
                    fix = re.sub(rf"\b{re.escape(p.name)}\b", p.cli_name, fix)
    return InvalidParameterError(param.cli_name, exc.expected, exc.got, fix)
