"""Progress events of the other long calls: the instability analysis (its trainings and its path),
the latency-target search, and iterative pruning at initialisation; a bar changes no result,
nothing is printed by default, and a bad ``progress`` is refused before anything changes."""

from __future__ import annotations

import copy
import inspect

import pytest
import torch
from torch import nn

import prunekit
from prunekit.allocation import latency_keep_counts
from prunekit.analysis import instability as instability_module
from prunekit.analysis import instability_analysis, linear_path_errors
from prunekit.errors import InvalidParameterError
from prunekit.lottery import LotteryRun
from prunekit.measure.layer_latency import LatencyTable

from conftest import classification_splits, small_lottery_config
from conftest import tiny_mlp as tiny
from test_progress import assert_monotone_to_total
from test_surgery_latency import X, _equal, _groups, _hw_timer, _net, _site, _total


# -- instability analysis ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def splits():
    return classification_splits()


@pytest.fixture
def run(tmp_path, splits) -> LotteryRun:
    lottery = LotteryRun(small_lottery_config(reset="rewind", rewind_step=4, levels=1), tmp_path / "run",
                         model_fn=tiny, **splits)
    lottery.run()
    return lottery


def test_instability_reports_both_trainings_and_the_path(run, capsys):
    events = []
    result = instability_analysis(run, 1, seeds=(0, 1), points=5, plot=False, progress=events.append)
    assert assert_monotone_to_total(events, "instability") == [[(0, 3), (1, 3), (2, 3), (3, 3)]]
    outer = [e for e in events if e.stage == "instability"]
    assert [e.detail for e in outer] == ["level 1", "copy 0", "copy 1", "path"]
    assert 0.0 <= outer[1].figures["accuracy"] <= 1.0
    assert outer[-1].figures["instability"] == result.instability
    fits = assert_monotone_to_total(events, "fit", parent="instability")
    assert len(fits) == 2 and all(r[-1] == (8, 8) for r in fits)  # iterations k=4..T=12 of each copy
    assert {e.detail for e in events if e.stage == "fit"} == {"copy 0", "copy 1"}
    path = assert_monotone_to_total(events, "path", parent="instability")
    assert path == [[(i, 5) for i in range(6)]]
    assert [e.figures["error"] for e in events if e.stage == "path" and e.done] == result.errors
    assert not any(e.parent == "lottery" for e in events)
    assert capsys.readouterr() == ("", "")


def test_instability_bar_changes_nothing_and_default_prints_nothing(run, capsys):
    quiet = instability_analysis(run, 1, seeds=(0, 1), points=3, plot=False)
    assert capsys.readouterr() == ("", "")
    drawn = instability_analysis(run, 1, seeds=(0, 1), points=3, plot=False, progress=True)
    out, err = capsys.readouterr()
    assert out == "" and "instability path" in err and "3/3" in err and "  fit copy 1" in err
    assert drawn.errors == quiet.errors and drawn.instability == quiet.instability


