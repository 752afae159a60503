"""MkDocs hook: the reference pages, generated from the code at each build.

Nothing here lists a public name by hand. The pages are written from

* ``prunekit.__all__`` and every top-level module or package of prunekit that
  declares ``__all__`` (deprecated alias modules left out): one API page each,
  rendered by mkdocstrings from the docstrings;
* the ``prunekit`` argparse parser (``prunekit.cli.build_parser``): the
  command-line reference;
* the declared parameters of each recipe stage (``prunekit.recipes.stage_schema``):
  the recipe schema;
* the registries (scores, structures, schedules, realisations) and the allocation
  policies: the catalogue, with each entry's docstring (formula, paper) and
  what it needs.

mkdocs calls :func:`on_config` (adds the pages to the nav) and :func:`on_files`
(adds the generated files). The ``*_page`` functions return Markdown and need
only prunekit, so tests call them without mkdocs.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import os
import pkgutil
import re
from collections.abc import Iterable
from typing import Any

import prunekit

from rst_to_markdown import rst_to_markdown

#: where the generated pages live in the site
REFERENCE = "reference"
#: modules whose docstring starts so are deprecated aliases of another module
_DEPRECATED = re.compile(r"^\s*Deprecated\b")
_CODE_SPAN = re.compile(r"((`+).+?\2)")


# --------------------------------------------------------------------------- helpers

def _cell(text: Any) -> str:
    """``text`` fit for one Markdown table cell (one line, pipes escaped)."""
    text = " ".join(str(text).split())
    out, end = [], 0
    # a pipe splits cells outside code spans only (the table extension reads code spans whole)
    for span in _CODE_SPAN.finditer(text):
        out += [_plain(text[end:span.start()]), span.group(0)]
        end = span.end()
    return "".join(out) + _plain(text[end:])


def _plain(text: str) -> str:
    """Text outside code spans: ``<dim>`` is not an HTML tag, ``|`` not a cell border."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")


def _code(text: Any) -> str:
    text = str(text)
    return f"``{text}``" if "`" in text else f"`{text}`"


