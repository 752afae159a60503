"""Global magnitude selection on the float bits (prunekit.allocation.magnitudes) against a plain sort."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import prunekit
from prunekit.allocation import magnitudes as mag
from prunekit.allocation.streaming import select_lowest
from prunekit.allocation.units import ScoreSet, global_keep


def reference_keep(tensors, budget, alive=None, min_keep=0):
    """Keep masks by the documented rule, with a full sort: dead entries first, the
    ``min_keep`` highest of each tensor last, then (|w|, tensor, index) order."""
    alive = alive or [None] * len(tensors)
    scores = []
    for t, a in zip(tensors, alive):
        s = t.detach().reshape(-1).double().abs()
        if a is not None:
            s[~a] = float("-inf")
        g = min(min_keep, s.numel())
        if g:
            s[s.argmax().reshape(1) if g == 1 else torch.topk(s, g).indices] = float("inf")
        scores.append(s)
    order = torch.sort(torch.cat(scores), stable=True).indices[:budget]
    keep = torch.ones(sum(s.numel() for s in scores), dtype=torch.bool)
    keep[order] = False
    return list(keep.split([s.numel() for s in scores]))


def fast_keep(tensors, budget, alive=None, min_keep=0):
    alive = alive or [None] * len(tensors)
    guards = [min(min_keep, t.numel()) for t in tensors]

    def guarded(i):
        s = tensors[i].detach().reshape(-1).float().abs()
        if alive[i] is not None:
            s[~alive[i]] = float("-inf")
        return s.argmax().reshape(1) if guards[i] == 1 else torch.topk(s, guards[i]).indices

    return mag.keep_largest_magnitudes(lambda i: tensors[i], [t.numel() for t in tensors], budget, alive,
                                       guards, guarded)


def assert_same(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert torch.equal(g, w)


def tied_tensors(seed=0, shapes=((40, 30), (7,), (25, 16))):
    """Weights from a few values of both signs: many ties at every threshold."""
    gen = torch.Generator().manual_seed(seed)
    values = torch.tensor([0.0, 0.25, -0.25, 0.5, -0.5, 1.0, -1.0, -0.0])
    return [values[torch.randint(0, len(values), s, generator=gen)] for s in shapes]


@pytest.fixture(params=["candidates", "threshold"])
def path(request, monkeypatch):
    """Both final passes: collected candidates of the boundary bin, or an exact boundary key
    (forced with a tiny candidate limit); bincount split in parts to exercise the threads."""
    if request.param == "threshold":
        monkeypatch.setattr(mag, "CANDIDATE_LIMIT", 3)
    monkeypatch.setattr(mag, "_SPLIT_MIN", 1)
    return request.param


@pytest.mark.parametrize("budget", [1, 250, 804, 1500, 1606])
def test_exact_count_and_order_on_normal_weights(path, budget):
    torch.manual_seed(0)
    tensors = [torch.randn(40, 30) * 0.02, torch.randn(7), torch.randn(25, 16) * 3]
    got = fast_keep(tensors, budget)
    assert sum(int((~k).sum()) for k in got) == budget
    assert_same(got, reference_keep(tensors, budget))


@pytest.mark.parametrize("budget", [1, 300, 642, 900, 1100, 1606])
def test_ties_at_the_threshold_taken_in_tensor_then_index_order(path, budget):
    tensors = tied_tensors()
    assert_same(fast_keep(tensors, budget), reference_keep(tensors, budget))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_targets(path, dtype):
    torch.manual_seed(1)
    tensors = [(torch.randn(50, 20) * 0.05).to(dtype), (torch.randn(30, 30)).to(dtype), torch.randn(100)]
    for budget in (10, 900, 1500):
        got = fast_keep(tensors, budget)
        assert sum(int((~k).sum()) for k in got) == budget
        assert_same(got, reference_keep(tensors, budget))


def test_all_equal_weights(path):
    tensors = [torch.full((30, 10), -0.5), torch.full((20,), 0.5)]
    assert_same(fast_keep(tensors, 161), reference_keep(tensors, 161))
    assert_same(fast_keep(tensors, 161, min_keep=1), reference_keep(tensors, 161, min_keep=1))


def test_zeros_already_present_are_pruned_first(path):
    torch.manual_seed(2)
    tensors = [torch.randn(30, 20), torch.randn(40)]
    tensors[0][:, :5] = 0.0
    tensors[1][::2] = -0.0
    got = fast_keep(tensors, 200)
    assert_same(got, reference_keep(tensors, 200))
    assert not bool(got[0].reshape(30, 20)[:, :5].any()) and not bool(got[1][::2].any())


@pytest.mark.parametrize("extra", [0, 1, 150, 600])
def test_dead_entries_count_first_and_stay_pruned(path, extra):
    tensors = tied_tensors(seed=3)
    gen = torch.Generator().manual_seed(4)
    alive = [torch.rand(t.numel(), generator=gen) > 0.3 for t in tensors]
    budget = sum(int((~a).sum()) for a in alive) + extra  # callers never ask for fewer than the dead
    got = fast_keep(tensors, budget, alive)
    assert_same(got, reference_keep(tensors, budget, alive))
    for k, a in zip(got, alive):
        assert not bool((k & ~a).any())


@pytest.mark.parametrize("min_keep", [1, 3])
def test_guard_of_a_tensor_below_the_boundary(path, min_keep):
    torch.manual_seed(5)
    # the middle tensor lies wholly below every entry of the others: only the guard keeps some of it
    tensors = [torch.randn(20, 20) + 10, torch.randn(50) * 1e-3, torch.randn(300) - 10]
    for budget in (10, 49, 60, 300):
        got = fast_keep(tensors, budget, min_keep=min_keep)
        assert_same(got, reference_keep(tensors, budget, min_keep=min_keep))
    assert int(got[1].sum()) == min_keep


def test_guard_of_a_tensor_of_zeros_and_of_a_dead_tensor(path):
    tensors = [torch.zeros(10), torch.randn(20), torch.randn(15)]
    alive = [None, None, torch.zeros(15, dtype=torch.bool)]
    budget = 15 + 12
    got = fast_keep(tensors, budget, alive, min_keep=1)
    assert_same(got, reference_keep(tensors, budget, alive, min_keep=1))
    assert int(got[0].sum()) == 1 and int(got[2].sum()) == 1


def test_budget_edges():
    tensors = [torch.randn(10), torch.randn(5)]
    assert all(bool(k.all()) for k in fast_keep(tensors, 0))
    assert not any(bool(k.any()) for k in fast_keep(tensors, 15))


def _sets(tensors, alive=None):
    alive = alive or [None] * len(tensors)
    return [ScoreSet(f"t{i}", t.detach().reshape(-1).float().abs(), alive=a, min_keep=1)
            for i, (t, a) in enumerate(zip(tensors, alive))]


def test_prune_global_magnitude_takes_this_path_and_matches_the_general_selection(monkeypatch):
    torch.manual_seed(6)
    model = nn.Sequential(nn.Linear(30, 20, bias=False), nn.Linear(20, 10, bias=False), nn.Linear(10, 4, bias=False))
    with torch.no_grad():
        model[1].weight.mul_(1e-3)  # mostly below the others: a real ranking across tensors
        model[2].weight[:, :3] = 0.0
    weights = [m.weight.detach().clone() for m in model]
    calls = []
    real = mag.keep_largest_magnitudes
    monkeypatch.setattr("prunekit.allocation.units.keep_largest_magnitudes",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    prunekit.prune(model, 0.5, criterion="magnitude", scope="global", mode="inplace")
    assert calls == [1]
    budget = round(0.5 * sum(w.numel() for w in weights))
    want = [k.reshape(-1) for k in global_keep(_sets(weights), 0.5)]  # scores given: the general selection
    got = [m.weight_mask.reshape(-1) for m in model]
    assert_same(got, want)
    assert sum(int((~k).sum()) for k in got) == budget
    # a second step: the dead entries count towards the new level
    alive = [k.clone() for k in got]
    prunekit.prune(model, 0.8, criterion="magnitude", scope="global", mode="inplace")
    assert calls == [1, 1]
    want = [k & a for k, a in zip(global_keep(_sets(weights, alive), 0.8), alive)]
    assert_same([m.weight_mask.reshape(-1) for m in model], want)


def test_reparam_mode_gives_the_same_masks():
    torch.manual_seed(7)
    a = nn.Sequential(nn.Linear(64, 32, bias=False), nn.Linear(32, 16, bias=False))
    b = nn.Sequential(nn.Linear(64, 32, bias=False), nn.Linear(32, 16, bias=False))
    b.load_state_dict(a.state_dict())
    prunekit.prune(a, 0.6, scope="global", mode="inplace")
    prunekit.prune(b, 0.6, scope="global", mode="reparam")
    for ma, mb in zip(a, b):
        assert torch.equal(ma.weight_mask, mb.weight_mask.bool())
        assert torch.equal(ma.weight, mb.weight)
    prunekit.prune(a, 0.75, scope="global", mode="inplace")
    prunekit.prune(b, 0.75, scope="global", mode="reparam")  # weight_orig keeps its values where pruned
    for ma, mb in zip(a, b):
        assert torch.equal(ma.weight_mask, mb.weight_mask.bool())
    assert sum(int((m.weight == 0).sum()) for m in b) == round(0.75 * (64 * 32 + 32 * 16))


@pytest.mark.parametrize("sparsity", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_nan_or_inf_is_an_error_naming_the_tensor(sparsity, bad):
    torch.manual_seed(8)
    model = nn.Sequential(nn.Linear(8, 8, bias=False), nn.Linear(8, 4, bias=False))
    with torch.no_grad():
        model[1].weight[2, 3] = bad
    with pytest.raises(prunekit.InvalidParameterError, match="NaN or inf in 1.weight"):
        prunekit.prune(model, sparsity, scope="global", mode="inplace", min_keep=0)
    assert not hasattr(model[0], "weight_mask")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_local_magnitude_on_the_bits_matches_the_general_selection(dtype):
    torch.manual_seed(9)
    model = nn.Sequential(nn.Linear(40, 30, bias=False), nn.Linear(30, 10, bias=False)).to(dtype)
    with torch.no_grad():
        model[0].weight[:5] = 0.25  # ties
    weights = [m.weight.detach().clone() for m in model]
    prunekit.prune(model, 0.4, criterion="magnitude", mode="inplace")
    prunekit.prune(model, 0.7, criterion="magnitude", mode="inplace")
    for m, w in zip(model, weights):
        first = ~local_selected(w, round(0.4 * w.numel()))
        second = ~local_selected(w, round(0.7 * w.numel()), alive=first) & first
        assert torch.equal(m.weight_mask.reshape(-1), second)
        assert int((m.weight == 0).sum()) == round(0.7 * w.numel())


def local_selected(w, k, alive=None):
    """The general selection (scores given, not bits): True where pruned."""
    s = w.reshape(-1).float().abs()
    if alive is not None:
        s[~alive] = float("-inf")
    return select_lowest(lambda _i: s, [s.numel()], k, nonnegative=True)[0]


def test_a_crowded_boundary_bin_takes_the_exact_threshold_pass(monkeypatch):
    calls = []
    real = mag._keep_by_threshold
    monkeypatch.setattr(mag, "_keep_by_threshold", lambda *a: calls.append(a[1]) or real(*a))
    tensors = tied_tensors(seed=10)
    assert_same(fast_keep(tensors, 700), reference_keep(tensors, 700))
    assert calls == []  # few enough entries in the boundary bin: ranked from the collected candidates
    monkeypatch.setattr(mag, "CANDIDATE_LIMIT", 3)
    assert_same(fast_keep(tensors, 700), reference_keep(tensors, 700))
    assert len(calls) == 1 and calls[0] == int(torch.tensor(0.25).view(torch.int32))  # the boundary key, exact
