"""PrunekitTrainerCallback under multi-process training: ``torchrun --nproc_per_node 2`` on the CPU
(gloo), a tiny BERT trained by ``transformers.Trainer``; every rank must end with rank 0's masks."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("transformers")

_SCRIPT = textwrap.dedent(
    """
    import logging, os, sys
    import torch
    from torch import nn
    from transformers import (BertConfig, BertForSequenceClassification, Trainer, TrainerCallback,
                              TrainerControl, TrainerState, TrainingArguments)
    from prunekit.integrations.huggingface import PrunekitTrainerCallback
    from prunekit.schedules import Linear

    torch.set_num_threads(1)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    out_dir = sys.argv[1]

    class Data(torch.utils.data.Dataset):
        def __init__(self, n=32, length=8):
            g = torch.Generator().manual_seed(0)
            self.ids = torch.randint(8, 100, (n, length), generator=g)
            self.labels = (self.ids[:, 1] > 50).long()

        def __len__(self):
            return len(self.labels)

        def __getitem__(self, i):
            return {"input_ids": self.ids[i], "attention_mask": torch.ones_like(self.ids[i]),
                    "labels": self.labels[i]}

    class Reseed(TrainerCallback):
        # a different RNG stream on every rank just before the pruning callback's step (the Trainer's
        # data loader synchronises the ranks' RNGs at each epoch): unsynchronised random masks would differ
        def on_step_begin(self, args, state, control, **kwargs):
            torch.manual_seed(1000 + 10 * state.global_step + args.process_index)

    def encoder_linears(model):
        return [m for n, m in model.named_modules() if isinstance(m, nn.Linear) and n.startswith("bert.encoder.")]

    def write(name, tensors):
        with open(os.path.join(out_dir, f"{name}{torch.distributed.get_rank()}.bin"), "wb") as f:
            for t in tensors:
                f.write(t.detach().numpy().tobytes())

    torch.manual_seed(0)
    config = BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=16, num_labels=2)
    model = BertForSequenceClassification(config)
    cb = PrunekitTrainerCallback(Linear(final=0.6, initial=0.3, start=0, end=2, frequency=2, unit="step"),
                                 criterion="random", include="bert.encoder.*", make_pruning_permanent=False,
                                 use_lottery_ticket_hypothesis=True, resample_parameters=True)
    args = TrainingArguments(output_dir=out_dir, per_device_train_batch_size=8, max_steps=4, learning_rate=1e-2,
                             save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True, seed=0,
                             dataloader_num_workers=0, logging_steps=1, ddp_backend="gloo",
                             ddp_broadcast_buffers=False)  # else DDP's buffer broadcast would hide unsynced masks
    trainer = Trainer(model=model, args=args, train_dataset=Data(), callbacks=[Reseed(), cb])
    trainer.train()
    assert torch.distributed.is_initialized() and torch.distributed.get_world_size() == 2
    write("masks", [m.weight_mask != 0 for m in encoder_linears(model)])
    write("weights", [m.weight_orig for m in encoder_linears(model)])
    write("events", [torch.tensor([s for _t, s in cb.events], dtype=torch.float64)])
    # the control, on a fresh model in the same processes: random masks without the broadcast
    for sync in (False, True):
        torch.manual_seed(2000 + torch.distributed.get_rank())
        fresh = BertForSequenceClassification(config)
        other = PrunekitTrainerCallback(sparsity=0.5, criterion="random", include="bert.encoder.*")
        other._sync = sync
        other.on_train_begin(args, TrainerState(), TrainerControl(), model=fresh)
        other.prune(0.5)
        write(f"control{int(sync)}", [m.weight_mask != 0 for m in encoder_linears(fresh)])
    # shut gloo down before the interpreter does (its threads may otherwise abort the exit)
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
    """
)


@pytest.mark.slow
def test_torchrun_two_cpu_processes_random_masks_identical_on_every_rank(tmp_path: Path):
    script = tmp_path / "hf_ddp.py"
    script.write_text(_SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID"):
        env.pop(key, None)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script), str(tmp_path)], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-4000:])

    def read(name: str) -> list[bytes]:
        return [(tmp_path / f"{name}{rank}.bin").read_bytes() for rank in (0, 1)]

    masks, weights = read("masks"), read("weights")
    sizes = [16 * 16] * 4 + [16 * 32, 32 * 16]  # q, k, v, attention output, intermediate, output
    assert len(masks[0]) == sum(sizes)
    assert masks[0] == masks[1]  # byte for byte
    assert masks[0].count(0) == sum(round(0.6 * n) for n in sizes)  # the schedule's final level, per tensor
    assert weights[0] == weights[1]  # the resampled lottery-ticket values were broadcast too
    events = read("events")
    assert events[0] == events[1]
    # the control: the ranks draw different random masks, which the broadcast makes agree
    unsynced, synced = read("control0"), read("control1")
    assert unsynced[0] != unsynced[1]
    assert synced[0] == synced[1]
