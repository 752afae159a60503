"""Every public call that changes a model is all or nothing: when it raises, the model is exactly
as before (tensors bit for bit, parameter and buffer identities, modules, hooks, attributes, repr).

:func:`model_state` snapshots all of that; the table ``CASES`` runs each mutating entry point on
failing inputs and compares the snapshots taken before and after.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from torch import nn

import prunekit
from prunekit.errors import InvalidParameterError, PrunekitError
from prunekit.io import load_pruned_state_dict, load_sparse, restore_masks, save_sparse
from prunekit.masks import apply_masks, make_permanent, remove
from prunekit.surgery import load_shrunk, prune_groups, save_shrunk
from prunekit.targets import Target, select_targets


# -- the snapshot -------------------------------------------------------------------------------------

_HOOK_DICTS = ("_forward_pre_hooks", "_forward_hooks", "_forward_pre_hooks_with_kwargs", "_forward_hooks_with_kwargs",
               "_backward_hooks", "_backward_pre_hooks", "_state_dict_hooks", "_load_state_dict_pre_hooks")


def _bits(tensor: torch.Tensor) -> tuple:
    t = tensor.detach().cpu().contiguous().reshape(-1)
    return (str(t.dtype), tuple(tensor.shape), str(tensor.device), bytes(t.view(torch.uint8).numpy().tobytes()))


def _attr(value: object) -> object:
    if isinstance(value, torch.Tensor):
        return ("tensor", id(value), _bits(value))
    if isinstance(value, nn.Module):
        return ("module", id(value))
    if isinstance(value, (dict, set, list, tuple)) and not isinstance(value, str):
        return ("container", type(value).__name__, repr(value))
    return ("value", repr(value))


def model_state(model: nn.Module) -> dict:
    """Everything a failed call must leave as it was."""
    state = model.state_dict(keep_vars=True)
    modules = list(model.named_modules(remove_duplicate=False))
    out = {
        "state_dict": {k: _bits(v) for k, v in state.items()},
        "state_ids": {k: id(v) for k, v in state.items()},
        "parameters": [(n, id(p), p.requires_grad) for n, p in model.named_parameters(remove_duplicate=False)],
        "buffers": [(n, id(b)) for n, b in model.named_buffers(remove_duplicate=False)],
        "modules": [(n, id(m), type(m).__name__, m.training) for n, m in modules],
        "hooks": {n: {d: [(k, id(h)) for k, h in getattr(m, d, {}).items()] for d in _HOOK_DICTS} for n, m in modules},
        "attributes": {n: {k: _attr(v) for k, v in vars(m).items() if k not in _HOOK_DICTS} for n, m in modules},
        "repr": repr(model),
    }
    config = getattr(model, "config", None)
    if config is not None:
        out["config"] = repr(sorted(vars(config).items()))
    return out


def assert_same(before: dict, after: dict) -> None:
    for key in before:
        if key in ("hooks", "attributes"):
            for name in before[key]:
                assert after[key].get(name) == before[key][name], f"{key} of {name!r} changed"
        assert after[key] == before[key], f"{key} changed"


# -- tiny models -----------------------------------------------------------------------------------------

def mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))


class TiedUnderTwoNames(nn.Module):
    """``proj.weight`` is also ``other.w`` (a tied parameter under another name)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.first = nn.Linear(4, 4)
        self.proj = nn.Linear(4, 4)
        self.other = nn.Module()
        self.other.register_parameter("w", self.proj.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.first(x)) + x @ self.other.w


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.blocks = nn.ModuleList(nn.MultiheadAttention(8, 2, batch_first=True) for _ in range(2))
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = x + block(x, x, x, need_weights=False)[0]
        return self.head(x.mean(dim=1))


def llama(vocab_size: int = 64):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=vocab_size, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                   num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32)
    return transformers.LlamaForCausalLM(cfg).eval()


def pruned_mlp(mode: str = "reparam") -> nn.Sequential:
    model = mlp()
    prunekit.prune(model, 0.5, mode=mode)
    return model


