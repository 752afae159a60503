"""The former criterion API keeps working for one release and warns once per name."""

from __future__ import annotations

import importlib
import warnings

import pytest
import torch

import prunekit
from prunekit.deprecation import reset_warnings
from conftest import keep_mask, make_tiny


def _future_warnings(call):
    """``(result, [FutureWarning messages])`` of ``call()``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = call()
    return result, [str(w.message) for w in caught if issubclass(w.category, FutureWarning)]


@pytest.fixture(autouse=True)
def fresh_warnings():
    reset_warnings()
    yield
    reset_warnings()


def test_register_criterion_registers_a_score_and_warns_once():
    names = ("test_old_every_other", "test_old_every_other_2")

    def every_other(target):
        scores = torch.ones(target.numel)
        scores[::2] = 0
        return scores.view(target.shape)

    try:
        _, first = _future_warnings(lambda: prunekit.register_criterion(names[0])(every_other))
        _, second = _future_warnings(lambda: prunekit.register_criterion(names[1])(every_other))
        assert len(first) == 1 and "prunekit.register_score" in first[0] and second == []
        assert names[0] in prunekit.list_scores(unit_space="element")
        assert prunekit.score_entry(names[0]).unit_spaces == prunekit.scores.MASK_SPACES
        model = make_tiny(0)
        prunekit.prune(model, 0.5, criterion=names[0], targets=[(model.fc2, "bias")])
        assert keep_mask(model.fc2, "bias").tolist() == [False, True] * 4
    finally:
        for name in names:
            prunekit.scores.SCORES.unregister(name)


def test_create_and_list_criteria_read_the_scores_and_warn_once():
    crit, first = _future_warnings(lambda: prunekit.create_criterion("lnorm:3"))
    _, second = _future_warnings(lambda: prunekit.create_criterion("l2"))
    assert repr(crit) == "Magnitude(p=3)" and len(first) == 1 and second == []
    names, warned = _future_warnings(prunekit.list_criteria)
    assert len(warned) == 1 and "list_scores" in warned[0]
    assert names == prunekit.scores.criterion_names()
    assert {"magnitude", "snip", "obd", "movement"} <= set(names) and "wanda" not in names


@pytest.mark.parametrize("name,new", [
    ("SNIP", "SNIP"), ("Magnitude", "Magnitude"), ("OBD", "OBD"), ("LargeInit", "LargeInit"),
    ("diagonal_fisher", "diagonal_fisher"), ("Criterion", "Criterion"), ("create_criterion", "as_criterion"),
])
def test_prunekit_criteria_names_are_aliases_that_warn_once(name, new):
    module = importlib.import_module("prunekit.criteria")
    value, first = _future_warnings(lambda: getattr(module, name))
    _, second = _future_warnings(lambda: getattr(module, name))
    assert value is getattr(prunekit.scores, new)
    assert len(first) == 1 and f"prunekit.criteria.{name}" in first[0] and second == []


def test_the_old_registry_object_is_a_view_of_the_scores():
    criteria, warned = _future_warnings(lambda: importlib.import_module("prunekit.criteria").CRITERIA)
    assert len(warned) == 1 and "prunekit.scores.SCORES" in warned[0]
    assert "magnitude" in criteria and "l1" in criteria and "wanda" not in criteria
    criteria.register("test_old_registry", prunekit.Magnitude)
    try:
        assert prunekit.score_entry("test_old_registry").needs["element"] == "nothing"
        assert repr(criteria.create("test_old_registry")) == "Magnitude(p=1)"
    finally:
        criteria.unregister("test_old_registry")
    assert "test_old_registry" not in prunekit.scores.SCORES


def test_the_old_proxies_module_warns_and_works():
    module = importlib.import_module("prunekit.proxies")
    fn, warned = _future_warnings(lambda: module.zero_cost_proxies)
    assert fn is prunekit.zero_cost_proxies and len(warned) == 1 and "prunekit.analysis.proxies" in warned[0]
