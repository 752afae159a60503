"""One registry of scores: unit spaces, needs, aliases, errors, calibration scores and one-shot methods."""

from __future__ import annotations

import pytest
import torch

import prunekit
from prunekit.errors import InvalidParameterError
from prunekit.oneshot.methods import ONESHOT_METHODS, list_oneshot_methods, oneshot_method
from prunekit.oneshot.sparsegpt import SparseGPT, inverse_hessian_cholesky
from prunekit.scores import (
    MASK_SPACES,
    NEEDS,
    SCORES,
    UNIT_SPACES,
    InputStats,
    LayerScore,
    Magnitude,
    Wanda,
    as_criterion,
    create_score,
    list_scores,
    score_entry,
)
from conftest import make_tiny


@pytest.fixture
def two_spaces():
    """A name registered twice, for the element and the group unit spaces, by different factories."""

    class Element(prunekit.Criterion):
        """Element half of a test score."""

        def score(self, target):
            return target.effective().abs()

    def group() -> str:
        """Group half of a test score."""
        return "group scorer"

    SCORES.register("test_two_spaces", Element, unit_spaces=("element",))
    SCORES.register("test_two_spaces", group, unit_spaces=("group",), needs="batches")
    try:
        yield Element
    finally:
        SCORES.unregister("test_two_spaces")


def test_a_name_in_several_unit_spaces(two_spaces):
    entry = score_entry("test_two_spaces")
    assert entry.unit_spaces == ("element", "group")
    assert entry.needs == {"element": "nothing", "group": "batches"}
    assert isinstance(create_score("test_two_spaces", "element"), two_spaces)
    assert create_score("test_two_spaces", "group") == "group scorer"
    assert "test_two_spaces" in list_scores(unit_space="group")
    assert "test_two_spaces" not in list_scores(unit_space="head")
    SCORES.unregister("test_two_spaces", ("group",))
    assert score_entry("test_two_spaces").unit_spaces == ("element",)


def test_element_criteria_serve_every_mask_space():
    for name in ("magnitude", "l2", "lnorm", "random", "snip", "grasp", "synflow", "obd", "movement", "learned"):
        # other modules may add spaces to a name (magnitude for channel groups and heads)
        assert set(MASK_SPACES) <= set(score_entry(name).unit_spaces), name
    for name in ("wanda", "sparsegpt"):
        assert score_entry(name).unit_spaces == ("element", "nm"), name


def test_unknown_name_suggests_the_closest():
    with pytest.raises(InvalidParameterError) as info:
        create_score("magnitde")
    assert info.value.param == "score" and "Did you mean 'magnitude'?" in str(info.value)
    with pytest.raises(InvalidParameterError, match="Did you mean 'snip'"):
        score_entry("snp")


def test_unsupported_unit_space_names_the_spaces_served():
    with pytest.raises(InvalidParameterError) as info:
        create_score("wanda", "kernel")
    assert "supports element, nm" in str(info.value) and "magnitude" in str(info.value)
    with pytest.raises(InvalidParameterError, match="unit_space"):
        create_score("magnitude", "tile")


def test_every_entry_declares_needs_and_a_one_line_summary():
    assert len(SCORES) >= 18
    for entry in SCORES.entries():
        assert entry.unit_spaces, entry.name
        assert set(entry.needs) == set(entry.unit_spaces), entry.name
        assert all(n in NEEDS for n in entry.needs.values()), entry.name
        assert all(s in UNIT_SPACES for s in entry.unit_spaces), entry.name
        assert entry.summary and "\n" not in entry.summary and len(entry.summary) <= 120, entry.name
        assert entry.summary.rstrip().endswith((".", ")")), (entry.name, entry.summary)
    needs = {name: score_entry(name).needs["element"] for name in
             ("magnitude", "random", "snip", "grasp", "synflow", "obd", "large_final", "large_init", "learned",
              "wanda", "sparsegpt")}
    assert needs == {"magnitude": "nothing", "random": "nothing", "snip": "gradients", "grasp": "gradients",
                     "synflow": "gradients", "obd": "gradients", "large_final": "nothing",
                     "large_init": "training", "learned": "training", "wanda": "activations",
                     "sparsegpt": "hessian"}


def test_one_name_one_meaning_magnitude_is_l1():
    assert score_entry("l1").name == "magnitude" and score_entry("abs").name == "magnitude"
    assert "l1" in score_entry("magnitude").aliases
    assert repr(create_score("l1")) == "Magnitude(p=1)"
    assert repr(create_score("l2")) == "Magnitude(p=2)"
    assert repr(create_score("lnorm:3")) == "Magnitude(p=3)"
    assert repr(create_score("magnitude", "channel")) == "Magnitude(p=1)"
    w = torch.tensor([[3.0, 0.0], [2.0, 2.0]])
    assert torch.equal(create_score("l1").reduce(w, (1,)), torch.tensor([3.0, 4.0]))
    assert torch.allclose(create_score("l2").reduce(w, (1,)), torch.tensor([3.0, 8 ** 0.5]))


