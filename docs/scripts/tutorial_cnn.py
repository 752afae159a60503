"""Figures of the tutorial docs/tutorials/cnn-target.md: the pretrained CIFAR ResNet-20 pruned to half
the MACs (global ranking) and to 60% of the modelled latency (latency-aware allocation), each
fine-tuned with the same SGD steps; accuracy, parameters, MACs and measured latency side by side
with the dense model.

Needs the shared data (``$PRUNEKIT_SHARED_DATA`` or ``../shared/data``): the pretrained ResNet-20 and
the JPEG copy of CIFAR-10 (decoded once into ``benchmarks/cache``, as by ``benchmarks/structural.py``).
Latencies are interleaved medians in one process (``prunekit.timing.interleaved_medians``).

    python docs/scripts/tutorial_cnn.py [--finetune-steps 300] [--test-limit 2000] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "benchmarks"))

import torch  # noqa: E402

import prunekit  # noqa: E402
from prunekit.measure.layer_latency import LatencyTable  # noqa: E402
from prunekit.timing import interleaved_medians  # noqa: E402

from _tutorial_figures import SHARED_DATA, provenance, publish, table  # noqa: E402
from train_cifar_resnet import AugmentedBatches, load_cifar  # noqa: E402

PRETRAINED = SHARED_DATA / "pretrained" / "resnet20_cifar10_dense.safetensors"


def accuracy(model, test) -> float:
    model.eval()
    return prunekit.evaluate(model, AugmentedBatches(*test, batch_size=500, augment=False)).accuracy


def finetune(model, train, steps: int) -> None:
    decay = [p for p in model.parameters() if p.ndim > 1]
    rest = [p for p in model.parameters() if p.ndim <= 1]
    optimizer = torch.optim.SGD([{"params": decay, "weight_decay": 5e-4}, {"params": rest, "weight_decay": 0.0}],
                                lr=0.01, momentum=0.9)
    epochs = max(1, -(-steps * 64 // len(train[0])))
    prunekit.fit(model, AugmentedBatches(*train, batch_size=64, seed=0), epochs=epochs, optimizer=optimizer,
                 lr_schedule="cosine", max_steps=steps)
    model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--finetune-steps", type=int, default=300)
    parser.add_argument("--test-limit", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1, help="threads for timing (and training)")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    if not PRETRAINED.is_file():
        sys.exit(f"{PRETRAINED} not found: set PRUNEKIT_SHARED_DATA to the shared data folder")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    train = load_cifar("train")
    test = load_cifar("test", args.test_limit)
    x1 = torch.randn(1, 3, 32, 32)
    x64 = torch.randn(64, 3, 32, 32)

    def pretrained():
        return prunekit.create_model("resnet20", weights=PRETRAINED).eval()

    dense = pretrained()
    models = {"dense": dense}
    results = {}
    macs = pretrained()
    results["macs"] = prunekit.structural_prune(macs, x1, macs_target=0.5, criterion="l2", scope="global",
                                                round_to=4)
    models["macs"] = macs
    fast = pretrained()
    latency_table = LatencyTable(batch_size=64, threads=args.threads)
    results["latency"] = prunekit.structural_prune(fast, x1, latency_target=0.6, criterion="l2",
                                                   allocation="latency", round_to=4, latency_table=latency_table)
    models["latency"] = fast

    before = {name: accuracy(model, test) for name, model in models.items()}
    for name in ("macs", "latency"):
        print(f"fine-tuning {name}: {args.finetune_steps} steps", flush=True)
        finetune(models[name], train, args.finetune_steps)
    after = {name: accuracy(model, test) for name, model in models.items()}

    def forward(model, x):
        def run() -> None:
            with torch.no_grad():
                model(x)
        return run

    b1 = interleaved_medians({n: forward(m, x1) for n, m in models.items()}, repeats=args.repeats, warmup=5)
    b64 = interleaved_medians({n: forward(m, x64) for n, m in models.items()}, repeats=max(5, args.repeats // 3),
                              warmup=2)
    dense_params = prunekit.measure.count_parameters(dense).params
    dense_macs = prunekit.measure.count_macs(dense, x1).dense_macs
    labels = {"dense": "dense (pretrained)",
              "macs": "`macs_target=0.5`, global ranking",
              "latency": "`latency_target=0.6`, `allocation=\"latency\"`"}
    rows = []
    for name, model in models.items():
        params = prunekit.measure.count_parameters(model).params
        model_macs = prunekit.measure.count_macs(model, x1).dense_macs
        modelled = "–"
        if name == "latency":
            start, end = results[name].latency_model_ms
            modelled = f"{end / start:.2f}×"
        tuned = "–" if name == "dense" else f"{after[name]:.2%}"
        rows.append([labels[name], f"{params / 1e3:.0f}k ({params / dense_params:.3f}×)",
                     f"{model_macs / 1e6:.1f}M ({model_macs / dense_macs:.3f}×)", modelled,
                     f"{before[name]:.2%}", tuned,
                     f"{b1[name] * 1e3:.2f} ({b1['dense'] / b1[name]:.2f}×)",
                     f"{b64[name] * 1e3:.1f} ({b64['dense'] / b64[name]:.2f}×)"])
    text = table(["model", "parameters", "MACs", "modelled latency", "accuracy, pruned",
                  f"after {args.finetune_steps} steps", "ms at batch 1", "ms at batch 64"], rows)
    text += (f"\n\nAccuracy on {len(test[0]):,} test images of the JPEG copy of CIFAR-10; fine-tuning: "
             f"{args.finetune_steps} SGD steps of 64 (lr 0.01 cosine, momentum 0.9, weight decay 5e-4, "
             "flips and crops), the same batches for both models. The latency table was timed at batch 64.\n\n"
             + provenance(args.threads))
    print(text)
    publish("cnn", text, page="cnn-target.md")


if __name__ == "__main__":
    main()
