"""Every bad input raises a clear error naming the parameter, and changes nothing."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import prunekit
from conftest import assert_unchanged, make_tiny, snapshot


def _check(model, call, param, *, error=prunekit.InvalidParameterError, contains=()):
    before = snapshot(model)
    with pytest.raises(error) as info:
        call()
    message = str(info.value)
    if param is not None:
        assert message.startswith(f"{param}:") or param in message, message
    for text in contains:
        assert text in message, message
    assert_unchanged(model, before)
    return info.value


@pytest.fixture(params=["dense", "reparam", "inplace"])
def model(request):
    """The tiny model, fresh or already pruned: a failed call must not touch either."""
    m = make_tiny(0)
    if request.param != "dense":
        prunekit.prune(m, 0.25, mode=request.param)
    m.mode = "reparam" if request.param == "dense" else request.param
    return m


def test_invalid_parameter_error_is_value_error():
    assert issubclass(prunekit.InvalidParameterError, ValueError)
    assert issubclass(prunekit.CheckpointError, prunekit.PrunekitError)


@pytest.mark.parametrize("sparsity", [1.5, -0.1, float("nan"), "half", True, None])
def test_sparsity_out_of_range(model, sparsity):
    _check(model, lambda: prunekit.prune(model, sparsity, mode=model.mode), "sparsity")


def test_sparsity_error_says_what_is_expected(model):
    err = _check(model, lambda: prunekit.prune(model, 1.5, mode=model.mode), "sparsity")
    assert "[0, 1]" in str(err) and "1.5" in str(err)


@pytest.mark.parametrize("scope", ["local", "global"])
def test_count_larger_than_tensor(model, scope):
    # fc2.weight has 128 entries; the global total is larger but still finite
    count = 128 + 1 if scope == "local" else 10**7
    _check(model, lambda: prunekit.prune(model, count, scope=scope, mode=model.mode), "sparsity", contains=(str(count),))


def test_full_sparsity_guarded_by_min_keep(model):
    _check(model, lambda: prunekit.prune(model, 1.0, mode=model.mode), "sparsity", contains=("min_keep",))


def test_unknown_criterion_suggests_closest(model):
    err = _check(model, lambda: prunekit.prune(model, 0.5, criterion="magnitde", mode=model.mode), "criterion")
    assert "Did you mean 'magnitude'?" in str(err)


def test_unknown_structure_suggests_closest(model):
    err = _check(model, lambda: prunekit.prune(model, 0.5, structure="chanel", mode=model.mode), "structure")
    assert "Did you mean 'channel'?" in str(err)


def test_unknown_scope_mode_normalize(model):
    err = _check(model, lambda: prunekit.prune(model, 0.5, scope="globl"), "scope")
    assert "'global'" in str(err)
    _check(model, lambda: prunekit.prune(model, 0.5, mode="in-place"), "mode", contains=("'inplace'",))
    _check(model, lambda: prunekit.prune(model, 0.5, scope="global", normalize="maxx"), "normalize")


@pytest.mark.parametrize("spec", ["4:4", "5:4", "0:4"])
def test_n_not_less_than_m(model, spec):
    _check(model, lambda: prunekit.prune(model, structure=spec, mode=model.mode), "structure", contains=(spec,))


def test_dimension_not_divisible_by_m():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 4), nn.Linear(4, 6), nn.Linear(6, 8))
    err = _check(model, lambda: prunekit.prune(model, structure="2:4"), "structure")
    assert "2.weight" in str(err) and "M=4" in str(err) and "6" in str(err)
    # the first (valid) layers were not pruned either: all or nothing


def test_nm_with_wrong_sparsity_or_scope(model):
    _check(model, lambda: prunekit.prune(model, 0.3, structure="2:4", mode=model.mode), "sparsity")
    _check(model, lambda: prunekit.prune(model, structure="2:4", scope="global", mode=model.mode), "scope")


def test_block_that_does_not_tile():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 6))
    err = _check(model, lambda: prunekit.prune(model, 0.5, structure="block:4x4"), "structure")
    assert "block 4x4" in str(err) and "1.weight" in str(err)


def test_kernel_on_linear(model):
    _check(model, lambda: prunekit.prune(model, 0.5, structure="kernel", mode=model.mode), "structure", contains=("fc1",))


def test_channel_dim_out_of_range(model):
    _check(model, lambda: prunekit.prune(model, 0.5, structure="channel:5", mode=model.mode), "structure")


class WithIntParam(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.counts = nn.Parameter(torch.arange(8), requires_grad=False)


def test_non_floating_parameter():
    torch.manual_seed(0)
    model = WithIntParam()
    err = _check(model, lambda: prunekit.prune(model, 0.5, types="all", params="*"), "targets")
    assert "counts" in str(err) and "torch.int64" in str(err)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_weights(model, bad):
    with torch.no_grad():
        target = model.fc2.weight_orig if model.mode == "reparam" and hasattr(model.fc2, "weight_orig") else model.fc2.weight
        target[0, 0] = bad
    err = _check(model, lambda: prunekit.prune(model, 0.5, mode=model.mode), "model")
    assert "fc2.weight" in str(err)


def test_nan_scores_from_custom_criterion(model):
    def scores(target):
        s = torch.rand(target.shape, generator=torch.Generator().manual_seed(0))
        if target.name == "fc2.weight":  # a later target: the earlier ones must not be pruned either
            s[0, 0] = float("nan")
        return s

    err = _check(model, lambda: prunekit.prune(model, 0.5, criterion=scores, mode=model.mode), "criterion")
    assert "fc2.weight" in str(err) and "NaN" in str(err)
    _check(model, lambda: prunekit.prune(model, 0.5, criterion=scores, scope="global", mode=model.mode), "criterion")


def test_scores_of_wrong_shape(model):
    _check(
        model,
        lambda: prunekit.prune(model, 0.5, criterion=lambda t: torch.ones(3), mode=model.mode),
        "criterion",
        contains=("shape",),
    )


def test_mask_of_wrong_shape(model):
    targets = prunekit.select_targets(model)
    keeps = [torch.ones(t.shape, dtype=torch.bool) for t in targets]
    keeps[-1] = torch.ones(3, 3, dtype=torch.bool)
    err = _check(model, lambda: prunekit.apply_masks(targets, keeps, mode=model.mode), "mask")
    assert "(3, 3)" in str(err) and targets[-1].name in str(err)
    keeps[-1] = torch.ones(targets[-1].shape)  # float, not bool
    _check(model, lambda: prunekit.apply_masks(targets, keeps, mode=model.mode), "mask", contains=("bool",))
    _check(model, lambda: prunekit.apply_masks(targets, keeps[:1], mode=model.mode), "masks")


def test_missing_file(tmp_path):
    model = make_tiny(0)
    path = tmp_path / "nope.safetensors"
    err = _check(model, lambda: prunekit.load_sparse(path, model), None, error=prunekit.CheckpointError)
    assert str(path) in str(err) and "does not exist" in str(err)
    with pytest.raises(prunekit.CheckpointError):
        prunekit.load_sparse(path)
    with pytest.raises(prunekit.CheckpointError):
        prunekit.load_state_dict_file(tmp_path / "nope.pt")


@pytest.mark.parametrize("keep_fraction", [0.0, 0.05, 0.5, 0.97])
def test_corrupt_file(tmp_path, keep_fraction):
    source = make_tiny(0)
    prunekit.prune(source, 0.5)
    path = tmp_path / "model.safetensors"
    size = prunekit.save_sparse(source, path)
    data = path.read_bytes()
    assert len(data) == size
    path.write_bytes(data[: int(len(data) * keep_fraction)])
    model = make_tiny(1)
    err = _check(model, lambda: prunekit.load_sparse(path, model), None, error=prunekit.CheckpointError)
    assert str(path) in str(err)
    with pytest.raises(prunekit.CheckpointError):
        prunekit.load_sparse(path)


def test_not_a_prunekit_file(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "plain.safetensors"
    save_file({"x": torch.ones(2)}, str(path))
    model = make_tiny(0)
    _check(model, lambda: prunekit.load_sparse(path, model), None, error=prunekit.CheckpointError,
           contains=("not a prunekit",))
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00\x01not a checkpoint")
    with pytest.raises(prunekit.CheckpointError):
        prunekit.load_state_dict_file(garbage)


def test_empty_selection_lists_what_the_model_has(model):
    err = _check(model, lambda: prunekit.prune(model, 0.5, include="encoder.*", mode=model.mode), "targets")
    message = str(err)
    assert "encoder.*" in message
    assert "Linear" in message and "Conv2d" in message and "fc1.weight" in message
    _check(model, lambda: prunekit.prune(model, 0.5, types=[nn.LSTM], mode=model.mode), "targets", contains=("fc2.bias",))
    _check(model, lambda: prunekit.prune(model, 0.5, params="gamma", mode=model.mode), "targets")


def test_bad_targets(model):
    other = nn.Linear(2, 2)
    _check(model, lambda: prunekit.prune(model, 0.5, targets=[(other, "weight")], mode=model.mode), "targets")
    _check(model, lambda: prunekit.prune(model, 0.5, targets=[(model.fc1, "gamma")], mode=model.mode), "targets")
    _check(model, lambda: prunekit.prune(model, 0.5, targets=["fc1.weight"], mode=model.mode), "targets")
    _check(model, lambda: prunekit.prune(model, 0.5, targets=[], mode=model.mode), "targets")


def test_bad_overrides(model):
    _check(model, lambda: prunekit.prune(model, 0.5, overrides={"fc9*": 0.3}, mode=model.mode), "overrides")
    _check(model, lambda: prunekit.prune(model, 0.5, overrides={"fc1*": 2.0}, mode=model.mode), "overrides")
    _check(model, lambda: prunekit.prune(model, 0.5, overrides=[("fc1", 0.2)], mode=model.mode), "overrides")


def test_bad_min_keep_and_model(model):
    _check(model, lambda: prunekit.prune(model, 0.5, min_keep=-1, mode=model.mode), "min_keep")
    with pytest.raises(prunekit.InvalidParameterError, match="model"):
        prunekit.prune("not a model", 0.5)


def test_bad_lnorm(model):
    _check(model, lambda: prunekit.prune(model, 0.5, criterion="lnorm:-1", mode=model.mode), "p")


def test_restore_masks_into_wrong_model():
    source = make_tiny(0)
    prunekit.prune(source, 0.5)
    target = nn.Sequential(nn.Linear(2, 2))
    _check(target, lambda: prunekit.load_pruned_state_dict(target, source.state_dict()), "state_dict")
