"""Latency model (prunekit.measure.layer_latency) and latency-aware allocation
(prunekit.allocation.latency_keep_counts,
structural_prune(allocation="latency")), with injected timers so that every test is deterministic."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

import prunekit
from prunekit.errors import InvalidParameterError
from prunekit.surgery import find_groups, mask_groups
from prunekit.allocation import latency_keep_counts
from prunekit.coupling import Group
from prunekit.measure.layer_latency import LatencyTable, LayerSite, LayerSpec, layer_sites, predict_latency
from test_surgery_api import SmallResNet


def _site(name: str, group: str, hw: int, in_ch: int = 4, out_ch: int = 8) -> LayerSite:
    """A 1x1 conv whose output channels are group ``group``'s."""
    layer = LayerSpec("conv2d", in_ch, out_ch, (1, 1), (1, 1), (0, 0), 1, (hw, hw), 1, 0)
    return LayerSite(name, layer, (hw, hw), {}, {group: 1})


def _hw_timer(spec: LayerSpec) -> float:
    """ms = output channels x input height: large maps cost more per channel."""
    return float(spec.out_ch * spec.hw[0])


def _flat_timer(spec: LayerSpec) -> float:
    return float(spec.out_ch)


def _groups(**sizes: int) -> list[Group]:
    return [Group(name, size, ()) for name, size in sizes.items()]


def _equal(*groups: Group) -> dict[str, torch.Tensor]:
    return {g.name: torch.ones(g.size) for g in groups}


def _total(sites: list[LayerSite]) -> int:
    return sum(s.macs({}) for s in sites)


def test_greedy_picks_the_group_that_saves_most_latency_per_importance() -> None:
    a, b = _groups(a=8, b=8)
    # the same MACs per channel (a: 4 inputs on a 4x4 map, b: 1 input on 8x8), but b is slower per channel
    sites = [_site("la", "a", 4, in_ch=4), _site("lb", "b", 8, in_ch=1)]
    table = LatencyTable(timer=_hw_timer)
    got = latency_keep_counts([a, b], _equal(a, b), sites, table, macs_goal=_total(sites) - 1)
    assert got.counts == {"a": 8, "b": 7} and got.moves == 1
    # the same latencies, but b's channels matter 10x more: a goes first
    scores = {"a": torch.ones(8), "b": torch.full((8,), 10.0)}
    flat = LatencyTable(timer=_flat_timer)
    got = latency_keep_counts([a, b], scores, sites, flat, macs_goal=_total(sites) - 1, normalize="none")
    assert got.counts == {"a": 7, "b": 8}


def test_greedy_removes_the_lowest_scores_first_and_stops_at_the_target() -> None:
    a, b = _groups(a=8, b=8)
    sites = [_site("la", "a", 4), _site("lb", "b", 4)]
    table = LatencyTable(timer=_flat_timer)
    # a's lowest channels are cheap, then expensive: after three of a, b's channels are cheaper to lose
    scores = {"a": torch.tensor([0.1, 0.1, 0.1, 5, 5, 5, 5, 5.0]), "b": torch.ones(8)}
    per_channel = 4 * 4 * 4
    goal = _total(sites) - 5 * per_channel
    got = latency_keep_counts([a, b], scores, sites, table, macs_goal=goal, normalize="none")
    assert got.counts == {"a": 5, "b": 6}
    assert got.macs_after == goal and got.moves == 5  # stops as soon as the target is met
    assert got.latency_after_ms == pytest.approx(got.latency_before_ms - 5)


def test_latency_goal_and_the_caps() -> None:
    a, b = _groups(a=8, b=8)
    sites = [_site("la", "a", 4), _site("lb", "b", 8)]
    table = LatencyTable(timer=_hw_timer)
    full = predict_latency(sites, {}, table)
    got = latency_keep_counts([a, b], _equal(a, b), sites, table, latency_goal_ms=0.5 * full, max_layer_ratio=0.5)
    assert got.latency_after_ms <= 0.5 * full
    assert all(c >= 4 for c in got.counts.values())  # never more than half of a group
    assert got.counts["b"] == 4  # the cap stopped b, the cheaper-per-ms group a took the rest
    with pytest.raises(InvalidParameterError, match="latency_target"):
        latency_keep_counts([a, b], _equal(a, b), sites, table, latency_goal_ms=0.2 * full, max_layer_ratio=0.5)


