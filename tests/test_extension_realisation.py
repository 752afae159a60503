"""A realisation defined outside prunekit is used by prune(mode=...) once registered
(prunekit.register_realisation): sparsity is measured, removal and make_permanent work."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import prunekit
from conftest import assert_unchanged, snapshot
from prunekit.masks import unregister_realisation


class ZeroBeforeForward:
    """Forward pre-hook: zero the pruned entries of ``module.<name>`` and count the calls."""

    def __init__(self, name: str) -> None:
        self._tensor_name = name
        self.calls = 0

    @torch.no_grad()
    def __call__(self, module: nn.Module, inputs: object) -> None:
        module._parameters[self._tensor_name].mul_(module._buffers[self._tensor_name + "_mask"])
        self.calls += 1


def _hook(module: nn.Module, name: str = "weight") -> ZeroBeforeForward | None:
    return next((h for h in module._forward_pre_hooks.values()
                 if isinstance(h, ZeroBeforeForward) and h._tensor_name == name), None)


class ZeroOnForward(prunekit.Realisation):
    """The in-place layout, kept by re-zeroing before every forward (no optimizer hook)."""

    layout = "inplace"

    def masked(self, module: nn.Module) -> list[str]:
        return [h._tensor_name for h in module._forward_pre_hooks.values() if isinstance(h, ZeroBeforeForward)]

    def apply(self, module: nn.Module, name: str, keep: torch.Tensor, description: str):
        old = module._buffers.get(name + "_mask")
        if old is None:
            module.register_buffer(name + "_mask", keep)
            handle = module.register_forward_pre_hook(ZeroBeforeForward(name))

            def undo() -> None:
                handle.remove()
                del module._buffers[name + "_mask"]

            return undo
        module.register_buffer(name + "_mask", old & keep)
        return lambda: module.register_buffer(name + "_mask", old)

    @torch.no_grad()
    def commit(self, module: nn.Module, name: str, keep: torch.Tensor) -> None:
        module._parameters[name].mul_(module._buffers[name + "_mask"])

    def reapply(self, module: nn.Module, name: str) -> None:
        self.commit(module, name, module._buffers[name + "_mask"])

    def remove(self, module: nn.Module, name: str) -> None:
        self.reapply(module, name)
        for key, hook in list(module._forward_pre_hooks.items()):
            if isinstance(hook, ZeroBeforeForward) and hook._tensor_name == name:
                del module._forward_pre_hooks[key]
        del module._buffers[name + "_mask"]


@pytest.fixture
def zero_on_forward():
    prunekit.register_realisation("zero_on_forward")(ZeroOnForward)
    yield "zero_on_forward"
    unregister_realisation("zero_on_forward")


def _net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 12), nn.ReLU(), nn.Linear(12, 4))


def _x() -> torch.Tensor:
    return torch.randn(5, 8, generator=torch.Generator().manual_seed(1))


def test_registered_realisation_is_listed_and_unknown_names_suggest_it(zero_on_forward) -> None:
    assert "zero_on_forward" in prunekit.list_realisations()
    assert {"reparam", "inplace", "permanent"} <= set(prunekit.list_realisations())
    assert isinstance(prunekit.create_realisation("zero_on_forward"), ZeroOnForward)
    model = _net()
    before = snapshot(model)
    with pytest.raises(prunekit.InvalidParameterError, match=r"^mode:.*Did you mean 'zero_on_forward'\?"):
        prunekit.prune(model, 0.5, mode="zero_on_forwad")
    with pytest.raises(prunekit.InvalidParameterError, match=r"^mode:.*Did you mean 'zero_on_forward'\?"):
        prunekit.create_realisation("zero_on_froward")
    targets = prunekit.select_targets(model)
    with pytest.raises(prunekit.InvalidParameterError, match=r"^mode:.*Did you mean 'zero_on_forward'\?"):
        prunekit.apply_masks(targets, [torch.ones(t.shape, dtype=torch.bool) for t in targets], mode="zero_onforward")
    assert_unchanged(model, before)


def test_without_registration_the_name_is_refused() -> None:
    assert "zero_on_forward" not in prunekit.list_realisations()
    with pytest.raises(prunekit.InvalidParameterError, match="^mode:"):
        prunekit.prune(_net(), 0.5, mode="zero_on_forward")


def test_prune_with_a_registered_realisation(zero_on_forward) -> None:
    model, reference = _net(), _net()
    weights = [model[0].weight.detach().clone(), model[2].weight.detach().clone()]
    prunekit.prune(model, 0.5, mode=zero_on_forward)
    prunekit.prune(reference, 0.5, mode="reparam")
    for layer, w in zip((model[0], model[2]), weights):
        expected = w.abs() > w.abs().flatten().kthvalue(w.numel() // 2).values  # the lowest half pruned
        assert torch.equal(layer.weight_mask, expected)
        assert layer.weight_mask.dtype == torch.bool and "weight" in layer._parameters
        assert torch.equal(layer.weight, w * expected)
        assert _hook(layer) is not None and _hook(layer).calls == 0
    report = prunekit.sparsity_report(model)
    assert [r.state for r in report.rows] == ["inplace", "inplace"]
    assert report["0.weight"].sparsity == report["2.weight"].sparsity == 0.5
    assert report.sparsity == 0.5
    assert torch.equal(model(_x()), reference(_x()))
    assert _hook(model[0]).calls == 1 and _hook(model[2]).calls == 1

    # an optimizer step revives pruned entries (no optimizer hook here); the next forward zeroes them
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model(_x()).square().sum().backward()
    opt.step()
    assert model[0].weight[~model[0].weight_mask].abs().sum() > 0
    model(_x())
    assert not model[0].weight[~model[0].weight_mask].any()
    assert _hook(model[0]).calls == 3

    # a second step combines masks (old & new)
    old = model[0].weight_mask.clone()
    prunekit.prune(model, 0.75, mode=zero_on_forward)
    assert prunekit.sparsity_report(model)["0.weight"].sparsity == 0.75
    assert bool((model[0].weight_mask <= old).all())


def test_other_modes_refuse_its_tensors_until_made_permanent(zero_on_forward) -> None:
    model = _net()
    prunekit.prune(model, 0.5, mode=zero_on_forward)
    before = snapshot(model)
    for mode in ("reparam", "inplace", "permanent"):
        with pytest.raises(prunekit.InvalidParameterError, match=r"^mode:.*'zero_on_forward'.*make_permanent"):
            prunekit.prune(model, 0.75, mode=mode)
        assert_unchanged(model, before)
    out = model(_x())
    prunekit.make_permanent(model)
    for layer in (model[0], model[2]):
        assert not layer._forward_pre_hooks and "weight_mask" not in layer._buffers
        assert isinstance(layer.weight, nn.Parameter)
    assert torch.equal(model(_x()), out)
    assert prunekit.sparsity_report(model).sparsity == 0.5
    assert [r.state for r in prunekit.sparsity_report(model).rows] == ["dense", "dense"]
    prunekit.prune(model, 0.75, mode="reparam")  # now any mode
    assert prunekit.sparsity_report(model).sparsity == 0.75


def test_remove_one_tensor_and_reapply(zero_on_forward) -> None:
    model = _net()
    prunekit.prune(model, 0.5, mode=zero_on_forward)
    with torch.no_grad():
        model[0].weight.fill_(1.0)  # an edit that bypasses the realisation
    prunekit.reapply_masks(model)
    assert torch.equal(model[0].weight, model[0].weight_mask.float())
    prunekit.remove(model[0], "weight")
    assert _hook(model[0]) is None and "weight_mask" not in model[0]._buffers
    assert [name for name, *_ in prunekit.masks.pruned_tensors(model)] == ["2.weight"]
    assert int((model[0].weight == 0).sum()) == model[0].weight.numel() // 2
    with pytest.raises(prunekit.InvalidParameterError, match="^name:"):
        prunekit.remove(model[0], "weight")


class WrongLayout(ZeroOnForward):
    """Declares the reparam layout but leaves the in-place one: refused, and undone."""

    layout = "reparam"

    def masked(self, module: nn.Module) -> list[str]:
        return []


def test_a_realisation_that_breaks_its_layout_is_undone() -> None:
    prunekit.register_realisation("wrong_layout")(WrongLayout)
    try:
        model = _net()
        before = snapshot(model)
        with pytest.raises(prunekit.InvalidParameterError, match=r"^mode:.*layout 'reparam'.*'inplace'"):
            prunekit.prune(model, 0.5, mode="wrong_layout")
        assert_unchanged(model, before)
    finally:
        unregister_realisation("wrong_layout")


def test_registration_errors(zero_on_forward) -> None:
    with pytest.raises(prunekit.InvalidParameterError, match="^name:.*not yet registered"):
        prunekit.register_realisation("zero_on_forward")(ZeroOnForward)
    with pytest.raises(prunekit.InvalidParameterError, match="^realisation:.*subclass of prunekit.Realisation"):
        prunekit.register_realisation("not_a_class")(lambda: None)

    class NoLayout(prunekit.Realisation):
        layout = "sparse"

    with pytest.raises(prunekit.InvalidParameterError, match="^layout:"):
        prunekit.register_realisation("no_layout")(NoLayout)
    assert "no_layout" not in prunekit.list_realisations()


def test_a_checkpoint_records_the_layout_and_comes_back_in_place(zero_on_forward, tmp_path) -> None:
    model = _net()
    prunekit.prune(model, 0.5, mode=zero_on_forward)
    prunekit.save_sparse(model, tmp_path / "m.safetensors")
    fresh = prunekit.load_sparse(tmp_path / "m.safetensors", _net(seed=1))
    assert isinstance(prunekit.masks.realisation_of(fresh[0], "weight"), prunekit.masks.InPlace)
    assert torch.equal(fresh[0].weight_mask, model[0].weight_mask)
    assert torch.equal(fresh(_x()), model(_x()))
