"""prunekit.allocation.allocate: the one entry gives what each old path gave, and refuses what it cannot meet."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import pytest
import torch
from torch import nn

import prunekit
from prunekit.allocation import (
    Budget,
    allocate,
    compute_keep_masks,
    keep_counts,
    keep_nm,
    keep_per_row,
    latency_keep_counts,
    owl_sparsities,
    select_channels,
    sensitivity_sparsities,
)
from prunekit.criteria import create_criterion
from prunekit.deprecation import reset_warnings
from prunekit.errors import InvalidParameterError
from prunekit.measure.layer_latency import LatencyTable, LayerSite, LayerSpec
from prunekit.structures import NM, create_structure
from prunekit.targets import select_targets


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 16, 3), nn.Flatten(), nn.Linear(16, 10))


def _unit_inputs(structure: str):
    """Targets, the criterion, the structure, and the same scores as allocate's inputs."""
    model = _model()
    targets = select_targets(model)
    crit = create_criterion("magnitude")
    struct = create_structure(structure)
    scores = {t.name: struct.unit_scores(crit.score(t), t, crit.reduce).reshape(-1) for t in targets}
    sizes = {t.name: struct.unit_size(t) for t in targets}
    shapes = {t.name: tuple(t.shape) for t in targets}
    return targets, crit, struct, scores, sizes, shapes


def _expanded(keep, targets, struct):
    return [struct.expand(keep[t.name], t) for t in targets]


@pytest.mark.parametrize("structure", ["element", "channel"])
@pytest.mark.parametrize(
    ("policy", "sparsity", "normalize"),
    [("local", 0.37, "none"), ("global", 0.6, "none"), ("global", 0.6, "l2"), ("lamp", 0.7, "none"),
     ("erk", 0.8, "none"), ("global", 11, "none")],
)
def test_same_masks_as_the_pruner_path(structure, policy, sparsity, normalize) -> None:
    targets, crit, struct, scores, sizes, shapes = _unit_inputs(structure)
    old = compute_keep_masks(targets, crit, struct, sparsity, scope=policy, normalize=normalize)
    new = allocate(scores, Budget(sparsity=sparsity), policy, unit_sizes=sizes, shapes=shapes, normalize=normalize)
    for a, b in zip(old, _expanded(new, targets, struct)):
        assert torch.equal(a, b)


def test_local_is_exact_per_tensor_and_global_exact_to_one_unit() -> None:
    targets, _crit, struct, scores, sizes, _shapes = _unit_inputs("channel")
    keep = allocate(scores, 0.5, "local")
    for mask in keep.values():
        assert int((~mask).sum()) == round(0.5 * mask.numel())
    keep = allocate(scores, 0.5, "global", unit_sizes=sizes)
    total = sum(mask.numel() * sizes[n] for n, mask in keep.items())
    pruned = sum(int((~mask).sum()) * sizes[n] for n, mask in keep.items())
    assert abs(pruned - 0.5 * total) <= max(sizes.values()) / 2


def test_overrides_and_dead_units() -> None:
    scores = {"a": torch.arange(10.0), "b": torch.arange(10.0).flip(0)}
    keep = allocate(scores, 0.5, "global", overrides={"b": 0.2})
    assert keep["b"].tolist() == [True] * 8 + [False] * 2
    assert keep["a"].tolist() == [False] * 5 + [True] * 5  # the global budget is over the sets not overridden
    alive = {"a": torch.tensor([False] * 6 + [True] * 4), "b": torch.ones(10, dtype=torch.bool)}
    keep = allocate(scores, 0.3, "local", alive=alive)
    assert keep["a"].tolist() == [False] * 6 + [True] * 4  # dead units stay pruned, the request is below them
    assert int((~keep["b"]).sum()) == 3


# -- the channel-group rules ---------------------------------------------------------------------------


@dataclass
class _G:
    name: str
    size: int
    multiple: int = 1


