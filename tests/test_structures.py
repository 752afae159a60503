"""Structures: N:M along the input dimension, blocks, kernels, channels."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import prunekit
from conftest import keep_mask


def _linear(out_f, in_f, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(in_f, out_f))


def _conv(out_c, in_c, k=3, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(in_c, out_c, k))


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8), (1, 4), (3, 8)])
def test_nm_linear_groups_along_in_features(n, m):
    model = _linear(6, 16)
    w = model[0].weight.detach().clone()
    prunekit.prune(model, structure=f"{n}:{m}", criterion="l1")
    mask = keep_mask(model[0])
    groups = mask.reshape(6, 16 // m, m)
    assert bool((groups.sum(-1) == n).all())
    top = w.abs().reshape(6, 16 // m, m).topk(n, dim=-1).indices
    assert torch.equal(groups, torch.zeros_like(groups).scatter_(-1, top, True))
    report = prunekit.sparsity_report(model)
    assert report.sparsity == pytest.approx(1 - n / m)


@pytest.mark.parametrize("spec", ["2:4", "4:8"])
def test_nm_conv_groups_along_input_channels(spec):
    n, m = map(int, spec.split(":"))
    model = _conv(4, 16, k=3)
    w = model[0].weight.detach().clone()
    prunekit.prune(model, structure=spec)
    mask = keep_mask(model[0])  # (out, in, kh, kw)
    # at every (output, kernel position), each run of M consecutive input channels keeps N
    grouped = mask.permute(0, 2, 3, 1).reshape(4, 3, 3, 16 // m, m)
    assert bool((grouped.sum(-1) == n).all())
    scores = w.abs().permute(0, 2, 3, 1).reshape(4, 3, 3, 16 // m, m)
    expected = torch.zeros_like(grouped).scatter_(-1, scores.topk(n, dim=-1).indices, True)
    assert torch.equal(grouped, expected)
    # not grouped along the kernel's width (what a flat reshape would give)
    flat = mask.reshape(-1, m).sum(-1)
    assert not bool((flat == n).all())


def test_nm_repeat_is_idempotent_and_respects_previous_mask():
    model = _linear(4, 8)
    prunekit.prune(model, 0.25)  # 8 of 32 entries pruned first
    first = keep_mask(model[0]).clone()
    prunekit.prune(model, structure="2:4")
    second = keep_mask(model[0]).clone()
    assert bool((second <= first).all())
    groups = second.reshape(4, 2, 4).sum(-1)
    assert bool((groups <= 2).all())
    prunekit.prune(model, structure="2:4")
    assert torch.equal(keep_mask(model[0]), second)


def test_nm_bias_groups_along_only_dim():
    model = _linear(8, 4)
    prunekit.prune(model, structure="2:4", params="bias")
    mask = keep_mask(model[0], "bias")
    assert bool((mask.reshape(2, 4).sum(-1) == 2).all())


@pytest.mark.parametrize("rows,cols", [(2, 2), (4, 2), (1, 4), (8, 8)])
def test_block_masks_constant_per_block_linear(rows, cols):
    model = _linear(8, 16)
    prunekit.prune(model, 0.5, structure=f"block:{rows}x{cols}", min_keep=0)
    mask = keep_mask(model[0])
    blocks = mask.reshape(8 // rows, rows, 16 // cols, cols).permute(0, 2, 1, 3).reshape(-1, rows * cols)
    assert bool((blocks.all(-1) | ~blocks.any(-1)).all()), "each block all kept or all pruned"
    units = (8 // rows) * (16 // cols)
    assert int((~blocks.any(-1)).sum()) == round(0.5 * units)


def test_block_scores_are_block_norms():
    model = _linear(4, 4)
    w = model[0].weight.detach().clone()
    prunekit.prune(model, 0.5, structure="block:2x2", criterion="l1")
    mask = keep_mask(model[0])
    sums = w.abs().reshape(2, 2, 2, 2).sum(dim=(1, 3)).reshape(-1)
    pruned = ~mask.reshape(2, 2, 2, 2).any(dim=(1, 3)).reshape(-1)
    assert set(torch.nonzero(pruned).reshape(-1).tolist()) == set(sums.argsort()[:2].tolist())


def test_block_masks_conv_span_whole_kernels():
    model = _conv(8, 4, k=3)
    prunekit.prune(model, 0.5, structure="block:4x2")
    mask = keep_mask(model[0])  # (8, 4, 3, 3)
    blocks = mask.reshape(2, 4, 2, 2, 9).permute(0, 2, 1, 3, 4).reshape(4, -1)
    assert bool((blocks.all(-1) | ~blocks.any(-1)).all())
    assert int((~blocks.any(-1)).sum()) == 2


@pytest.mark.parametrize("criterion", ["l1", "l2", "random"])
def test_kernel_masks_constant_per_kernel(criterion):
    model = _conv(6, 5, k=3)
    prunekit.prune(model, 0.4, structure="kernel", criterion=criterion)
    mask = keep_mask(model[0]).reshape(30, 9)
    assert bool((mask.all(-1) | ~mask.any(-1)).all())
    assert int((~mask.any(-1)).sum()) == round(0.4 * 30)


def test_kernel_conv1d_and_conv3d():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(4, 4, 3), nn.Conv3d(2, 3, 2))
    prunekit.prune(model, 0.5, structure="kernel")
    m1 = keep_mask(model[0]).reshape(16, 3)
    m3 = keep_mask(model[1]).reshape(6, 8)
    for m in (m1, m3):
        assert bool((m.all(-1) | ~m.any(-1)).all())
    assert int((~m1.any(-1)).sum()) == 8 and int((~m3.any(-1)).sum()) == 3


@pytest.mark.parametrize("spec,dim", [("channel", 0), ("channel:0", 0), ("channel:1", 1), ("channel:-1", 3)])
def test_channel_masks_constant_per_channel_conv(spec, dim):
    model = _conv(6, 4, k=3)
    prunekit.prune(model, 0.5, structure=spec)
    mask = keep_mask(model[0]).movedim(dim, 0)
    flat = mask.reshape(mask.shape[0], -1)
    assert bool((flat.all(-1) | ~flat.any(-1)).all())
    assert int((~flat.any(-1)).sum()) == round(0.5 * mask.shape[0])


def test_channel_linear_is_neurons_and_bias_elements():
    model = _linear(10, 7)
    prunekit.prune(model, 0.3, structure="channel")
    mask = keep_mask(model[0])
    rows_dead = ~mask.any(1)
    assert bool((mask.all(1) | rows_dead).all())
    assert int(rows_dead.sum()) == 3
    prunekit.prune(model, 0.5, structure="channel", params="bias")
    b = keep_mask(model[0], "bias")
    assert int((~b).sum()) == 5


def test_channel_l2_picks_lowest_norms():
    model = _conv(8, 3, k=3)
    w = model[0].weight.detach().clone()
    prunekit.prune(model, 3, structure="channel", criterion="l2")
    dead = (~keep_mask(model[0]).flatten(1).any(1)).nonzero().reshape(-1).tolist()
    assert set(dead) == set(w.flatten(1).norm(dim=1).argsort()[:3].tolist())


def test_structure_registry_and_specs():
    names = prunekit.list_structures()
    for name in ("element", "nm", "block", "kernel", "channel"):
        assert name in names
    assert isinstance(prunekit.create_structure("2:4"), prunekit.NM)
    s = prunekit.create_structure("block:4x2")
    assert (s.rows, s.cols) == (4, 2) and s.spec() == "block:4x2"
    assert prunekit.create_structure("channel:1").dim == 1
    assert prunekit.create_structure("channel").dim is None
    assert prunekit.create_structure(" 4 : 8 ").spec() == "4:8"
    assert prunekit.create_structure("filter").spec() == "channel"
    nm = prunekit.NM(2, 4)
    assert prunekit.create_structure(nm) is nm
    assert nm.fixed_sparsity == 0.5


def test_unstructured_is_a_deprecated_alias_of_element():
    from prunekit.deprecation import reset_warnings

    reset_warnings()
    with pytest.warns(FutureWarning, match=r"structure='unstructured' is deprecated.*structure='element'"):
        made = prunekit.create_structure("unstructured")
    assert type(made) is prunekit.Element and made.spec() == "element"
    assert "unstructured" not in prunekit.list_structures()
    a, b = _linear(6, 8), _linear(6, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once per process: silent now
        prunekit.prune(a, 0.5, structure="Unstructured", scope="global")
    prunekit.prune(b, 0.5, structure="element", scope="global")
    assert torch.equal(keep_mask(a[0]), keep_mask(b[0]))
    reset_warnings()
    with pytest.warns(FutureWarning, match="unstructured"):
        prunekit.prune(_linear(6, 8), 0.5, structure="unstructured")
