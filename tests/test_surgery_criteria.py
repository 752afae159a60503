"""Group criteria (prunekit.surgery.importance), the allocation of kept channels
(prunekit.allocation.groups) and the BN L1 regulariser, on tiny hand-made models."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import prunekit
from prunekit.errors import InvalidParameterError
from prunekit.surgery import Group, find_groups, prune_groups
from prunekit.allocation import allocate_channels as allocate, keep_counts
from prunekit.scores import create_score, list_scores
from prunekit.scores.groups import (
    GroupMagnitude,
    create_group_criterion,
    greedy_removal_order,
    least_squares_scales,
)
from prunekit.surgery.regularizers import bn_l1_penalty, slimming_loss


class ConvBN(nn.Module):
    """conv(2->4) -> BN -> ReLU -> conv(4->3) -> pool -> fc: one prunable group of 4 channels."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(torch.relu(self.bn(self.conv1(x)))).mean((2, 3))


class MLP(nn.Module):
    def __init__(self, d_in: int = 2, hidden: int = 3, d_out: int = 1) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_in, hidden)
        self.fc2 = nn.Linear(hidden, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.fc1(x))


def _one_group(model: nn.Module, x: torch.Tensor) -> Group:
    groups = find_groups(model, x)
    assert len(groups) == 1
    return groups[0]


def _x() -> torch.Tensor:
    return torch.randn(2, 2, 6, 6, generator=torch.Generator().manual_seed(0))


# -- criteria ---------------------------------------------------------------------------------


def test_registry_lists_every_criterion() -> None:
    assert set(list_scores(unit_space="group")) == {"magnitude", "l2", "slimming", "taylor", "hrank", "thinet", "random"}
    with pytest.raises(InvalidParameterError, match="score"):
        create_score("l3", "group")


def test_group_magnitude_is_l1_and_the_old_names_still_work() -> None:
    torch.manual_seed(0)
    model = ConvBN()
    g = _one_group(model, _x())
    magnitude = create_score("magnitude", "group")(model, [g])[g.name]
    torch.testing.assert_close(create_score("l1", "group")(model, [g])[g.name], magnitude)
    prunekit.deprecation.reset_warnings()
    with pytest.warns(FutureWarning, match="create_group_criterion"):
        old = create_group_criterion("l1")
    torch.testing.assert_close(old(model, [g])[g.name], magnitude)
    with pytest.warns(FutureWarning, match="list_group_criteria"):
        assert prunekit.surgery.list_group_criteria() == list_scores(unit_space="group")
    with pytest.warns(FutureWarning, match="batches"):
        crit = create_score("hrank", "group", batches=[(_x(), torch.zeros(2))])
    assert len(crit.batches) == 1
    with pytest.raises(InvalidParameterError, match="batches"):
        create_score("hrank", "group", data=[(_x(), None)], batches=[(_x(), None)])


def test_magnitude_sums_producer_norm_and_consumer_entries() -> None:
    torch.manual_seed(0)
    model = ConvBN()
    with torch.no_grad():
        model.bn.weight.copy_(torch.tensor([1.0, -2.0, 0.5, 3.0]))
        model.bn.bias.copy_(torch.tensor([0.1, 0.2, -0.3, 0.0]))
    g = _one_group(model, _x())
    expected = (model.conv1.weight.abs().sum((1, 2, 3)) + model.bn.weight.abs() + model.bn.bias.abs()
                + model.conv2.weight.abs().sum((0, 2, 3)))
    l1 = create_score("l1", "group")(model, [g])[g.name]
    torch.testing.assert_close(l1, expected.detach())
    sq = (model.conv1.weight.pow(2).sum((1, 2, 3)) + model.bn.weight.pow(2) + model.bn.bias.pow(2)
          + model.conv2.weight.pow(2).sum((0, 2, 3)))
    torch.testing.assert_close(create_score("l2", "group")(model, [g])[g.name], sq.sqrt().detach())
    # the filters alone (Li et al. 2017)
    only_out = GroupMagnitude(1, roles=("out",))(model, [g])[g.name]
    torch.testing.assert_close(only_out, model.conv1.weight.abs().sum((1, 2, 3)).detach())
    with pytest.raises(InvalidParameterError, match="roles"):
        GroupMagnitude(1, roles=("weights",))


