"""prunekit.analysis.sensitivity: per-layer curves, the threshold allocation, the plot."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import prunekit
from conftest import assert_unchanged, make_tiny, snapshot
from prunekit import InvalidParameterError
from prunekit.analysis import DEFAULT_SPARSITIES, SensitivityResult, plot_sensitivity, sensitivity_analysis
from prunekit.measure import evaluate_accuracy

PNG = b"\x89PNG\r\n\x1a\n"
LADDER = (0.0, 0.25, 0.5, 0.75, 0.9)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest on one thread (and do not fight other processes for cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(16, 48), nn.ReLU(), nn.Linear(48, 32), nn.ReLU(), nn.Linear(32, 4))


def fidelity(reference: nn.Module, x: torch.Tensor):
    """A smooth metric: 1 - relative output error against the unpruned model (higher is better)."""
    with torch.no_grad():
        want = reference(x).clone()

    def evaluate(model: nn.Module) -> float:
        with torch.no_grad():
            got = model(x)
        return 1.0 - float((got - want).norm() / want.norm())

    return evaluate


@pytest.fixture(scope="module")
def classifier(one_thread):
    """A tiny MLP trained to high accuracy on a linearly separable task (fixed seeds)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 16, generator=g)
    y = (x @ torch.randn(16, 4, generator=g)).argmax(1)
    model = mlp(0)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(150):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model, [(x, y)]


def x_input(n: int = 64) -> torch.Tensor:
    return torch.randn(n, 16, generator=torch.Generator().manual_seed(3))


def global_sparsity(model: nn.Module, names) -> float:
    report = prunekit.sparsity_report(model)
    rows = [report[n] for n in names]
    return sum(r.zeros for r in rows) / sum(r.params for r in rows)


# -- curves --------------------------------------------------------------------------------


def test_curves_have_one_point_per_ladder_value():
    model = mlp()
    result = sensitivity_analysis(model, fidelity(model, x_input()), sparsities=LADDER)
    assert list(result.curves) == ["0.weight", "2.weight", "4.weight"]
    for name, curve in result.curves.items():
        assert [s for s, _ in curve] == list(LADDER)
        assert curve[0][1] == result.baseline  # sparsity 0 = the unpruned model
        assert result.params[name] == dict(model.named_parameters())[name].numel()
    assert result.baseline == pytest.approx(1.0)
    assert all(m < result.baseline for curve in result.curves.values() for s, m in curve if s > 0)
    assert result.settings["sparsities"] == list(LADDER)


