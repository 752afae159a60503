"""torch.nn.utils.prune methods as prunekit criteria, and torch's relative ``amount``."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

import prunekit
from prunekit.scores import SCORES

from conftest import EveryOther


class SmallestByAmount(torch_prune.BasePruningMethod):
    """A method that takes torch's ``amount``: prunes the smallest entries (no ties here)."""

    PRUNING_TYPE = "unstructured"

    def __init__(self, amount):
        self.amount = amount

    def compute_mask(self, t, default_mask):
        n = torch_prune._compute_nparams_toprune(self.amount, t.nelement())
        mask = default_mask.clone()
        if n:
            mask.view(-1)[torch.topk(t.abs().view(-1), k=n, largest=False).indices] = 0
        return mask


@pytest.fixture
def registered():
    prunekit.register_score("every_other_t", unit_spaces=("element",))(EveryOther)
    with warnings.catch_warnings():  # register_criterion is deprecated; it must still work
        warnings.simplefilter("ignore", FutureWarning)
        prunekit.register_criterion("smallest_by_amount_t")(SmallestByAmount)
    yield
    SCORES.unregister("every_other_t", ("element",))
    SCORES.unregister("smallest_by_amount_t", prunekit.scores.MASK_SPACES)


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 5), nn.ReLU(),
                         nn.Linear(5, 3))


def _layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model if isinstance(m, (nn.Conv2d, nn.Linear))]


def _masks(model: nn.Module) -> list[torch.Tensor]:
    out = []
    for m in _layers(model):
        if hasattr(m, "weight_mask"):
            out.append(m.weight_mask.bool())
        else:  # inplace mode keeps its mask under the same buffer name or leaves zeros
            out.append(m.weight != 0)
    return out


def _torch_local(model: nn.Module, method, **kwargs) -> None:
    for m in _layers(model):
        method.apply(m, "weight", **kwargs)


def _torch_global(model: nn.Module, method, **kwargs) -> None:
    torch_prune.global_unstructured([(m, "weight") for m in _layers(model)], pruning_method=method, **kwargs)


def _same(a: nn.Module, b: nn.Module) -> None:
    for x, y in zip(_masks(a), _masks(b)):
        assert torch.equal(x, y)


@pytest.mark.parametrize("mode", ["reparam", "inplace"])
@pytest.mark.parametrize("scope", ["local", "global"])
def test_torch_method_gives_torchs_mask(registered, mode, scope):
    ours, theirs = _model(), _model()
    for _ in range(2):  # the second step prunes every other of the entries left
        prunekit.prune(ours, criterion="every_other_t", scope=scope, mode=mode, types=[nn.Conv2d, nn.Linear])
        (_torch_local if scope == "local" else _torch_global)(theirs, EveryOther)
        _same(ours, theirs)
    assert 0.7 < 1 - float(_masks(ours)[0].float().mean()) < 0.8


@pytest.mark.parametrize("scope", ["local", "global"])
def test_torch_method_class_as_criterion_with_amount(registered, scope):
    ours, theirs = _model(1), _model(1)
    prunekit.prune(ours, amount=0.3, criterion=SmallestByAmount, scope=scope)
    (_torch_local if scope == "local" else _torch_global)(theirs, SmallestByAmount, amount=0.3)
    _same(ours, theirs)
    prunekit.prune(ours, amount=0.5, criterion="smallest_by_amount_t", scope=scope)  # registered name
    (_torch_local if scope == "local" else _torch_global)(theirs, SmallestByAmount, amount=0.5)
    _same(ours, theirs)


def test_torch_method_takes_absolute_sparsity_as_a_count(registered):
    ours, theirs = _model(2), _model(2)
    prunekit.prune(ours, 0.5, criterion="smallest_by_amount_t")
    _torch_local(theirs, torch_prune.L1Unstructured, amount=0.5)
    _same(ours, theirs)


def test_method_that_decides_its_mask_refuses_a_level(registered):
    model = _model()
    with pytest.raises(prunekit.InvalidParameterError, match="sparsity"):
        prunekit.prune(model, 0.5, criterion="every_other_t")
    assert not hasattr(_layers(model)[0], "weight_mask")


def test_torch_is_pruned_and_remove_after_a_torch_method(registered):
    model = _model()
    prunekit.prune(model, criterion="every_other_t")
    assert torch_prune.is_pruned(model)
    for m in _layers(model):
        torch_prune.remove(m, "weight")
    assert not torch_prune.is_pruned(model)
    assert float((_layers(model)[0].weight == 0).float().mean()) == pytest.approx(0.5, abs=0.02)


@pytest.mark.parametrize("mode", ["reparam", "inplace"])
@pytest.mark.parametrize("scope", ["local", "global"])
def test_amount_is_relative_as_torch(mode, scope):
    ours, theirs = _model(3), _model(3)
    for amount in (0.5, 0.5, 2):
        prunekit.prune(ours, amount=amount, scope=scope, mode=mode, types=[nn.Conv2d, nn.Linear])
        if scope == "local":
            _torch_local(theirs, torch_prune.L1Unstructured, amount=amount)
        else:
            _torch_global(theirs, torch_prune.L1Unstructured, amount=amount)
        _same(ours, theirs)


def test_mixed_history_torch_prunekit_torch():
    ours, theirs = _model(4), _model(4)
    for model in (ours, theirs):
        for m in _layers(model):
            torch_prune.l1_unstructured(m, "weight", amount=0.3)
    prunekit.prune(ours, amount=0.4)
    for m in _layers(theirs):
        torch_prune.l1_unstructured(m, "weight", amount=0.4)
    for model in (ours, theirs):
        for m in _layers(model):
            torch_prune.l1_unstructured(m, "weight", amount=0.25)
    _same(ours, theirs)


def test_pruner_step_takes_amount():
    ours, theirs = _model(5), _model(5)
    pruner = prunekit.Pruner(ours, scope="global")
    pruner.step(amount=0.6)
    pruner.step(amount=0.5)
    _torch_global(theirs, torch_prune.L1Unstructured, amount=0.6)
    _torch_global(theirs, torch_prune.L1Unstructured, amount=0.5)
    _same(ours, theirs)


@pytest.mark.parametrize("kwargs, match", [
    ({"sparsity": 0.5, "amount": 0.5}, "amount"),
    ({"amount": 1.5}, "amount"),
    ({"amount": True}, "amount"),
    ({"amount": 0.5, "structure": "2:4"}, "amount"),
    ({"amount": 10_000}, "amount"),
])
def test_amount_refusals_change_nothing(kwargs, match):
    model = _model()
    with pytest.raises(prunekit.InvalidParameterError, match=match):
        prunekit.prune(model, **kwargs)
    assert not torch_prune.is_pruned(model)
