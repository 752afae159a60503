"""Declared parameter constraints: each public parameter is declared once, and
the Python checks, the command-line arguments and the recipe schema derive
from that one declaration.

The idea is scikit-learn's ``_param_validation`` (a constraint object per
parameter, a check that names the parameter and what it accepts); the code is
prunekit's own. A declaration is a :class:`Param`::

    Param("sparsity", Fraction(), default=None, help="fraction of each tensor pruned afterwards")

with a :class:`Constraint` saying what is accepted:

===================  ===========================================================
constraint           accepts
===================  ===========================================================
``Interval``         a number of a kind (``Real``, ``Integral`` or ``RealNotInt``)
                     between bounds, each bound open or closed (``closed=``)
``Fraction``         a float in [0, 1] (an int is not a fraction: on the command
                     line ``1`` is refused with the fix ``1.0`` or a count option)
``Options``          one of a set of names; the set may be a function, read at
                     each check (a registry's live ``list_*``)
``Spec``             a registry spec such as ``lnorm:3`` or ``block:4x4``,
                     checked by building it with the registry's factory
``InstanceOf``       an instance of a class
``IsCallable``       a function or any callable
``Strings``          a string or a list of strings (patterns, names)
``PathLike``         a path (``exists=True``: of an existing file or folder)
``JsonObject``       a dict (on the command line: a JSON object)
``Flag``             True or False (on the command line: a switch)
``AnyOf``            any of several constraints (``None`` for "or None")
===================  ===========================================================

:func:`validate` checks values against declarations and raises
:class:`~prunekit.errors.InvalidParameterError` (``<param>: expected
<expected>, got <got>. Fix: ...``). :func:`add_arguments` adds the
declarations to an ``argparse`` parser: option ``--name-with-dashes``, a type
conversion whose errors have the same form (naming the option), the choices
in the help, the default. :func:`schema` gives the fragment a recipe schema
uses (``name -> {expected, default, help}``).
"""

from __future__ import annotations

from .arguments import add_arguments, cli_error, cli_values
from .constraints import (
    REQUIRED,
    AnyOf,
    Constraint,
    Device,
    Flag,
    Fraction,
    InstanceOf,
    Interval,
    IsCallable,
    JsonObject,
    Options,
    OutputDir,
    PathLike,
    RealNotInt,
    SEED,
    Spec,
    Strings,
)
from .keywords import UnknownArgumentError, checked_keywords
from .params import Param, declare, defaults, schema, validate

__all__ = [
    "UnknownArgumentError",
    "checked_keywords",
    "REQUIRED",
    "AnyOf",
    "Constraint",
    "Device",
    "Flag",
    "Fraction",
    "InstanceOf",
    "Interval",
    "IsCallable",
    "JsonObject",
    "Options",
    "OutputDir",
    "Param",
    "PathLike",
    "RealNotInt",
    "SEED",
    "Spec",
    "Strings",
    "add_arguments",
    "cli_error",
    "cli_values",
    "declare",
    "defaults",
    "schema",
    "validate",
]