def test_round_to_steps_and_the_floor() -> None:
    a, b, c = _groups(a=10, b=8, c=3)
    sites = [_site("la", "a", 4, out_ch=10), _site("lb", "b", 4), _site("lc", "c", 4, out_ch=3)]
    table = LatencyTable(timer=_flat_timer)
    got = latency_keep_counts([a, b, c], _equal(a, b, c), sites, table, macs_goal=704, round_to=4)
    assert got.counts == {"a": 4, "b": 4, "c": 3}  # multiples of 4, at least 4; c (< 4) left alone
    with pytest.raises(InvalidParameterError, match="macs_target"):
        latency_keep_counts([a, b, c], _equal(a, b, c), sites, table, macs_goal=703, round_to=4)


def test_default_normalisation_charges_the_fraction_of_a_group_removed() -> None:
    a, b = _groups(a=16, b=64)
    # a's channels are slower (8x8 map: 8 ms each) than b's (4x4 map: 4 ms each); all scores equal
    sites = [_site("la", "a", 8, out_ch=16), _site("lb", "b", 4, out_ch=64)]
    table = LatencyTable(timer=_hw_timer)
    goal = _total(sites) - 1  # one move of 8 channels
    # "sum" (default): 8 of 16 costs 1/2 of a, 8 of 64 costs 1/8 of b -> 64 / 0.5 < 32 / 0.125: b goes
    got = latency_keep_counts([a, b], _equal(a, b), sites, table, macs_goal=goal, round_to=8)
    assert got.counts == {"a": 16, "b": 56}
    # "mean": every move costs 8, so the latency term alone decides: half of a goes
    got = latency_keep_counts([a, b], _equal(a, b), sites, table, macs_goal=goal, round_to=8, normalize="mean")
    assert got.counts == {"a": 8, "b": 64}


def _staircase_timer(spec: LayerSpec) -> float:
    """Output channels cost in blocks of 16, as AVX-512 convolutions do: 56 and 64 outputs time alike."""
    return float(math.ceil(spec.out_ch / 16) * 16 * spec.hw[0] * spec.in_ch / 4)


def test_exchange_improves_latency_without_losing_importance() -> None:
    a, b = _groups(a=32, b=64)
    sites = [_site("la", "a", 4, in_ch=4, out_ch=32), _site("lb", "b", 4, in_ch=4, out_ch=64)]
    torch.manual_seed(0)
    scores = {"a": torch.rand(32) + 0.5, "b": torch.rand(64) + 0.5}
    goal = int(0.8 * _total(sites))

    def run(exchange: bool):
        return latency_keep_counts([a, b], scores, sites, LatencyTable(timer=_staircase_timer), macs_goal=goal,
                                   round_to=8, exchange=exchange)

    def kept(counts: dict[str, int]) -> float:  # the sum-normalised importance kept (1 layer per group)
        return sum(float(torch.sort(scores[n], descending=True).values[:k].sum() / scores[n].sum())
                   for n, k in counts.items())

    greedy, exchanged = run(False), run(True)
    # 8 at a time, b's first steps (64 -> 56 -> 48) save nothing on the staircase, so the greedy empties a
    assert greedy.counts == {"a": 8, "b": 64}
    assert exchanged.counts == {"a": 32, "b": 32}
    assert exchanged.latency_after_ms < greedy.latency_after_ms
    assert kept(exchanged.counts) > kept(greedy.counts)
    assert exchanged.macs_after <= goal and exchanged.moves > greedy.moves


