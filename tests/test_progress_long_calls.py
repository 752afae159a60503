"""Progress events of the long calls: lottery runs, one-shot pruning, structural search, to_sparse's
timing, the recipe runner's stages; a bar changes no result; the old callback shapes warn and work."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import prunekit
from prunekit.deprecation import reset_warnings
from prunekit.errors import InvalidParameterError
from prunekit.execution import to_sparse
from prunekit.lottery import LotteryRun
from prunekit.progress import ProgressEvent
from prunekit.runner import Runner

from conftest import classification_splits
from conftest import small_lottery_config
from conftest import tiny_mlp
from test_progress import assert_monotone_to_total, passes
from test_runner import recipe


# -- lottery -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def splits():
    return classification_splits()


def test_lottery_reports_each_training_with_fit_nested(tmp_path, splits):
    events = []
    config = small_lottery_config(levels=2, controls=("reinit",))
    LotteryRun(config, tmp_path / "run", model_fn=tiny_mlp, progress=events.append, **splits).run()
    runs = assert_monotone_to_total(events, "lottery")
    assert runs == [[(0, 5), (1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]]  # level 0, levels 1 and 2 with reinit
    tickets = [e for e in events if e.stage == "lottery" and e.done]
    assert [e.detail for e in tickets] == ["level 0", "level 1", "level 1 reinit", "level 2", "level 2 reinit"]
    fits = assert_monotone_to_total(events, "fit", parent="lottery")
    assert len(fits) == 5 and all(run[-1] == (12, 12) for run in fits)
    assert {e.detail for e in events if e.stage == "fit"} == {"level 0", "level 1", "level 1 reinit", "level 2",
                                                              "level 2 reinit"}
    assert 0.0 < tickets[-1].figures["remaining"] < 1.0 and "accuracy" in tickets[-1].figures

    resumed = []  # a resumed run reports the finished trainings too, and ends at its total
    LotteryRun(config, tmp_path / "run", model_fn=tiny_mlp, progress=resumed.append, **splits).run()
    assert [(e.done, e.total) for e in resumed] == [(0, 5), (1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]


def test_lottery_bar_changes_nothing_and_old_callback_warns(tmp_path, splits, capsys):
    config = small_lottery_config(levels=1)
    quiet = LotteryRun(config, tmp_path / "quiet", model_fn=tiny_mlp, **splits).run()
    assert capsys.readouterr() == ("", "")
    drawn = LotteryRun(config, tmp_path / "drawn", model_fn=tiny_mlp, progress=True, **splits).run()
    out, err = capsys.readouterr()
    assert out == "" and "lottery level 1" in err and "2/2" in err and "  fit level 1" in err
    strip = [{k: v for k, v in m.items() if k != "seconds"} for m in quiet]
    assert [{k: v for k, v in m.items() if k != "seconds"} for m in drawn] == strip
    reset_warnings()
    seen = []
    with pytest.warns(FutureWarning, match=r"LotteryRun\(callback=\.\.\.\).*progress="):
        old = LotteryRun(config, tmp_path / "old", model_fn=tiny_mlp,
                         callback=lambda level, control, p: seen.append((level, p.step)), **splits)
    old.run()
    assert seen[0] == (0, 1) and seen[-1] == (1, 12) and len(seen) == 24


# -- one-shot pruning ----------------------------------------------------------------------------------


def gpt(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return prunekit.create_model("gpt_tiny", n_layer=3, n_embd=32, n_head=4, block_size=32).eval()


def tokens() -> torch.Tensor:
    return torch.randint(0, 65, (4, 16), generator=torch.Generator().manual_seed(1))


def test_oneshot_reports_each_block_of_each_stage():
    events = []
    prunekit.oneshot_prune(gpt(), tokens(), method="wanda", owl=True, owl_lambda=0.05, progress=events.append)
    for stage, total in (("capture", 1), ("owl", 3), ("prune", 3)):
        runs = assert_monotone_to_total(events, stage)
        assert len(runs) == 1 and runs[0][-1] == (total, total)
    prune = [e for e in events if e.stage == "prune"]
    assert [e.done for e in prune] == [0, 1, 1, 2, 2, 3]
    assert [e.detail for e in prune[::2]] == ["block 0", "block 1", "block 2"]
    assert "seconds" in prune[1].figures and 0.4 < prune[1].figures["sparsity"] < 0.6


def test_oneshot_bar_changes_nothing(capsys):
    quiet, drawn = gpt(), gpt()
    prunekit.oneshot_prune(quiet, tokens(), method="sparsegpt")
    assert capsys.readouterr() == ("", "")
    prunekit.oneshot_prune(drawn, tokens(), method="sparsegpt", progress=True)
    out, err = capsys.readouterr()
    assert out == "" and "prune block 2" in err and "3/3" in err
    got = drawn.state_dict()
    assert all(torch.equal(got[k], v) for k, v in quiet.state_dict().items())


def test_oneshot_old_event_attributes_still_work_and_warn():
    reset_warnings()
    seen = []
    with pytest.warns(FutureWarning, match=r"OneShotProgress\.status"):
        prunekit.oneshot_prune(gpt(), tokens(), method="wanda",
                               progress=lambda e: seen.append((e.stage, e.block, e.blocks, e.status)))
    assert seen[:4] == [("capture", 0, 1, "start"), ("capture", 0, 1, "done"), ("prune", 0, 3, "start"),
                        ("prune", 0, 3, "done")]
    assert seen[-1] == ("prune", 2, 3, "done")


# -- structural search ---------------------------------------------------------------------------------


def convnet(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(16, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 4))


def test_structural_search_reports_each_step_and_each_bisection(capsys):
    x = torch.randn(1, 3, 8, 8)
    events = []
    quiet = prunekit.structural_prune(model := convnet(), x, macs_target=0.5, steps=2, progress=events.append)
    runs = assert_monotone_to_total(events, "search")
    assert runs == [[(0, 2), (1, 2), (2, 2)]]
    assert events[-1].figures["macs"] == quiet.macs_after and 0 < events[-1].figures["channels_kept"] < 1
    bisections = assert_monotone_to_total(events, "macs-search", parent="search")
    assert len(bisections) == 2 and all(len(run) == run[-1][1] for run in bisections)
    capsys.readouterr()
    drawn = prunekit.structural_prune(other := convnet(), x, macs_target=0.5, steps=2, progress=True)
    out, err = capsys.readouterr()
    assert out == "" and "search step 2" in err and "2/2" in err
    assert drawn.channels_after == quiet.channels_after
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))


def test_structural_prune_refuses_a_bad_progress_before_changing_anything():
    model = convnet()
    with pytest.raises(InvalidParameterError) as info:
        prunekit.structural_prune(model, torch.randn(1, 3, 8, 8), sparsity=0.5, progress=1)
    assert info.value.param == "progress"
    assert model[0].out_channels == 8


# -- to_sparse -------------------------------------------------------------------------------------------


def pruned_mlp() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 4)).eval()
    prunekit.prune(model, 0.9, mode="permanent")
    return model


def test_to_sparse_reports_each_layer(capsys):
    x = torch.randn(4, 32)
    fast = dict(kernels="csr", repeats=1, warmup=0, model_repeats=0, threads=1)
    events = []
    to_sparse(model := pruned_mlp(), x, progress=events.append, **fast)
    assert [(e.done, e.total, e.detail) for e in events] == [(1, 3, "0"), (2, 3, "2"), (3, 3, "4")]
    assert all(e.stage == "sparse-timing" and "dense_ms" in e.figures and "speedup" in e.figures for e in events)
    assert capsys.readouterr() == ("", "")
    to_sparse(pruned_mlp(), x, progress=True, **fast)
    out, err = capsys.readouterr()
    assert out == "" and "sparse-timing 4" in err and "3/3" in err
    assert model(x).shape == (4, 4)


# -- the recipe runner ------------------------------------------------------------------------------------


def test_runner_stage_events_end_at_their_total(tmp_path):
    runner = Runner(recipe(), tmp_path / "out")
    events = []
    runner._tell = events.append
    runner._emit(stage="dense", status="start", index=0, total=3)
    for step in (1, 2, 3):
        runner._emit(stage="dense", status="step", index=0, step=step, total=3, loss=0.5)
    runner._emit(stage="dense", status="measure", index=0)
    runner._emit(stage="dense", status="done", index=0, seconds=1.5)
    runner._emit(stage="mag-0.5", status="skipped", index=1, seconds=2.0)
    assert_monotone_to_total(events, "dense")
    assert [(e.done, e.total, e.detail) for e in events if e.stage == "dense"][-1] == (3, 3, "done")
    assert [(e.done, e.total) for e in events if e.stage == "mag-0.5"] == [(0, 0)]
    assert events[-2].figures["seconds"] == 1.5 and all(isinstance(e, ProgressEvent) for e in events)
    with pytest.raises(InvalidParameterError):
        Runner(recipe(), tmp_path / "other", progress="bar")