def test_instability_refuses_a_bad_progress_before_anything(run, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("trained before the refusal")
    monkeypatch.setattr(instability_module, "train_segment", no_training)
    with pytest.raises(InvalidParameterError) as info:
        instability_analysis(run, 1, seeds=(0, 1), points=3, progress="yes")
    assert info.value.param == "progress"
    assert not (run.out / "instability").exists()


def test_linear_path_alone_reports_each_point(splits):
    torch.manual_seed(0)
    a, b = tiny(), tiny()
    events = []
    result = linear_path_errors(a, b, [splits["test"]], tiny, points=4, progress=events.append)
    assert assert_monotone_to_total(events, "path") == [[(i, 4) for i in range(5)]]
    assert [e.figures["alpha"] for e in events[1:]] == result.alphas
    with pytest.raises(InvalidParameterError, match="progress"):
        linear_path_errors(a, b, [splits["test"]], tiny, points=4, progress=0.5)


# -- the latency-target search -------------------------------------------------------------------------


def test_latency_search_reports_its_way_to_the_goal(capsys):
    a, b = _groups(a=16, b=16)
    sites = [_site("la", "a", 4), _site("lb", "b", 8)]
    table = LatencyTable(timer=_hw_timer)
    goal = _total(sites) // 2
    events = []
    got = latency_keep_counts([a, b], _equal(a, b), sites, table, macs_goal=goal, exchange=False,
                              progress=events.append)
    (run,) = assert_monotone_to_total(events, "latency-search")
    assert run[0] == (0, 100) and run[-1] == (100, 100) and len(run) > 3  # several steps on the way
    assert events[-1].figures["macs"] == got.macs_after and events[-1].figures["moves"] == got.moves
    assert events[0].figures["latency_ms"] == got.latency_before_ms
    assert capsys.readouterr() == ("", "")
    quiet = latency_keep_counts([a, b], _equal(a, b), sites, table, macs_goal=goal)
    assert capsys.readouterr() == ("", "")
    drawn = latency_keep_counts([a, b], _equal(a, b), sites, table, macs_goal=goal, progress=True)
    out, err = capsys.readouterr()
    assert out == "" and "latency-search" in err and "100/100" in err
    assert drawn == quiet
    with pytest.raises(InvalidParameterError) as info:
        latency_keep_counts([a, b], _equal(a, b), sites, table, macs_goal=goal, progress=[])
    assert info.value.param == "progress"


def test_allocate_with_the_latency_policy_reports_its_search(capsys):
    sites = [_site("la", "a", 4), _site("lb", "b", 8)]
    scores = {"a": torch.arange(16.0), "b": torch.arange(16.0)}
    budget = prunekit.allocation.Budget(macs=_total(sites) // 2)
    events = []
    masks = prunekit.allocation.allocate(scores, budget, "latency", sites=sites,
                                        table=LatencyTable(timer=_hw_timer), progress=events.append)
    (run,) = assert_monotone_to_total(events, "latency-search")
    assert run[-1] == (100, 100)
    quiet = prunekit.allocation.allocate(scores, budget, "latency", sites=sites, table=LatencyTable(timer=_hw_timer))
    assert capsys.readouterr() == ("", "")
    assert all(torch.equal(masks[k], quiet[k]) for k in masks)
    with pytest.raises(InvalidParameterError) as info:
        prunekit.allocation.allocate(scores, budget, "latency", sites=sites, table=LatencyTable(timer=_hw_timer),
                                     progress="yes")
    assert info.value.param == "progress"


def test_latency_search_nests_under_structural_search_steps():
    events = []
    model, twin = _net(), _net()
    result = prunekit.structural_prune(model, X, latency_target=0.5, criterion="l2", allocation="latency",
                                       latency_table=LatencyTable(timer=_hw_timer), steps=2,
                                       progress=events.append)
    assert assert_monotone_to_total(events, "search") == [[(0, 2), (1, 2), (2, 2)]]
    searches = assert_monotone_to_total(events, "latency-search", parent="search")
    assert len(searches) == 2 and all(r[-1] == (100, 100) for r in searches)
    order = [(e.stage, e.done) for e in events if e.stage == "search" or e.done == 100]
    assert order == [("search", 0), ("latency-search", 100), ("search", 1), ("latency-search", 100), ("search", 2)]
    plain = prunekit.structural_prune(twin, X, latency_target=0.5, criterion="l2", allocation="latency",
                                      latency_table=LatencyTable(timer=_hw_timer), steps=2)
    assert plain.channels_after == result.channels_after


# -- pruning at initialisation -------------------------------------------------------------------------


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 3))


def test_iterative_synflow_reports_each_round(capsys):
    events = []
    result = prunekit.prune_at_init(mlp(), 0.9, "synflow", input_shape=(6,), rounds=5, progress=events.append)
    assert assert_monotone_to_total(events, "prune-at-init") == [[(i, 5) for i in range(6)]]
    assert [e.figures["sparsity"] for e in events[1:]] == pytest.approx(result.levels)
    assert [e.detail for e in events[1:]] == [f"round {k}" for k in range(1, 6)]
    assert capsys.readouterr() == ("", "")


def test_iterative_snip_bar_changes_nothing(capsys):
    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(8, 6, generator=g), torch.randint(0, 3, (8,), generator=g))]
    quiet, drawn = mlp(), mlp()
    prunekit.prune_at_init(quiet, 0.8, "snip", data=data, rounds=3)
    assert capsys.readouterr() == ("", "")
    prunekit.prune_at_init(drawn, 0.8, "snip", data=data, rounds=3, progress=True)
    out, err = capsys.readouterr()
    assert out == "" and "prune-at-init round 3" in err and "3/3" in err
    got = drawn.state_dict()
    assert got.keys() == quiet.state_dict().keys()
    assert all(torch.equal(got[k], v) for k, v in quiet.state_dict().items())


def test_prune_at_init_refuses_a_bad_progress_before_masking():
    model = mlp()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(InvalidParameterError) as info:
        prunekit.prune_at_init(model, 0.9, "synflow", input_shape=(6,), progress=object())
    assert info.value.param == "progress"
    assert model.state_dict().keys() == before.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())


def test_help_shows_progress_on_each_call():
    for call in (instability_analysis, linear_path_errors, latency_keep_counts, prunekit.prune_at_init):
        parameter = inspect.signature(call).parameters["progress"]
        assert parameter.default is None and "progress" in (call.__doc__ or "")