def test_sum_normalisation_counts_a_group_once_per_layer_it_sets() -> None:
    a, b = _groups(a=16, b=16)
    # a sets the output width of one layer and the input width of another, b the output of one; with the
    # flat timer (ms = output channels) a move saves 8 ms in either group
    consumer = LayerSpec("conv2d", 16, 8, (1, 1), (1, 1), (0, 0), 1, (4, 4), 1, 0)
    sites = [_site("la", "a", 4, out_ch=16), LayerSite("la_next", consumer, (4, 4), {"a": 1}, {}),
             _site("lb", "b", 4, out_ch=16)]
    table = LatencyTable(timer=_flat_timer)
    goal = _total(sites) - 1
    # "sum": a's move costs half of a group counted twice (1.0), b's half of one counted once (0.5): b goes
    got = latency_keep_counts([a, b], _equal(a, b), sites, table, macs_goal=goal, round_to=8, exchange=False)
    assert got.counts == {"a": 16, "b": 8}
    # "mean": both cost 8 for 8 ms; the tie goes to the larger MAC saving, a's (two layers)
    got = latency_keep_counts([a, b], _equal(a, b), sites, table, macs_goal=goal, round_to=8, exchange=False,
                              normalize="mean")
    assert got.counts == {"a": 8, "b": 16}


def test_structural_prune_default_normalisation_depends_on_the_allocation() -> None:
    def run(**options):
        model = _net()
        return prunekit.structural_prune(model, X, macs_target=0.6, criterion="l2", **options).channels_after

    latency = dict(allocation="latency", round_to=2)
    default = run(**latency, latency_table=LatencyTable(timer=_hw_timer))
    assert default == run(**latency, latency_table=LatencyTable(timer=_hw_timer), normalize="sum")
    assert default != run(**latency, latency_table=LatencyTable(timer=_hw_timer), normalize="mean")
    assert run(scope="global") == run(scope="global", normalize="mean")
    assert run(scope="global") != run(scope="global", normalize="sum")


def test_bad_arguments_of_the_allocation() -> None:
    a, = _groups(a=8)
    sites = [_site("la", "a", 4)]
    table = LatencyTable(timer=_flat_timer)
    for kwargs in (dict(), dict(macs_goal=10, latency_goal_ms=1.0), dict(macs_goal=10, round_to=0),
                   dict(macs_goal=10, normalize="median"), dict(macs_goal=10, max_layer_ratio=2.0)):
        with pytest.raises(InvalidParameterError):
            latency_keep_counts([a], _equal(a), sites, table, **kwargs)
    with pytest.raises(InvalidParameterError, match="scores"):
        latency_keep_counts([a], {"a": torch.ones(3)}, sites, table, macs_goal=10)


def test_table_caches_and_round_trips_through_json(tmp_path) -> None:
    calls = []

    def timer(spec: LayerSpec) -> float:
        calls.append(spec)
        return 1.5

    path = tmp_path / "table.json"
    table = LatencyTable(batch_size=64, threads=2, timer=timer, path=path)
    spec = LayerSpec("conv2d", 16, 32, (3, 3), (2, 2), (1, 1), 1, (32, 32), 64, 2)
    assert table(spec) == 1.5 and table(spec) == 1.5
    assert len(calls) == 1 and (table.hits, table.misses) == (1, 1)
    table.save()
    again = LatencyTable(batch_size=64, threads=2, timer=timer, path=path)
    assert again(spec) == 1.5 and len(calls) == 1 and again.misses == 0
    assert LayerSpec.from_key(spec.key()) == spec
    with pytest.raises(InvalidParameterError):
        LatencyTable(timer=lambda s: float("nan"))(spec)
    for bad in (dict(batch_size=0), dict(threads=0), dict(repeats=0), dict(timer="fast")):
        with pytest.raises(InvalidParameterError):
            LatencyTable(**bad)


def test_table_times_a_real_layer() -> None:
    table = LatencyTable(batch_size=2, threads=1, warmup=1, repeats=3)
    ms = table(LayerSpec("conv2d", 4, 8, (3, 3), (1, 1), (1, 1), 1, (8, 8), 2, 1))
    assert math.isfinite(ms) and ms > 0
    assert table(LayerSpec("linear", 8, 5, (1, 1), (1, 1), (0, 0), 1, (1, 1), 2, 1)) > 0


