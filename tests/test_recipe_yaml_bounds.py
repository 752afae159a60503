"""Recipe YAML cannot expand without bound: aliases, expanded size and text length are limited."""

from __future__ import annotations

import time

import pytest

from prunekit.errors import InvalidParameterError
from prunekit.recipes import parse_recipe
from prunekit.recipes.yaml_load import MAX_ALIASES, load_yaml


def _bomb(levels: int, width: int) -> str:
    """A "billion laughs": each level aliases the previous one ``width`` times (a few hundred bytes)."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]")
    return "\n".join(lines) + "\nmodel: {name: lenet5}\n"


def test_alias_bomb_fails_fast_naming_the_limit():
    text = _bomb(8, 8)  # 9 * 8**7 leaves once expanded
    assert len(text) < 500
    start = time.perf_counter()
    with pytest.raises(InvalidParameterError) as info:
        parse_recipe(text, source="bomb.yaml")
    assert time.perf_counter() - start < 2
    message = " ".join(str(info.value).split())
    assert message.startswith("bomb.yaml line ") and "aliases" in message and "Fix:" in message


def test_wide_but_shallow_aliases_hit_the_expanded_size_limit():
    anchor = "base: &b [" + ", ".join(["x"] * 2000) + "]\n"
    text = anchor + "copies: [" + ", ".join(["*b"] * 60) + "]\n"
    with pytest.raises(InvalidParameterError, match="nodes once aliases are expanded"):
        load_yaml(text, "wide.yaml")


def test_too_many_aliases_and_recursive_anchor_and_huge_text():
    text = "a: &a 1\nb: [" + ", ".join(["*a"] * (MAX_ALIASES + 1)) + "]\n"
    with pytest.raises(InvalidParameterError, match=f"more than {MAX_ALIASES} aliases"):
        load_yaml(text, "many.yaml")
    with pytest.raises(InvalidParameterError, match="recursive"):
        load_yaml("a: &a [1, *a]\n", "loop.yaml")
    with pytest.raises(InvalidParameterError, match="bytes"):
        load_yaml("#" * (2**20 + 1), "big.yaml")


def test_a_few_aliases_still_work():
    node, data = load_yaml("base: &b {lr: 0.1}\nrun: *b\nother: {<<: *b, epochs: 2}\n", "ok.yaml")
    assert data == {"base": {"lr": 0.1}, "run": {"lr": 0.1}, "other": {"lr": 0.1, "epochs": 2}}
    assert node is not None
