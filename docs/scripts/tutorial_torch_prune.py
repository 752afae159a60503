"""Figures of the tutorial docs/tutorials/torch-prune.md: the tutorial's LeNet, trained on the MNIST
subset shipped with prunekit, pruned globally by L1 magnitude with torch.nn.utils.prune and with
prunekit at several sparsities: whether the masks are identical, test accuracy, and bytes on disk of
each way of saving.

    python docs/scripts/tutorial_torch_prune.py [--epochs 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
from torch.nn.utils import prune  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

import prunekit  # noqa: E402

from _tutorial_figures import provenance, publish, table  # noqa: E402

WEIGHTS = ("conv1", "conv2", "fc1", "fc2", "fc3")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sparsities", default="0.2,0.5,0.8,0.9,0.95")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    train = prunekit.create_dataset("mnist_embedded", split="train")
    test = DataLoader(prunekit.create_dataset("mnist_embedded", split="test"), batch_size=1000)
    dense = prunekit.create_model("tutorial_lenet")
    prunekit.fit(dense, DataLoader(train, batch_size=64, shuffle=True), epochs=args.epochs, optimizer="adam", lr=1e-3)
    dense.eval()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        def size(name: str, save) -> int:
            path = os.path.join(folder, name)
            save(path)
            return os.path.getsize(path)

        dense_bytes = size("dense.pt", lambda p: torch.save(dense.state_dict(), p))
        dense_accuracy = prunekit.evaluate(dense, test).accuracy
        rows.append(["0% (dense)", "–", f"{dense_accuracy:.2%}", "–", f"{dense_bytes:,}", "–", "–"])
        for sparsity in (float(s) for s in args.sparsities.split(",")):
            theirs, ours = copy.deepcopy(dense), copy.deepcopy(dense)
            prune.global_unstructured([(getattr(theirs, n), "weight") for n in WEIGHTS],
                                      pruning_method=prune.L1Unstructured, amount=sparsity)
            prunekit.prune(ours, sparsity, criterion="l1", scope="global")
            same = all(torch.equal(getattr(theirs, n).weight_mask, getattr(ours, n).weight_mask) for n in WEIGHTS)
            torch_bytes = size("torch.pt", lambda p: torch.save(theirs.state_dict(), p))
            sparse_bytes = size("ours.safetensors", lambda p: prunekit.save_sparse(ours, p))
            permanent = copy.deepcopy(dense)
            prunekit.prune(permanent, sparsity, criterion="l1", scope="global", mode="permanent")
            permanent_bytes = size("permanent.pt", lambda p: torch.save(permanent.state_dict(), p))
            rows.append([f"{sparsity:.0%}", "identical" if same else "differ",
                         f"{prunekit.evaluate(theirs, test).accuracy:.2%}", f"{prunekit.evaluate(ours, test).accuracy:.2%}",
                         f"{torch_bytes:,} ({torch_bytes / dense_bytes:.2f}×)",
                         f"{permanent_bytes:,} ({permanent_bytes / dense_bytes:.2f}×)",
                         f"{sparse_bytes:,} ({sparse_bytes / dense_bytes:.2f}×)"])
    text = table(["global L1 sparsity", "masks, torch vs prunekit", "accuracy, torch", "accuracy, prunekit",
                  "torch.save, torch's masks", "torch.save after make_permanent", "prunekit.save_sparse"], rows)
    text += (f"\n\nThe tutorial's LeNet trained for {args.epochs} epochs (Adam, lr 1e-3, batch 64) on the 15,000 "
             "training digits shipped with prunekit; accuracy on the 10,000 MNIST test digits; no fine-tuning "
             "after pruning. Bytes are file sizes; × is against `torch.save` of the dense model.\n\n"
             + provenance(args.threads))
    print(text)
    publish("torch_prune", text, page="torch-prune.md")


if __name__ == "__main__":
    main()
