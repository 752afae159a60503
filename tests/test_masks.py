"""Realising masks: in-place enforcement through optimizers, reparam layout, permanence."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import prune as tp

import prunekit
from conftest import assert_unchanged, inplace_pair, keep_mask, make_tiny, snapshot

OPTIMIZERS = {
    "sgd_momentum": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9),
    "sgd_nesterov_wd": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
    "adam": lambda ps: torch.optim.Adam(ps, lr=0.05),
    "adamw_wd": lambda ps: torch.optim.AdamW(ps, lr=0.05, weight_decay=0.1),
    "adam_foreach_false": lambda ps: torch.optim.Adam(ps, lr=0.05, foreach=False),
}


def _train(model, optimizer, x, steps, seed=0):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        optimizer.zero_grad()
        target = torch.randn(x.shape[0], 8, generator=g)
        loss = ((model(x) - target) ** 2).mean() + model(x).abs().sum() * 1e-3
        loss.backward()
        optimizer.step()


def _pruned_positions_are_zero(model):
    for module in (model.conv, model.fc1, model.fc2):
        mask = keep_mask(module)
        if bool(mask.all()):
            continue
        assert bool((module.weight.detach()[~mask] == 0).all())


@pytest.mark.parametrize("opt", sorted(OPTIMIZERS))
def test_inplace_optimizers_never_revive(tiny, tiny_input, opt):
    prunekit.prune(tiny, 0.6, mode="inplace")
    masks = {n: keep_mask(getattr(tiny, n)).clone() for n in ("conv", "fc1", "fc2")}
    assert isinstance(tiny.fc1.weight, nn.Parameter)
    assert tiny.fc1.weight_mask.dtype == torch.bool
    before = tiny.fc1.weight.detach().clone()
    optimizer = OPTIMIZERS[opt](tiny.parameters())
    _train(tiny, optimizer, tiny_input, 30)
    for n, mask in masks.items():
        w = getattr(tiny, n).weight.detach()
        assert bool((w[~mask] == 0).all()), n
        assert int((w == 0).sum()) >= int((~mask).sum())
    assert not torch.equal(before, tiny.fc1.weight.detach()), "training did update the kept weights"


@pytest.mark.parametrize("opt", sorted(OPTIMIZERS))
def test_inplace_pruning_mid_training(tiny, tiny_input, opt):
    optimizer = OPTIMIZERS[opt](tiny.parameters())
    _train(tiny, optimizer, tiny_input, 5)
    state = optimizer.state[tiny.fc1.weight]
    buffers = [v for v in state.values() if isinstance(v, torch.Tensor) and v.shape == tiny.fc1.weight.shape]
    assert buffers and any(bool((b != 0).any()) for b in buffers), "momentum/moments are non-zero"
    prunekit.prune(tiny, 0.5, mode="inplace")
    mask = keep_mask(tiny.fc1).clone()
    _train(tiny, optimizer, tiny_input, 20, seed=1)
    assert bool((tiny.fc1.weight.detach()[~mask] == 0).all())
    _pruned_positions_are_zero(tiny)
    # pruning further mid-training still holds
    prunekit.prune(tiny, 0.8, mode="inplace")
    mask = keep_mask(tiny.fc1).clone()
    assert int((~mask).sum()) == round(0.8 * tiny.fc1.weight.numel())
    _train(tiny, optimizer, tiny_input, 10, seed=2)
    assert bool((tiny.fc1.weight.detach()[~mask] == 0).all())


@pytest.mark.parametrize("opt", ["sgd_momentum", "adamw_wd"])
def test_inplace_deepcopy_then_train_copy(tiny, tiny_input, opt):
    prunekit.prune(tiny, 0.5, mode="inplace")
    mask = keep_mask(tiny.fc1).clone()
    twin = copy.deepcopy(tiny)
    assert twin.fc1.weight is not tiny.fc1.weight
    optimizer = OPTIMIZERS[opt](twin.parameters())
    _train(twin, optimizer, tiny_input, 25)
    assert torch.equal(keep_mask(twin.fc1), mask)
    assert bool((twin.fc1.weight.detach()[~mask] == 0).all())
    _pruned_positions_are_zero(twin)
    # the original keeps its mask too when trained afterwards
    del twin
    optimizer = OPTIMIZERS[opt](tiny.parameters())
    _train(tiny, optimizer, tiny_input, 5)
    _pruned_positions_are_zero(tiny)


def test_inplace_deepcopy_step_without_forward(tiny, tiny_input):
    prunekit.prune(tiny, 0.5, mode="inplace")
    mask = keep_mask(tiny.fc2).clone()
    twin = copy.deepcopy(tiny)
    optimizer = torch.optim.SGD(twin.parameters(), lr=1.0)
    for p in twin.parameters():
        p.grad = torch.ones_like(p)
    prunekit.reapply_masks(twin)  # registers the copy without a forward pass
    optimizer.step()
    assert bool((twin.fc2.weight.detach()[~mask] == 0).all())


def test_inplace_reapply_after_manual_edit(tiny):
    prunekit.prune(tiny, 0.5, mode="inplace")
    mask = keep_mask(tiny.fc1).clone()
    with torch.no_grad():
        tiny.fc1.weight.fill_(1.0)
    prunekit.reapply_masks(tiny)
    assert torch.equal(tiny.fc1.weight.detach() != 0, mask)


def test_reparam_keeps_parameter_identity_and_old_optimizer(tiny, tiny_input):
    weight = tiny.fc1.weight
    optimizer = torch.optim.SGD(tiny.parameters(), lr=0.1, momentum=0.9)
    _train(tiny, optimizer, tiny_input, 3)
    prunekit.prune(tiny, 0.5)
    assert tiny.fc1.weight_orig is weight
    assert any(p is weight for g in optimizer.param_groups for p in g["params"])
    assert not isinstance(tiny.fc1.weight, nn.Parameter)
    mask = keep_mask(tiny.fc1).clone()
    kept_before = weight.detach()[mask].clone()
    _train(tiny, optimizer, tiny_input, 10, seed=3)
    assert not torch.equal(weight.detach()[mask], kept_before), "the old optimizer still trains weight_orig"
    assert bool((tiny.fc1.weight.detach()[~mask] == 0).all())
    tiny(tiny_input)  # the forward pre-hook recomputes weight = weight_orig * mask
    assert torch.equal(tiny.fc1.weight, weight * tiny.fc1.weight_mask)
    assert tiny.fc1.weight_mask.dtype == weight.dtype


@pytest.mark.parametrize("mode", ["reparam", "inplace"])
def test_make_permanent_keeps_outputs(tiny, tiny_input, mode):
    prunekit.prune(tiny, 0.7, mode=mode)
    prunekit.prune(tiny, 0.5, params="bias", mode=mode, min_keep=1)
    tiny.eval()
    with torch.no_grad():
        before = tiny(tiny_input)
    zeros = {n: int((p == 0).sum()) for n, p in tiny.named_parameters()}
    prunekit.make_permanent(tiny)
    with torch.no_grad():
        after = tiny(tiny_input)
    assert torch.equal(before, after)
    keys = list(tiny.state_dict())
    assert not any(k.endswith(("_orig", "_mask")) for k in keys)
    assert all(len(m._forward_pre_hooks) == 0 for m in tiny.modules())
    assert int((tiny.fc1.weight == 0).sum()) == round(0.7 * tiny.fc1.weight.numel())
    assert all(isinstance(p, nn.Parameter) for p in tiny.parameters())
    del zeros


def test_torch_remove_on_prunekit_reparam(tiny, tiny_input):
    prunekit.prune(tiny, 0.5)
    prunekit.prune(tiny, 0.75)
    tiny.eval()
    with torch.no_grad():
        before = tiny(tiny_input)
    assert tp.is_pruned(tiny)
    for module in (tiny.conv, tiny.fc1, tiny.fc2):
        tp.remove(module, "weight")
    assert not tp.is_pruned(tiny)
    with torch.no_grad():
        assert torch.equal(before, tiny(tiny_input))
    assert int((tiny.fc1.weight == 0).sum()) == round(0.75 * tiny.fc1.weight.numel())


def test_prunekit_remove_single_tensor(tiny):
    prunekit.prune(tiny, 0.5, mode="inplace")
    prunekit.remove(tiny.fc1, "weight")
    assert "weight_mask" not in tiny.fc1._buffers
    assert len(tiny.fc1._forward_pre_hooks) == 0
    assert "weight_mask" in tiny.fc2._buffers
    with pytest.raises(prunekit.InvalidParameterError, match="name"):
        prunekit.remove(tiny.fc1, "weight")


@pytest.mark.parametrize("first,second", [("reparam", "inplace"), ("inplace", "reparam")])
def test_mixing_modes_errors_clearly(tiny, first, second):
    prunekit.prune(tiny, 0.3, mode=first)
    before = snapshot(tiny)
    with pytest.raises(prunekit.InvalidParameterError) as info:
        prunekit.prune(tiny, 0.6, mode=second)
    message = str(info.value)
    assert message.startswith("mode:")
    assert repr(first) in message and "make_permanent" in message
    assert_unchanged(tiny, before)
    # after making it permanent, the other mode works
    prunekit.make_permanent(tiny)
    prunekit.prune(tiny, 0.6, mode=second)
    assert int((~keep_mask(tiny.fc1)).sum()) == round(0.6 * tiny.fc1.weight.numel())


def test_mixing_modes_on_torch_pruned_errors(tiny):
    tp.random_unstructured(tiny.fc1, "weight", amount=0.3)
    before = snapshot(tiny)
    with pytest.raises(prunekit.InvalidParameterError, match="reparam"):
        prunekit.prune(tiny, 0.5, mode="inplace")
    assert_unchanged(tiny, before)


def test_apply_masks_all_or_nothing(tiny):
    targets = prunekit.select_targets(tiny)
    keeps = [torch.rand(t.shape, generator=torch.Generator().manual_seed(i)) > 0.5 for i, t in enumerate(targets)]
    prunekit.apply_masks(targets, keeps, mode="reparam")
    for t, k in zip(targets, keeps):
        assert torch.equal(t.keep_mask(), k)
    # a second application combines old & new
    more = [torch.rand(t.shape, generator=torch.Generator().manual_seed(10 + i)) > 0.5 for i, t in enumerate(targets)]
    prunekit.apply_masks(targets, more, mode="reparam")
    for t, k, m in zip(targets, keeps, more):
        assert torch.equal(t.keep_mask(), k & m)


def test_inplace_mask_survives_state_dict_load(tiny):
    prunekit.prune(tiny, 0.5, mode="inplace")
    sd = {k: v.clone() for k, v in tiny.state_dict().items()}
    assert sd["fc1.weight_mask"].dtype == torch.bool
    fresh = make_tiny(5)
    prunekit.load_pruned_state_dict(fresh, sd)
    for k, v in sd.items():
        assert torch.equal(fresh.state_dict()[k], v), k
    assert prunekit.sparsity_report(fresh)["fc1.weight"].state == "inplace"


def test_multihead_attention_out_proj_stays_current_in_reparam_mode():
    """nn.MultiheadAttention reads out_proj.weight without calling out_proj;
    prunekit keeps the masked weight current (torch's own pruning does not)."""
    torch.manual_seed(0)
    attn = torch.nn.MultiheadAttention(8, 2, batch_first=True)
    prunekit.prune(attn, 0.5, include="out_proj")
    opt = torch.optim.SGD(attn.parameters(), lr=0.1)
    x = torch.randn(2, 3, 8)
    for _ in range(3):
        attn(x, x, x)[0].sum().backward()  # a stale weight would fail here on the 2nd step
        opt.step()
        opt.zero_grad()
        attn(x, x, x)
        expected = attn.out_proj.weight_orig * attn.out_proj.weight_mask
        assert torch.equal(attn.out_proj.weight, expected)
    before = attn(x, x, x)[0]
    prunekit.make_permanent(attn)
    assert not attn._forward_pre_hooks
    assert torch.allclose(attn(x, x, x)[0], before)


# -- fused SGD update of in-place-masked parameters (prunekit.fused_sgd) ----------


def _fused_pair(seed: int = 0):
    return inplace_pair(0.5, seed)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"momentum": 0.9},
        {"momentum": 0.9, "nesterov": True, "weight_decay": 1e-2},
        {"momentum": 0.8, "dampening": 0.3, "maximize": True},
        {"weight_decay": 5e-3, "foreach": False},
    ],
)
@pytest.mark.parametrize("kernels", ["stock", pytest.param("native", marks=pytest.mark.slow)])
def test_fused_sgd_equals_sgd_then_mask(options, kernels, monkeypatch, request):
    import prunekit.masks.inplace as masks_module

    native_calls = request.getfixturevalue("native_kernels") if kernels == "native" else None
    calls = []
    fused = masks_module.masked_sgd_update
    monkeypatch.setattr(masks_module, "masked_sgd_update", lambda *a: calls.append(a[2]) or fused(*a))
    model, reference, masks = _fused_pair()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, **options)
    ref_opt = torch.optim.SGD(reference.parameters(), lr=0.05, **options)
    torch.manual_seed(1)
    for _ in range(4):
        x = torch.randn(16, 300)
        for m, o in ((model, opt), (reference, ref_opt)):
            o.zero_grad()
            m(x).square().mean().backward()
        grad_before = model[0].weight.grad
        opt.step()
        assert model[0].weight.grad is grad_before  # the gradient is given back after step()
        ref_opt.step()
        with torch.no_grad():  # the reference: SGD, then the mask
            reference[0].weight.mul_(masks[0])
            reference[2].weight.mul_(masks[1])
    assert calls == [model[0].weight] * 4  # the large weight took the fused path at every step, the small one not
    if native_calls is not None:  # ... and inside it the compiled loop
        assert [c[0] for c in native_calls if c[0] == "masked_sgd_"] == ["masked_sgd_"] * 4
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=2e-6, atol=1e-7, msg=name)  # addcmul_ may round once less
    assert not model[0].weight[~masks[0]].any() and not model[2].weight[~masks[1]].any()
    if options.get("momentum"):
        state = opt.state[model[0].weight]["momentum_buffer"]
        torch.testing.assert_close(state, ref_opt.state[reference[0].weight]["momentum_buffer"], rtol=0, atol=1e-7)
        # the state dict continues into a fresh optimizer
        fresh = torch.optim.SGD(model.parameters(), lr=0.05, **options)
        fresh.load_state_dict(opt.state_dict())
        assert torch.equal(fresh.state[model[0].weight]["momentum_buffer"], state)


def test_fused_sgd_not_taken_for_closure_or_subclass():
    from prunekit.fused_sgd import fusable_group

    class MySGD(torch.optim.SGD):
        pass

    model, _, masks = _fused_pair()
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    mine = MySGD(model.parameters(), lr=0.1)
    group = sgd.param_groups[0]
    assert fusable_group(sgd, group, (sgd,), {})  # step()'s args start with the optimizer itself
    assert not fusable_group(sgd, group, (sgd, lambda: 0.0), {})
    assert not fusable_group(sgd, group, (sgd,), {"closure": lambda: 0.0})
    assert not fusable_group(mine, mine.param_groups[0], (mine,), {})
    assert not fusable_group(torch.optim.Adam(model.parameters()), group, (sgd,), {})

    def closure():
        mine.zero_grad()
        loss = model(torch.randn(4, 300)).square().mean()
        loss.backward()
        return loss

    for opt in (mine, sgd):
        for _ in range(2):
            if opt is sgd:
                opt.step(closure)
            else:
                closure()
                opt.step()
        assert not model[0].weight[~masks[0]].any()
