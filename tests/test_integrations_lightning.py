"""PrunekitPruning: a drop-in for Lightning's ModelPruning, plus prunekit, on a real Trainer (CPU)."""

from __future__ import annotations

import importlib
import logging
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

L = pytest.importorskip("lightning")

from lightning.pytorch.callbacks import Callback, ModelPruning  # noqa: E402

import prunekit  # noqa: E402
import prunekit.controller  # noqa: E402
from prunekit import InvalidParameterError  # noqa: E402
from prunekit.integrations.lightning import PrunekitPruning  # noqa: E402
from prunekit.schedules import Linear  # noqa: E402

torch.set_num_threads(1)

#: the Linear weights only (the default, as Lightning's, takes the biases too)
WEIGHTS = {"parameter_names": ["weight"]}


class Net(L.LightningModule):
    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.fc1 = nn.Linear(16, 32)
        self.fc2 = nn.Linear(32, 16)
        self.out = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(F.relu(self.fc2(F.relu(self.fc1(x)))))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.cross_entropy(self(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


def loader(n: int = 64, seed: int = 1) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 16, generator=g)
    y = (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()
    return DataLoader(TensorDataset(x, y), batch_size=16)


def fit(model: Net, callbacks: list, epochs: int = 2, val: bool = False, **kwargs) -> L.Trainer:
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=epochs,
        enable_progress_bar=False,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        num_sanity_val_steps=kwargs.pop("num_sanity_val_steps", 0),
        callbacks=callbacks,
        **kwargs,
    )
    trainer.fit(model, loader(), loader(32, seed=2) if val else None)
    return trainer


def layers(model: Net) -> list[nn.Linear]:
    return [model.fc1, model.fc2, model.out]


def masks(model: Net) -> list[torch.Tensor]:
    return [m.weight_mask.detach().clone() != 0 for m in layers(model)]


def zeros(model: Net) -> list[int]:
    return [int((~k).sum()) for k in masks(model)]


class Probe(Callback):
    """Records the targets' sparsity after every training epoch."""

    def __init__(self) -> None:
        self.sparsity: list[float] = []

    def on_train_epoch_end(self, trainer, pl_module):
        pruned = total = 0
        for m in layers(pl_module):
            mask = m._buffers.get("weight_mask")
            pruned += 0 if mask is None else int((mask == 0).sum())
            total += m.weight.numel()
        self.sparsity.append(pruned / total)


class Refresh(Callback):
    def on_train_epoch_end(self, trainer, pl_module):
        with torch.no_grad():
            pl_module(torch.zeros(1, 16))


# -- drop-in for ModelPruning --------------------------------------------------------


@pytest.mark.parametrize(
    "fn, kwargs",
    [
        ("l1_unstructured", {"use_global_unstructured": True}),
        ("l1_unstructured", {"use_global_unstructured": False}),
        ("ln_structured", {"use_global_unstructured": False, "pruning_dim": 0, "pruning_norm": 2}),
    ],
)
def test_same_masks_as_lightning_model_pruning(fn, kwargs):
    common = dict(amount=0.3, use_lottery_ticket_hypothesis=False, make_pruning_permanent=False, **kwargs)
    ref, ours = Net(), Net()
    # torch ranks the already-pruned tensor by ``module.weight``, which only the forward pre-hook
    # recomputes, i.e. the weights before the last optimizer step; prunekit ranks the current
    # ``weight_orig * mask``. A forward pass before pruning makes both see the same weights.
    fit(ref, [Refresh(), ModelPruning(fn, parameters_to_prune=[(m, "weight") for m in layers(ref)], **common)])
    fit(ours, [Refresh(), PrunekitPruning(fn, min_keep=0, **WEIGHTS, **common)])
    for a, b in zip(masks(ref), masks(ours)):
        assert torch.equal(a, b)
    # amount is of what remains: 1 - 0.7² of every tensor after two epochs (torch's rounding)
    if fn == "l1_unstructured" and not kwargs["use_global_unstructured"]:
        for m, z in zip(layers(ours), zeros(ours)):
            n = m.weight.numel()
            first = round(0.3 * n)
            assert z == first + round(0.3 * (n - first))
    for a, b in zip(ref.parameters(), ours.parameters()):
        assert torch.allclose(a, b)


def test_amount_callable_and_apply_pruning_callable():
    model = Net()
    cb = PrunekitPruning(
        "l1_unstructured",
        amount=lambda epoch: 0.5 if epoch in (0, 2) else 0,
        apply_pruning=lambda epoch: epoch < 2,
        use_global_unstructured=False,
        use_lottery_ticket_hypothesis=False,
        make_pruning_permanent=False,
    )
    probe = Probe()
    fit(model, [cb, probe], epochs=3)
    # epoch 0 prunes 50%; epoch 1 has amount 0; epoch 2 is switched off by apply_pruning
    assert probe.sparsity == [0.5, 0.5, 0.5]
    assert [e for e, _ in cb.events] == [0]
    for m, z in zip(layers(model), zeros(model)):
        assert z == m.weight.numel() // 2


def test_sparsity_is_total_fraction_and_global_scope_exact():
    model = Net()
    cb = PrunekitPruning(
        sparsity=lambda epoch: [0.4, 0.7][epoch],
        use_global_unstructured=True,
        **WEIGHTS,
        use_lottery_ticket_hypothesis=False,
        make_pruning_permanent=False,
    )
    probe = Probe()
    fit(model, [cb, probe], epochs=2)
    total = sum(m.weight.numel() for m in layers(model))
    assert sum(zeros(model)) == round(0.7 * total)  # not 1 - 0.6·0.3
    assert probe.sparsity == [round(0.4 * total) / total, round(0.7 * total) / total]
    per_layer = [z / m.weight.numel() for z, m in zip(zeros(model), layers(model))]
    assert len({round(s, 3) for s in per_layer}) > 1  # global: layers differ


def test_global_amount_counts_like_torch():
    model = Net()
    cb = PrunekitPruning("l1_unstructured", amount=0.25, use_lottery_ticket_hypothesis=False,
                         make_pruning_permanent=False, **WEIGHTS)
    fit(model, [cb], epochs=2)
    total = sum(m.weight.numel() for m in layers(model))
    first = round(0.25 * total)
    assert sum(zeros(model)) == first + round(0.25 * (total - first))
    assert cb.scope == "global"


@pytest.mark.parametrize("scope", ["lamp", "erk"])
def test_amount_with_lamp_and_erk_allocations(scope):
    model = Net()
    cb = PrunekitPruning("l1_unstructured", amount=0.5, scope=scope, use_lottery_ticket_hypothesis=False,
                         make_pruning_permanent=False, **WEIGHTS)
    fit(model, [cb], epochs=1)
    total = sum(m.weight.numel() for m in layers(model))
    assert sum(zeros(model)) == round(0.5 * total)
    if scope == "erk":  # ERK's per-layer counts depend on the shapes only
        reference = Net()
        prunekit.prune(reference, 0.5, scope="erk", targets=[(m, "weight") for m in layers(reference)])
        assert zeros(model) == [int((m.weight == 0).sum()) for m in layers(reference)]
    else:  # LAMP is not one uniform rate
        assert len({round(z / m.weight.numel(), 3) for z, m in zip(zeros(model), layers(model))}) > 1
    with pytest.raises(prunekit.InvalidParameterError, match="amount"):
        fit(Net(), [PrunekitPruning("l1_unstructured", amount=3, scope=scope, use_lottery_ticket_hypothesis=False)],
            epochs=1)


# -- lottery ticket ------------------------------------------------------------------


def test_lottery_ticket_resets_unpruned_to_initial():
    model = Net()
    initial = [m.weight.detach().clone() for m in layers(model)]
    cb = PrunekitPruning("l1_unstructured", amount=0.5, make_pruning_permanent=False,  # LTH on by default
                         **WEIGHTS)
    fit(model, [cb], epochs=1)
    for m, w0, keep in zip(layers(model), initial, masks(model)):
        w = m.weight.detach()
        assert torch.equal(w[keep], w0[keep])
        assert torch.all(w[~keep] == 0)
        assert torch.equal(m.weight_orig.detach()[keep], w0[keep])
    # and the biases (not targets) were trained, not reset
    assert not torch.equal(model.fc1.bias.detach(), Net().fc1.bias.detach())


def test_lottery_ticket_inplace_and_resample():
    model = Net()
    initial = [m.weight.detach().clone() for m in layers(model)]
    cb = PrunekitPruning(sparsity=0.5, mode="inplace", use_lottery_ticket_hypothesis=True,
                         resample_parameters=True, make_pruning_permanent=False)
    fit(model, [cb], epochs=1)
    for m, w0 in zip(layers(model), initial):
        keep = m.weight_mask
        w = m.weight.detach()
        assert torch.all(w[~keep] == 0)
        assert not torch.equal(w[keep], w0[keep])  # resampled, not the initial draw
        assert w[keep].abs().max() <= 1 / m.in_features ** 0.5 + 1e-6  # Linear's init range


# -- permanence ----------------------------------------------------------------------


class OutputProbe(Callback):
    def __init__(self, x: torch.Tensor) -> None:
        self.x = x
        self.out: torch.Tensor | None = None

    def on_train_end(self, trainer, pl_module):
        with torch.no_grad():
            self.out = pl_module(self.x).clone()


@pytest.mark.parametrize("mode", ["reparam", "inplace"])
def test_make_pruning_permanent_keeps_outputs(mode):
    model = Net()
    x = torch.randn(8, 16)
    probe = OutputProbe(x)  # runs before the pruning callback's on_train_end
    cb = PrunekitPruning(sparsity=0.6, mode=mode, scope="local", use_lottery_ticket_hypothesis=False)
    fit(model, [probe, cb], epochs=1)
    assert not prunekit.masks.pruned_tensors(model)
    keys = list(model.state_dict())
    assert not any(k.endswith(("_orig", "_mask")) for k in keys)
    for m in layers(model):
        assert isinstance(m.weight, nn.Parameter)
        assert int((m.weight == 0).sum()) == round(0.6 * m.weight.numel())
    with torch.no_grad():
        assert torch.allclose(model(x), probe.out, atol=1e-6)


@pytest.mark.parametrize("mode", ["reparam", "inplace"])
def test_checkpoint_state_dict_is_permanent(mode):
    model = Net()
    cb = PrunekitPruning(sparsity=0.5, mode=mode)
    cb.setup(None, model, "fit")
    cb.apply_pruning(sparsity=0.5)
    effective = {f"{n}.weight": m.weight.detach().clone() for n, m in model.named_children()}
    ckpt = {"state_dict": model.state_dict()}
    cb.on_save_checkpoint(None, model, ckpt)
    sd = ckpt["state_dict"]
    assert not any(k.endswith(("_orig", "_mask")) for k in sd)
    for k, w in effective.items():
        assert torch.equal(sd[k], w)
    fresh = Net(seed=5)
    fresh.load_state_dict(sd)  # loads into a dense model
    assert prunekit.masks.pruned_tensors(model)  # training goes on with its masks


# -- prunekit criteria, structures, schedules ----------------------------------------


def test_two_four_structure_exact():
    model = Net()
    cb = PrunekitPruning(criterion="l2", structure="2:4", use_lottery_ticket_hypothesis=False,
                         make_pruning_permanent=False)
    assert cb.scope == "local"
    fit(model, [cb], epochs=2)
    for keep in masks(model):
        groups = keep.reshape(keep.shape[0], -1, 4)
        assert torch.all(groups.sum(-1) == 2)


def test_channel_structure_inplace_with_overrides():
    model = Net()
    cb = PrunekitPruning(criterion="random", structure="channel", sparsity=0.5, overrides={"out": 0.25},
                         mode="inplace", use_lottery_ticket_hypothesis=False, make_pruning_permanent=False)
    fit(model, [cb], epochs=1)
    for m, want in zip(layers(model), [0.5, 0.5, 0.25]):
        rows_dead = (~m.weight_mask).all(dim=1)
        assert int(rows_dead.sum()) == round(want * m.out_features)
        assert m.weight_mask.dtype == torch.bool
        assert torch.all(m.weight.detach()[rows_dead] == 0)  # stays zero through optimizer steps


def test_epoch_schedule_increases_sparsity():
    model = Net()
    cb = PrunekitPruning(schedule=Linear(final=0.6, start=0, end=2, unit="epoch"),
                         use_lottery_ticket_hypothesis=False, make_pruning_permanent=False, **WEIGHTS)
    probe = Probe()
    fit(model, [cb, probe], epochs=3)
    total = sum(m.weight.numel() for m in layers(model))
    # events prune at the start of epochs 0, 1, 2 to 0, 0.3, 0.6 of all targets (global, exact)
    assert [t for t, _ in cb.events] == [0, 1, 2]
    assert probe.sparsity == [0.0, round(0.3 * total) / total, round(0.6 * total) / total]
    assert sum(zeros(model)) == round(0.6 * total)


def test_step_schedule_prunes_at_global_steps():
    model = Net()
    seen: list[tuple[int, float]] = []

    class StepProbe(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append((trainer.global_step, cb.sparsity_now()))

    cb = PrunekitPruning(schedule=Linear(final=0.5, start=2, end=6, frequency=2, unit="step"),
                         use_lottery_ticket_hypothesis=False, make_pruning_permanent=False)
    fit(model, [cb, StepProbe()], epochs=2)  # 4 steps an epoch
    assert [t for t, _ in cb.events] == [2, 4, 6]
    # linear from initial=0 at step 2 to 0.5 at step 6; seen before each step, after its event
    assert seen == [(0, 0.0), (1, 0.0), (2, 0.0), (3, 0.0), (4, 0.25), (5, 0.25), (6, 0.5), (7, 0.5)]


def test_prune_on_validation_epoch_end_skips_sanity_check():
    model = Net()
    cb = PrunekitPruning("random_unstructured", amount=0.2, prune_on_train_epoch_end=False,
                         use_lottery_ticket_hypothesis=False, make_pruning_permanent=False, **WEIGHTS)
    fit(model, [cb], epochs=2, val=True, num_sanity_val_steps=1)
    assert [e for e, _ in cb.events] == [0, 1]
    total = sum(m.weight.numel() for m in layers(model))
    first = round(0.2 * total)
    assert sum(zeros(model)) == first + round(0.2 * (total - first))


def test_custom_torch_pruning_method_and_function():
    class EveryOther(torch.nn.utils.prune.BasePruningMethod):
        PRUNING_TYPE = "unstructured"

        def __init__(self, amount):
            self.amount = amount

        def compute_mask(self, t, default_mask):
            mask = default_mask.clone()
            mask.view(-1)[::2] = 0
            return mask

    model = Net()
    fit(model, [PrunekitPruning(EveryOther, amount=0.5, use_lottery_ticket_hypothesis=False,
                                make_pruning_permanent=False)], epochs=1)
    assert all(torch.all(k.view(-1)[::2] == 0) for k in masks(model))
    model = Net()
    fit(model, [PrunekitPruning(torch.nn.utils.prune.random_unstructured, amount=0.5,
                                use_global_unstructured=False, use_lottery_ticket_hypothesis=False,
                                make_pruning_permanent=False)], epochs=1)
    assert [z for z in zeros(model)] == [m.weight.numel() // 2 for m in layers(model)]


def test_verbose_logs_via_logging(caplog):
    model = Net()
    cb = PrunekitPruning("l1_unstructured", amount=0.5, verbose=2, use_lottery_ticket_hypothesis=False,
                         use_global_unstructured=False, **WEIGHTS)
    with caplog.at_level(logging.INFO, logger="prunekit.integrations.lightning"):
        fit(model, [cb], epochs=1)
    messages = [r.getMessage() for r in caplog.records if r.name == "prunekit.integrations.lightning"]
    total = sum(m.weight.numel() for m in layers(model))
    # local pruning logs torch's function name, as Lightning does
    assert f"Applied `l1_unstructured`. Pruned: 0/{total} (0.00%) -> {total // 2}/{total} (50.00%)" in messages
    fc1 = ("Applied `l1_unstructured` to `Linear(in_features=16, out_features=32, bias=True).weight` "
           "with amount=0.5. Pruned: 0 (0.00%) -> 256 (50.00%) [fc1.weight]")
    assert messages.count(fc1) == 1
    assert sum(m.endswith("[out.weight]") for m in messages) == 1


# -- one controller ----------------------------------------------------------------------


def test_same_event_log_as_fit_for_the_same_schedule():
    schedule = Linear(final=0.6, initial=0.1, start=1, end=7, frequency=3, unit="step")
    model = Net()
    cb = PrunekitPruning(schedule=schedule, scope="global", use_lottery_ticket_hypothesis=False,
                         make_pruning_permanent=False, **WEIGHTS)
    fit(model, [cb], epochs=2)  # 4 steps an epoch
    reference = Net()
    controller = prunekit.controller.PruningController(
        prunekit.Pruner(reference, scope="global", targets=[(m, "weight") for m in layers(reference)]), schedule)
    prunekit.fit(reference, loader(), epochs=2, lr=0.05, controller=controller)
    total = sum(m.weight.numel() for m in layers(model))
    assert [(e.t, e.unit) for e in cb.event_log] == [(1, "step"), (4, "step"), (7, "step")]
    for event, level in zip(cb.event_log, [0.1, 0.35, 0.6]):
        assert event.level == pytest.approx(level)
        assert event.sparsity == round(level * total) / total
    assert cb.event_log == controller.events  # steps, levels, sparsities, descriptions


def test_every_pruning_point_is_a_controller_event(monkeypatch):
    recorded = []
    original = prunekit.controller.PruningController.record

    def spy(self, t, level, **kwargs):
        recorded.append(t)
        return original(self, t, level, **kwargs)

    monkeypatch.setattr(prunekit.controller.PruningController, "record", spy)
    cb = PrunekitPruning("l1_unstructured", amount=0.3, use_lottery_ticket_hypothesis=False,
                         make_pruning_permanent=False)
    fit(Net(), [cb], epochs=2)
    scheduled = PrunekitPruning(schedule=Linear(final=0.5, start=0, end=1, unit="epoch"),
                                use_lottery_ticket_hypothesis=False, make_pruning_permanent=False)
    fit(Net(), [scheduled], epochs=2)
    assert recorded == [0, 1, 0, 1]
    assert [e for e, _ in cb.events] == [0, 1] and [e for e, _ in scheduled.events] == [0, 1]
    assert cb.event_log[0].level is None and cb.event_log[0].description == "amount=0.3"


def test_context_gives_data_to_a_criterion_that_needs_it():
    x, y = next(iter(loader()))
    model = Net()
    cb = PrunekitPruning(criterion="snip", sparsity=0.5, scope="local", context={"data": [(x, y)]},
                         use_lottery_ticket_hypothesis=False, make_pruning_permanent=False)
    fit(model, [cb], epochs=1)
    assert cb.controller.context == {"data": [(x, y)]}
    assert zeros(model) == [m.weight.numel() // 2 for m in layers(model)]
    bare = PrunekitPruning(criterion="snip", sparsity=0.5, use_lottery_ticket_hypothesis=False)
    bare.setup(None, Net(), "fit")
    with pytest.raises(InvalidParameterError, match="data"):
        bare.apply_pruning(sparsity=0.5)


# -- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, param",
    [
        ({"amount": 0.5, "sparsity": 0.5}, "sparsity"),
        ({"pruning_fn": "ln_structured", "use_global_unstructured": False}, "pruning_dim"),
        ({"pruning_fn": "ln_structured", "pruning_dim": 0, "use_global_unstructured": False}, "pruning_norm"),
        ({"pruning_fn": "l3_unstructured"}, "pruning_fn"),
        ({"amount": 1.5}, "amount"),
        ({"sparsity": -0.1}, "sparsity"),
        ({"structure": "2:4", "amount": 0.5}, "amount"),
        ({"structure": "2:4", "scope": "global"}, "scope"),
        ({"mode": "lean"}, "mode"),
        ({"verbose": 3}, "verbose"),
        ({"amount": 0.5, "overrides": {"fc1": 0.1}}, "overrides"),
        ({"schedule": "agp"}, "schedule"),
        ({"context": [1]}, "context"),
        ({"pruning_fn": "l1_unstructured", "criterion": "l2"}, "pruning_fn"),
        ({"scope": "local", "use_global_unstructured": True}, "use_global_unstructured"),
    ],
)
def test_bad_arguments_raise_invalid_parameter(kwargs, param):
    with pytest.raises(InvalidParameterError) as info:
        PrunekitPruning(**kwargs)
    assert info.value.param == param
    assert "expected" in str(info.value)


def test_amount_int_beyond_remaining_raises():
    model = Net()
    cb = PrunekitPruning(amount=10_000, use_global_unstructured=False)
    cb.setup(None, model, "fit")
    with pytest.raises(InvalidParameterError, match="amount"):
        cb.apply_pruning(10_000)


def test_missing_lightning_names_the_install(monkeypatch):
    for name in ("lightning", "lightning.pytorch", "lightning.pytorch.callbacks", "pytorch_lightning",
                 "pytorch_lightning.callbacks"):
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, "prunekit.integrations.lightning")
    with pytest.raises(ImportError, match="pip install lightning"):
        importlib.import_module("prunekit.integrations.lightning")
    monkeypatch.undo()
    # prunekit itself never needed it
    assert importlib.import_module("prunekit.integrations.lightning").PrunekitPruning is not None


# -- DDP -------------------------------------------------------------------------------

_DDP_SCRIPT = textwrap.dedent(
    """
    import os, sys
    import torch
    import torch.nn.functional as F
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset
    import lightning as L
    from prunekit.integrations.lightning import PrunekitPruning

    torch.set_num_threads(1)
    out_dir = sys.argv[1]

    class Net(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(16, 32)
            self.fc2 = nn.Linear(32, 4)

        def forward(self, x):
            return self.fc2(F.relu(self.fc1(x)))

        def training_step(self, batch, batch_idx):
            x, y = batch
            return F.cross_entropy(self(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

        def on_train_start(self):
            # a different RNG stream on every rank: unsynchronised random masks would differ
            torch.manual_seed(1000 + self.global_rank)

    torch.manual_seed(0)
    model = Net()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 16, generator=g)
    y = (x[:, 0] > 0).long()
    cb = PrunekitPruning(criterion="random", sparsity=lambda e: [0.3, 0.6][e], parameter_names=["weight"],
                         use_lottery_ticket_hypothesis=True, resample_parameters=True,
                         make_pruning_permanent=False)

    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=2,
                        enable_progress_bar=False, logger=False, enable_checkpointing=False,
                        enable_model_summary=False, callbacks=[cb])
    trainer.fit(model, DataLoader(TensorDataset(x, y), batch_size=16))
    rank = trainer.global_rank
    with open(os.path.join(out_dir, f"masks{rank}.bin"), "wb") as f:
        for m in (model.fc1, model.fc2):
            f.write((m.weight_mask != 0).numpy().tobytes())
    with open(os.path.join(out_dir, f"weights{rank}.bin"), "wb") as f:
        for m in (model.fc1, model.fc2):
            f.write(m.weight_orig.detach().numpy().tobytes())
    # the control, on a fresh model in the same processes: random masks without the broadcast
    assert torch.distributed.is_initialized()
    for sync in (False, True):
        torch.manual_seed(2000 + rank)
        fresh = Net()
        other = PrunekitPruning(criterion="random", sparsity=0.5, use_global_unstructured=False)
        other._sync = sync
        other.setup(trainer, fresh, "fit")
        other.apply_pruning(sparsity=0.5)
        with open(os.path.join(out_dir, f"control{int(sync)}{rank}.bin"), "wb") as f:
            for m in (fresh.fc1, fresh.fc2):
                f.write((m.weight_mask != 0).numpy().tobytes())
    # shut gloo down before the interpreter does: left to exit, its threads sometimes abort the
    # process ("terminate called without an active exception", return code -6)
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
    """
)


@pytest.mark.slow
def test_ddp_random_masks_identical_on_every_rank(tmp_path):
    script = tmp_path / "ddp_prune.py"
    script.write_text(_DDP_SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for key in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_PORT"):
        env.pop(key, None)
    proc = subprocess.run([sys.executable, str(script), str(tmp_path)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-4000:]

    def read(name: str) -> list[bytes]:
        return [(tmp_path / f"{name}{r}.bin").read_bytes() for r in (0, 1)]

    masks_, weights = read("masks"), read("weights")
    assert len(masks_[0]) == 16 * 32 + 32 * 4
    assert masks_[0] == masks_[1]  # byte for byte
    assert weights[0] == weights[1]  # resampled lottery-ticket weights were broadcast too
    assert masks_[0].count(0) == round(0.6 * 512) + round(0.6 * 128)
    # the control: the ranks draw different random masks, which the broadcast makes agree
    unsynced, synced = read("control0"), read("control1")
    assert unsynced[0] != unsynced[1]
    assert synced[0] == synced[1]
