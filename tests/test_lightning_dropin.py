"""PrunekitPruning where code written for Lightning's ModelPruning reaches: its errors, static
methods, attributes, defaults, log lines, checkpoints and lottery ticket (CPU, tiny models)."""

from __future__ import annotations

import logging
import pickle
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune as torch_prune
from torch.utils.data import DataLoader, TensorDataset

L = pytest.importorskip("lightning")

from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402
from lightning.pytorch.utilities.exceptions import MisconfigurationException  # noqa: E402

from prunekit import InvalidParameterError  # noqa: E402
from prunekit.integrations.lightning import PrunekitPruning, PruningMisconfiguration  # noqa: E402

from conftest import EveryOther  # noqa: E402

torch.set_num_threads(1)

LOGGER = "prunekit.integrations.lightning"


class Tiny(L.LightningModule):
    """Three Linear layers, the middle one without a bias."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.a = nn.Linear(8, 8)
        self.b = nn.Linear(8, 8, bias=False)
        self.c = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(F.relu(self.b(F.relu(self.a(x)))))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val", F.cross_entropy(self(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def data(n: int = 16) -> DataLoader:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(n, 8, generator=g)
    return DataLoader(TensorDataset(x, (x[:, 0] > 0).long()), batch_size=4)


def fit(model: L.LightningModule, callbacks: list, epochs: int = 2, **kwargs) -> L.Trainer:
    options = dict(accelerator="cpu", devices=1, max_epochs=epochs, limit_train_batches=2, limit_val_batches=0,
                   enable_progress_bar=False, logger=False, enable_checkpointing=False,
                   enable_model_summary=False, num_sanity_val_steps=0)
    options.update(kwargs)
    trainer = L.Trainer(callbacks=callbacks, **options)
    trainer.fit(model, data(), data(8) if options["limit_val_batches"] else None)
    return trainer


def zeros(module: nn.Module, name: str = "weight") -> int:
    return int((getattr(module, name) == 0).sum())


# -- errors: both prunekit's and Lightning's -----------------------------------------


@pytest.mark.parametrize("kwargs, param, lightning_words", [
    ({"parameter_names": ["chocolate"]}, "parameter_names", r"chocolate isn't in \('weight', 'bias'\)"),
    ({"pruning_fn": {}}, "pruning_fn", r"expected to be a str in \["),
    ({"pruning_fn": "random_structured"}, "pruning_dim", "should be provided"),
    ({"verbose": 3}, "verbose", r"must be any of \(0, 1, 2\)"),
    ({"pruning_fn": "ln_structured", "pruning_dim": 0}, "pruning_norm",
     "requesting `ln_structured` pruning, the `pruning_norm`"),
    ({"pruning_fn": "ln_structured", "pruning_dim": 0, "pruning_norm": 1, "use_global_unstructured": True},
     "use_global_unstructured", "is supported with `use_global_unstructured=True`"),
    ({"pruning_fn": "random_structured", "pruning_dim": 1, "use_global_unstructured": True},
     "use_global_unstructured", "is supported with `use_global_unstructured=True`"),
    ({"pruning_fn": torch_prune.Identity, "use_global_unstructured": False}, "use_global_unstructured",
     "currently only supported with"),
    ({"pruning_fn": torch_prune.L1Unstructured(0.5)}, "pruning_fn", "not an instance"),
])
def test_misconfiguration_is_both_error_types(kwargs, param, lightning_words):
    with pytest.raises(MisconfigurationException, match=lightning_words) as info:
        PrunekitPruning(**kwargs)
    assert isinstance(info.value, InvalidParameterError) and isinstance(info.value, PruningMisconfiguration)
    assert info.value.param == param
    assert "expected" in str(info.value) and "Fix:" in str(info.value)


def test_prunekit_scope_lifts_lightnings_two_refusals():
    model = Tiny()
    # global ranking of channels: prunekit's scope, not Lightning's flag
    fit(model, [PrunekitPruning("ln_structured", pruning_dim=0, pruning_norm=2, scope="global", amount=0.25,
                                use_lottery_ticket_hypothesis=False, make_pruning_permanent=False)], epochs=1)
    dead_rows = sum(int((m.weight_mask == 0).all(dim=1).sum()) for m in (model.a, model.b, model.c))
    assert dead_rows > 0
    # a custom method on each tensor on its own
    model = Tiny()
    fit(model, [PrunekitPruning(EveryOther, scope="local", use_lottery_ticket_hypothesis=False,
                                make_pruning_permanent=False)], epochs=1)
    assert torch.all(model.a.weight_mask.view(-1)[::2] == 0) and torch.all(model.a.weight_mask.view(-1)[1::2] == 1)


def test_bad_parameters_to_prune_fail_in_setup_as_misconfiguration():
    model, stranger = Tiny(), nn.Linear(2, 2)
    with pytest.raises(MisconfigurationException, match="don't exist in the model"):
        PrunekitPruning(parameters_to_prune=[(stranger, "weight")]).setup(None, model, "fit")
    with pytest.raises(MisconfigurationException, match="don't exist in the model"):
        PrunekitPruning(parameters_to_prune=[(model.a, "wieght")]).setup(None, model, "fit")
    with pytest.raises(MisconfigurationException, match="tuple with 2 elements"):
        PrunekitPruning(parameters_to_prune=[(model.a,)]).setup(None, model, "fit")


def test_parameter_names_takes_globs_beyond_weight_and_bias():
    class WithMha(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.mha = nn.MultiheadAttention(8, 2)

    model = WithMha()
    cb = PrunekitPruning(parameter_names=["in_proj_weight*"], types="all", use_lottery_ticket_hypothesis=False)
    cb.setup(None, model, "fit")
    assert [n for _m, n in cb._parameters_to_prune] == ["in_proj_weight"]


# -- Lightning's static methods and attributes -------------------------------------------


def test_is_pruning_method():
    assert PrunekitPruning._is_pruning_method(EveryOther)
    assert PrunekitPruning._is_pruning_method(torch_prune.L1Unstructured)
    for other in (EveryOther(), torch_prune.l1_unstructured, "l1_unstructured", None, nn.Linear):
        assert not PrunekitPruning._is_pruning_method(other)


def test_sanitize_parameters_to_prune_keeps_parameters_only():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(3, 3))
            self.bias = nn.Parameter(torch.randn(3))
            self.flag = True
            self.table = torch.randn(2)
            self.label = "x"
            self.nothing = None

    model = nn.Sequential(Odd(), nn.Linear(3, 3, bias=False), nn.Sequential(nn.LayerNorm(3)))
    model[0].training = True
    names = ["weight", "bias", "flag", "table", "label", "nothing", "training"]
    pairs = PrunekitPruning.sanitize_parameters_to_prune(model, (), names)
    # weights of every leaf module first, then the biases (Lightning's order); containers skipped
    assert pairs == [(model[0], "weight"), (model[1], "weight"), (model[2][0], "weight"),
                     (model[0], "bias"), (model[2][0], "bias")]
    assert PrunekitPruning.sanitize_parameters_to_prune(model, [(model[1], "weight")]) == [(model[1], "weight")]
    assert len(PrunekitPruning.sanitize_parameters_to_prune(model)) == 5  # default: weight and bias


def test_default_selection_prunes_biases_and_weights_as_lightning():
    model = Tiny()
    cb = PrunekitPruning("l1_unstructured", amount=0.5, use_lottery_ticket_hypothesis=False,
                         make_pruning_permanent=False)
    fit(model, [cb], epochs=1)
    assert {(id(m), n) for m, n in cb._parameters_to_prune} == {
        (id(model.a), "weight"), (id(model.a), "bias"), (id(model.b), "weight"),
        (id(model.c), "weight"), (id(model.c), "bias")}
    assert hasattr(model.a, "bias_mask") and hasattr(model.c, "bias_mask")
    total = 64 + 8 + 64 + 16 + 2
    pruned = sum(zeros(m, n) for m, n in cb._parameters_to_prune)
    assert pruned == total // 2  # one global ranking over weights and biases
    # structures take the weights only by default
    cb = PrunekitPruning("ln_structured", pruning_dim=0, pruning_norm=1, use_global_unstructured=False)
    cb.setup(None, Tiny(), "fit")
    assert [n for _m, n in cb._parameters_to_prune] == ["weight"] * 3


def test_callback_pickles_for_spawned_processes():
    cb = PrunekitPruning("l1_unstructured", amount=0.3, parameter_names=["weight"], verbose=1)
    clone = pickle.loads(pickle.dumps(cb))
    model = Tiny()
    fit(model, [clone], epochs=1)
    assert zeros(model.b) == round(0.3 * 64 + 0.3 * 16 + 0.3 * 64) - zeros(model.a) - zeros(model.c)


# -- every pruning function, locally and globally ------------------------------------------


@pytest.mark.parametrize("pruning_fn, use_global, pairs, lottery", [
    ("l1_unstructured", True, False, True),
    ("l1_unstructured", False, True, False),
    ("random_unstructured", True, True, False),
    ("random_unstructured", False, False, True),
    ("ln_structured", False, False, True),
    ("random_structured", False, True, False),
    (EveryOther, True, False, True),
])
def test_each_pruning_fn_trains_and_prunes(pruning_fn, use_global, pairs, lottery, caplog):
    model = Tiny()
    kwargs = dict(amount=0.3, use_global_unstructured=use_global, use_lottery_ticket_hypothesis=lottery,
                  verbose=1, make_pruning_permanent=True)
    if pairs:
        kwargs["parameters_to_prune"] = [(model.a, "weight"), (model.b, "weight")]
    if isinstance(pruning_fn, str) and pruning_fn.endswith("_structured"):
        kwargs.update(pruning_dim=0, parameter_names=None if pairs else ["weight"])
        if pruning_fn == "ln_structured":
            kwargs["pruning_norm"] = 1
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    with caplog.at_level(logging.INFO, logger=LOGGER):
        fit(model, [PrunekitPruning(pruning_fn, **kwargs)], epochs=3)
    assert not hasattr(model.b, "weight_orig")  # made permanent at the end
    n = model.b.weight.numel()
    if pruning_fn == "ln_structured" or pruning_fn == "random_structured":
        assert int((model.b.weight == 0).all(dim=1).sum()) == 2 + 2 + 1  # 30% of the rows left, three times
    elif pruning_fn is EveryOther:
        assert zeros(model.b) > n // 2  # every other unpruned entry, three times over all targets
    elif not use_global:
        pruned = 0
        for _ in range(3):  # round(0.3 × what remains), rounded half to even as torch does
            pruned += round(0.3 * (n - pruned))
        assert zeros(model.b) == pruned == 19 + 14 + 9
    else:
        assert zeros(model.b) > 0
    name = {True: {"l1_unstructured": "L1Unstructured", "random_unstructured": "RandomUnstructured"},
            False: {}}[use_global].get(pruning_fn, getattr(pruning_fn, "__name__", pruning_fn))
    lines = [r.getMessage() for r in caplog.records if r.name == LOGGER and r.getMessage().startswith("Applied")]
    assert len(lines) == 3 and all(line.startswith(f"Applied `{name}`. Pruned: ") for line in lines)


def test_custom_method_masks_are_torchs_global_unstructured():
    ours, theirs = Tiny(), Tiny()
    fit(ours, [PrunekitPruning(EveryOther, parameter_names=["weight"], use_lottery_ticket_hypothesis=False,
                               make_pruning_permanent=False)], epochs=2)
    pairs = [(m, "weight") for m in (theirs.a, theirs.b, theirs.c)]
    for _ in range(2):  # no amount reaches EveryOther(): its __init__ takes none
        torch_prune.global_unstructured(pairs, pruning_method=EveryOther)
    for mine, ref in zip((ours.a, ours.b, ours.c), (theirs.a, theirs.b, theirs.c)):
        assert torch.equal(mine.weight_mask != 0, ref.weight_mask != 0)


def test_amount_may_empty_a_tensor_as_torch_unless_min_keep():
    model = Tiny()
    cb = PrunekitPruning("l1_unstructured", amount=1.0, use_global_unstructured=False,
                         parameters_to_prune=[(model.c, "bias")], use_lottery_ticket_hypothesis=False,
                         make_pruning_permanent=False)
    cb.setup(None, model, "fit")
    cb.apply_pruning(1.0)
    assert torch.all(model.c.bias_mask == 0)  # as torch.nn.utils.prune.l1_unstructured(amount=1.0)
    guarded = PrunekitPruning("l1_unstructured", amount=1.0, use_global_unstructured=False, min_keep=1,
                              parameters_to_prune=[(model.a, "bias")])
    guarded.setup(None, model, "fit")
    with pytest.raises(InvalidParameterError, match="min_keep"):
        guarded.apply_pruning(1.0)
    # prunekit's sparsity keeps its guard by default
    assert PrunekitPruning(sparsity=0.5)._min_keep == 1 and cb._min_keep == 0


# -- logs -------------------------------------------------------------------------------


def test_two_callbacks_alternate_and_log_lightnings_lines(caplog):
    model = Tiny()
    common = dict(parameters_to_prune=[(model.a, "weight"), (model.c, "weight")], verbose=2,
                  use_lottery_ticket_hypothesis=False)
    first = PrunekitPruning("l1_unstructured", amount=0.5, apply_pruning=lambda e: e % 2 == 0, **common)
    second = PrunekitPruning("random_unstructured", amount=0.25, apply_pruning=lambda e: e % 2 == 1, **common)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        fit(model, [first, second], epochs=3)
    lines = [r.getMessage() for r in caplog.records if r.name == LOGGER and r.getMessage().startswith("Applied")]
    pct = r"\(\d+\.\d\d%\)"
    a = re.escape("`Linear(in_features=8, out_features=8, bias=True).weight`")
    c = re.escape("`Linear(in_features=8, out_features=2, bias=True).weight`")
    expected = []
    for method, amount in (("L1Unstructured", 0.5), ("RandomUnstructured", 0.25), ("L1Unstructured", 0.5)):
        expected += [rf"Applied `{method}`. Pruned: \d+/80 {pct} -> \d+/80 {pct}$",
                     rf"Applied `{method}` to {a} with amount={amount}. Pruned: \d+ {pct} -> \d+ {pct} \[a.weight\]$",
                     rf"Applied `{method}` to {c} with amount={amount}. Pruned: \d+ {pct} -> \d+ {pct} \[c.weight\]$"]
    assert len(lines) == len(expected)
    for line, pattern in zip(lines, expected):
        assert re.match(pattern, line), (line, pattern)
    assert lines[0] == "Applied `L1Unstructured`. Pruned: 0/80 (0.00%) -> 40/80 (50.00%)"
    assert not hasattr(model.a, "weight_orig")  # both made it permanent; the second found nothing left to do


@pytest.mark.parametrize("amount", [0.1, 0.5])
def test_logged_totals_count_every_target_entry(amount, caplog):
    class One(Tiny):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(8, 2)  # 16 weights + 2 biases are the only targets

        def forward(self, x):
            return self.a(x)

    model = One()
    cb = PrunekitPruning("l1_unstructured", amount=amount, verbose=1, use_global_unstructured=True,
                         include="a", use_lottery_ticket_hypothesis=False)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        fit(model, [cb], epochs=1)
    (line,) = [r.getMessage() for r in caplog.records if r.name == LOGGER and r.getMessage().startswith("Applied")]
    pruned = round(amount * 18)
    assert line == f"Applied `L1Unstructured`. Pruned: 0/18 (0.00%) -> {pruned}/18 ({pruned / 18:.2%})"


# -- checkpoints ----------------------------------------------------------------------------


@pytest.mark.parametrize("permanent", [False, True])
def test_checkpoint_after_fit_has_masks_unless_permanent(permanent, tmp_path):
    model = Tiny()
    cb = PrunekitPruning("random_unstructured", amount=0.5, parameters_to_prune=[(model.c, "weight")],
                         make_pruning_permanent=permanent, use_lottery_ticket_hypothesis=False)
    trainer = fit(model, [cb], epochs=1)
    path = tmp_path / "after.ckpt"
    trainer.save_checkpoint(path)
    saved = torch.load(path, weights_only=True)["state_dict"]
    assert ("c.weight_orig" in saved) is not permanent and hasattr(model.c, "weight_orig") is not permanent
    weight = saved["c.weight"] if permanent else saved["c.weight_orig"] * saved["c.weight_mask"]
    assert int((weight == 0).sum()) == 8


@pytest.mark.parametrize("on_train_epoch_end", [False, True])
def test_checkpoints_during_training_are_permanent_copies(on_train_epoch_end, tmp_path):
    seen = []

    class Watch(PrunekitPruning):
        def on_save_checkpoint(self, trainer, pl_module, checkpoint):
            had = hasattr(pl_module.c, "weight_orig")
            super().on_save_checkpoint(trainer, pl_module, checkpoint)
            seen.append(("c.weight_orig" in checkpoint["state_dict"], had, hasattr(pl_module.c, "weight_orig")))

    model = Tiny()
    cb = Watch("random_unstructured", parameters_to_prune=[(model.c, "weight")], prune_on_train_epoch_end=False,
               use_lottery_ticket_hypothesis=False)
    ckpt = ModelCheckpoint(dirpath=tmp_path, monitor="loss", save_top_k=2, save_last=True,
                           save_on_train_epoch_end=on_train_epoch_end)
    fit(model, [cb, ckpt], epochs=3, enable_checkpointing=True, limit_val_batches=1)
    assert seen and all(not in_ckpt for in_ckpt, _had, _after in seen)
    assert all(had == after for _in, had, after in seen) and any(had for _in, had, _after in seen)
    assert not hasattr(model.c, "weight_orig")  # permanent at the end of training
    for path in (ckpt.best_model_path, ckpt.last_model_path):
        loaded = Tiny.load_from_checkpoint(path)
        assert not hasattr(loaded.c, "weight_orig") and zeros(loaded.c) > 0


# -- lottery ticket ------------------------------------------------------------------------


@pytest.mark.parametrize("resample", [False, True])
def test_lottery_ticket_calls_the_overridable_method_and_exposes_saved_layers(resample):
    checks = []

    class Counting(PrunekitPruning):
        calls = 0

        def apply_lottery_ticket_hypothesis(self):
            super().apply_lottery_ticket_hypothesis()
            self.calls += 1
            for entry in self._original_layers.values():
                for i, name in entry["names"]:
                    module, pname = self._parameters_to_prune[i]
                    assert pname == name
                    now = getattr(module, name + "_orig", None)
                    now = getattr(module, name) if now is None else now
                    checks.append(torch.allclose(now, getattr(entry["data"], name)))

    model = Tiny()
    cb = Counting("l1_unstructured", use_lottery_ticket_hypothesis=lambda e: e % 2 == 1,
                  resample_parameters=resample)
    fit(model, [cb], epochs=5)
    assert cb.calls == 2
    assert len(checks) == 2 * 5 and all(c is not resample for c in checks)


def test_every_lottery_reset_is_exact():
    # Lightning 2.6.6 shares storage between the weight and its saved copy, so only its first reset
    # restores the initial values; prunekit copies them in every time
    model = Tiny()
    initial = model.a.weight.detach().clone()
    cb = PrunekitPruning("l1_unstructured", amount=0.3, parameters_to_prune=[(model.a, "weight")],
                         make_pruning_permanent=False)
    resets = []

    class AfterEachEpoch(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):  # runs after the pruning callback's
            resets.append(torch.equal(pl_module.a.weight_orig.detach(), initial))

    fit(model, [cb, AfterEachEpoch()], epochs=3)
    assert resets == [True, True, True]
    assert [e.reset for e in cb.event_log] == [True, True, True]
    keep = model.a.weight_mask.bool()
    assert torch.equal(model.a.weight.detach()[keep], initial[keep])


def test_scheduled_pruning_resets_the_ticket_after_each_event():
    from prunekit.schedules import Linear

    model = Tiny()
    initial = model.a.weight.detach().clone()
    cb = PrunekitPruning(schedule=Linear(final=0.5, start=0, end=2, unit="epoch"), parameter_names=["weight"],
                         use_lottery_ticket_hypothesis=lambda e: e >= 1, make_pruning_permanent=False)
    fit(model, [cb], epochs=3)
    assert [(e.t, e.reset) for e in cb.event_log] == [(0, False), (1, True), (2, True)]
    keep = model.a.weight_mask.bool()
    # the last event (start of epoch 2) reset the survivors; one epoch of training moved them since
    assert not torch.equal(model.a.weight.detach()[keep], initial[keep])
    assert torch.equal(model.a.weight_orig.detach()[~keep], initial[~keep])  # pruned entries were reset too
