"""Selecting targets: types, include/exclude, params, explicit pairs, layouts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import prunekit
from prunekit.targets import tensor_state


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv1d(4, 4, 1))
        self.encoder = nn.ModuleDict({"q": nn.Linear(4, 4), "k": nn.Linear(4, 4, bias=False)})
        self.head = nn.Linear(4, 2)
        self.emb = nn.Embedding(10, 4)


@pytest.fixture
def net():
    torch.manual_seed(0)
    return Net()


def names(targets):
    return [t.name for t in targets]


def test_default_types_weights_in_module_order(net):
    assert names(prunekit.select_targets(net)) == [
        "features.0.weight", "features.2.weight", "encoder.q.weight", "encoder.k.weight", "head.weight",
    ]


def test_types_classes_names_and_all(net):
    assert names(prunekit.select_targets(net, types=[nn.Linear])) == ["encoder.q.weight", "encoder.k.weight", "head.weight"]
    assert names(prunekit.select_targets(net, types="Embedding")) == ["emb.weight"]
    assert names(prunekit.select_targets(net, types=nn.BatchNorm2d, params="*")) == ["features.1.weight", "features.1.bias"]
    everything = names(prunekit.select_targets(net, types="all", params="*"))
    assert everything == [n for n, _ in net.named_parameters()]
    with pytest.raises(prunekit.InvalidParameterError, match="types"):
        prunekit.select_targets(net, types=[42])


def test_include_exclude_globs_and_regex(net):
    assert names(prunekit.select_targets(net, include="encoder.*")) == ["encoder.q.weight", "encoder.k.weight"]
    assert names(prunekit.select_targets(net, include=["head", "features.0"])) == ["features.0.weight", "head.weight"]
    assert names(prunekit.select_targets(net, exclude="features.*")) == ["encoder.q.weight", "encoder.k.weight", "head.weight"]
    assert names(prunekit.select_targets(net, include="re:^encoder\\.[qk]$", exclude="*.k")) == ["encoder.q.weight"]
    assert names(prunekit.select_targets(net, params=("weight", "bias"), include="encoder.*")) == [
        "encoder.q.weight", "encoder.q.bias", "encoder.k.weight",
    ]
    with pytest.raises(prunekit.InvalidParameterError, match="include"):
        prunekit.select_targets(net, include=[1])


def test_targets_report_logical_names_after_pruning(net):
    prunekit.prune(net, 0.5, include="encoder.q", params=("weight", "bias"))
    targets = prunekit.select_targets(net, include="encoder.q", params="*")
    assert names(targets) == ["encoder.q.bias", "encoder.q.weight"] or names(targets) == ["encoder.q.weight", "encoder.q.bias"]
    t = next(t for t in targets if t.param_name == "weight")
    assert t.state == "reparam" and t.original is net.encoder.q.weight_orig
    assert t.keep_mask().dtype == torch.bool and int((~t.keep_mask()).sum()) == 8
    assert torch.equal(t.effective(), net.encoder.q.weight_orig.detach() * net.encoder.q.weight_mask)
    assert tensor_state(net.head, "weight") == "dense"


def test_inplace_state(net):
    prunekit.prune(net, 0.5, include="head", mode="inplace")
    t = prunekit.select_targets(net, include="head")[0]
    assert t.state == "inplace"
    assert t.original is net.head.weight
    assert torch.equal(t.effective(), net.head.weight.detach())


def test_explicit_pairs_like_torch(net):
    prunekit.prune(net, 0.5, targets=[(net.head, "weight"), (net.encoder.q, "bias")])
    assert tensor_state(net.head, "weight") == "reparam"
    assert tensor_state(net.encoder.q, "bias") == "reparam"
    assert tensor_state(net.encoder.q, "weight") == "dense"
    # a second call names the tensor by its logical name, even though it is now weight_orig
    prunekit.prune(net, 0.75, targets=[(net.head, "weight")])
    assert int((net.head.weight_mask == 0).sum()) == 6
    targets = [prunekit.Target("head.weight", "head", net.head, "weight")]
    pruner = prunekit.Pruner(net, targets=targets)
    assert pruner.targets[0] is targets[0]


def test_layout_of_linear_conv_and_bias(net):
    ts = {t.name: t for t in prunekit.select_targets(net, params="*")}
    assert ts["features.0.weight"].out_dim == 0 and ts["features.0.weight"].in_dim == 1
    assert ts["head.weight"].out_dim == 0 and ts["head.weight"].in_dim == 1
    assert ts["head.bias"].in_dim is None
    assert ts["head.weight"].numel == 8 and tuple(ts["head.weight"].shape) == (2, 4)


def test_hf_conv1d_matched_by_class_name():
    class Conv1D(nn.Module):  # the shape of transformers.pytorch_utils.Conv1D
        def __init__(self, nf, nx):
            super().__init__()
            self.nf = nf
            self.weight = nn.Parameter(torch.randn(nx, nf))
            self.bias = nn.Parameter(torch.zeros(nf))

    model = nn.Sequential(Conv1D(8, 4))
    t = prunekit.select_targets(model)[0]
    assert t.name == "0.weight" and t.out_dim == 1 and t.in_dim == 0
    prunekit.prune(model, 0.5, structure="channel")
    mask = model[0].weight_mask != 0  # (4 in, 8 out): whole output columns
    assert bool((mask.all(0) | ~mask.any(0)).all()) and int((~mask.any(0)).sum()) == 4
