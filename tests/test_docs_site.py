"""The documentation site's generated reference reads the code, never a hand-kept list.

The generator (``docs/_hooks/reference.py``, run by mkdocs at build time) is
imported here without mkdocs: its page functions return Markdown. The strict
build itself runs in ``.ci/run``.
"""

from __future__ import annotations

import argparse
import html
import importlib
import re
import sys
from pathlib import Path

import pytest
import yaml

import prunekit
from prunekit.cli import build_parser
from prunekit.recipes import stage_schema
from prunekit.recipes.declared import STAGE_PARAMS
from prunekit.schedules import SCHEDULES
from prunekit.scores import SCORES

ROOT = Path(__file__).resolve().parents[1]
HOOKS = ROOT / "docs" / "_hooks"
TUTORIALS = ["torch-prune", "lightning", "bert-speed-size", "cnn-target", "lottery", "oneshot-llm"]


@pytest.fixture(scope="module")
def reference():
    sys.path.insert(0, str(HOOKS))
    try:
        yield importlib.import_module("reference")
    finally:
        sys.path.remove(str(HOOKS))


@pytest.fixture(scope="module")
def rst():
    sys.path.insert(0, str(HOOKS))
    try:
        yield importlib.import_module("rst_to_markdown").rst_to_markdown
    finally:
        sys.path.remove(str(HOOKS))


def test_a_newly_registered_score_appears_in_the_catalogue(reference) -> None:
    def docs_probe_score(target):
        """Docs probe: ``|w|³``, the cube of each weight's magnitude (Nobody et al. 2099)."""
        return target.original.detach().abs() ** 3

    before = reference.catalogue_page()
    assert "docs_probe_score" not in before
    prunekit.register_score("docs_probe_score", unit_spaces=("element", "channel"), needs="nothing")(docs_probe_score)
    try:
        page = reference.catalogue_page()
    finally:
        SCORES.unregister("docs_probe_score")
    assert "[`docs_probe_score`](#score-docs_probe_score)" in page  # the summary table's row
    assert "### `docs_probe_score` { #score-docs_probe_score }" in page  # its section
    assert "Nobody et al. 2099" in page  # its docstring (formula, paper)
    assert reference.catalogue_page() == before


def test_the_catalogue_lists_every_registered_component(reference) -> None:
    page = reference.catalogue_page()
    for name in SCORES.names():
        assert f"{{ #score-{name} }}" in page
    for name in SCHEDULES.names():
        assert f"{{ #schedule-{name} }}" in page
    for name in prunekit.list_structures():
        assert f"{{ #structure-{name} }}" in page
    for policy in prunekit.allocation.POLICIES:
        assert f"| `{policy}` |" in page
    assert "(not described)" not in page  # every allocation policy found its line in the docstring


def test_the_api_pages_cover_every_public_name(reference) -> None:
    modules = reference.public_modules()
    assert modules[0] == "prunekit"
    assert "prunekit.scores" in modules and "prunekit.allocation" in modules
    assert "prunekit.criteria" not in modules  # a deprecated alias package
    for module_name in ("prunekit", "prunekit.coupling", "prunekit.integrations"):
        module = importlib.import_module(module_name)
        page = reference.api_page(module_name)
        for name in module.__all__:  # a member of the module's block, or a block of its own
            assert f"        - {name}\n" in page or re.search(rf"^::: [\w.]+\.{name}$", page, re.M), (module_name, name)
    assert "::: prunekit.coupling.trace.trace\n" in reference.api_page("prunekit.coupling")  # not the module trace
    nav = reference.nav()
    api = [item["Python API"] for item in nav if "Python API" in item][0]
    assert [next(iter(entry)) for entry in api[1:]] == modules


def test_the_cli_reference_has_every_command_and_option(reference) -> None:
    page = reference.cli_page()
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name, parser in sub.choices.items():
        assert f"\n## {name}\n" in page
        section = page.split(f"\n## {name}\n")[1].split("\n## ")[0]
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            for option in action.option_strings:
                assert f"`{option}" in section or f", {option}" in section, (name, option)
            if not action.option_strings:  # a positional argument, by its metavar
                assert f"`{action.metavar or action.dest}`" in section, (name, action.dest)


def test_the_recipe_schema_has_every_declared_key(reference) -> None:
    page = html.unescape(reference.recipe_schema_page())
    for kind in STAGE_PARAMS:
        assert f"## Stage `{kind}`" in page
        for key, entry in stage_schema(kind).items():
            assert f"| `{key}` | {entry['expected']} |".replace("\\|", "|") in page.replace("\\|", "|")


def test_rst_tables_roles_and_literal_blocks_become_markdown(rst) -> None:
    text = ("See :func:`~prunekit.scores.create_score` and :class:`prunekit.Pruner`.\n\n"
            "=====  ==========\nname   meaning\n=====  ==========\n``a``  first\n``b``  second,\n"
            "       continued\n=====  ==========\n\nFor example::\n\n    x = 1\n    y = x + 1\n\nafter")
    out = rst(text)
    assert "See `create_score` and `prunekit.Pruner`." in out
    assert "| name | meaning |\n|---|---|\n| ``a`` | first |\n| ``b`` | second, continued |" in out
    assert "For example:\n\n```python\nx = 1\ny = x + 1\n```\n\nafter" in out
    assert "definition" not in rst("``nothing``      weights only\n``batches``      forward passes")
    assert rst("``nothing``      weights only\n``batches``      forward passes") == \
        "- ``nothing``: weights only\n- ``batches``: forward passes"


def _nav_files(items) -> list[str]:
    out = []
    for item in items:
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, dict):
            for value in item.values():
                out += _nav_files(value) if isinstance(value, list) else [value]
    return out


def test_the_nav_lists_the_tutorials_and_every_page() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text().replace("!!python/name:", ""))
    files = _nav_files(config["nav"])
    assert [f for f in files if f.startswith("tutorials/")] == [f"tutorials/{t}.md" for t in TUTORIALS]
    written = {str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md")
               if "_hooks" not in p.parts and p.parts[-2] != "tutorials"
               and not (p.parts[-2] == "figures" and p.name.startswith("tutorial_"))}  # tables the tutorials quote
    assert written <= set(files), sorted(written - set(files))
    assert config["strict"] is True
