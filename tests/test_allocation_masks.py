"""Allocation: how much is pruned where (local, global, counts, overrides, normalize, min_keep) and criteria."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import prunekit
from conftest import keep_mask, make_tiny


def _zeros(module, name="weight"):
    return int((~keep_mask(module, name)).sum())


@pytest.mark.parametrize("s", [0.0, 0.1, 0.33, 0.5, 0.9, 0.99])
def test_local_fraction_is_of_whole_tensor(tiny, s):
    prunekit.prune(tiny, s)
    for m in (tiny.conv, tiny.fc1, tiny.fc2):
        assert _zeros(m) == round(s * m.weight.numel())


def test_sparsity_is_of_total_not_remainder(tiny):
    prunekit.prune(tiny, 0.5)
    prunekit.prune(tiny, 0.75)
    assert _zeros(tiny.fc1) == round(0.75 * 2048)  # not 87.5%
    prunekit.prune(tiny, 0.3)  # lower: keeps what is pruned
    assert _zeros(tiny.fc1) == round(0.75 * 2048)
    prunekit.prune(tiny, 0.75)  # same again: no change
    assert _zeros(tiny.fc1) == round(0.75 * 2048)


def test_int_counts_are_units_afterwards(tiny):
    prunekit.prune(tiny, 10)
    assert [_zeros(m) for m in (tiny.conv, tiny.fc1, tiny.fc2)] == [10, 10, 10]
    prunekit.prune(tiny, 25)
    assert [_zeros(m) for m in (tiny.conv, tiny.fc1, tiny.fc2)] == [25, 25, 25]
    prunekit.prune(tiny, 3)
    assert _zeros(tiny.fc2) == 25
    prunekit.prune(tiny, 2, structure="channel", include="fc2")
    mask = keep_mask(tiny.fc2)
    assert int((~mask.any(1)).sum()) == 2


def test_int_count_global(tiny):
    prunekit.prune(tiny, 100, scope="global")
    total = sum(_zeros(m) for m in (tiny.conv, tiny.fc1, tiny.fc2))
    assert total == 100


def test_monotonic_masks_local_and_global(tiny):
    for scope in ("local", "global"):
        model = make_tiny(3)
        pruner = prunekit.Pruner(model, scope=scope)
        previous = None
        for s in (0.1, 0.3, 0.3, 0.6, 0.95):
            pruner.step(s)
            masks = torch.cat([keep_mask(m).reshape(-1) for m in (model.conv, model.fc1, model.fc2)])
            if previous is not None:
                assert bool((masks <= previous).all()), scope
            total = masks.numel()
            assert int((~masks).sum()) == round(s * total) or scope == "local"
            previous = masks


def test_global_element_exact_counts_with_half_ties():
    # s * total = 2.5: round() like torch.nn.utils.prune.global_unstructured (half to even) -> 2
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 1, bias=False), nn.Linear(5, 1, bias=False))
    theirs = [(m, "weight") for m in nn.Sequential(*[nn.Linear(5, 1, bias=False) for _ in range(2)])]
    with torch.no_grad():
        for (m, _), mine in zip(theirs, model):
            m.weight.copy_(mine.weight)
    prunekit.prune(model, 0.25, scope="global", min_keep=0)
    torch.nn.utils.prune.global_unstructured(theirs, torch.nn.utils.prune.L1Unstructured, amount=0.25)
    assert sum(_zeros(m) for m in model) == round(0.25 * 10) == 2
    for mine, (ref, _) in zip(model, theirs):
        assert torch.equal(mine.weight_mask, ref.weight_mask)


def _big_and_small():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 10, bias=False), nn.Linear(10, 10, bias=False))
    with torch.no_grad():
        w = model[0].weight
        w.copy_(torch.sign(w) * (1 + w.abs()))  # every |w| > 1 > every |w| of the second layer
    return model


def test_global_ranks_across_tensors():
    model = _big_and_small()
    small = model[0].weight.detach().abs().min()
    prunekit.prune(model, 0.5, scope="global")
    # min_keep=1 guards the largest entry of the second layer, so one big entry goes instead
    assert _zeros(model[1]) == 100 - 1 and _zeros(model[0]) == 1
    assert bool(model[0].weight_orig.detach().abs()[~keep_mask(model[0])] == small)


def test_global_min_keep_zero_can_empty_a_tensor():
    model = _big_and_small()
    prunekit.prune(model, 0.5, scope="global", min_keep=0)
    assert _zeros(model[0]) == 0 and _zeros(model[1]) == 100


def test_local_min_keep():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4))
    with pytest.raises(prunekit.InvalidParameterError):
        prunekit.prune(model, 1.0)
    prunekit.prune(model, 15)
    assert _zeros(model[0]) == 15
    prunekit.prune(model, 1.0, min_keep=0)
    assert _zeros(model[0]) == 16


def test_global_structured_exact_to_one_unit():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 16, 3), nn.Conv2d(16, 4, 1))
    prunekit.prune(model, 0.4, structure="channel", scope="global")
    total = sum(m.weight.numel() for m in model)
    pruned = sum(_zeros(m) for m in model)
    largest_unit = max(m.weight[0].numel() for m in model)
    assert abs(pruned - 0.4 * total) <= largest_unit / 2 + 1e-9
    for m in model:
        mask = keep_mask(m).flatten(1)
        assert bool((mask.all(1) | ~mask.any(1)).all())


@pytest.mark.parametrize("normalize", ["none", "max", "sum", "mean", "l2"])
def test_normalize_global_structured(normalize):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8))
    with torch.no_grad():
        model[0].weight.mul_(1000)
    prunekit.prune(model, 0.5, structure="channel", scope="global", normalize=normalize, min_keep=0)
    z0, z1 = _zeros(model[0]) // 8, _zeros(model[1]) // 8
    assert z0 + z1 == 8
    if normalize == "none":
        assert z0 == 0  # scale dominates
    else:
        assert 0 < z0 < 8 and 0 < z1 < 8  # scale-free ranking spreads the pruning


def test_overrides_with_global_rest(tiny):
    prunekit.prune(tiny, 0.5, scope="global", overrides={"conv": 0.1})
    assert _zeros(tiny.conv) == round(0.1 * tiny.conv.weight.numel())
    rest = tiny.fc1.weight.numel() + tiny.fc2.weight.numel()
    assert _zeros(tiny.fc1) + _zeros(tiny.fc2) == round(0.5 * rest)


def test_overrides_regex(tiny):
    prunekit.prune(tiny, 0.5, overrides={"re:^fc\\d$": 0.25})
    assert _zeros(tiny.fc1) == round(0.25 * 2048)
    assert _zeros(tiny.fc2) == round(0.25 * 128)
    assert _zeros(tiny.conv) == round(0.5 * tiny.conv.weight.numel())


def test_overrides_first_match_wins_and_shadowed_pattern_is_an_error(tiny):
    with pytest.raises(prunekit.InvalidParameterError, match="overrides"):
        prunekit.prune(tiny, 0.5, overrides={"fc*": 0.25, "fc1*": 0.9})
    assert not torch.nn.utils.prune.is_pruned(tiny)
    prunekit.prune(tiny, 0.5, overrides={"fc1*": 0.9, "fc*": 0.25})
    assert _zeros(tiny.fc1) == round(0.9 * 2048)
    assert _zeros(tiny.fc2) == round(0.25 * 128)


def test_compute_keep_masks_does_not_touch_model(tiny):
    from prunekit.criteria import create_criterion

    targets = prunekit.select_targets(tiny)
    keeps = prunekit.compute_keep_masks(targets, create_criterion("l1"), prunekit.create_structure("element"), 0.5)
    assert all(k.dtype == torch.bool and k.shape == t.shape for k, t in zip(keeps, targets))
    assert not torch.nn.utils.prune.is_pruned(tiny)
    assert all(t.state == "dense" for t in targets)


def test_check_sparsity():
    assert prunekit.check_sparsity(0.5) == 0.5
    assert prunekit.check_sparsity(3) == 3 and isinstance(prunekit.check_sparsity(3), int)
    for bad in (-1, 1.01, True, "0.5"):
        with pytest.raises(prunekit.InvalidParameterError):
            prunekit.check_sparsity(bad)


# -- criteria -----------------------------------------------------------------


def test_list_criteria():
    names = prunekit.list_criteria()
    for name in ("magnitude", "l2", "lnorm", "random"):
        assert name in names
    assert prunekit.list_criteria("l*") == [n for n in names if n.startswith("l")]


def test_l1_is_magnitude(tiny):
    import copy

    a, b = tiny, copy.deepcopy(tiny)
    prunekit.prune(a, 0.5, criterion="l1", structure="channel")
    prunekit.prune(b, 0.5, criterion="magnitude", structure="channel")
    for ma, mb in zip(a.modules(), b.modules()):
        if "weight_mask" in ma._buffers:
            assert torch.equal(ma.weight_mask, mb.weight_mask)


def test_lnorm_p_changes_structured_ranking():
    # channel 0: one big entry; channel 1: many medium entries
    model = nn.Sequential(nn.Linear(4, 2, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[3.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]]))
    import copy

    by = {}
    for crit in ("l1", "l2", "lnorm:3"):
        m = copy.deepcopy(model)
        prunekit.prune(m, 1, structure="channel", criterion=crit)
        by[crit] = int((~keep_mask(m[0]).any(1)).nonzero().item())
    assert by == {"l1": 0, "l2": 1, "lnorm:3": 1}  # L1: 3 < 4; L2: 3 > 2; L3: 3 > 1.587
    assert repr(prunekit.create_criterion("lnorm:3")) == "Magnitude(p=3)"
    assert prunekit.create_criterion("lnorm:2.5").p == 2.5


def test_random_criterion_seeded_and_reproducible():
    masks = []
    for _ in range(2):
        model = make_tiny(0)
        prunekit.prune(model, 0.5, criterion=prunekit.Random(seed=7))
        masks.append(keep_mask(model.fc1).clone())
    assert torch.equal(masks[0], masks[1])
    model = make_tiny(0)
    prunekit.prune(model, 0.5, criterion=prunekit.Random(seed=8))
    assert not torch.equal(keep_mask(model.fc1), masks[0])
    # random is not magnitude
    model = make_tiny(0)
    prunekit.prune(model, 0.5, criterion="l1")
    assert not torch.equal(keep_mask(model.fc1), masks[0])


def test_register_criterion_class():
    class Reverse(prunekit.Criterion):
        """Prunes the largest weights (a criterion to test the plumbing)."""

        def score(self, target):
            return -target.effective().abs()

    prunekit.register_criterion("reverse_test")(Reverse)
    try:
        assert "reverse_test" in prunekit.list_criteria()
        model = make_tiny(0)
        w = model.fc2.weight.detach().abs().clone()
        prunekit.prune(model, 0.25, criterion="reverse_test")
        mask = keep_mask(model.fc2)
        assert float(w[~mask].min()) >= float(w[mask].max())
        with pytest.raises(prunekit.InvalidParameterError):
            prunekit.register_criterion("reverse_test")(Reverse)
    finally:
        from prunekit.criteria.base import CRITERIA

        CRITERIA.unregister("reverse_test")


def test_function_and_instance_criteria():
    model = make_tiny(0)

    def by_index(target):
        return torch.arange(target.numel, dtype=torch.float32).reshape(target.shape)

    prunekit.prune(model, 0.5, criterion=by_index, include="fc2")
    mask = keep_mask(model.fc2).reshape(-1)
    assert not bool(mask[:64].any()) and bool(mask[64:].all())


def test_criterion_context_passed_to_prepare():
    seen = {}

    class NeedsData(prunekit.Criterion):
        requires = ("data",)

        def prepare(self, model, targets, **context):
            seen.update(context)

        def score(self, target):
            return target.effective().abs()

    model = make_tiny(0)
    prunekit.prune(model, 0.5, criterion=NeedsData(), context={"data": 123})
    assert seen == {"data": 123}


def test_overrides_without_sparsity_prune_only_the_named_targets():
    model = prunekit.create_model("tutorial_lenet")
    prunekit.prune(model, overrides={"fc1": 0.5, "conv2": 0.25})
    report = prunekit.sparsity_report(model)
    assert report["fc1.weight"].zeros == 24000
    assert report["conv2.weight"].zeros == 216
    assert report["fc2.weight"].zeros == 0 and report["conv1.weight"].zeros == 0
    with pytest.raises(prunekit.InvalidParameterError, match="^sparsity:"):
        prunekit.prune(prunekit.create_model("tutorial_lenet"))