class Net(SmallResNet):
    """test_surgery_api's small ResNet with a depthwise conv before the pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.dw = nn.Conv2d(24, 24, 3, padding="same", groups=24)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn0(self.stem(x)))
        x = torch.relu(x + self.b2(self.c2(torch.relu(self.b1(self.c1(x))))))
        x = self.dw(torch.relu(self.b3(self.c3(x))))
        return self.fc(x.mean((2, 3)))


def _net(seed: int = 0) -> Net:
    torch.manual_seed(seed)
    model = Net()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.2, 1.5)
    return model.eval()


X = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))


def test_layer_sites_know_the_groups_and_count_the_macs() -> None:
    model = _net()
    sites = {s.name: s for s in layer_sites(model, X, find_groups(model, X))}
    assert set(sites) == {"stem", "c1", "c2", "c3", "dw", "fc"}
    assert sites["c2"].in_terms == {"c1": 1} and sites["c2"].out_terms == {"stem": 1}
    assert sites["c3"].layer.hw == (8, 8) and sites["dw"].layer.hw == (4, 4) and sites["dw"].layer.padding == (1, 1)
    assert sites["dw"].depthwise and sites["dw"].widths({"c3": 8}) == (16, 16, 16)
    assert sites["c2"].widths({"c1": 4, "stem": 2}) == (12, 14, 1)
    counted = prunekit.measure.count_macs(model, X, norms=False).dense_macs
    assert sum(s.macs({}) for s in sites.values()) == counted


def test_structural_prune_latency_allocation_reaches_the_target() -> None:
    model = _net()
    twin = copy.deepcopy(model)
    twin_groups = find_groups(twin, X)
    table = LatencyTable(timer=_hw_timer)
    result = prunekit.structural_prune(model, X, macs_target=0.6, criterion="l2", allocation="latency",
                                       latency_table=table, round_to=4)
    assert result.scope == "latency" and 0.4 < result.macs_ratio <= 0.6
    assert all(c % 4 == 0 for c in result.channels_after.values())
    before, after = result.latency_model_ms
    assert after < before
    assert prunekit.measure.count_macs(model, X, norms=False).dense_macs == result.macs_after
    mask_groups(twin, {k: torch.tensor(v) for k, v in result.records[0].kept.items()}, twin_groups)
    torch.testing.assert_close(model(X), twin(X), rtol=1e-4, atol=1e-5)
    # the latency target, in two steps
    model = _net()
    result = prunekit.structural_prune(model, X, latency_target=0.5, criterion="l2", allocation="latency",
                                       latency_table=LatencyTable(timer=_hw_timer), steps=2)
    before, after = result.latency_model_ms
    assert len(result.records) == 2 and after <= 0.5 * before


def test_structural_prune_latency_errors_change_nothing() -> None:
    model = _net()
    ref = copy.deepcopy(model.state_dict())
    table = LatencyTable(timer=_hw_timer)
    bad = [
        dict(allocation="latency", sparsity=0.5, latency_table=table),
        dict(allocation="latency", latency_table=table),
        dict(allocation="latency", macs_target=0.5, latency_target=0.5, latency_table=table),
        dict(allocation="latency", latency_target=0.0, latency_table=table),
        dict(allocation="latency", latency_target=True, latency_table=table),
        dict(allocation="latency", macs_target=0.5, latency_table={"a": 1}),
        dict(allocation="latency", macs_target=0.5, latency_table=table, criterion="thinet", data=[(X, None)]),
        dict(allocation="latency", macs_target=0.01, latency_table=table, max_layer_ratio=0.5),
        dict(allocation="latency", macs_target=0.01, latency_table=table, max_layer_ratio=0.5, steps=3),
        dict(allocation="knapsack", macs_target=0.5),
        dict(macs_target=0.5, latency_target=0.5),
        dict(sparsity=0.5, latency_table=table),
    ]
    for kwargs in bad:
        with pytest.raises(InvalidParameterError):
            prunekit.structural_prune(model, X, **kwargs)
        for k, v in model.state_dict().items():
            assert torch.equal(v, ref[k]), (kwargs, k)


def test_public_names():
    import prunekit.surgery

    assert prunekit.surgery.LatencyTable is LatencyTable and "LatencyTable" in prunekit.surgery.__all__
