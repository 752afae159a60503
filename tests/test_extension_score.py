"""The score extension point, used from outside the package: a score registered here is
listed with the built-in ones and prunes through ``prunekit.prune(criterion=name)``."""

from __future__ import annotations

import pytest
import torch

import prunekit
from conftest import keep_mask, make_tiny

FUNCTION_NAME = "test_negative_magnitude_fn"
CLASS_NAME = "test_negative_magnitude_cls"


@pytest.fixture
def registered():
    @prunekit.register_score(FUNCTION_NAME, unit_spaces=("element",))
    def negative_magnitude(target):
        """Negative magnitude ``−|w|``: keeps the smallest weights (a test score)."""
        return -target.effective().abs()

    @prunekit.register_score(CLASS_NAME, unit_spaces=prunekit.scores.MASK_SPACES, needs="nothing")
    class NegativeMagnitude(prunekit.Criterion):
        """Negative magnitude ``−|w|`` as a Criterion class (a test score)."""

        def score(self, target):
            return -target.effective().abs()

    try:
        yield negative_magnitude, NegativeMagnitude
    finally:
        prunekit.scores.SCORES.unregister(FUNCTION_NAME)
        prunekit.scores.SCORES.unregister(CLASS_NAME)


def _masks(criterion: str, structure: str = "element") -> list[torch.Tensor]:
    model = make_tiny(0)
    prunekit.prune(model, 0.5, criterion=criterion, structure=structure)
    return [keep_mask(m) for m in (model.conv, model.fc1, model.fc2)]


def test_registered_scores_are_listed_with_their_spaces_and_needs(registered):
    element = prunekit.list_scores(unit_space="element")
    assert FUNCTION_NAME in element and CLASS_NAME in element and "magnitude" in element
    assert FUNCTION_NAME not in prunekit.list_scores(unit_space="channel")
    assert CLASS_NAME in prunekit.list_scores(unit_space="channel")
    entry = prunekit.score_entry(FUNCTION_NAME)
    assert entry.unit_spaces == ("element",) and entry.needs == {"element": "nothing"}
    assert entry.summary.startswith("Negative magnitude")
    # the decorator hands back what it was given
    function, cls = registered
    assert callable(function) and issubclass(cls, prunekit.Criterion)


@pytest.mark.parametrize("name", [FUNCTION_NAME, CLASS_NAME])
def test_prune_uses_the_registered_score(registered, name):
    mine = _masks(name)
    magnitude = _masks("magnitude")
    for a, b in zip(mine, magnitude):
        assert a.float().mean() == 0.5
        assert torch.equal(a, ~b)  # the exact complement of magnitude's mask


def test_a_class_score_serves_structures_through_its_reduction(registered):
    mine = _masks(CLASS_NAME, "channel")
    magnitude = _masks("magnitude", "channel")
    for a, b in zip(mine, magnitude):
        assert torch.equal(a, ~b)


def test_a_registered_name_cannot_be_taken_twice(registered):
    with pytest.raises(prunekit.InvalidParameterError, match=FUNCTION_NAME):
        prunekit.register_score(FUNCTION_NAME, unit_spaces=("element",))(lambda target: target.effective())