def shrunk_file(tmp_path) -> str:
    model = mlp()
    prunekit.structural_prune(model, torch.randn(2, 6), sparsity=0.5)
    path = str(tmp_path / "shrunk.safetensors")
    save_shrunk(model, path)
    return path


def shrunk_llama_file(tmp_path) -> str:
    model = llama()
    prunekit.prune_heads(model, {0: [1], 1: [0]})
    prunekit.prune_mlp_neurons(model, {0: [0, 1], 1: [3, 5]})
    path = str(tmp_path / "llama.safetensors")
    save_shrunk(model, path)
    return path


def pruned_file(tmp_path) -> str:
    path = str(tmp_path / "pruned.safetensors")
    save_sparse(pruned_mlp().state_dict(), path)
    return path


def first_layer_pruned() -> nn.Sequential:
    model = mlp()
    prunekit.prune(model, 0.5, include="0")
    return model


def first_layer_pruned_file(tmp_path) -> str:
    path = str(tmp_path / "first.safetensors")
    save_sparse(first_layer_pruned().state_dict(), path)
    return path


def other_mlp() -> nn.Sequential:
    """The same layer names as :func:`mlp`, another width at the end."""
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 5))


def _loaded(model, tmp_path):
    load_shrunk(model, shrunk_file(tmp_path))
    return model


def _second_layer_mask_of_wrong_shape(model):
    targets = select_targets(model)
    keeps = [torch.ones(t.shape, dtype=torch.bool) for t in targets]
    keeps[1] = torch.ones(3, 3, dtype=torch.bool)
    apply_masks(targets, keeps)


def _mode_clash(model):
    targets = select_targets(model)
    keeps = [torch.ones(t.shape, dtype=torch.bool) for t in targets]
    apply_masks(targets, keeps, mode="inplace")  # fc 0 is reparam already, fc 2 and 4 too


def _broken_mask_buffer(model):
    del model[4]._buffers["weight_mask"]  # a damaged model: the last masked tensor lost its mask
    return model


def _groups_with_a_bad_second_keep(model, optimizer=None, bad=True):
    groups = prunekit.find_groups(model, torch.randn(2, 6))
    keep = {groups[0].name: torch.arange(4), groups[1].name: torch.tensor([0, 99] if bad else [0, 1])}
    prune_groups(model, keep, groups, optimizer=optimizer)


def _criterion_failing_on_the_last_target(target: Target) -> torch.Tensor:
    if target.name == "4.weight":
        raise RuntimeError("scores unavailable")
    return target.original.detach().abs()