def test_aliases_cannot_shadow_names():
    with pytest.raises(InvalidParameterError, match="alias"):
        SCORES.register("l1", Magnitude, unit_spaces=("group",))
    with pytest.raises(InvalidParameterError, match="aliases"):
        SCORES.register("test_alias_clash", Magnitude, unit_spaces=("element",), aliases=("magnitude",))
    assert "test_alias_clash" not in SCORES


def test_a_calibration_score_is_no_criterion():
    model = make_tiny(0)
    with pytest.raises(InvalidParameterError) as info:
        prunekit.prune(model, 0.5, criterion="wanda")
    assert info.value.param == "criterion" and "oneshot_prune" in str(info.value)
    assert "wanda" not in prunekit.scores.criterion_names() and "magnitude" in prunekit.scores.criterion_names()
    assert not torch.nn.utils.prune.is_pruned(model)


# -- calibration scores: the statistics they receive and their formulas --------------------------


def _stats(x: torch.Tensor, norms: bool, hessian: bool) -> InputStats:
    stats = InputStats(x.shape[-1], norms, hessian, x.device)
    stats.add(x)
    return stats


def test_wanda_scores_weights_times_input_norms():
    g = torch.Generator().manual_seed(0)
    w, x = torch.randn(3, 5, generator=g), torch.randn(7, 5, generator=g)
    score = create_score("wanda", "nm")
    assert isinstance(score, Wanda) and score.needs == "activations" and score.compare == "row"
    expected = w.abs() * x.norm(dim=0).unsqueeze(0)
    assert torch.allclose(score.score_layer(w, _stats(x, True, False)), expected)


def test_sparsegpt_saliency_of_the_first_column_is_w2_over_inverse_hessian():
    g = torch.Generator().manual_seed(0)
    w, x = torch.randn(4, 6, generator=g), torch.randn(32, 6, generator=g)
    score = create_score("sparsegpt", percdamp=0.01)
    assert isinstance(score, SparseGPT) and score.needs == "hessian" and score.updates_weights
    stats = _stats(x, False, True)
    h = stats.hessian()
    damped = h + 0.01 * h.diagonal().mean() * torch.eye(6)
    inverse = torch.linalg.inv(damped.double())
    saliency = score.score_layer(w, stats)
    # OBS: removing w_ij costs w_ij² / [H⁻¹]_jj; the first column is eliminated first
    assert torch.allclose(saliency[:, 0].double(), w[:, 0].double() ** 2 / inverse[0, 0], rtol=1e-4)
    u = inverse_hessian_cholesky(h.clone(), 0.01)
    assert torch.allclose(saliency, w ** 2 / u.diagonal().square().unsqueeze(0))
    with pytest.raises(InvalidParameterError, match="percdamp"):
        create_score("sparsegpt", percdamp=0)


def test_oneshot_methods_resolve_through_scores():
    assert list_oneshot_methods() == ["magnitude", "sparsegpt", "wanda"]
    assert ONESHOT_METHODS.get("l1")().name == "magnitude"
    wanda, sparsegpt = oneshot_method("wanda"), oneshot_method("sparsegpt")
    assert (wanda.norms, wanda.hessian, sparsegpt.norms, sparsegpt.hessian) == (True, False, False, True)
    with pytest.raises(InvalidParameterError) as info:
        ONESHOT_METHODS.get("snip")
    assert info.value.param == "method" and "wanda" in str(info.value)
    with pytest.raises(InvalidParameterError, match="Did you mean 'wanda'"):
        oneshot_method("wnda")


def test_a_user_layer_score_becomes_a_oneshot_method():
    class SmallestFirst(LayerScore):
        """Keeps the smallest weights of each row (a test layer score)."""

        compare = "row"

        def score_layer(self, weight, stats):
            return -weight.abs()

    prunekit.register_score("test_smallest_first", unit_spaces=("element",))(SmallestFirst)
    try:
        assert "test_smallest_first" in list_oneshot_methods()
        method = oneshot_method("test_smallest_first")
        assert not method.norms and not method.hessian
        w = torch.tensor([[1.0, -4.0, 2.0, 3.0], [5.0, 0.5, -6.0, 7.0]])
        new, keep = method.prune_layer(w, None, 0.5, None, {"blocksize": 128}, "layer")
        assert new is None
        assert keep.tolist() == [[True, False, True, False], [True, True, False, False]]
        with pytest.raises(InvalidParameterError, match="oneshot_prune"):
            as_criterion("test_smallest_first")
    finally:
        SCORES.unregister("test_smallest_first")
    assert "test_smallest_first" not in list_oneshot_methods()
