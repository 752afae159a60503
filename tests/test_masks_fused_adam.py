"""In-place masks under every optimizer: pruned weights stay exactly zero, and the fused
Adam/AdamW update (prunekit.masks.fused_adam, compiled kernels) equals Adam then the mask."""

from __future__ import annotations

import pytest
import torch
from conftest import inplace_pair

from prunekit.masks.fused_adam import fusable_adam_group

ADAM_OPTIONS = [
    (torch.optim.Adam, {}),
    (torch.optim.AdamW, {}),
    (torch.optim.Adam, {"weight_decay": 0.1, "amsgrad": True}),
    (torch.optim.AdamW, {"weight_decay": 0.1, "amsgrad": True, "maximize": True}),
    (torch.optim.Adam, {"weight_decay": 1e-2, "foreach": False, "betas": (0.8, 0.99), "eps": 1e-6}),
    (torch.optim.Adam, {"decoupled_weight_decay": True, "weight_decay": 0.05}),
]


@pytest.mark.slow
@pytest.mark.parametrize(("cls", "options"), ADAM_OPTIONS)
def test_fused_adam_equals_adam_then_mask(cls, options, native_kernels):
    model, reference, masks = inplace_pair(0.5)
    native_kernels.clear()
    opt = cls(model.parameters(), lr=1e-2, **options)
    ref_opt = cls(reference.parameters(), lr=1e-2, **options)
    torch.manual_seed(1)
    for _ in range(5):
        x = torch.randn(16, 300)
        for m, o in ((model, opt), (reference, ref_opt)):
            o.zero_grad()
            m(x).square().mean().backward()
        grad_before = model[0].weight.grad
        opt.step()
        assert model[0].weight.grad is grad_before  # the gradient is given back after step()
        ref_opt.step()
        with torch.no_grad():  # the reference: torch's step, then the mask
            reference[0].weight.mul_(masks[0])
            reference[2].weight.mul_(masks[1])
    # the large weight took the fused update at every step; the small one torch's step and the mask pass
    assert [name for name, _ in native_kernels] == ["masked_adam_", "mask_"] * 5
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5, msg=name)
    assert not model[0].weight[~masks[0]].any() and not model[2].weight[~masks[1]].any()
    state, ref_state = opt.state[model[0].weight], ref_opt.state[reference[0].weight]
    assert sorted(state) == sorted(ref_state)  # torch's names, so state_dict() carries over
    assert state["step"].item() == ref_state["step"].item() == 5
    for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
        if key in ref_state:
            torch.testing.assert_close(state[key], ref_state[key], rtol=1e-4, atol=1e-9, msg=key)
    fresh = cls(model.parameters(), lr=1e-2, **options)
    fresh.load_state_dict(opt.state_dict())
    assert torch.equal(fresh.state[model[0].weight]["exp_avg"], state["exp_avg"])


@pytest.mark.slow
def test_fused_adam_not_taken_for_a_subclass(native_kernels):
    class MyAdam(torch.optim.Adam):
        pass

    model, _, masks = inplace_pair(0.5)
    opt = MyAdam(model.parameters(), lr=1e-2)
    native_kernels.clear()
    for _ in range(2):
        opt.zero_grad()
        model(torch.randn(4, 300)).square().mean().backward()
        opt.step()
    assert [name for name, _ in native_kernels] == ["mask_"] * 4  # the generic pass only
    assert not model[0].weight[~masks[0]].any()


def test_fusable_adam_group_conditions():
    model, _, _ = inplace_pair(0.5)
    adam = torch.optim.Adam(model.parameters(), lr=1e-2)
    group = adam.param_groups[0]
    assert fusable_adam_group(adam, group, (adam,), {})
    assert fusable_adam_group(torch.optim.AdamW(model.parameters()), group, (adam,), {})
    assert not fusable_adam_group(adam, group, (adam, lambda: 0.0), {})
    assert not fusable_adam_group(adam, group, (adam,), {"closure": lambda: 0.0})
    assert not fusable_adam_group(torch.optim.SGD(model.parameters(), lr=0.1), group, (adam,), {})
    for key, value in (("capturable", True), ("fused", True), ("differentiable", True), ("lr", torch.tensor(0.01))):
        assert not fusable_adam_group(adam, {**group, key: value}, (adam,), {}), key


def _optimizers():
    return {
        "sgd": lambda p: torch.optim.SGD(p, lr=0.5),
        "sgd wd": lambda p: torch.optim.SGD(p, lr=0.5, weight_decay=0.1),
        "sgd nesterov": lambda p: torch.optim.SGD(p, lr=0.2, momentum=0.9, nesterov=True, weight_decay=0.1),
        "sgd maximize dampening": lambda p: torch.optim.SGD(p, lr=0.2, momentum=0.9, dampening=0.5, maximize=True),
        "adam": lambda p: torch.optim.Adam(p, lr=0.05),
        "adam wd amsgrad": lambda p: torch.optim.Adam(p, lr=0.05, weight_decay=0.1, amsgrad=True),
        "adam single-tensor": lambda p: torch.optim.Adam(p, lr=0.05, foreach=False),
        "adamw": lambda p: torch.optim.AdamW(p, lr=0.05, weight_decay=0.5),
        "adamw maximize": lambda p: torch.optim.AdamW(p, lr=0.05, weight_decay=0.5, maximize=True),
        "rmsprop": lambda p: torch.optim.RMSprop(p, lr=0.01, momentum=0.5, weight_decay=0.1),
    }


def _train_and_check_zeros(make_opt, steps: int = 12) -> None:
    model, _, masks = inplace_pair(0.7, seed=3)
    opt = make_opt(model.parameters())
    torch.manual_seed(4)
    for step in range(steps):
        opt.zero_grad()
        model(torch.randn(8, 300)).square().mean().backward()
        if step % 2:
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        opt.step()
        for layer, mask in ((model[0], masks[0]), (model[2], masks[1])):
            assert not layer.weight[~mask].any(), f"step {step}: a pruned weight is no longer 0"
    assert model[0].weight[masks[0]].count_nonzero() > 0.9 * masks[0].sum()  # the kept ones did train


@pytest.mark.parametrize("name", list(_optimizers()))
def test_pruned_weights_stay_zero_stock_path(name):
    _train_and_check_zeros(_optimizers()[name])


@pytest.mark.slow
@pytest.mark.parametrize("name", list(_optimizers()))
def test_pruned_weights_stay_zero_compiled_path(name, native_kernels):
    _train_and_check_zeros(_optimizers()[name])
    fused = {"masked_sgd_"} if name.startswith("sgd") else {"masked_adam_"} if name.startswith("adam") else set()
    assert fused <= {call for call, _ in native_kernels}


def test_other_optimizers_take_the_generic_pass_and_say_so(caplog):
    model, _, masks = inplace_pair(0.5)
    opt = torch.optim.RMSprop(model.parameters(), lr=0.01)
    opt.zero_grad()
    model(torch.randn(4, 300)).square().mean().backward()
    with caplog.at_level("DEBUG", logger="prunekit.masks.inplace"):
        opt.step()
    assert "RMSprop.step() then the generic mask pass over 2 parameters" in caplog.text
    assert not model[0].weight[~masks[0]].any() and not model[2].weight[~masks[1]].any()
