"""prunekit.lottery: IMP levels, reset strategies, controls, resume."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from prunekit.errors import InvalidParameterError
from prunekit.lottery import LotteryConfig, LotteryRun
from prunekit.lottery import levels as levels_module
from prunekit.lottery.loop import StepBatches, lr_at
from prunekit.measure.size import dense_state_dict

from conftest import classification_splits
from conftest import small_lottery_config as config
from conftest import tiny_mlp as tiny


@pytest.fixture(scope="module")
def data():
    return classification_splits()


def make_run(tmp_path, data, name="run", model_fn=tiny, **kw) -> LotteryRun:
    return LotteryRun(config(**kw), tmp_path / name, model_fn=model_fn, **data)


def effective(model: nn.Module) -> dict[str, torch.Tensor]:
    return dense_state_dict(model)


@pytest.fixture
def starts(monkeypatch):
    """Records the effective weights each (level, control) starts training from."""
    seen: dict[tuple[int, str | None], dict[str, torch.Tensor]] = {}
    real = levels_module.train_segment

    def spy(model, config, train, evaluator, segment, **kw):
        key = (len(seen), None)
        seen[key] = {"weights": effective(model), "segment": segment}
        return real(model, config, train, evaluator, segment, **kw)

    monkeypatch.setattr(levels_module, "train_segment", spy)
    return seen


# -- config ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kw, param", [
    ({"rate": 1.2}, "rate"), ({"rate": 0}, "rate"), ({"reset": "rewnd"}, "reset"),
    ({"rewind_step": 12}, "rewind_step"), ({"scope": "layer"}, "scope"), ({"controls": ("shufle",)}, "controls"),
    ({"reset": "finetune", "controls": ("reinit",)}, "controls"), ({"levels": -1}, "levels"),
    ({"optimizer": "rmsprop"}, "optimizer"), ({"lr": 0.0}, "lr"),
])
def test_config_rejects_bad_values(kw, param):
    with pytest.raises(InvalidParameterError) as err:
        config(**kw)
    assert err.value.param == param


def test_config_round_trip_and_fingerprint():
    c = config(controls=("reinit", "shuffle"), include=("*",))
    assert LotteryConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    assert c.fingerprint() == LotteryConfig.from_dict(c.to_dict()).fingerprint()
    assert config(rate=0.3).fingerprint() != c.fingerprint()
    assert config(output_rate=None).effective_output_rate == pytest.approx(0.1)
    with pytest.raises(InvalidParameterError):
        LotteryConfig.from_dict({"rat": 0.2})


# -- levels and sparsity ------------------------------------------------------------------------


def test_levels_prune_rate_of_remaining_per_layer_and_output(tmp_path, data):
    run = make_run(tmp_path, data, levels=3)
    results = run.run()
    assert [m["level"] for m in results] == [0, 1, 2, 3]
    sizes = {"0.weight": 256, "2.weight": 512, "4.weight": 48}
    for level, metrics in enumerate(results):
        masks = run.masks(level)
        for name, numel in sizes.items():
            rate = 0.1 if name == "4.weight" else 0.2
            kept = numel if masks is None else int(masks[name].sum())
            # each level keeps round((1 - rate)^L · n) weights of a layer (exact to one unit)
            assert abs(kept - (1 - rate) ** level * numel) <= 1, (level, name)
            assert metrics["layers_remaining"][name] == pytest.approx(kept / numel)
        assert metrics["target_remaining"] == pytest.approx(0.8 ** level)
        directory = run.path(level)
        assert (directory / "model.safetensors").is_file() and (directory / "sparsity.json").is_file()
        assert (directory / "mask.safetensors").is_file() == (level > 0)
    # masks only shrink: a pruned weight is never revived
    for level in (2, 3):
        for name, mask in run.masks(level).items():
            assert not (mask & ~run.masks(level - 1)[name]).any()
    assert sorted(p.name for p in run.out.iterdir() if p.name.startswith("level_")) == [
        "level_000", "level_001", "level_002", "level_003"]
    # the trained model's effective weights are zero where the mask is
    model = run.load_model(3)
    state = effective(model)
    for name, mask in run.masks(3).items():
        assert (state[name][~mask] == 0).all()


def test_global_scope_prunes_all_but_output_together(tmp_path, data):
    run = make_run(tmp_path, data, scope="global", levels=2, output_rate=None)
    run.run()
    masks = run.masks(2)
    kept = int(masks["0.weight"].sum()) + int(masks["2.weight"].sum())
    assert abs(kept - 0.64 * (256 + 512)) <= 1
    assert abs(int(masks["4.weight"].sum()) - 0.9 ** 2 * 48) <= 1  # default output rate: rate / 2
    assert int(masks["0.weight"].sum()) / 256 != pytest.approx(int(masks["2.weight"].sum()) / 512)


def test_early_stop_iteration_is_argmin_of_validation_loss(tmp_path, data):
    metrics = make_run(tmp_path, data, levels=0).run()[0]
    curve = metrics["curve"]
    assert [p["iteration"] for p in curve] == [0, 4, 8, 12]
    best = min(curve, key=lambda p: p["val_loss"])
    assert metrics["early_stop_iteration"] == best["iteration"]
    assert metrics["early_stop_accuracy"] == best["test_accuracy"]
    assert metrics["accuracy"] == curve[-1]["test_accuracy"]


# -- reset strategies -----------------------------------------------------------------------------


def test_lottery_reset_starts_from_theta0_on_survivors_zero_elsewhere(tmp_path, data, starts):
    run = make_run(tmp_path, data, reset="lottery")
    run.run()
    init = run.init_weights()
    for level in (1, 2):
        begin, masks = starts[(level, None)], run.masks(level)
        assert (begin["segment"].start, begin["segment"].stop) == (0, 12)
        for name, value in begin["weights"].items():
            expected = init[name] * masks[name] if name in masks else init[name]
            assert torch.equal(value, expected), name


def test_weight_rewinding_starts_from_theta_k(tmp_path, data, starts):
    run = make_run(tmp_path, data, reset="rewind", rewind_step=4)
    run.run()
    theta_k = run.rewind_weights()
    assert not torch.equal(theta_k["0.weight"], run.init_weights()["0.weight"])
    for level in (1, 2):
        begin, masks = starts[(level, None)], run.masks(level)
        assert (begin["segment"].start, begin["segment"].stop) == (4, 12)
        for name, value in begin["weights"].items():
            assert torch.equal(value, theta_k[name] * masks[name] if name in masks else theta_k[name])
    # θ_k is exactly the dense network after k iterations: a run of T = k ends there
    short = make_run(tmp_path, data, name="short", levels=0, train_steps=4)
    short.run()
    assert all(torch.equal(theta_k[k], v) for k, v in effective(short.load_model(0)).items())


def test_lr_rewinding_keeps_weights_and_replays_schedule_from_k(tmp_path, data, starts):
    lrs: dict[int, list[tuple[int, float]]] = {}
    run = LotteryRun(config(reset="lr_rewind", rewind_step=4, lr_schedule="cosine"), tmp_path / "r",
                     model_fn=tiny, callback=lambda level, c, p: lrs.setdefault(level, []).append((p.step, p.lr)),
                     **data)
    run.run()
    assert lrs[1] == lrs[0][4:] == lrs[2]  # the LR of iterations k+1..T, replayed each level
    assert lrs[1][0][1] < 5e-3 and lrs[1][-1][1] < lrs[1][0][1]
    for level in (1, 2):
        previous = effective(run.load_model(level - 1))
        masks = run.masks(level)
        for name, value in starts[(level, None)]["weights"].items():
            assert torch.equal(value, previous[name] * masks[name] if name in masks else previous[name])


def test_finetune_keeps_weights_at_final_lr(tmp_path, data):
    lrs: dict[int, list[float]] = {}
    c = config(reset="finetune", rewind_step=4, lr_schedule="cosine", finetune_steps=5)
    run = LotteryRun(c, tmp_path / "f", model_fn=tiny,
                     callback=lambda level, _c, p: lrs.setdefault(level, []).append(p.lr), **data)
    run.run()
    assert len(lrs[1]) == 5 and set(lrs[1]) == {lr_at(c, 11)}
    assert run.metrics(1)["curve"][-1]["iteration"] == 5


# -- controls ----------------------------------------------------------------------------------------


def test_controls_keep_per_layer_sparsity_and_change_mask_or_init(tmp_path, data, starts):
    run = make_run(tmp_path, data, controls=("reinit", "shuffle"), levels=1)
    run.run()
    ticket = run.masks(1)
    reinit_mask = load_file(str(run.path(1, "reinit") / "mask.safetensors"))
    shuffle_mask = load_file(str(run.path(1, "shuffle") / "mask.safetensors"))
    init = run.init_weights()
    for name, mask in ticket.items():
        assert torch.equal(reinit_mask[name], mask)
        assert int(shuffle_mask[name].sum()) == int(mask.sum())
        assert not torch.equal(shuffle_mask[name], mask)
    # order of training: level 0, ticket 1, reinit 1, shuffle 1
    reinit_start, shuffle_start = starts[(2, None)]["weights"], starts[(3, None)]["weights"]
    for name, mask in ticket.items():
        assert not torch.equal(reinit_start[name][mask], init[name][mask])
        assert torch.equal(shuffle_start[name], init[name] * shuffle_mask[name])
    assert starts[(2, None)]["segment"].data_seed == starts[(1, None)]["segment"].data_seed
    assert run.metrics(1, "reinit")["layers_remaining"] == run.metrics(1)["layers_remaining"]


# -- resume -------------------------------------------------------------------------------------------


class Kill(Exception):
    pass


def _files(run: LotteryRun) -> dict[str, dict[str, torch.Tensor]]:
    return {str(p.relative_to(run.out)): load_file(str(p)) for p in sorted(run.out.rglob("*.safetensors"))}


def _strip(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k != "seconds"}


def test_killed_run_resumes_bit_exact_without_recomputing(tmp_path, data, monkeypatch):
    full = make_run(tmp_path, data, name="full", controls=("reinit",), reset="rewind", rewind_step=4)
    full.run()

    def kill(level, control, p):
        if level == 2 and control is None and p.step == 7:
            raise Kill

    killed = LotteryRun(full.config, tmp_path / "killed", model_fn=tiny, callback=kill, **data)
    with pytest.raises(Kill):
        killed.run()
    assert killed.computed == [(0, None), (1, None), (1, "reinit")]
    assert not (killed.path(2) / "metrics.json").exists()

    resumed = LotteryRun(full.config, tmp_path / "killed", model_fn=tiny, **data)
    resumed.run()
    assert resumed.skipped == [(0, None), (1, None), (1, "reinit")]
    assert resumed.computed == [(2, None), (2, "reinit")]
    a, b = _files(full), _files(resumed)
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].keys() == b[name].keys()
        assert all(torch.equal(a[name][k], b[name][k]) for k in a[name]), name
    for level in range(3):
        for control in (None, "reinit") if level else (None,):
            assert _strip(full.metrics(level, control)) == _strip(resumed.metrics(level, control))

    calls = []
    monkeypatch.setattr(levels_module, "train_segment", lambda *a, **k: calls.append(1))
    again = LotteryRun(full.config, tmp_path / "full", model_fn=tiny, **data)
    assert [m["level"] for m in again.run()] == [0, 1, 2]
    assert calls == [] and again.computed == []


def test_resume_with_another_config_is_refused(tmp_path, data):
    make_run(tmp_path, data, levels=0).run()
    with pytest.raises(InvalidParameterError) as err:
        make_run(tmp_path, data, levels=0, rate=0.3).run()
    assert "rate: 0.2 -> 0.3" in str(err.value) and err.value.param == "config"
    other = {"train": (data["train"][0][:200], data["train"][1][:200]), "val": data["val"], "test": data["test"]}
    with pytest.raises(InvalidParameterError, match="data sizes"):
        LotteryRun(config(levels=0), tmp_path / "run", model_fn=tiny, **other).run()


def test_step_batches_depend_only_on_the_global_iteration():
    x, y = torch.arange(50.0).reshape(50, 1), torch.arange(50)
    whole = list(StepBatches(x, y, 10, seed=1, start=0, stop=12))
    tail = list(StepBatches(x, y, 10, seed=1, start=7, stop=12))
    assert all(torch.equal(a[1], b[1]) for a, b in zip(whole[7:], tail))
    epoch = torch.cat([b[1] for b in whole[:5]])
    assert sorted(epoch.tolist()) == list(range(50))  # one epoch visits each sample once
    assert not torch.equal(epoch, torch.cat([b[1] for b in whole[5:10]]))  # a new order per epoch


def test_data_sets_are_read_into_memory_once():
    from torch.utils.data import TensorDataset

    from prunekit.lottery.loop import as_tensors

    x, y = torch.randn(6, 2), torch.arange(6)
    assert all(torch.equal(a, b) for a, b in zip(as_tensors(TensorDataset(x, y), "train"), (x, y)))
    items = [(x[i], int(y[i])) for i in range(6)]
    assert all(torch.equal(a, b) for a, b in zip(as_tensors(items, "train"), (x, y)))
    with pytest.raises(InvalidParameterError):
        as_tensors((x, y[:3]), "train")