def _table(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> str:
    header = list(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _doc(obj: Any) -> str:
    """The docstring of ``obj`` as Markdown (headings inside it demoted below the page's)."""
    return rst_to_markdown(inspect.cleandoc(getattr(obj, "__doc__", None) or "")).strip()


def _summary(obj: Any) -> str:
    doc = (getattr(obj, "__doc__", None) or "").strip()
    return doc.split("\n\n")[0].replace("\n", " ") if doc else ""


# --------------------------------------------------------------------------- API pages

def public_modules() -> list[str]:
    """``prunekit`` and each of its top-level modules and packages that declares ``__all__``
    and is not a deprecated alias, sorted by name."""
    names = ["prunekit"]
    for info in sorted(pkgutil.iter_modules(prunekit.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"prunekit.{info.name}")
        if getattr(module, "__all__", None) and not _DEPRECATED.match(module.__doc__ or ""):
            names.append(module.__name__)
    return names


def _shadowed(module: Any, name: str) -> bool:
    """``name`` is a submodule of ``module`` shadowed by an object of the same name (``trace``
    the function in the module ``trace``), or loaded lazily by the module's ``__getattr__``:
    the static reader would show the module, or nothing, under ``module.name``."""
    if name not in vars(module):
        return True
    return importlib.util.find_spec(f"{module.__name__}.{name}") is not None \
        if hasattr(module, "__path__") else False


def api_page(module_name: str) -> str:
    """The mkdocstrings page of one module: its docstring and every name of its ``__all__``."""
    module = importlib.import_module(module_name)
    names = sorted(module.__all__, key=str.lower)
    direct = [n for n in names if not _shadowed(module, n)]
    lines = [f"# `{module_name}`", "", f"::: {module_name}", "    options:"]
    lines += ["      members:"] + [f"        - {name}" for name in direct] if direct else ["      members: false"]
    for name in names:
        if name in direct:
            continue
        try:
            obj = getattr(module, name)
        except ImportError as exc:  # a lazy name of an optional dependency that is not installed
            lines += ["", f"## `{name}`", "", f"Not documented in this build: `{module_name}.{name}` needs {exc.name}."]
            continue
        path = f"{obj.__module__}.{obj.__qualname__}"
        lines += ["", f"::: {path}", "    options:", "      show_root_heading: true", "      show_root_full_path: false",
                  "      show_root_toc_entry: true"]
    return "\n".join(lines) + "\n"


def api_index_page(modules: list[str]) -> str:
    rows = [(f"[`{m}`]({m}.md)", _summary(importlib.import_module(m))) for m in modules]
    return ("# Python API\n\nEvery public function and class, from its docstring: `prunekit` itself (its "
            "`__all__`) and each public module (a module of prunekit with an `__all__` that is not a "
            "deprecated alias).\n\n" + _table(("module", "what it holds"), rows))


# --------------------------------------------------------------------------- CLI

def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            return [(name, helps.get(name, ""), sub) for name, sub in action.choices.items()]
    return []


def _option_rows(parser: argparse.ArgumentParser) -> list[tuple[str, str, str]]:
    rows = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        if action.option_strings:
            name = ", ".join(action.option_strings)
            if action.nargs != 0:
                name += " " + (action.metavar or action.dest.upper())
        else:
            name = action.metavar or action.dest
        default = "" if action.default in (None, argparse.SUPPRESS, False) or not action.option_strings \
            else repr(action.default)
        rows.append((_code(name), _code(default) if default else "", action.help or ""))
    return rows


def _options_table(parser: argparse.ArgumentParser) -> str:
    rows = _option_rows(parser)
    if any(default for _name, default, _help in rows):
        return _table(("option", "default", "meaning"), rows)
    return _table(("option", "meaning"), [(name, meaning) for name, _default, meaning in rows])


def cli_page() -> str:
    """The command-line reference, from the parser every ``prunekit`` call uses."""
    # local import would be a deferred internal import; the hook is not part of the package
    cli = importlib.import_module("prunekit.cli")
    parser = cli.build_parser()
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "88"  # argparse wraps its usage to the terminal; fix it for the page
    try:
        out = ["# Command line", "",
               "Generated from the `prunekit` argument parser (`prunekit.cli.build_parser`); "
               "`prunekit COMMAND --help` prints the same.", "",
               "```text", parser.format_usage().strip(), "```", "",
               _table(("command", "what it does"), [(f"[`{n}`](#{n})", h) for n, h, _ in _subcommands(parser)]),
               "", "Options before the command:", "", _options_table(parser)]
        for name, help_text, sub in _subcommands(parser):
            out += ["", f"## {name}", "", help_text[:1].upper() + help_text[1:] + ("." if help_text else ""), "",
                    "```text", sub.format_usage().strip(), "```", ""]
            if sub.description:
                out += [sub.description, ""]
            out += [_options_table(sub)]
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- recipe schema

def recipe_schema_page() -> str:
    """The recipe schema: the recipe's shape (its module docstring), then each stage's keys from
    the declared parameters of the function the stage calls."""
    recipes = importlib.import_module("prunekit.recipes")
    declared = importlib.import_module("prunekit.recipes.declared")
    out = ["# Recipe schema", "",
           "Generated from `prunekit.recipes` and the declared parameters (`prunekit.params`, "
           "`prunekit.recipes.declared`): a recipe accepts exactly what these tables say, and refuses "
           "anything else with the file, the line and the key.", "",
           "## A recipe", "", _doc(recipes), ""]
    for kind in declared.STAGE_PARAMS:
        rows = []
        for key, entry in recipes.stage_schema(kind).items():
            default = _code(repr(entry["default"])) if "default" in entry else "required"
            rows.append((_code(key), entry["expected"], default, entry["help"]))
        out += [f"## Stage `{kind}`", "", _table(("key", "expected", "default", "meaning"), rows), ""]
    out += ["## Where a recipe differs from the Python call", "", _doc(declared), ""]
    return "\n".join(out)


# --------------------------------------------------------------------------- catalogue

def _scores_section() -> list[str]:
    scores = importlib.import_module("prunekit.scores")
    entries = scores.SCORES.entries()
    rows = []
    for e in entries:
        needs = sorted(set(e.needs.values()))
        rows.append((f"[`{e.name}`](#score-{e.name})", ", ".join(e.aliases), ", ".join(e.unit_spaces),
                     ", ".join(needs), e.summary))
    out = ["## Scores", "",
           f"{len(entries)} registered names (`prunekit.scores.SCORES`; `prunekit list scores` prints the same). "
           "One name has one meaning in every unit space it serves; *needs* is what it reads besides the "
           "weights.", "", _table(("score", "aliases", "unit spaces", "needs", "summary"), rows), ""]
    for e in entries:
        out += [f'### `{e.name}` {{ #score-{e.name} }}', ""]
        seen: dict[int, list[str]] = {}
        factories = {}
        for space in e.unit_spaces:
            factory = e.factories[space]
            seen.setdefault(id(factory), []).append(space)
            factories[id(factory)] = factory
        for key, spaces in seen.items():
            factory = factories[key]
            needs = sorted({e.needs[s] for s in spaces})
            where = f"{getattr(factory, '__module__', '')}.{getattr(factory, '__qualname__', '')}".strip(".")
            source = "" if "<" in where else f" — `{where}`"  # a lambda has no path worth showing
            out += [f"**{', '.join(spaces)}** — needs *{', '.join(needs)}*{source}", "",
                    _doc(factory) or e.summary, ""]
    return out


def _registry_section(title: str, registry: Any, how: str) -> list[str]:
    aliases: dict[str, list[str]] = {}
    for alias, name in registry._aliases.items():
        aliases.setdefault(name, []).append(alias)
    names = registry.names()
    out = [f"## {title}", "", how, "",
           _table((registry.kind, "aliases", "summary"),
                  [(f"[`{n}`](#{registry.kind}-{n})", ", ".join(sorted(aliases.get(n, []))),
                    _summary(registry.get(n))) for n in names]), ""]
    for n in names:
        out += [f"### `{n}` {{ #{registry.kind}-{n} }}", "", _doc(registry.get(n)), ""]
    return out


def _allocation_section() -> list[str]:
    api = importlib.import_module("prunekit.allocation.api")
    allocation = importlib.import_module("prunekit.allocation")
    doc = inspect.cleandoc(api.__doc__ or "")
    rows = []
    for policy in api.POLICIES:
        found = re.search(r'^\* ``"' + re.escape(policy) + r'"``: (.*?)(?=^\* |^\s*$)', doc, re.M | re.S)
        rows.append((_code(policy), rst_to_markdown(found.group(1)) if found else "(not described)"))
    return ["## Allocations", "",
            "The policies of `prunekit.allocation.allocate` (`prunekit.allocation.POLICIES`), each described "
            "by that module's docstring. `prunekit.prune` takes the scopes "
            + ", ".join(_code(s) for s in allocation.SCOPES) + " as `scope=`; channel groups "
            "(`prunekit.structural_prune`) take `scope=` " + ", ".join(_code(s) for s in allocation.GROUP_SCOPES)
            + " and `allocation=` " + ", ".join(_code(s) for s in allocation.ALLOCATIONS) + ".", "",
            _table(("policy", "what it does"), rows), ""]


def catalogue_page() -> str:
    """The catalogue: every registered score, structure, allocation policy, schedule and realisation."""
    structures = importlib.import_module("prunekit.structures")
    schedules = importlib.import_module("prunekit.schedules")
    realisation = importlib.import_module("prunekit.masks.realisation")
    out = ["# Catalogue", "",
           "Generated from prunekit's registries at build time: a score, structure, schedule or realisation "
           "registered in the code appears here with its docstring (formula, paper) and what it needs.", ""]
    out += _scores_section()
    out += _registry_section("Structures", structures.STRUCTURES,
                             "How a tensor splits into units (`prunekit.list_structures()`); a spec may carry "
                             "arguments, e.g. `2:4`, `block:4x4`, `channel:1`.")
    out += _allocation_section()
    out += _registry_section("Schedules", schedules.SCHEDULES,
                             "Sparsity over training (`prunekit.list_schedules()`), for `fit`, the controller "
                             "and a recipe's `schedule:`.")
    out += _registry_section("Realisations", realisation.REALISATIONS,
                             "How keep masks become a model (`mode=`; `prunekit.list_realisations()`).")
    return "\n".join(out)


# --------------------------------------------------------------------------- mkdocs

def pages() -> dict[str, str]:
    """``{path under docs: Markdown}`` of every generated page."""
    modules = public_modules()
    out = {f"{REFERENCE}/api/{m}.md": api_page(m) for m in modules}
    out[f"{REFERENCE}/api/index.md"] = api_index_page(modules)
    out[f"{REFERENCE}/cli.md"] = cli_page()
    out[f"{REFERENCE}/recipe-schema.md"] = recipe_schema_page()
    out[f"{REFERENCE}/catalogue.md"] = catalogue_page()
    return out


def nav() -> list[Any]:
    """The Reference section of the nav."""
    modules = public_modules()
    return [
        {"Catalogue": f"{REFERENCE}/catalogue.md"},
        {"Command line": f"{REFERENCE}/cli.md"},
        {"Recipe schema": f"{REFERENCE}/recipe-schema.md"},
        {"Python API": [f"{REFERENCE}/api/index.md"] + [{m: f"{REFERENCE}/api/{m}.md"} for m in modules]},
    ]


def on_config(config: Any) -> Any:
    """Fill the nav's ``Reference`` entry (an empty list in mkdocs.yml) with the generated pages."""
    for item in config["nav"] or []:
        if isinstance(item, dict) and "Reference" in item:
            item["Reference"] = nav()
    return config


def on_files(files: Any, config: Any) -> Any:
    """Add the generated pages to the build."""
    from mkdocs.structure.files import File  # the hook runs inside mkdocs only

    for path, text in pages().items():
        files.append(File.generated(config, path, content=text))
    return files
