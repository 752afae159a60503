"""Figures of the tutorial docs/tutorials/lightning.md: LeNet-300-100 trained with Lightning on the
MNIST subset shipped with prunekit, once with Lightning's ModelPruning and once with
prunekit's PrunekitPruning, the same arguments (global L1, 30% of what remains after every epoch,
lottery-ticket resets) and the same seed; plus prunekit's own schedule (AGP to 90%).
Sparsity and test accuracy of each run (no timings: the runs are sequential, not interleaved).

    python docs/scripts/tutorial_lightning.py [--epochs 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import lightning as L  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from lightning.pytorch.callbacks import ModelPruning  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

import prunekit  # noqa: E402
from prunekit.integrations import PrunekitPruning  # noqa: E402

from _tutorial_figures import provenance, publish, table  # noqa: E402


class Classifier(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = prunekit.create_model("lenet_300_100")

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1.2e-3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    train = prunekit.create_dataset("mnist_embedded", split="train")
    test = DataLoader(prunekit.create_dataset("mnist_embedded", split="test"), batch_size=1000)
    common = dict(amount=0.3, use_global_unstructured=True, parameter_names=["weight"],
                  use_lottery_ticket_hypothesis=True)
    runs = {
        "Lightning `ModelPruning`": lambda: ModelPruning("l1_unstructured", **common),
        "prunekit `PrunekitPruning`, same arguments": lambda: PrunekitPruning("l1_unstructured", **common),
        "prunekit, same arguments, no pruning in the last epoch (`apply_pruning=`)": lambda: PrunekitPruning(
            "l1_unstructured", apply_pruning=lambda epoch: epoch < args.epochs - 1, **common),
        "prunekit, AGP to 90% (`schedule=`, no resets)": lambda: PrunekitPruning(
            schedule=prunekit.create_schedule("agp", final=0.9, start=0, end=args.epochs - 1, unit="epoch"),
            scope="global", use_lottery_ticket_hypothesis=False),
    }
    rows = []
    for name, make in runs.items():
        torch.manual_seed(0)
        model = Classifier()
        trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=args.epochs, callbacks=[make()], logger=False,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
        trainer.fit(model, DataLoader(train, batch_size=60, shuffle=True))
        model.eval()
        report = prunekit.sparsity_report(model.net)
        accuracy = prunekit.evaluate(model.net, test).accuracy
        rows.append([name, f"{report.sparsity:.1%}", f"{accuracy:.2%}"])
        print(rows[-1], flush=True)
    text = table(["callback", "weights pruned", "test accuracy"], rows)
    text += (f"\n\nLeNet-300-100, {args.epochs} epochs of the 15,000 training digits shipped with prunekit "
             "(Adam, lr 1.2e-3, batch 60, the same seed and data order for every run); accuracy on the 10,000 "
             "MNIST test digits. Both callbacks prune at the end of every epoch.\n\n" + provenance(args.threads))
    print(text)
    publish("lightning", text, page="lightning.md")


if __name__ == "__main__":
    main()