def _ramps(*sizes: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return {f"g{i}": torch.rand(n, generator=gen) + 0.1 * i for i, n in enumerate(sizes)}


@pytest.mark.parametrize("policy", ["local", "global"])
@pytest.mark.parametrize(("round_to", "cap"), [(8, None), (None, 0.4), (4, 0.5)])
def test_same_channels_as_the_group_path(policy, round_to, cap) -> None:
    scores = _ramps(24, 40, 64)
    groups = [_G(k, s.numel()) for k, s in scores.items()]
    counts = keep_counts(groups, scores, 0.55, scope=policy, normalize="mean", max_layer_ratio=cap, round_to=round_to)
    old = select_channels(groups, scores, counts)
    new = allocate(scores, Budget(sparsity=0.55, round_to=round_to, max_layer_ratio=cap), policy, normalize="mean")
    for k, mask in new.items():
        assert torch.equal(torch.nonzero(mask).reshape(-1), old[k])
        kept = int(mask.sum())
        if round_to is not None and mask.numel() >= round_to:
            assert kept % round_to == 0, (k, kept)  # round_to multiples
        if cap is not None:
            assert mask.numel() - kept <= cap * mask.numel() + 1e-9  # the cap holds


def test_multiples_are_respected() -> None:
    scores = _ramps(12, 18)
    keep = allocate(scores, 0.5, "local", multiples={"g0": 3, "g1": 3})
    assert [int(m.sum()) % 3 for m in keep.values()] == [0, 0]


# -- min_keep, strictness and unreachable budgets ----------------------------------------------------


def test_min_keep_guards_every_set() -> None:
    scores = {"a": torch.arange(4.0), "b": torch.arange(6.0)}
    with pytest.raises(InvalidParameterError, match=r"^sparsity: .*min_keep=1"):
        allocate(scores, 1.0, "local")
    assert not any(m.any() for m in allocate(scores, Budget(sparsity=1.0, min_keep=0), "local").values())
    keep = allocate(scores, Budget(sparsity=0.6, min_keep=2), "global")
    assert all(int(m.sum()) >= 2 for m in keep.values())
    with pytest.raises(InvalidParameterError, match=r"^sparsity: expected a global budget of at most 6"):
        allocate(scores, Budget(sparsity=0.9, min_keep=2), "global")
    lowered = allocate(scores, Budget(sparsity=0.9, min_keep=2, strict=False), "global")
    assert [int(m.sum()) for m in lowered.values()] == [2, 2]


def test_unreachable_budgets_name_the_parameter() -> None:
    scores = {"a": torch.arange(4.0)}
    with pytest.raises(InvalidParameterError, match=r"^sparsity: expected a count of at most 4"):
        allocate(scores, 5, "local")
    with pytest.raises(InvalidParameterError, match=r"^sparsity: expected a float in \[0, 1\) "):
        allocate(scores, Budget(sparsity=1.0, round_to=2), "local")
    sites = [LayerSite("l", LayerSpec("conv2d", 4, 4, (1, 1), (1, 1), (0, 0), 1, (4, 4), 1, 0), (4, 4), {}, {"a": 1})]
    table = LatencyTable(timer=lambda spec: float(spec.out_ch))
    with pytest.raises(InvalidParameterError, match=r"^macs: "):
        allocate(scores, Budget(macs=1), "latency", sites=sites, table=table)
    with pytest.raises(InvalidParameterError, match=r"^latency_ms: "):
        allocate(scores, Budget(latency_ms=0.5), "latency", sites=sites, table=table)


def test_bad_input_is_refused() -> None:
    scores = {"a": torch.arange(4.0)}
    with pytest.raises(InvalidParameterError, match="^policy"):
        allocate(scores, 0.5, "globl")
    with pytest.raises(InvalidParameterError, match="^budget: expected exactly one"):
        Budget(sparsity=0.5, macs=10)
    with pytest.raises(InvalidParameterError, match=r"^unit_scores\['a'\]: expected finite"):
        allocate({"a": torch.tensor([1.0, float("nan")])}, 0.5)
    with pytest.raises(InvalidParameterError, match="^unit_sizes: expected keys of unit_scores"):
        allocate(scores, 0.5, "global", unit_sizes={"b": 3})
    with pytest.raises(InvalidParameterError, match="^budget: expected a sparsity"):
        allocate(scores, Budget(macs=3), "local")
    with pytest.raises(InvalidParameterError, match="^round_to"):
        Budget(sparsity=0.5, round_to=0)
    with pytest.raises(InvalidParameterError, match="^normalize"):
        allocate(scores, 0.5, "lamp", normalize="max")


# -- head-like units, one-shot rows, per-layer targets -------------------------------------------------


def _old_select_neurons(sizes, scores, ratio, scope):
    """What prunekit.surgery.head_importance.select_neurons computes (units to remove)."""
    if scope == "local":
        out = {}
        for k, n in sizes.items():
            order = sorted(range(n), key=lambda i: (float(scores[k][i]), i))
            out[k] = sorted(order[: min(round(ratio * n), n - 1)])
        return out
    pool = sorted((float(scores[k][i]), j, i, k) for j, (k, n) in enumerate(sizes.items()) for i in range(n))
    budget, left, chosen = round(ratio * sum(sizes.values())), dict(sizes), {k: [] for k in sizes}
    for _, _, i, k in pool:
        if budget == 0:
            break
        if left[k] > 1:
            chosen[k].append(i)
            left[k] -= 1
            budget -= 1
    return {k: sorted(v) for k, v in chosen.items()}


def _removed(keep):
    return {k: torch.nonzero(~m).reshape(-1).tolist() for k, m in keep.items()}


@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.8, 0.9])
@pytest.mark.parametrize("scope", ["local", "global"])
def test_head_like_units_match_the_head_selection(ratio, scope) -> None:
    gen = torch.Generator().manual_seed(3)
    heads = {("layer", 0): 4, ("layer", 1): 4, ("layer", 2): 4}  # any hashable key
    scores = {k: torch.rand(n, generator=gen) for k, n in heads.items()}
    head_params = {k: 16 * 64 * 4 for k in heads}  # head_dim x hidden x (q, k, v, out): equal per layer
    keep = allocate(scores, Budget(sparsity=ratio, strict=False), scope, unit_sizes=head_params)
    assert _removed(keep) == _old_select_neurons(heads, scores, ratio, scope)


