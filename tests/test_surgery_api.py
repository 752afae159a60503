"""prunekit.structural_prune: find_groups -> criterion -> allocation -> prune_groups."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import prunekit
from prunekit.errors import InvalidParameterError
from prunekit.surgery import find_groups, mask_groups


class SmallResNet(nn.Module):
    """stem conv-BN, one residual block, a second conv, pooling and a classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(16)
        self.c1 = nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.b1 = nn.BatchNorm2d(16)
        self.c2 = nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.b2 = nn.BatchNorm2d(16)
        self.c3 = nn.Conv2d(16, 24, 3, stride=2, padding=1, bias=False)
        self.b3 = nn.BatchNorm2d(24)
        self.fc = nn.Linear(24, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn0(self.stem(x)))
        x = torch.relu(x + self.b2(self.c2(torch.relu(self.b1(self.c1(x))))))
        x = torch.relu(self.b3(self.c3(x)))
        return self.fc(x.mean((2, 3)))


def _model(seed: int = 0) -> SmallResNet:
    torch.manual_seed(seed)
    model = SmallResNet()
    with torch.no_grad():  # varied BN statistics so that channels differ
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.2, 1.5)
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


X = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
BATCHES = [(torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(i)),
            torch.randint(0, 5, (4,), generator=torch.Generator().manual_seed(10 + i))) for i in range(2)]


@pytest.mark.parametrize("criterion", ["l1", "l2", "slimming", "taylor", "hrank", "thinet", "random"])
def test_every_criterion_prunes_and_matches_the_masked_model(criterion: str) -> None:
    model = _model()
    twin = copy.deepcopy(model)
    twin_groups = find_groups(twin, X)
    result = prunekit.structural_prune(model, X, sparsity=0.25, criterion=criterion, data=BATCHES)
    assert result.params_after < result.params_before and result.macs_after < result.macs_before
    assert result.channels_after == {"stem": 12, "c1": 12, "c3": 18}
    if criterion != "thinet":  # ThiNet rescales the kept inputs, so the masked twin differs on purpose
        mask_groups(twin, {k: torch.tensor(v) for k, v in result.records[0].kept.items()}, twin_groups)
        torch.testing.assert_close(model(X), twin(X), rtol=1e-4, atol=1e-5)
    assert model.c1.out_channels == 12 and model.fc.in_features == 18


def test_zero_ratio_changes_nothing() -> None:
    model = _model()
    ref = model(X)
    result = prunekit.structural_prune(model, X, sparsity=0.0)
    assert result.params_after == result.params_before and result.groups_pruned == []
    torch.testing.assert_close(model(X), ref)


def test_macs_target_is_reached_with_the_smallest_ratio() -> None:
    model = _model()
    result = prunekit.structural_prune(model, X, macs_target=0.5, criterion="l2", scope="global")
    assert result.macs_ratio <= 0.5
    assert result.macs_ratio > 0.4  # not far beyond the target
    assert prunekit.measure.count_macs(model, X, norms=False).dense_macs == result.macs_after


def test_steps_call_finetune_between_steps_and_end_at_the_ratio() -> None:
    calls = []
    model = _model()
    result = prunekit.structural_prune(model, X, sparsity=0.5, steps=3, finetune=lambda m, i: calls.append(i))
    assert calls == [1, 2]
    assert len(result.records) == 3
    assert result.channels_after == {"stem": 8, "c1": 8, "c3": 12}
    one_shot = _model()
    assert prunekit.structural_prune(one_shot, X, sparsity=0.5).channels_after == result.channels_after


def test_macs_target_in_steps() -> None:
    model = _model()
    result = prunekit.structural_prune(model, X, macs_target=0.6, steps=2)
    assert len(result.records) == 2 and 0.5 < result.macs_ratio <= 0.6


def test_round_to_and_cap_through_the_api() -> None:
    model = _model()
    result = prunekit.structural_prune(model, X, sparsity=0.3, round_to=8)
    assert result.channels_after == {"stem": 8, "c1": 8, "c3": 16}
    model = _model()
    result = prunekit.structural_prune(model, X, sparsity=0.6, scope="global", normalize="none", max_layer_ratio=0.5)
    assert all(result.channels_after[n] >= result.channels_before[n] / 2 for n in result.channels_after)


def test_exclude_keeps_a_layer() -> None:
    model = _model()
    result = prunekit.structural_prune(model, X, sparsity=0.5, exclude="c3")
    assert model.c3.out_channels == 24 and "c3" not in result.channels_after


def test_optimizer_state_follows() -> None:
    model = _model().train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    nn.functional.cross_entropy(model(X), torch.tensor([0, 1])).backward()
    opt.step()
    prunekit.structural_prune(model, X, sparsity=0.25, optimizer=opt)
    opt.zero_grad()
    nn.functional.cross_entropy(model(X), torch.tensor([0, 1])).backward()
    opt.step()  # shapes of the momentum buffers match the smaller parameters
    assert opt.state[model.c1.weight]["momentum_buffer"].shape == model.c1.weight.shape


def test_errors_change_nothing() -> None:
    model = _model()
    ref = copy.deepcopy(model.state_dict())
    bad = [
        dict(sparsity=0.5, macs_target=0.5),
        dict(),
        dict(sparsity=1.0),
        dict(macs_target=0.0),
        dict(sparsity=0.5, steps=0),
        dict(sparsity=0.5, criterion="l7"),
        dict(sparsity=0.5, criterion="taylor"),  # no batches
        dict(sparsity=0.5, criterion="thinet", data=BATCHES, scope="global"),
        dict(sparsity=0.5, scope="everywhere"),
        dict(sparsity=0.5, round_to=-2),
        dict(sparsity=0.5, normalize="median"),
        dict(sparsity=0.5, finetune="yes"),
    ]
    for kwargs in bad:
        with pytest.raises(InvalidParameterError):
            prunekit.structural_prune(model, X, **kwargs)
    with pytest.raises(InvalidParameterError, match="macs_target"):
        prunekit.structural_prune(model, X, macs_target=0.01, max_layer_ratio=0.2)
    state = model.state_dict()
    assert state.keys() == ref.keys() and all(torch.equal(state[k], ref[k]) for k in ref)


def test_measure_false_skips_the_counts() -> None:
    model = _model()
    result = prunekit.structural_prune(model, X, sparsity=0.25, measure=False)
    assert result.macs_before is None and result.params_ratio is None and "not measured" in str(result)
    assert model.c1.out_channels == 12
    with pytest.raises(InvalidParameterError, match="measure"):
        prunekit.structural_prune(model, X, sparsity=0.25, measure="no")


def test_result_reports_and_serialises() -> None:
    model = _model()
    result = prunekit.structural_prune(model, X, sparsity=0.25)
    d = result.to_dict()
    assert d["params_ratio"] == pytest.approx(result.params_after / result.params_before)
    assert d["steps"] == 1 and "MACs" in str(result)
