"""prunekit.registry: the name lookup, spec call and alias removal shared by Registry and SCORES."""

from __future__ import annotations

import pytest

from prunekit.errors import InvalidParameterError
from prunekit.registry import Registry
from prunekit.scores import SCORES, register_score


def widget(size: int = 1) -> tuple[str, int]:
    return ("widget", size)


def test_registry_resolves_aliases_and_suggests_a_name():
    reg: Registry = Registry("widget")
    reg.register("gadget", widget, aliases=("gizmo",))
    assert reg.resolve("GIZMO") == "gadget"
    assert reg.create("gizmo:3") == ("widget", 3)
    with pytest.raises(InvalidParameterError) as info:
        reg.resolve("gadgte")
    assert str(info.value) == (
        "widget: expected a registered widget name (gadget), got 'gadgte'. "
        "Fix: use one of the registered names. Did you mean 'gadget'?"
    )


def test_registry_create_names_the_spec_when_the_factory_refuses_its_arguments():
    reg: Registry = Registry("widget")
    reg.register("gadget", widget)
    with pytest.raises(InvalidParameterError, match=r"^widget: expected a valid widget spec for 'gadget', "
                                                    r"got 'gadget:1:2'\. Fix: check the arguments \("):
        reg.create("gadget:1:2")


def test_registry_unregister_drops_the_aliases():
    reg: Registry = Registry("widget")
    reg.register("gadget", widget, aliases=("gizmo", "doohickey"))
    reg.register("other", widget)
    reg.unregister("gizmo")
    assert "gadget" not in reg and "gizmo" not in reg and "doohickey" not in reg and "other" in reg


def test_scores_resolve_points_at_the_listing():
    with pytest.raises(InvalidParameterError) as info:
        SCORES.resolve("magnitud")
    assert info.value.param == "score"
    assert info.value.fix.startswith("Fix: use one of the registered names (prunekit list scores). ")
    assert "Did you mean 'magnitude'?" in info.value.fix


def test_scores_unregister_of_the_last_space_drops_the_aliases():
    register_score("test_registry_score", unit_spaces=("head",), aliases=("test_registry_alias",))(lambda: None)
    assert SCORES.resolve("test_registry_alias") == "test_registry_score"
    SCORES.unregister("test_registry_score")
    assert "test_registry_score" not in SCORES and "test_registry_alias" not in SCORES
    with pytest.raises(InvalidParameterError, match=r"^score: expected a valid score spec for 'magnitude'"):
        SCORES.create("magnitude:1:2:3", "head")