def test_grouped_query_heads_as_unit_sets() -> None:
    # gqa="query": heads are chosen within each key/value group, every group losing the same number
    scores = torch.tensor([0.4, 0.1, 0.3, 0.2, 0.9, 0.8, 0.05, 0.7])  # 2 kv groups of 4 query heads
    per_group = {g: scores[4 * g: 4 * g + 4] for g in range(2)}
    keep = allocate(per_group, 0.5, "local")
    assert _removed(keep) == {0: [1, 3], 1: [2, 3]}
    # gqa="group": a kv group is one unit scored by its heads' sum
    keep = allocate({"layer": scores.view(2, 4).sum(1)}, 0.5, "local")
    assert _removed(keep) == {"layer": [0]}


def test_per_row_and_nm_are_the_one_shot_selection() -> None:
    gen = torch.Generator().manual_seed(4)
    scores = {"q": torch.rand(6, 16, generator=gen), "k": torch.rand(4, 8, generator=gen)}
    rows = allocate(scores, 0.5, "per_row")
    nm = allocate(scores, 0.5, "nm", nm=NM(2, 4))
    for k, s in scores.items():
        assert torch.equal(rows[k], keep_per_row(s, 0.5))
        assert torch.equal(nm[k], keep_nm(s, NM(2, 4)))
    with pytest.raises(InvalidParameterError, match="^sparsity"):
        allocate(scores, 0.25, "nm", nm=NM(2, 4))
    with pytest.raises(InvalidParameterError, match="^sparsity: expected a fraction"):
        allocate(scores, 3, "per_row")
    with pytest.raises(InvalidParameterError, match="^nm"):
        allocate(scores, 0.5, "nm")


def test_per_layer_targets_plug_in_as_overrides() -> None:
    scores = {f"b{i}": torch.arange(100.0) for i in range(3)}
    levels = owl_sparsities([0.01, 0.02, 0.03], 0.5, lam=0.1)
    keep = allocate(scores, 0.5, "local", overrides=dict(zip(scores, levels)))
    assert [int((~m).sum()) for m in keep.values()] == [60, 50, 40]
    drops = {"b0": ([0.0, 0.5, 1.0], [0.0, 0.1, 0.5]), "b1": ([0.0, 0.5, 1.0], [0.0, 0.01, 0.02])}
    targets = sensitivity_sparsities(drops, {"b0": 100, "b1": 100}, 0.6)
    assert targets["b1"] > targets["b0"] and sum(targets.values()) / 2 == pytest.approx(0.6)


def test_latency_policy_is_the_greedy() -> None:
    sites = [LayerSite(n, LayerSpec("conv2d", 4, 8, (1, 1), (1, 1), (0, 0), 1, (hw, hw), 1, 0), (hw, hw), {}, {n: 1})
             for n, hw in (("a", 4), ("b", 8))]
    table = LatencyTable(timer=lambda spec: float(spec.out_ch * spec.hw[0]))
    scores = {"a": torch.linspace(0.1, 1, 8), "b": torch.linspace(0.2, 2, 8)}
    goal = sum(s.macs({}) for s in sites) // 2
    keep = allocate(scores, Budget(macs=goal, round_to=2), "latency", normalize="sum", sites=sites, table=table)
    decided = latency_keep_counts([_G("a", 8), _G("b", 8)], scores, sites, table, macs_goal=goal, round_to=2)
    assert {k: int(m.sum()) for k, m in keep.items()} == decided.counts


# -- deprecated names ------------------------------------------------------------------------------


def test_old_names_warn_once_and_still_work() -> None:
    reset_warnings()
    import prunekit.measure as measure
    import prunekit.surgery.allocate as old_allocate
    from prunekit.analysis import sensitivity_analysis

    with pytest.warns(FutureWarning, match="prunekit.measure.sensitivity_analysis"):
        assert measure.sensitivity_analysis is sensitivity_analysis
    with pytest.warns(FutureWarning, match="prunekit.surgery.allocate.keep_counts"):
        assert old_allocate.keep_counts is keep_counts
    groups = [_G("g0", 10)]
    scores = {"g0": torch.arange(10.0)}
    with pytest.warns(FutureWarning, match=r"keep_counts\(ratio=...\)"):
        assert keep_counts(groups, scores, ratio=0.3) == keep_counts(groups, scores, 0.3)
    with pytest.warns(FutureWarning, match="check_ratio"):
        assert prunekit.allocation.check_ratio(0.5) == 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert keep_counts(groups, scores, 0.3) == {"g0": 7}