def test_slimming_removes_the_zero_gamma_channel_first() -> None:
    torch.manual_seed(0)
    model = ConvBN()
    with torch.no_grad():
        model.bn.weight.copy_(torch.tensor([0.7, 0.0, -0.9, 0.3]))
    g = _one_group(model, _x())
    scores = create_score("slimming", "group")(model, [g])
    torch.testing.assert_close(scores[g.name], torch.tensor([0.7, 0.0, 0.9, 0.3]))
    keep = allocate([g], scores, 0.25)
    assert keep[g.name].tolist() == [0, 2, 3]
    keep = allocate([g], scores, 0.5)
    assert keep[g.name].tolist() == [0, 2]


def test_slimming_refuses_groups_without_batchnorm() -> None:
    model = MLP()
    g = _one_group(model, torch.randn(4, 2))
    with pytest.raises(InvalidParameterError, match="slimming"):
        create_score("slimming", "group")(model, [g])


def test_taylor_matches_hand_computed_w_times_grad() -> None:
    torch.manual_seed(0)
    model = MLP(2, 3, 1)
    x = torch.tensor([[1.0, 2.0]])
    g = _one_group(model, x)

    def loss_fn(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return logits.sum()

    crit = create_score("taylor", "group", data=[(x, torch.zeros(1))], loss_fn=loss_fn)
    got = crit(model, [g])[g.name]
    # L = v·(W x + b) + c: dL/dW[c] = v_c x, dL/db_c = v_c, dL/dv_c = h_c = W[c]·x + b_c
    w, b, v = model.fc1.weight.detach(), model.fc1.bias.detach(), model.fc2.weight.detach()[0]
    h = w @ x[0] + b
    expected = ((w * v[:, None] * x[0]).sum(1) + b * v + v * h).abs()
    torch.testing.assert_close(got, expected)
    assert model.fc1.weight.grad is None  # gradients left as they were


def test_taylor_and_hrank_need_data() -> None:
    for name in ("taylor", "hrank", "thinet"):
        with pytest.raises(InvalidParameterError, match="data"):
            create_score(name, "group")


class Identity1x1(nn.Module):
    """A 1×1 conv that copies its 3 input channels, then a consumer conv."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 3, 1, bias=False)
        self.conv2 = nn.Conv2d(3, 2, 1)
        with torch.no_grad():
            self.conv1.weight.copy_(torch.eye(3).reshape(3, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x)).mean((2, 3))


def _map_of_rank(rank: int, gen: torch.Generator) -> torch.Tensor:
    return torch.randn(8, rank, generator=gen) @ torch.randn(rank, 8, generator=gen)


def test_hrank_scores_are_feature_map_ranks() -> None:
    gen = torch.Generator().manual_seed(0)
    images = torch.stack([torch.stack([_map_of_rank(r, gen) for r in (4, 1, 2)]) for _ in range(3)])
    model = Identity1x1()
    g = _one_group(model, images[:1])
    scores = create_score("hrank", "group", data=[(images, torch.zeros(3))])(model, [g])[g.name]
    torch.testing.assert_close(scores, torch.tensor([4.0, 1.0, 2.0]))
    assert allocate([g], {g.name: scores}, 0.34)[g.name].tolist() == [0, 2]


def test_thinet_greedy_order_and_least_squares() -> None:
    # channels 0 and 1 cancel each other; channel 2 is large; 3 is small
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(200, generator=gen)
    x = torch.stack([a, -a, 5 * torch.randn(200, generator=gen), 0.1 * torch.randn(200, generator=gen)], 1)
    order = greedy_removal_order(x).tolist()
    assert order[0] == 3 and set(order[1:3]) == {0, 1} and order[3] == 2
    scales = least_squares_scales(x, torch.tensor([2, 3]))
    y = x.sum(1)
    err_scaled = (y - x[:, [2, 3]] @ scales).pow(2).sum()
    err_plain = (y - x[:, [2, 3]].sum(1)).pow(2).sum()
    assert err_scaled <= err_plain


def test_thinet_rescaling_reduces_reconstruction_error() -> None:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    model = MLP(6, 8, 4)
    # correlated hidden units: the kept ones can stand in for the removed ones
    base = torch.randn(256, 3, generator=gen)
    x = torch.cat([base, base + 0.05 * torch.randn(256, 3, generator=gen)], 1)
    g = _one_group(model, x[:2])
    ref = model(x).detach()
    outputs = {}
    for rescale in (False, True):
        m = MLP(6, 8, 4)
        m.load_state_dict(model.state_dict())
        groups = find_groups(m, x[:2])
        crit = create_score("thinet", "group", data=[(x, torch.zeros(256))], rescale=rescale, samples=4096)
        scores = crit(m, groups)
        keep = allocate(groups, scores, 0.5)
        crit.after_selection(m, groups, keep)
        prune_groups(m, keep, groups)
        outputs[rescale] = m(x).detach()
    err = {k: (v - ref).pow(2).mean().item() for k, v in outputs.items()}
    assert err[True] < err[False]
    assert g.size == 8


def test_thinet_refuses_grouped_consumers() -> None:
    model = nn.Sequential(nn.Conv2d(2, 4, 1), nn.ReLU(), nn.Conv2d(4, 4, 3, groups=2), nn.Flatten(), nn.LazyLinear(2))
    x = torch.randn(1, 2, 5, 5)
    model(x)
    groups = [g for g in find_groups(model, x) if any(s.name == "2" and s.role == "in" for s in g.slices)]
    crit = create_score("thinet", "group", data=[(x, torch.zeros(1))])
    with pytest.raises(InvalidParameterError, match="groups=2"):
        crit(model, groups)


def test_random_is_seeded() -> None:
    model = MLP(2, 5, 1)
    g = _one_group(model, torch.randn(1, 2))
    a = create_score("random", "group")(model, [g])[g.name]
    b = create_score("random", "group")(model, [g])[g.name]
    c = create_score("random", "group", seed=1)(model, [g])[g.name]
    assert torch.equal(a, b) and not torch.equal(a, c)


# -- allocation ----------------------------------------------------------------------------------


def _groups(*sizes: int, multiple: int = 1) -> list[Group]:
    return [Group(f"g{i}", size, (), multiple) for i, size in enumerate(sizes)]


def _ramp(groups: list[Group], scale: dict[str, float] | None = None) -> dict[str, torch.Tensor]:
    return {g.name: torch.arange(1, g.size + 1, dtype=torch.float32) * (scale or {}).get(g.name, 1.0) for g in groups}


def test_local_counts_are_exact() -> None:
    groups = _groups(10, 7, 16)
    counts = keep_counts(groups, _ramp(groups), 0.3)
    assert counts == {"g0": 7, "g1": 5, "g2": 11}  # round(3), round(2.1), round(4.8)
    keep = allocate(groups, _ramp(groups), 0.3)
    assert keep["g0"].tolist() == [3, 4, 5, 6, 7, 8, 9]  # the highest scores, sorted
    assert keep_counts(groups, _ramp(groups), 0.0) == {"g0": 10, "g1": 7, "g2": 16}


def test_never_removes_every_channel() -> None:
    groups = _groups(1, 3, 8, multiple=1)
    counts = keep_counts(groups, _ramp(groups), 0.99)
    assert counts == {"g0": 1, "g1": 1, "g2": 1}
    counts = keep_counts(groups, _ramp(groups), 0.99, scope="global")
    assert all(c >= 1 for c in counts.values())


def test_global_ranks_across_groups_and_normalises() -> None:
    groups = _groups(4, 4)
    scores = _ramp(groups, {"g0": 1.0, "g1": 10.0})
    raw = keep_counts(groups, scores, 0.5, scope="global", normalize="none")
    assert raw == {"g0": 1, "g1": 3}  # scores 1, 2, 3 (g0 keeps its last channel), then 10 (g1)
    norm = keep_counts(groups, scores, 0.5, scope="global", normalize="mean")
    assert norm == {"g0": 2, "g1": 2}  # same shape after normalisation
    assert sum(raw.values()) == sum(norm.values()) == 4  # total exact


def test_per_layer_cap_moves_removal_elsewhere() -> None:
    groups = _groups(4, 4)
    scores = _ramp(groups, {"g0": 1.0, "g1": 10.0})
    counts = keep_counts(groups, scores, 0.5, scope="global", normalize="none", max_layer_ratio=0.5)
    assert counts == {"g0": 2, "g1": 2}
    counts = keep_counts(_groups(10), _ramp(_groups(10)), 0.8, max_layer_ratio=0.25)
    assert counts == {"g0": 8}  # floor(2.5) removed at most
    with pytest.raises(InvalidParameterError, match="max_layer_ratio"):
        keep_counts(groups, scores, 0.5, max_layer_ratio=1.5)


def test_round_to_and_group_multiple() -> None:
    groups = _groups(64, 20, 3)
    counts = keep_counts(groups, _ramp(groups), 0.3, round_to=8)
    # 64 -> 45 kept -> 48; 20 -> 14 -> 16; 3 < 8 stays 2
    assert counts == {"g0": 48, "g1": 16, "g2": 2}
    assert keep_counts(_groups(64, multiple=4), _ramp(_groups(64)), 0.3) == {"g0": 44}
    # rounding down would break the cap: rounds up instead
    assert keep_counts(_groups(64), _ramp(_groups(64)), 0.3, round_to=8, max_layer_ratio=0.3) == {"g0": 48}
    with pytest.raises(InvalidParameterError, match="round_to"):
        keep_counts(groups, _ramp(groups), 0.3, round_to=0)


def test_base_sizes_make_steps_cumulative() -> None:
    # a group already down from 10 to 8 asked for 50% of the original keeps 5
    g = _groups(8)
    assert keep_counts(g, _ramp(g), 0.5, base_sizes={"g0": 10}) == {"g0": 5}
    assert keep_counts(g, _ramp(g), 0.1, base_sizes={"g0": 10}) == {"g0": 8}  # never grows back


def test_allocation_rejects_bad_input() -> None:
    groups = _groups(4)
    with pytest.raises(InvalidParameterError, match="sparsity"):
        allocate(groups, _ramp(groups), 1.0)
    with pytest.raises(InvalidParameterError, match="scope"):
        allocate(groups, _ramp(groups), 0.5, scope="layer")
    with pytest.raises(InvalidParameterError, match="scores"):
        allocate(groups, {}, 0.5)
    with pytest.raises(InvalidParameterError, match="scores"):
        allocate(groups, {"g0": torch.tensor([1.0, float("nan"), 2.0, 3.0])}, 0.5)


# -- regulariser -------------------------------------------------------------------------------------


def test_bn_l1_penalty_value_and_training_effect() -> None:
    torch.manual_seed(0)
    model = ConvBN()
    with torch.no_grad():
        model.bn.weight.copy_(torch.tensor([1.0, -2.0, 0.5, 3.0]))
    torch.testing.assert_close(bn_l1_penalty(model, 0.1), torch.tensor(0.65))
    assert float(bn_l1_penalty(nn.Linear(2, 2), 0.1)) == 0.0
    with pytest.raises(InvalidParameterError, match="lam"):
        bn_l1_penalty(model, -1.0)
    x = torch.randn(16, 2, 6, 6, generator=torch.Generator().manual_seed(2))
    y = torch.randint(0, 3, (16,), generator=torch.Generator().manual_seed(3))
    norms = {}
    for lam in (0.0, 0.05):
        torch.manual_seed(0)
        m = ConvBN()
        prunekit.fit(m, [(x, y)] * 8, epochs=1, lr=0.1, loss_fn=slimming_loss(m, lam))
        norms[lam] = float(m.bn.weight.detach().abs().sum())
    assert norms[0.05] < norms[0.0] - 0.3


@pytest.mark.parametrize("mode", ["reparam", "inplace"])
def test_magnitude_reads_masked_weights(mode: str) -> None:
    torch.manual_seed(0)
    model = ConvBN()
    prunekit.prune(model, 0.5, criterion="l2", structure="channel", include="conv1", mode=mode)
    zeroed = (model.conv1.weight.detach().abs().sum((1, 2, 3)) == 0).nonzero().reshape(-1)
    assert zeroed.numel() == 2
    g = _one_group(model, _x())
    scores = GroupMagnitude(1, roles=("out",))(model, [g])[g.name]
    assert torch.all(scores[zeroed] == 0) and int((scores > 0).sum()) == 2
    assert sorted(allocate([g], {g.name: scores}, 0.5)[g.name].tolist()) == sorted(
        set(range(4)) - set(zeroed.tolist()))


def test_group_and_head_scores_are_entries_of_the_one_registry() -> None:
    from prunekit.scores import score_entry

    for name, needs in {"magnitude": "nothing", "l2": "nothing", "random": "nothing", "slimming": "nothing",
                        "taylor": "gradients", "hrank": "batches", "thinet": "batches"}.items():
        assert score_entry(name).needs["group"] == needs
    assert {"head", "neuron"} <= set(score_entry("magnitude").unit_spaces)
    assert score_entry("gradient").needs["head"] == "gradients"
    assert isinstance(create_score("l1", "group"), GroupMagnitude) and create_score("l1", "group").p == 1
    with pytest.raises(InvalidParameterError, match="group"):
        create_score("gradient", "group")  # a head score only
