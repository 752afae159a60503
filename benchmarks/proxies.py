"""Zero-cost proxies against trained accuracy over a population of small networks.

Abdelfattah et al. 2021 ("Zero-Cost Proxies for Lightweight NAS") rank
untrained networks by one-batch scores; this script checks how well each
proxy of :func:`prunekit.zero_cost_proxies` ranks 16 small MLPs and CNNs
(different widths and depths) by the accuracy they reach after brief training
on MNIST, as Spearman's ρ (:func:`prunekit.spearman`). The number of
parameters is the control every proxy must beat.

* Population: MLPs with hidden widths (16), (64), (256), (16,16), (64,64),
  (256,256), (16,16,16), (64,64,64), (256,64); CNNs of 3×3 convolutions
  (ReLU, 2×2 max-pool after each) with channels (4), (8), (16), (4,8), (8,16),
  (16,32), (8,8,8), then a Linear to 10 classes. Seed 0 for all.
* Proxies: at initialisation, on one batch of 64 training images.
* Training: the first 10,000 MNIST training images, 1 epoch, batch 64, SGD
  momentum 0.9, lr 0.05; test on the 10,000 test images. One thread.

Each network's proxies and accuracy are cached as JSON under
``benchmarks/cache/proxies/`` keyed by the configuration.

    python benchmarks/proxies.py                 # the 16 networks (a few minutes)
    python benchmarks/proxies.py --quick         # 6 networks, 2,000 images
    python benchmarks/proxies.py --json benchmarks/results/proxies.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import SHARED_DATA, ForeignLoad, print_table, provenance, run_meta, write_json

ROOT = Path(__file__).resolve().parent
MNIST = SHARED_DATA / "mnist"
CACHE = ROOT / "cache" / "proxies"

POPULATION = [
    ("mlp", (16,)), ("mlp", (64,)), ("mlp", (256,)), ("mlp", (16, 16)), ("mlp", (64, 64)), ("mlp", (256, 256)),
    ("mlp", (16, 16, 16)), ("mlp", (64, 64, 64)), ("mlp", (256, 64)),
    ("cnn", (4,)), ("cnn", (8,)), ("cnn", (16,)), ("cnn", (4, 8)), ("cnn", (8, 16)), ("cnn", (16, 32)),
    ("cnn", (8, 8, 8)),
]
FULL = {"train": 10000, "test": 10000, "epochs": 1, "batch": 64, "lr": 0.05, "proxy_batch": 64, "seed": 0}
QUICK = {"train": 2000, "test": 2000, "epochs": 1, "batch": 64, "lr": 0.05, "proxy_batch": 64, "seed": 0}


def build(kind: str, widths: tuple[int, ...]):
    from torch import nn

    layers: list = []
    if kind == "mlp":
        layers.append(nn.Flatten())
        features = 28 * 28
        for w in widths:
            layers += [nn.Linear(features, w), nn.ReLU()]
            features = w
        layers.append(nn.Linear(features, 10))
    else:
        channels, side = 1, 28
        for w in widths:
            layers += [nn.Conv2d(channels, w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            channels, side = w, side // 2
        layers += [nn.Flatten(), nn.Linear(channels * side * side, 10)]
    return nn.Sequential(*layers)


def load_mnist(config: dict, path: Path):
    import torch

    import prunekit

    def tensors(split: str, limit: int):
        ds = prunekit.create_dataset("mnist", path=path, split=split)
        x = torch.from_numpy(ds.data[:limit]).float().div_(255.0).unsqueeze(1)
        return (x - 0.1307) / 0.3081, torch.from_numpy(ds.targets[:limit]).long()

    return (*tensors("train", config["train"]), *tensors("test", config["test"]))


def key(kind: str, widths: tuple[int, ...], config: dict) -> str:
    blob = json.dumps({"kind": kind, "widths": widths, **config}, sort_keys=True)
    return f"{kind}-{'x'.join(map(str, widths))}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def one_network(kind: str, widths: tuple[int, ...], config: dict, data) -> dict:
    import torch

    import prunekit
    from prunekit.analysis.proxies import PROXIES

    xtr, ytr, xte, yte = data
    torch.manual_seed(config["seed"])
    model = build(kind, widths)
    batch = (xtr[: config["proxy_batch"]], ytr[: config["proxy_batch"]])
    record: dict = {"kind": kind, "widths": list(widths), "params": sum(p.numel() for p in model.parameters())}
    seconds = {}
    with ForeignLoad() as load:
        for name in PROXIES:
            t0 = time.perf_counter()
            record[name] = prunekit.zero_cost_proxies(model, batch, names=[name])[name]
            seconds[name] = time.perf_counter() - t0
    record["proxy_seconds"], record["foreign_load"] = seconds, load.cores
    gen = torch.Generator().manual_seed(config["seed"])
    order = torch.randperm(len(xtr), generator=gen)
    loader = [(xtr[order[i:i + config["batch"]]], ytr[order[i:i + config["batch"]]])
              for i in range(0, len(order), config["batch"])]
    prunekit.fit(model, loader, epochs=config["epochs"], lr=config["lr"])
    test = [(xte[i:i + 1000], yte[i:i + 1000]) for i in range(0, len(xte), 1000)]
    record["test_accuracy"] = float(prunekit.evaluate(model, test).accuracy)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="6 networks, 2,000 images")
    parser.add_argument("--json", help="write the table and the correlations to this file")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data", type=Path, default=MNIST, help="folder of the four MNIST IDX files")
    args = parser.parse_args()

    import torch

    import prunekit
    from prunekit.io import atomic_write_text
    from prunekit.analysis.proxies import PROXIES

    torch.set_num_threads(args.threads)
    source = provenance()
    config = QUICK if args.quick else FULL
    population = POPULATION[::3] if args.quick else POPULATION
    if not args.data.exists():
        sys.exit(f"MNIST not found at {args.data}")
    data = load_mnist(config, args.data)
    CACHE.mkdir(parents=True, exist_ok=True)
    records = []
    for kind, widths in population:
        path = CACHE / f"{key(kind, widths, config)}.json"
        if path.exists():
            records.append(json.loads(path.read_text()))
            continue
        record = one_network(kind, widths, config, data)
        atomic_write_text(path, json.dumps(record, indent=1))
        records.append(record)

    columns = ("params", *PROXIES)
    header = f"{'network':16s} {'test acc':>8s} " + " ".join(f"{c:>11s}" for c in columns)
    lines = [f"{r['kind'] + ' ' + 'x'.join(map(str, r['widths'])):16s} {100 * r['test_accuracy']:8.2f} "
             + " ".join(f"{r[c]:11.4g}" for c in columns) for r in records]
    accuracy = [r["test_accuracy"] for r in records]
    rho = {c: prunekit.spearman([r[c] for r in records], accuracy) for c in columns}
    lines.append(f"{'Spearman rho':16s} {'':8s} " + " ".join(f"{rho[c]:11.3f}" for c in columns))
    print_table(header, lines)
    mean_s = {p: sum(r["proxy_seconds"][p] for r in records) / len(records) for p in PROXIES}
    print("mean seconds per proxy: " + ", ".join(f"{p} {s:.3f}" for p, s in mean_s.items())
          + f" (max load of other processes {max(r['foreign_load'] for r in records):.2f} cores)")
    if args.json:
        meta = run_meta(source, "proxies", args.threads)
        write_json(args.json, {"meta": {**meta, "config": config}, "spearman": rho, "networks": records})


if __name__ == "__main__":
    main()
