"""PrunekitTrainerCallback on a tiny BERT built from a config, trained by transformers.Trainer on CPU."""

from __future__ import annotations

import importlib
import logging
import sys

import pytest
import torch
from torch import nn

transformers = pytest.importorskip("transformers")

from transformers import (  # noqa: E402
    BertConfig,
    BertForSequenceClassification,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from prunekit import InvalidParameterError  # noqa: E402
from prunekit.integrations.huggingface import PrunekitTrainerCallback  # noqa: E402
from prunekit.masks import pruned_tensors  # noqa: E402
from prunekit.schedules import Linear, OneShot  # noqa: E402

torch.set_num_threads(1)
logging.getLogger("transformers").setLevel(logging.ERROR)


class ContainsSeven(torch.utils.data.Dataset):
    """Label 1 iff token 7 appears in the sequence."""

    def __init__(self, n: int = 64, length: int = 12, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        ids = torch.randint(8, 100, (n, length), generator=g)
        labels = torch.randint(0, 2, (n,), generator=g)
        where = torch.randint(1, length, (n,), generator=g)
        ids[labels == 1, where[labels == 1]] = 7
        ids[:, 0] = 2  # a [CLS]-like token
        self.ids, self.labels = ids, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.ids[i], "attention_mask": torch.ones_like(self.ids[i]), "labels": self.labels[i]}


def tiny_bert() -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=32, num_labels=2)
    return BertForSequenceClassification(config)


def train(model, callbacks, tmp_path, **kwargs) -> Trainer:
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=16,
        learning_rate=kwargs.pop("learning_rate", 3e-3),
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
        dataloader_num_workers=0,
        **kwargs,
    )
    trainer = Trainer(model=model, args=args, train_dataset=ContainsSeven(), callbacks=callbacks)
    trainer.train()
    return trainer


def encoder_linears(model) -> list[tuple[str, nn.Linear]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear) and n.startswith("bert.encoder.")]


class StepProbe(TrainerCallback):
    """Sparsity of the encoder Linears before every optimizer step (after the pruning callback)."""

    def __init__(self, model) -> None:
        self.model = model
        self.seen: dict[int, float] = {}

    def on_step_begin(self, args, state, control, **kwargs):
        pruned = total = 0
        for _n, m in encoder_linears(self.model):
            mask = m._buffers.get("weight_mask")
            pruned += 0 if mask is None else int((mask == 0).sum())
            total += m.weight.numel()
        self.seen[state.global_step] = pruned / total


def test_step_schedule_events_exact_final_sparsity_and_training(tmp_path):
    model = tiny_bert()
    schedule = Linear(final=0.5, initial=0.2, start=2, end=8, frequency=2, unit="step")
    cb = PrunekitTrainerCallback(schedule, criterion="magnitude", scope="local", include="bert.encoder.*")
    probe = StepProbe(model)
    trainer = train(model, [cb, probe], tmp_path, max_steps=60, learning_rate=5e-3)

    # events at the scheduled steps, to the scheduled levels, applied before those steps
    assert [t for t, _ in cb.events] == [2, 4, 6, 8]
    for (t, got), want in zip(cb.events, [0.2, 0.3, 0.4, 0.5]):
        assert abs(got - want) < 1e-3
        assert probe.seen[t] == got
        assert probe.seen[t - 1] < got
    assert probe.seen[0] == probe.seen[1] == 0.0
    assert probe.seen[59] == cb.events[-1][1]

    # targets: exactly the encoder Linears, each exactly at the final level, made permanent
    assert {t.name for t in cb.pruner.targets} == {f"{n}.weight" for n, _ in encoder_linears(model)}
    assert not pruned_tensors(model)
    assert not any(k.endswith(("_orig", "_mask")) for k in model.state_dict())
    for _n, m in encoder_linears(model):
        assert int((m.weight == 0).sum()) == round(0.5 * m.weight.numel())
    assert int((model.classifier.weight == 0).sum()) == 0  # not a target

    # the model still trains, and the logs carry the sparsity
    logs = [h for h in trainer.state.log_history if "loss" in h]
    losses = [h["loss"] for h in logs]
    assert sum(losses[-4:]) / 4 < 0.5 * sum(losses[:4]) / 4  # ~0.7 -> ~0.05
    # the log of step 2 is written after 2 steps, before the event at global_step 2
    by_step = {h["step"]: h["sparsity"] for h in logs}
    assert [by_step[2], by_step[3], by_step[60]] == [0.0, round(probe.seen[2], 6), round(cb.events[-1][1], 6)]


