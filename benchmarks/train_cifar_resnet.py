"""Train a CIFAR ResNet (default ResNet-56) on the CIFAR-10 JPEG copy and cache its weights.

The structural-pruning benchmark (``benchmarks/structural.py``) needs a
ResNet-56 trained here (only a ResNet-20 is shipped pretrained). This script
trains ``prunekit.create_model(<model>)`` with ``prunekit.fit`` for a budget
of ``--minutes`` of wall time (the machine is shared, so a step count would
take an unknown time): SGD with momentum 0.9 and Nesterov, weight decay 5e-4
on weights, a one-cycle learning rate over the budget (linear warm-up over its
first 3% to ``--lr`` (0.1), then cosine down to 2% of it), batch ``--batch``
(128), standard augmentation (random crop 32 with 4 pixels of zero padding,
horizontal flip; He et al. 2016, Section 4.2). Inputs are
normalised as ``(x - 0.5) / 0.5`` like the pretrained ResNet-20, so both models
of the benchmark see the same data.

The weights go to ``benchmarks/cache/<model>_cifar10jpeg_<minutes>min_b<batch>_lr<lr>_s<seed>.safetensors``
(written atomically; the name is the configuration); a second run with the same
configuration loads them instead of training. ``--time-epoch`` only measures the
time of a few steps and extrapolates one epoch, to choose ``--minutes``.

    nice -n 10 python benchmarks/train_cifar_resnet.py --minutes 20 --threads 2
    python benchmarks/train_cifar_resnet.py --time-epoch
    python benchmarks/train_cifar_resnet.py --quick          # smoke: 20 s on 2,000 images

On a quiet 2-core machine a step of ResNet-56 at batch 128 takes about 0.8 s: the default 20
minutes are about 4 epochs (75.7% on the JPEG test set). While other jobs load the machine a
step can take 20-50 s: a budget then buys far fewer steps, so train when the machine is quiet.
"""

from __future__ import annotations

import argparse
import math
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import SHARED_DATA, REPO_ROOT  # noqa: E402

CACHE = REPO_ROOT / "benchmarks" / "cache"
DATA = SHARED_DATA / "cifar10-jpeg" / "cifar10_jpeg_yoongikim.tar.gz"
NORMALIZE = "half"  # (x - 0.5) / 0.5, the pretrained ResNet-20's convention


def load_cifar(split: str, limit: int | None = None):
    """(images N×3×32×32 float normalised, labels int64) of the JPEG copy, decoded once into the cache;
    ``limit`` takes every (N // limit)-th image (all classes)."""
    from prunekit.data import create_dataset

    ds = create_dataset("cifar10_jpeg", path=DATA, split=split, cache_dir=CACHE, normalize=NORMALIZE)
    x, y = ds.tensors()
    if limit is not None and limit < len(x):
        step = len(x) // limit
        x, y = x[::step][:limit], y[::step][:limit]
    return x, y


class AugmentedBatches:
    """Shuffled batches of ``(x, y)`` with random 4-pixel-padded crops and horizontal flips, done on
    whole batches of tensors (no per-image Python work). A new permutation every epoch, from ``seed``."""

    def __init__(self, x, y, batch_size: int = 128, seed: int = 0, augment: bool = True) -> None:
        import torch

        self.x, self.y, self.batch_size, self.augment = x, y, batch_size, augment
        self.gen = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return (len(self.x) + self.batch_size - 1) // self.batch_size

    def __iter__(self):
        import torch
        import torch.nn.functional as F

        order = torch.randperm(len(self.x), generator=self.gen)
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            xb, yb = self.x[idx], self.y[idx]
            if self.augment:
                n = len(idx)
                padded = F.pad(xb, (4, 4, 4, 4))
                dx = torch.randint(0, 9, (n,), generator=self.gen)
                dy = torch.randint(0, 9, (n,), generator=self.gen)
                rows = (dy[:, None] + torch.arange(32))[:, None, :, None].expand(n, 3, 32, 32)
                cols = (dx[:, None] + torch.arange(32))[:, None, None, :].expand(n, 3, 32, 32)
                xb = padded[torch.arange(n)[:, None, None, None], torch.arange(3)[None, :, None, None], rows, cols]
                flip = torch.rand(n, generator=self.gen) < 0.5
                xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)
            yield xb.contiguous(), yb