class RefusesSparseLayers(nn.Module):
    """A model whose forward fails once one of its layers was replaced: the output check must restore it."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.up, self.down = nn.Linear(16, 32), nn.Linear(32, 4)
        prunekit.prune(self, 0.9, mode="permanent")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if type(self.down) is not nn.Linear:
            raise RuntimeError("this model only runs with dense layers")
        return self.down(torch.relu(self.up(x)))


def _to_sparse(model: nn.Module, **kwargs) -> object:
    settings = dict(kernels=("csr",), repeats=1, warmup=0, model_repeats=1, threads=1, min_speedup=1e-9)
    return prunekit.to_sparse(model, torch.randn(2, 16), **{**settings, **kwargs})


# -- the table ------------------------------------------------------------------------------------------

@dataclass
class Case:
    id: str
    build: Callable[..., nn.Module]
    call: Callable[..., object]
    error: type[BaseException] = PrunekitError
    xfail: str | None = None


CASES = [
    Case("prune: tied under two names", lambda tmp: TiedUnderTwoNames(),
         lambda m, tmp: prunekit.prune(m, 0.5, params=["weight", "w"])),
    Case("prune: sparsity out of range", lambda tmp: mlp(), lambda m, tmp: prunekit.prune(m, 1.5)),
    Case("prune: criterion fails on a later target", lambda tmp: mlp(),
         lambda m, tmp: prunekit.prune(m, 0.5, criterion=_criterion_failing_on_the_last_target), RuntimeError),
    Case("prune: second step in another mode", lambda tmp: pruned_mlp("inplace"),
         lambda m, tmp: prunekit.prune(m, 0.7, mode="reparam")),
    Case("Pruner.step: second step too high a count", lambda tmp: pruned_mlp(),
         lambda m, tmp: prunekit.Pruner(m).step(10_000)),
    Case("Pruner.step: scores of the wrong shape", lambda tmp: mlp(),
         lambda m, tmp: prunekit.Pruner(m, criterion=lambda t: torch.ones(3)).step(0.5)),
    Case("Pruner.step: missing data for a data criterion", lambda tmp: mlp(),
         lambda m, tmp: prunekit.Pruner(m, criterion="snip").step(0.5)),
    Case("apply_masks: a later mask of the wrong shape", lambda tmp: mlp(),
         lambda m, tmp: _second_layer_mask_of_wrong_shape(m)),
    Case("apply_masks: mode clash", lambda tmp: pruned_mlp(), lambda m, tmp: _mode_clash(m)),
    Case("make_permanent: a damaged mask on the last tensor", lambda tmp: _broken_mask_buffer(pruned_mlp()),
         lambda m, tmp: make_permanent(m), Exception),
    Case("remove: an unpruned tensor", lambda tmp: pruned_mlp(), lambda m, tmp: remove(m[0], "bias")),
    Case("structural_prune: wrong input shape", lambda tmp: mlp(),
         lambda m, tmp: prunekit.structural_prune(m, torch.randn(2, 7), sparsity=0.5), Exception),
    Case("structural_prune: sparsity out of range", lambda tmp: mlp(),
         lambda m, tmp: prunekit.structural_prune(m, torch.randn(2, 6), sparsity=1.5)),
    Case("structural_prune: not an optimizer", lambda tmp: mlp(),
         lambda m, tmp: prunekit.structural_prune(m, torch.randn(2, 6), sparsity=0.5, optimizer="sgd")),
    Case("prune_groups: not an optimizer", lambda tmp: mlp(),
         lambda m, tmp: _groups_with_a_bad_second_keep(m, optimizer="sgd", bad=False)),
    Case("prune_groups: a later keep out of range", lambda tmp: mlp(),
         lambda m, tmp: _groups_with_a_bad_second_keep(m)),
    Case("prune_heads: a later layer's head out of range", lambda tmp: Encoder(),
         lambda m, tmp: prunekit.prune_heads(m, {"blocks.0": [0], "blocks.1": [7]})),
    Case("prune_heads: sparsity out of range", lambda tmp: Encoder(),
         lambda m, tmp: prunekit.prune_heads(m, sparsity=1.5)),
    Case("prune_heads: a negative head index", lambda tmp: Encoder(),
         lambda m, tmp: prunekit.prune_heads(m, {"blocks.0": [0], "blocks.1": [-1]})),
    Case("prune_mlp_neurons: every neuron of a later layer", lambda tmp: llama(),
         lambda m, tmp: prunekit.prune_mlp_neurons(m, {0: [0], 1: list(range(32))})),
    Case("prune_mlp_neurons: a later layer's neuron out of range", lambda tmp: llama(),
         lambda m, tmp: prunekit.prune_mlp_neurons(m, {0: [0, 1], 1: [999]})),
    Case("load_shrunk: another architecture", lambda tmp: other_mlp(),
         lambda m, tmp: load_shrunk(m, shrunk_file(tmp))),
    Case("load_shrunk: Hugging Face heads and neurons into another config", lambda tmp: llama(vocab_size=80),
         lambda m, tmp: load_shrunk(m, shrunk_llama_file(tmp))),
    Case("load_shrunk: into a model shrunk already", lambda tmp: _loaded(mlp(), tmp),
         lambda m, tmp: load_shrunk(m, shrunk_file(tmp))),
    Case("load_sparse: into a model pruned in another mode", lambda tmp: pruned_mlp("inplace"),
         lambda m, tmp: load_sparse(pruned_file(tmp), m)),
    Case("load_shrunk: a file without history", lambda tmp: mlp(),
         lambda m, tmp: load_shrunk(m, pruned_file(tmp))),
    Case("load_sparse: another architecture", lambda tmp: other_mlp(),
         lambda m, tmp: load_sparse(pruned_file(tmp), m)),
    Case("load_sparse: masks fit, a later layer does not", lambda tmp: other_mlp(),
         lambda m, tmp: load_sparse(first_layer_pruned_file(tmp), m)),
    Case("load_pruned_state_dict: masks fit, a later layer does not", lambda tmp: other_mlp(),
         lambda m, tmp: load_pruned_state_dict(m, first_layer_pruned().state_dict())),
    Case("load_pruned_state_dict: a missing key", lambda tmp: mlp(),
         lambda m, tmp: load_pruned_state_dict(m, {k: v for k, v in first_layer_pruned().state_dict().items()
                                                   if k != "4.bias"})),
    Case("load_pruned_state_dict: another architecture", lambda tmp: other_mlp(),
         lambda m, tmp: load_pruned_state_dict(m, pruned_mlp().state_dict())),
    Case("restore_masks: a masked tensor the model lacks", lambda tmp: nn.Sequential(nn.Linear(6, 8)),
         lambda m, tmp: restore_masks(m, pruned_mlp().state_dict())),
    Case("structural_prune: nothing can be pruned", lambda tmp: nn.Sequential(nn.Linear(6, 3)),
         lambda m, tmp: prunekit.structural_prune(m, torch.randn(2, 6), sparsity=0.5)),
    Case("prune_heads: round_to that a layer cannot meet", lambda tmp: Encoder(),
         lambda m, tmp: prunekit.prune_heads(m, {"blocks.0": [0], "blocks.1": [0]}, round_to=16)),
    Case("to_sparse: the model fails once a layer is sparse", lambda tmp: RefusesSparseLayers(),
         lambda m, tmp: _to_sparse(m), Exception),
    Case("to_sparse: a bad kernel name", lambda tmp: RefusesSparseLayers(),
         lambda m, tmp: _to_sparse(m, kernels=("fast",))),
    Case("oneshot_prune: sparsity out of range", lambda tmp: llama(),
         lambda m, tmp: prunekit.oneshot_prune(m, torch.randint(0, 64, (2, 8)), sparsity=1.5)),
    Case("oneshot_prune: calibration ids of the wrong dtype", lambda tmp: llama(),
         lambda m, tmp: prunekit.oneshot_prune(m, torch.rand(2, 8), sparsity=0.5), Exception),
    Case("oneshot_prune: token ids outside the vocabulary", lambda tmp: llama(),
         lambda m, tmp: prunekit.oneshot_prune(m, torch.randint(100, 200, (2, 8)), sparsity=0.5), Exception),
]


def _param(case: Case):
    marks = [pytest.mark.xfail(strict=True, reason=case.xfail)] if case.xfail else []
    return pytest.param(case, id=case.id, marks=marks)


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_a_failing_call_leaves_the_model_as_it_was(case: Case, tmp_path):
    model = case.build(tmp_path)
    before = model_state(model)
    with pytest.raises(case.error):
        case.call(model, tmp_path)
    assert_same(before, model_state(model))


# -- the harness itself can fail ---------------------------------------------------------------------

@pytest.mark.parametrize("change", [
    lambda m: m[0].weight.data.view(-1)[0].add_(1e-7),  # one value, bit-level
    lambda m: setattr(m[0], "weight", nn.Parameter(m[0].weight.detach().clone())),  # same values, new object
    lambda m: m[0].register_forward_pre_hook(lambda mod, args: None),
    lambda m: setattr(m[0], "out_features", 7),
    lambda m: m[0].register_buffer("extra", torch.zeros(1)),
], ids=["value", "identity", "hook", "attribute", "buffer"])
def test_model_state_notices_every_kind_of_change(change):
    model = mlp()
    before = model_state(model)
    change(model)
    with pytest.raises(AssertionError):
        assert_same(before, model_state(model))


# -- the three calls that used to half-apply --------------------------------------------------------------

def test_load_shrunk_into_another_architecture_names_the_mismatch_and_changes_nothing(tmp_path):
    path = shrunk_file(tmp_path)
    model = other_mlp()
    before = model_state(model)
    with pytest.raises(InvalidParameterError, match=r"4\.weight.*Fix: build the model"):
        load_shrunk(model, path)
    assert_same(before, model_state(model))
    fresh = mlp(5)
    load_shrunk(fresh, path)  # the right architecture still loads
    assert fresh[0].out_features < 8


def test_a_parameter_tied_under_two_names_is_refused_before_any_mask():
    model = TiedUnderTwoNames()
    before = model_state(model)
    with pytest.raises(InvalidParameterError, match=r"proj\.weight is also other\.w.*Fix: prune in mode='inplace'"):
        prunekit.prune(model, 0.5, params=["weight", "w"])
    assert_same(before, model_state(model))
    with pytest.raises(InvalidParameterError, match="other.w"):
        prunekit.Pruner(model, params=["weight", "w"])
    assert_same(before, model_state(model))


@pytest.mark.parametrize("fix", [{"mode": "inplace"}, {"exclude": "proj.weight"}])
def test_the_fixes_the_tied_error_names_work(fix):
    model = TiedUnderTwoNames()
    prunekit.prune(model, 0.5, params=["weight", "w"], **fix)
    assert prunekit.sparsity_report(model).rows  # something was pruned
    x = torch.randn(3, 4)
    model(x)  # and the model still runs


def test_duplicate_targets_are_pruned_once_and_logged(caplog):
    model = nn.Sequential(nn.Linear(20, 20), nn.Linear(20, 20))
    with caplog.at_level(logging.WARNING, logger="prunekit.pruner"):
        prunekit.prune(model, 0.5, scope="global", targets=[(model[0], "weight"), (model[0], "weight"),
                                                              (model[1], "weight")])
    zeros = sum(int((m.weight == 0).sum()) for m in model)
    assert zeros == 400  # exactly half of the 800 weights, not a count skewed by the repeat
    assert "0.weight (= 0.weight)" in caplog.text and "pruned once" in caplog.text


def test_tied_targets_under_one_name_count_once():
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.a, self.b, self.c = nn.Linear(10, 10), nn.Linear(10, 10), nn.Linear(10, 10)
            self.b.weight = self.a.weight

    model = Tied()
    prunekit.prune(model, 0.5, scope="global", targets=[(model.a, "weight"), (model.b, "weight"), (model.c, "weight")])
    zeros = int((model.a.weight == 0).sum()) + int((model.c.weight == 0).sum())
    assert zeros == 100


def test_lower_level_calls_refuse_duplicate_targets():
    model = mlp()
    targets = select_targets(model)
    twice = [targets[0], targets[0]]
    keeps = [torch.ones(t.shape, dtype=torch.bool) for t in twice]
    with pytest.raises(InvalidParameterError, match=r"targets: expected each tensor once.*0\.weight"):
        apply_masks(twice, keeps)
    from prunekit.allocation import compute_keep_masks
    from prunekit.scores import as_criterion
    from prunekit.structures import create_structure

    with pytest.raises(InvalidParameterError, match="each tensor once"):
        compute_keep_masks(twice, as_criterion("magnitude"), create_structure("element"), 0.5, scope="global")
    assert not prunekit.masks.pruned_tensors(model)


@pytest.mark.parametrize("values", [False, True])
def test_all_or_nothing_restores_structure_and_with_values_in_place_writes(values):
    from prunekit.masks.transaction import all_or_nothing

    model = mlp()
    before = model_state(model)
    with pytest.raises(RuntimeError), all_or_nothing(model, values=values):
        prunekit.prune(model, 0.5)  # masks, hooks, renamed parameters
        model[2].weight_orig.data.zero_() if values else None  # an in-place write
        raise RuntimeError("fails after changing the model")
    assert_same(before, model_state(model))