def test_default_ladder_and_unsorted_input():
    assert DEFAULT_SPARSITIES == (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    model = mlp()
    result = sensitivity_analysis(model, fidelity(model, x_input()), sparsities=[0.5, 0.0, 0.25], include="0")
    assert [s for s, _ in result.curves["0.weight"]] == [0.0, 0.25, 0.5]


def test_curve_points_match_pruning_that_layer_alone():
    model = mlp()
    evaluate = fidelity(model, x_input())
    result = sensitivity_analysis(model, evaluate, sparsities=(0.0, 0.5))
    alone = prunekit.prune(copy.deepcopy(model), 0.5, include="2.weight")
    assert dict(result.curves["2.weight"])[0.5] == pytest.approx(evaluate(alone), abs=1e-6)


@pytest.mark.parametrize("use_copy", [True, False])
@pytest.mark.parametrize("state", ["dense", "reparam", "inplace"])
def test_model_is_unchanged_bit_exact(use_copy, state):
    model = make_tiny(0)
    if state != "dense":
        prunekit.prune(model, 0.3, mode=state)
    model.train()
    before = snapshot(model)
    x = torch.randn(4, 8, 4, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out_before = model(x).clone()

    def evaluate(m):
        m.eval()
        with torch.no_grad():
            return float(m(x).sum())

    result = sensitivity_analysis(model, evaluate, sparsities=(0.0, 0.5, 0.9), copy=use_copy)
    assert len(result.curves) == 3
    assert_unchanged(model, before)
    assert all(m.training for m in model.modules())  # flags restored (copy=False) or never touched
    with torch.no_grad():
        assert torch.equal(model(x), out_before)


def test_model_restored_when_evaluate_fails():
    model = mlp()
    before = snapshot(model)
    calls = []

    def evaluate(m):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("boom")
        return 0.5

    with pytest.raises(RuntimeError, match="boom"):
        sensitivity_analysis(model, evaluate, sparsities=LADDER, copy=False)
    assert_unchanged(model, before)


def test_progress_and_evaluation_count():
    model = mlp()
    calls, seen = [], []

    def evaluate(m):
        calls.append(1)
        return 1.0

    sensitivity_analysis(model, evaluate, sparsities=(0.0, 0.5, 0.75), progress=lambda *a: seen.append(a))
    assert len(seen) == 9 and seen[-1][:2] == (9, 9)
    assert seen[0][2:4] == ("0.weight", 0.0)
    assert len(calls) == 1 + 3 * 2  # sparsity 0 of a dense tensor reuses the baseline


def test_explicit_targets_and_structure():
    model = mlp()
    result = sensitivity_analysis(
        model, fidelity(model, x_input()), sparsities=(0.0, 0.5), targets=[(model[2], "weight")], structure="channel"
    )
    assert list(result.curves) == ["2.weight"]
    assert result.settings["structure"].startswith("channel")


def test_higher_is_better_false_matches_negated_metric():
    model = mlp()
    good = fidelity(model, x_input())
    up = sensitivity_analysis(model, good, sparsities=LADDER)
    down = sensitivity_analysis(model, lambda m: -good(m), sparsities=LADDER, higher_is_better=False)
    for name in up.curves:
        assert down.drop(name, 0.6) == pytest.approx(up.drop(name, 0.6))
    assert down.allocate(0.6) == pytest.approx(up.allocate(0.6))


def test_nan_counts_as_worst():
    model = mlp()

    def evaluate(m):
        return float("nan") if float((m[0].weight == 0).float().mean()) > 0.6 else 1.0

    result = sensitivity_analysis(model, evaluate, sparsities=(0.0, 0.5, 0.75), include="0")
    assert dict(result.curves["0.weight"])[0.75] == -math.inf
    assert result.allocate(0.4) == {"0.weight": pytest.approx(0.4)}
    with pytest.raises(InvalidParameterError, match="at most 0.5"):
        result.allocate(0.7)


@pytest.mark.parametrize(
    "kwargs, param",
    [
        ({"sparsities": (0.0, 1.5)}, "sparsities"),
        ({"sparsities": ()}, "sparsities"),
        ({"sparsities": "0.5"}, "sparsities"),
        ({"sparsities": (0.5, 0.5)}, "sparsities"),
        ({"sparsities": (0.0, 3)}, "sparsities"),
        ({"structure": "2:4"}, "structure"),
        ({"higher_is_better": 1}, "higher_is_better"),
        ({"progress": 3}, "progress"),
        ({"include": "nothing*"}, "targets"),
        ({"sparsities": (0.0, 1.0)}, "sparsity"),  # min_keep=1 guards the last unit; fails before evaluating
    ],
)
def test_bad_arguments(kwargs, param):
    model = mlp()
    calls = []
    with pytest.raises(InvalidParameterError) as info:
        sensitivity_analysis(model, lambda m: calls.append(1) or 1.0, **kwargs)
    assert info.value.param == param
    assert not calls


def test_bad_model_and_evaluate():
    with pytest.raises(InvalidParameterError) as info:
        sensitivity_analysis("model", lambda m: 1.0)
    assert info.value.param == "model"
    with pytest.raises(InvalidParameterError) as info:
        sensitivity_analysis(mlp(), 3)
    assert info.value.param == "evaluate"
    with pytest.raises(InvalidParameterError, match="evaluate") as info:
        sensitivity_analysis(mlp(), lambda m: "high", sparsities=(0.0, 0.5))
    assert "str" in str(info.value)


# -- allocation -------------------------------------------------------------------------------


def synthetic_result() -> tuple[nn.Module, SensitivityResult]:
    """fc 0 hurts ten times more per unit of sparsity than fc 2; fc 4 in between."""
    model = mlp()

    def zeros(m):
        return float((m.weight == 0).float().mean())

    def evaluate(m):
        return 1.0 - 0.5 * zeros(m[0]) ** 2 - 0.05 * zeros(m[2]) ** 2 - 0.2 * zeros(m[4]) ** 2

    return model, sensitivity_analysis(model, evaluate)


def test_layer_that_hurts_more_gets_lower_sparsity():
    _model, result = synthetic_result()
    for target in (0.3, 0.5, 0.7):
        allocation = result.allocate(target)
        assert allocation["0.weight"] < allocation["4.weight"] < allocation["2.weight"]
        # one threshold: the drops of layers not at the top of the ladder are equal
        drops = [result.drop(name, s) for name, s in allocation.items() if s < 0.9]
        assert max(drops) - min(drops) < 1e-6


@pytest.mark.parametrize("target", [0.2, 0.5, 0.7, 0.85])
def test_allocation_meets_target_through_prune_overrides(target):
    model = mlp()
    result = sensitivity_analysis(model, fidelity(model, x_input()))
    allocation = result.allocate(target)
    assert set(allocation) == set(result.curves)
    weights = result.params
    planned = sum(weights[n] * s for n, s in allocation.items()) / sum(weights.values())
    assert planned == pytest.approx(target, abs=1e-5)
    pruned = prunekit.prune(copy.deepcopy(model), 0.0, overrides=allocation)
    assert abs(global_sparsity(pruned, allocation) - target) <= 0.01
    for name, s in allocation.items():
        assert abs(prunekit.sparsity_report(pruned)[name].sparsity - s) < 0.01


@pytest.mark.parametrize("target", [0.3, 0.6, 0.8])
def test_allocation_with_step_shaped_accuracy_curves(classifier, target):
    """Accuracy on a small set is flat, then drops: ties at one threshold are shared."""
    model, loader = classifier
    result = sensitivity_analysis(model, lambda m: evaluate_accuracy(m, loader).accuracy)
    allocation = result.allocate(target)
    pruned = prunekit.prune(copy.deepcopy(model), 0.0, overrides=allocation)
    assert abs(global_sparsity(pruned, allocation) - target) <= 0.01
    assert max(allocation.values()) <= 0.9 + 1e-9


def test_allocation_is_monotone_in_the_target():
    _model, result = synthetic_result()
    previous = None
    for target in (0.1, 0.3, 0.5, 0.7, 0.9):
        allocation = result.allocate(target)
        if previous is not None:
            assert all(allocation[n] >= previous[n] - 1e-9 for n in allocation)
        previous = allocation
    assert previous == {n: pytest.approx(0.9) for n in previous}
    assert result.allocate(0.0) == {n: 0.0 for n in previous}


def test_max_drop_respected_or_explained():
    _model, result = synthetic_result()
    allocation = result.allocate(0.4, max_drop=0.05)
    assert all(result.drop(n, s) <= 0.05 + 1e-9 for n, s in allocation.items())
    with pytest.raises(InvalidParameterError) as info:
        result.allocate(0.85, max_drop=0.001)
    assert info.value.param == "target_sparsity"
    assert "at most 0." in str(info.value) and "max_drop=0.001" in str(info.value)
    best = float(str(info.value).split("at most ")[1].split(",")[0])
    assert 0 < best < 0.85
    reached = result.allocate(best - 1e-4, max_drop=0.001)  # the stated best is reachable
    assert all(result.drop(n, s) <= 0.001 + 1e-9 for n, s in reached.items())


def test_target_beyond_the_ladder():
    _model, result = synthetic_result()
    with pytest.raises(InvalidParameterError, match="ladder") as info:
        result.allocate(0.95)
    assert info.value.param == "target_sparsity"


@pytest.mark.parametrize(
    "kwargs, param",
    [
        ({"target_sparsity": 1.5}, "target_sparsity"),
        ({"target_sparsity": "half"}, "target_sparsity"),
        ({"target_sparsity": 0.5, "max_drop": -1}, "max_drop"),
        ({"target_sparsity": 0.5, "layers": ["fc9.weight"]}, "layers"),
    ],
)
def test_allocate_bad_arguments(kwargs, param):
    _model, result = synthetic_result()
    with pytest.raises(InvalidParameterError) as info:
        result.allocate(**kwargs)
    assert info.value.param == param


def test_allocate_subset_of_layers():
    _model, result = synthetic_result()
    allocation = result.allocate(0.5, layers=["0.weight", "2.weight"])
    assert set(allocation) == {"0.weight", "2.weight"}
    p = result.params
    total = p["0.weight"] * allocation["0.weight"] + p["2.weight"] * allocation["2.weight"]
    assert total / (p["0.weight"] + p["2.weight"]) == pytest.approx(0.5, abs=1e-5)


# -- serialisation and plot ----------------------------------------------------------------------


def test_to_dict_json_roundtrip(tmp_path):
    _model, result = synthetic_result()
    data = result.to_dict()
    assert data["curves"]["0.weight"][0] == [0.0, result.baseline]
    path = tmp_path / "sens.json"
    text = result.to_json(path)
    assert json.loads(path.read_text()) == json.loads(text) == data
    again = SensitivityResult.from_dict(json.loads(text))
    assert again.curves == result.curves and again.params == result.params
    assert again.allocate(0.5) == result.allocate(0.5)
    with pytest.raises(InvalidParameterError) as info:
        SensitivityResult.from_dict({"curves": {}})
    assert "baseline" in info.value.param
    assert "0.weight" in result.table()


def test_plot_sensitivity_writes_png(tmp_path):
    _model, result = synthetic_result()
    path = plot_sensitivity(result, tmp_path / "sub" / "sens.png", title="tiny")
    data = path.read_bytes()
    assert data[:8] == PNG and len(data) > 1000
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    with pytest.raises(InvalidParameterError) as info:
        plot_sensitivity({"a": []}, tmp_path / "x.png")
    assert info.value.param == "result"