class TimedBatches:
    """The batches of ``loader``, epoch after epoch, until ``budget`` seconds have passed since the first."""

    def __init__(self, loader: AugmentedBatches, budget: float) -> None:
        self.loader, self.budget, self.t0 = loader, budget, None

    def elapsed(self) -> float:
        return 0.0 if self.t0 is None else time.perf_counter() - self.t0

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        if self.t0 is None:
            self.t0 = time.perf_counter()
        if self.elapsed() >= self.budget:
            return
        for batch in self.loader:
            yield batch
            if self.elapsed() >= self.budget:
                return


def cache_path(model: str, minutes: float, batch: int, lr: float, seed: int) -> Path:
    return CACHE / f"{model}_cifar10jpeg_{minutes:g}min_b{batch}_lr{lr:g}_s{seed}.safetensors"


def train(model_name: str, minutes: float, seed: int, lr: float, threads: int, batch: int = 128,
          quick: bool = False,
          time_epoch: bool = False):
    """The trained model (from the cache when present). Returns (model, test accuracy or None)."""
    import torch

    import prunekit
    from prunekit.io import atomic_write

    torch.set_num_threads(threads)
    path = cache_path(model_name, minutes, batch, lr, seed)
    torch.manual_seed(seed)
    model = prunekit.create_model(model_name)
    if path.is_file() and not quick and not time_epoch:
        prunekit.zoo.load_weights(model, path)
        logging.info("loaded cached weights %s", path)
        return model, None
    x, y = load_cifar("train", 2000 if quick else None)
    loader = AugmentedBatches(x, y, batch, seed)
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": 5e-4}, {"params": no_decay, "weight_decay": 0.0}],
                          lr=lr, momentum=0.9, nesterov=True)
    if time_epoch:
        steps = 15
        prunekit.fit(model, loader, epochs=1, optimizer=opt, max_steps=3)  # warm-up
        t0 = time.perf_counter()
        prunekit.fit(model, loader, epochs=1, optimizer=opt, max_steps=steps)
        per_step = (time.perf_counter() - t0) / steps
        print(f"{model_name}: {per_step:.3f} s/step, {per_step * len(loader) / 60:.1f} min/epoch "
              f"({len(loader)} steps of {batch}, {threads} threads)")
        return model, None
    budget = 20.0 if quick else minutes * 60.0
    timed = TimedBatches(loader, budget)

    def progress(p) -> None:
        # one cycle over the wall-time budget: linear warm-up over the first 3%, then cosine to 0
        frac = min(1.0, timed.elapsed() / budget)
        factor = frac / 0.03 if frac < 0.03 else 0.5 * (1 + math.cos(math.pi * (frac - 0.03) / 0.97))
        for group in opt.param_groups:
            group["lr"] = lr * max(factor, 0.02)
        if p.step % 50 == 0:
            print(f"step {p.step} loss {p.loss:.3f} lr {p.lr:.4f} {timed.elapsed():.0f}s", flush=True)

    for group in opt.param_groups:
        group["lr"] = lr * 0.02
    fit_result = prunekit.fit(model, timed, epochs=1_000, optimizer=opt, progress=progress)
    t0 = timed.t0
    print(f"trained {fit_result.steps} steps ({fit_result.steps / len(loader):.2f} epochs)", flush=True)
    xt, yt = load_cifar("test", 500 if quick else None)
    acc = prunekit.evaluate(model, AugmentedBatches(xt, yt, 500, augment=False)).accuracy
    print(f"{model_name}: test accuracy {acc:.4f} after {minutes} minutes, {time.perf_counter() - t0:.0f}s", flush=True)
    if not quick:
        from safetensors.torch import save_file

        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        atomic_write(path, lambda tmp: save_file(state, tmp, metadata={"test_accuracy": f"{acc:.4f}"}))
        print(f"wrote {path}")
    return model, acc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet56")
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--time-epoch", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    logging.getLogger("prunekit.training").setLevel(logging.WARNING)  # empty epochs after the budget
    train(args.model, args.minutes, args.seed, args.lr, args.threads, args.batch, args.quick, args.time_epoch)


if __name__ == "__main__":
    main()
