"""prunekit.analysis.instability: linear mode connectivity of two trainings of a lottery ticket."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

import prunekit.lottery
from prunekit.analysis import InstabilityResult, instability_analysis, linear_path_errors
from prunekit.deprecation import reset_warnings
from prunekit.errors import InvalidParameterError
from prunekit.lottery import LotteryRun
from prunekit.measure.accuracy import evaluate_accuracy

from conftest import classification_splits, small_lottery_config
from conftest import tiny_mlp as tiny
from conftest import tiny_mlp_bn as tiny_bn


@pytest.fixture(scope="module")
def data():
    return classification_splits()


def make_run(tmp_path, data, **kw) -> LotteryRun:
    return LotteryRun(small_lottery_config(**kw), tmp_path / "run", model_fn=tiny, **data)


def test_instability_of_identical_copies_is_zero_and_files_written(tmp_path, data):
    run = make_run(tmp_path, data, reset="rewind", rewind_step=4, levels=1)
    run.run()
    same = instability_analysis(run, 1, seeds=(5, 5), points=5, plot=False)
    assert same.instability == 0.0 and len(set(same.errors)) == 1
    differ = instability_analysis(run, 1, seeds=(0, 1), points=5)
    assert differ.instability >= 0.0 and differ.alphas == [0.0, 0.25, 0.5, 0.75, 1.0]
    stored = json.loads((run.out / "instability" / "instability_001_0_1.json").read_text())
    assert stored["instability"] == pytest.approx(differ.instability)
    assert (run.out / "instability" / "instability_001_0_1.png").stat().st_size > 1000
    with pytest.raises(InvalidParameterError):
        instability_analysis(run, 1, seeds=(0,))


def test_linear_path_end_points_and_batchnorm(data):
    torch.manual_seed(0)
    a, b = tiny(), tiny()
    batches = [data["test"]]
    result = linear_path_errors(a, b, batches, tiny, points=3)
    assert result.errors[0] == pytest.approx(1 - evaluate_accuracy(a, batches).accuracy)
    assert result.errors[-1] == pytest.approx(1 - evaluate_accuracy(b, batches).accuracy)
    assert result.instability == pytest.approx(max(result.errors) - (result.errors[0] + result.errors[-1]) / 2)
    with pytest.raises(InvalidParameterError, match="bn_data"):
        linear_path_errors(tiny_bn(), tiny_bn(), batches, tiny_bn)
    bn = linear_path_errors(tiny_bn(), tiny_bn(), batches, tiny_bn, points=3, bn_data=[data["train"]])
    assert bn.bn_recomputed and len(bn.errors) == 3


def test_old_keyword_names_warn_once_and_clash_with_the_new(data):
    reset_warnings()
    torch.manual_seed(0)
    a, b = tiny_bn(), tiny_bn()
    batches, train = [data["test"]], [data["train"]]
    new = linear_path_errors(a, b, batches, tiny_bn, points=3, bn_data=train)
    with pytest.warns(FutureWarning, match=r"linear_path_errors\(loader=\.\.\.\)"):
        with pytest.warns(FutureWarning, match=r"linear_path_errors\(bn_loader=\.\.\.\)"):
            old = linear_path_errors(a, b, model_fn=tiny_bn, points=3, loader=batches, bn_loader=train)
    assert old.errors == new.errors
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        linear_path_errors(a, b, model_fn=tiny_bn, points=3, loader=batches, bn_loader=train)
    with pytest.raises(InvalidParameterError) as info:
        linear_path_errors(a, b, batches, tiny_bn, bn_data=train, bn_loader=train)
    assert info.value.param == "bn_loader"


def test_old_lottery_names_still_serve_the_moved_ones():
    reset_warnings()
    with pytest.warns(FutureWarning, match="prunekit.lottery.instability_analysis"):
        assert prunekit.lottery.instability_analysis is instability_analysis
    with pytest.warns(FutureWarning, match="prunekit.lottery.InstabilityResult"):
        assert prunekit.lottery.InstabilityResult is InstabilityResult
    with pytest.raises(AttributeError):
        prunekit.lottery.nothing_here  # noqa: B018
