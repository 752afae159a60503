"""Old keyword names of fit, evaluate and prune_at_init: still accepted, warn once, clash with the new one."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import prunekit
from prunekit.deprecation import reset_warnings


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2))


def _data() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 6, generator=g)
    return [(x[:8], (x[:8, 0] > 0).long()), (x[8:], (x[8:, 0] > 0).long())]


def _fit(**kw):
    return prunekit.fit(_model(), epochs=1, lr=0.05, **kw).epoch_losses


def _evaluate(**kw):
    return prunekit.evaluate(_model(), **kw).accuracy


def _prune_at_init(**kw):
    model = _model()
    prunekit.prune_at_init(model, 0.5, "snip", **kw)
    return [m.weight_mask.clone() for m in (model[0], model[2])]


CASES = [
    (_fit, "loader", "data", "prunekit.fit(loader=...)"),
    (_evaluate, "loader", "data", "prunekit.evaluate(loader=...)"),
    (_prune_at_init, "batches", "data", "prunekit.prune_at_init(batches=...)"),
]


@pytest.mark.parametrize("call, old, new, message", CASES)
def test_old_name_works_warns_once_and_clashes_with_the_new(call, old, new, message):
    reset_warnings()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new name warns about nothing
        expected = call(**{new: _data()})
    with pytest.warns(FutureWarning, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        got = call(**{old: _data()})
    assert got == expected if not isinstance(got, list) or not got or not torch.is_tensor(got[0]) else all(
        torch.equal(a, b) for a, b in zip(got, expected))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per process
        call(**{old: _data()})
    with pytest.raises(prunekit.InvalidParameterError) as info:
        call(**{old: _data(), new: _data()})
    assert info.value.param == old