def test_epoch_schedule_two_four_inplace(tmp_path):
    model = tiny_bert()
    cb = PrunekitTrainerCallback(OneShot(final=0.5, start=1, unit="epoch"), structure="2:4", mode="inplace",
                                 make_pruning_permanent=False, log_sparsity=False)
    probe = StepProbe(model)
    train(model, [cb, probe], tmp_path, num_train_epochs=2)  # 4 steps an epoch
    assert cb.events == [(1, 0.5)]
    assert probe.seen[3] == 0.0 and probe.seen[4] == 0.5
    for t in cb.pruner.targets:
        assert t.state == "inplace"
        keep = t.keep_mask()
        assert torch.all(keep.reshape(keep.shape[0], -1, 4).sum(-1) == 2)  # exact 2:4 along the input
        assert torch.all(t.original.detach()[~keep] == 0)  # stayed zero through AdamW steps


def test_lottery_ticket_reset(tmp_path):
    model = tiny_bert()
    initial = {n: m.weight.detach().clone() for n, m in encoder_linears(model)}
    cb = PrunekitTrainerCallback(OneShot(final=0.6, start=3, unit="step"), scope="global",
                                 include="bert.encoder.*", use_lottery_ticket_hypothesis=True,
                                 make_pruning_permanent=False)
    snap: dict[str, torch.Tensor] = {}

    class Snapshot(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 3:  # right after the event and its reset
                snap.update({n: m.weight.detach().clone() for n, m in encoder_linears(model)})

    train(model, [cb, Snapshot()], tmp_path, max_steps=5)
    assert abs(cb.events[0][1] - 0.6) < 1e-3
    for name, w0 in initial.items():
        keep = dict(encoder_linears(model))[name].weight_mask != 0
        assert torch.equal(snap[name][keep], w0[keep])
        assert torch.all(snap[name][~keep] == 0)


def test_events_go_through_the_controller(tmp_path, monkeypatch):
    from prunekit.controller import PruningController

    calls = []
    original = PruningController.event

    def spy(self, t, level, **kwargs):
        calls.append((t, level))
        return original(self, t, level, **kwargs)

    monkeypatch.setattr(PruningController, "event", spy)
    schedule = Linear(final=0.4, initial=0.2, start=1, end=3, frequency=2, unit="step")
    cb = PrunekitTrainerCallback(schedule, include="bert.encoder.*", make_pruning_permanent=False,
                                 log_sparsity=False)
    train(tiny_bert(), [cb], tmp_path, max_steps=4)
    assert calls == [(1, pytest.approx(0.2)), (3, pytest.approx(0.4))]
    assert [(e.t, e.unit, e.level) for e in cb.event_log] == [(1, "step", pytest.approx(0.2)),
                                                              (3, "step", pytest.approx(0.4))]
    assert cb.events == [(e.t, e.sparsity) for e in cb.controller.events]


@pytest.mark.parametrize(
    "kwargs, param",
    [
        ({}, "schedule"),
        ({"schedule": OneShot(final=0.5), "sparsity": 0.5}, "sparsity"),
        ({"schedule": "agp"}, "schedule"),
        ({"sparsity": 1.5}, "sparsity"),
        ({"sparsity": 0.5, "scope": "everywhere"}, "scope"),
        ({"structure": "2:4", "scope": "global"}, "scope"),
        ({"sparsity": 0.5, "mode": "lean"}, "mode"),
        ({"sparsity": 0.5, "overrides": {"x": 2.0}}, "overrides['x']"),
        ({"sparsity": 0.5, "context": "data"}, "context"),
    ],
)
def test_bad_arguments(kwargs, param):
    with pytest.raises(InvalidParameterError) as info:
        PrunekitTrainerCallback(**kwargs)
    assert info.value.param == param


def test_missing_transformers_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    monkeypatch.delitem(sys.modules, "prunekit.integrations.huggingface")
    with pytest.raises(ImportError, match="pip install transformers"):
        importlib.import_module("prunekit.integrations.huggingface")
    monkeypatch.undo()
    assert importlib.import_module("prunekit.integrations.huggingface").PrunekitTrainerCallback


def test_lazy_package_import():
    import prunekit.integrations as integrations

    assert integrations.PrunekitTrainerCallback is PrunekitTrainerCallback
    with pytest.raises(AttributeError):
        integrations.Nope  # noqa: B018
