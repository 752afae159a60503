"""A structure defined outside prunekit is used by prune(structure=...) once registered
(prunekit.register_structure): whole units, the requested fraction, lowest scores removed."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import prunekit
from conftest import assert_unchanged, keep_mask, snapshot
from prunekit.structures import unregister_structure


class RowPairs(prunekit.Structure):
    """Units are pairs of consecutive outputs (rows 2k and 2k+1 of a Linear weight,
    filters 2k and 2k+1 of a convolution)."""

    def check(self, target: prunekit.Target) -> None:
        outputs = target.shape[target.out_dim]
        if outputs % 2:
            raise prunekit.InvalidParameterError(
                "structure", "an even number of outputs for 'row_pairs'", f"{target.name} with {outputs}",
                f"Fix: exclude {target.name!r}.",
            )

    def _units(self, tensor: torch.Tensor, target: prunekit.Target) -> torch.Tensor:
        """(units, entries of a unit): outputs first, two consecutive outputs per row."""
        rows = tensor.movedim(target.out_dim, 0)
        return rows.reshape(rows.shape[0] // 2, -1)

    def num_units(self, target: prunekit.Target) -> int:
        self.check(target)
        return target.shape[target.out_dim] // 2

    def unit_scores(self, scores, target, reduce):
        return reduce(self._units(scores, target), (1,))

    def unit_alive(self, keep, target):
        return self._units(keep, target).any(dim=1)

    def expand(self, unit_keep, target):
        view = [1] * len(target.shape)
        view[target.out_dim] = -1
        return unit_keep.repeat_interleave(2).view(view).expand(target.shape).contiguous()


@pytest.fixture
def row_pairs():
    prunekit.register_structure("row_pairs", aliases=("paired_rows",))(RowPairs)
    yield "row_pairs"
    unregister_structure("row_pairs")


def _pair_scores(weight: torch.Tensor) -> torch.Tensor:
    """Magnitude of each pair of outputs: the sum of |w| over both rows."""
    return weight.detach().abs().reshape(weight.shape[0] // 2, -1).sum(1)


def _expected(weight: torch.Tensor, pruned_pairs: torch.Tensor) -> torch.Tensor:
    keep = torch.ones(weight.shape[0] // 2, dtype=torch.bool)
    keep[pruned_pairs] = False
    return keep.repeat_interleave(2).view(-1, *[1] * (weight.dim() - 1)).expand(weight.shape)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc1 = nn.Linear(4, 12)
        self.fc2 = nn.Linear(12, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(self.conv(x).mean((2, 3)))))


def _net(seed: int = 0) -> Net:
    torch.manual_seed(seed)
    return Net()


def test_registered_structure_is_listed_and_built_from_its_spec(row_pairs) -> None:
    assert "row_pairs" in prunekit.list_structures()
    assert isinstance(prunekit.create_structure("row_pairs"), RowPairs)
    assert isinstance(prunekit.create_structure("paired_rows"), RowPairs)
    assert prunekit.create_structure("row_pairs").spec() == "row_pairs"  # the name given at registration
    with pytest.raises(prunekit.InvalidParameterError, match=r"^structure:.*Did you mean 'row_pairs'\?"):
        prunekit.prune(_net(), 0.5, structure="row_pair")


def test_local_prunes_the_lowest_half_of_each_layers_pairs(row_pairs) -> None:
    model = _net()
    layers = (model.conv, model.fc1, model.fc2)
    weights = [layer.weight.detach().clone() for layer in layers]
    prunekit.prune(model, 0.5, structure=row_pairs)
    for layer, w in zip(layers, weights):
        scores = _pair_scores(w)
        lowest = scores.argsort()[: scores.numel() // 2]
        assert torch.equal(keep_mask(layer), _expected(w, lowest)), layer
    report = prunekit.sparsity_report(model)
    assert [r.sparsity for r in report.rows] == [0.5, 0.5, 0.5]


def test_global_ranks_the_pairs_of_all_layers_together(row_pairs) -> None:
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 12))  # every pair is 16 entries
    with torch.no_grad():
        model[2].weight.mul_(1.25)  # the second layer's pairs score higher: a global ranking prunes more of the first
    weights = [model[0].weight.detach().clone(), model[2].weight.detach().clone()]
    prunekit.prune(model, 0.5, structure=row_pairs, scope="global")
    scores = torch.cat([_pair_scores(w) for w in weights])
    lowest = scores.argsort()[:5]  # half of the 4 + 6 pairs
    first, second = lowest[lowest < 4], lowest[lowest >= 4] - 4
    assert len(first) == 3  # not what a local split would give (2 and 3)
    assert torch.equal(keep_mask(model[0]), _expected(weights[0], first))
    assert torch.equal(keep_mask(model[2]), _expected(weights[1], second))
    assert prunekit.sparsity_report(model).sparsity == 0.5


def test_units_stay_whole_and_earlier_pruning_is_kept(row_pairs) -> None:
    model = _net()
    prunekit.prune(model, 0.25, structure=row_pairs, include="fc*")
    first = keep_mask(model.fc1).clone()
    prunekit.prune(model, 2, structure=row_pairs, include="fc*")  # a count of units
    mask = keep_mask(model.fc1)
    assert bool((mask <= first).all())
    rows = mask.all(dim=1)
    assert torch.equal(rows, mask.any(dim=1))  # every row whole
    assert torch.equal(rows[0::2], rows[1::2])  # ... and pairs whole
    assert int((~rows).sum()) == 4


def test_a_tensor_the_structure_refuses_leaves_the_model_unchanged(row_pairs) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Linear(6, 3))
    before = snapshot(model)
    with pytest.raises(prunekit.InvalidParameterError, match=r"^structure:.*even number of outputs.*1\.weight"):
        prunekit.prune(model, 0.5, structure=row_pairs)
    assert_unchanged(model, before)


def test_without_registration_the_name_is_refused() -> None:
    assert "row_pairs" not in prunekit.list_structures()
    with pytest.raises(prunekit.InvalidParameterError, match="^structure:"):
        prunekit.prune(_net(), 0.5, structure="row_pairs")


def test_register_structure_refuses_taken_names_and_non_structures(row_pairs) -> None:
    with pytest.raises(prunekit.InvalidParameterError, match="^name:.*not yet registered"):
        prunekit.register_structure("channel")(RowPairs)
    with pytest.raises(prunekit.InvalidParameterError, match="^structure:.*subclass of prunekit.Structure"):
        prunekit.register_structure("not_a_structure")(dict)
