"""Allocations and learned masks on LeNet-300-100 / MNIST: magnitude vs LAMP vs ERK vs OBD, movement, supermasks.

One dense LeNet-300-100 (784-300-100-10) is trained (Adam lr 1.2e-3, batch
60, ``--dense-steps`` iterations) and cached. Then, for each sparsity, each
method prunes a copy of it one-shot and fine-tunes it for the same
``--ft-steps`` iterations (same optimizer, same batches):

* ``magnitude-local``   |w|, every layer to the same sparsity (the uniform baseline)
* ``magnitude-global``  |w|, one ranking over all layers (torch's global_unstructured)
* ``lamp``              |w| ranked by LAMP scores (Lee et al. 2021), ``scope="lamp"``
* ``erk``               ERK layer densities (Evci et al. 2020), |w| inside each layer
* ``obd``               ½·F_kk·w_k², diagonal empirical Fisher from ``--fisher-batches``
                        batches of 100 (per-sample gradients), one global ranking
* ``movement``          hard movement pruning during the fine-tuning itself (Sanh et al.
                        2020; global top-k of learned scores, cubic schedule from 0 over
                        the first 80% of the steps after a 10% warm-up; the same steps)

and, on a *frozen random* LeNet-300-100 (no weight training at all):

* ``supermask``         Bernoulli(σ(s)) supermask (Zhou et al. 2019), scores trained
                        with Adam lr 0.1 for ``--sm-steps`` iterations
* ``edge-popup-50``     top-50% supermask per layer (Ramanujan et al. 2020)
* ``random-net``        the frozen random network itself (the control)

Test accuracy (10,000 MNIST test images) right after pruning and after
fine-tuning is printed side by side, as the mean ± half the range over
``--seeds`` (each seed: its own dense model, batches and Fisher sample). Every result is cached as JSON under
``benchmarks/cache/learned_masks/`` keyed by the configuration, so a rerun
only computes what is missing. Wall times are not reported (shared machine).

    nice -n 10 python benchmarks/learned_masks.py --seeds 0 1 2 --json benchmarks/results/learned_masks.json
    python benchmarks/learned_masks.py --quick
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import SHARED_DATA, REPO_ROOT, print_table, provenance, run_meta, write_json  # noqa: E402

PRUNE_METHODS = ("magnitude-local", "magnitude-global", "lamp", "erk", "obd", "movement")
SM_METHODS = ("random-net", "supermask", "edge-popup-50")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(SHARED_DATA / "mnist"))
    p.add_argument("--sparsities", type=float, nargs="+", default=[0.9, 0.95, 0.98])
    p.add_argument("--dense-steps", type=int, default=3000)
    p.add_argument("--ft-steps", type=int, default=1000)
    p.add_argument("--sm-steps", type=int, default=3000)
    p.add_argument("--fisher-batches", type=int, default=10)
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="one run of everything per seed")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cache", default=str(REPO_ROOT / "benchmarks" / "cache" / "learned_masks"))
    p.add_argument("--quick", action="store_true", help="smoke test: 6,000 images, a few hundred steps")
    p.add_argument("--json", default=None)
    return p.parse_args(argv)


def load_data(folder: str, quick: bool):
    from prunekit.data import create_dataset

    x, y = create_dataset("mnist", path=folder, split="train", normalize="mnist").tensors()
    tx, ty = create_dataset("mnist", path=folder, split="test", normalize="mnist").tensors()
    if quick:
        x, y, tx, ty = x[:6000], y[:6000], tx[:1000], ty[:1000]
    return (x, y), (tx, ty)


class Bench:
    """Cached runs on one data set and configuration."""

    def __init__(self, args: argparse.Namespace, train, test) -> None:
        self.args, self.train, self.test = args, train, test
        self.cache = Path(args.cache)
        self.config = {k: getattr(args, k) for k in ("dense_steps", "ft_steps", "sm_steps", "fisher_batches",
                                                     "seed", "quick")}

    def key(self, name: str, **extra) -> Path:
        blob = json.dumps({"name": name, **self.config, **extra}, sort_keys=True)
        return self.cache / f"{name}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"

    def batches(self, steps: int, seed: int):
        from prunekit.lottery.loop import StepBatches

        return StepBatches(*self.train, batch_size=60, seed=seed, start=0, stop=steps)

    def accuracy(self, model) -> float:
        import prunekit

        x, y = self.test
        loader = [(x[i:i + 1000], y[i:i + 1000]) for i in range(0, len(x), 1000)]
        return prunekit.evaluate(model.eval(), loader).accuracy

    def fit(self, model, steps: int, seed: int, **kwargs) -> None:
        import prunekit

        prunekit.fit(model.train(), self.batches(steps, seed), epochs=1, optimizer=kwargs.pop("optimizer", "adam"),
                     lr=kwargs.pop("lr", 1.2e-3), **kwargs)

    def dense(self):
        """The trained dense model (cached as safetensors)."""
        import torch
        from safetensors.torch import load_file, save_file

        import prunekit
        from prunekit.io import atomic_write

        torch.manual_seed(self.args.seed)
        model = prunekit.create_model("lenet_300_100")
        path = self.key("dense").with_suffix(".safetensors")
        if path.is_file():
            model.load_state_dict(load_file(str(path)))
            return model
        self.fit(model, self.args.dense_steps, self.args.seed)
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        atomic_write(path, lambda tmp: save_file(state, tmp))
        return model

    def cached(self, name: str, compute, **extra) -> dict:
        from prunekit.io import atomic_write_text

        path = self.key(name, **extra).with_suffix(".json")
        if path.is_file():
            return json.loads(path.read_text())
        result = compute()
        atomic_write_text(path, json.dumps(result, indent=2))
        return result

    # -- methods ---------------------------------------------------------------
    def prune_run(self, method: str, sparsity: float, dense) -> dict:
        def compute() -> dict:
            import torch

            import prunekit
            from prunekit.learned import MovementPruning

            model = copy.deepcopy(dense)
            torch.manual_seed(self.args.seed + 1)
            if method == "movement":
                steps = self.args.ft_steps
                warm = steps // 10
                span = (steps * 8 // 10) // 10 * 10
                mp = MovementPruning("hard", final_sparsity=sparsity, warmup_steps=warm, pruning_steps=span,
                                     frequency=10, scope="global", score_init="magnitude")
                mp.wrap(model)
                self.fit(model, steps, self.args.seed + 2, loss_fn=mp.loss(prunekit.training.classification_loss),
                         progress=mp.on_progress)
                mp.finalize()
                after_prune = None
            else:
                kwargs: dict = {}
                if method == "obd":
                    x, y = self.train
                    g = torch.Generator().manual_seed(self.args.seed + 3)
                    idx = torch.randperm(len(x), generator=g)[: 100 * self.args.fisher_batches]
                    data = [(x[idx[i:i + 100]], y[idx[i:i + 100]]) for i in range(0, len(idx), 100)]
                    kwargs = {"criterion": "obd", "scope": "global", "context": {"data": data}}
                else:
                    kwargs = {"magnitude-local": {"scope": "local"}, "magnitude-global": {"scope": "global"},
                              "lamp": {"scope": "lamp"}, "erk": {"scope": "erk"}}[method]
                prunekit.prune(model, sparsity, **kwargs)
                after_prune = self.accuracy(model)
                self.fit(model, self.args.ft_steps, self.args.seed + 2)
            report = prunekit.sparsity_report(model)
            return {"method": method, "sparsity": sparsity, "achieved": report.sparsity,
                    "layers": {r.name: r.sparsity for r in report.rows},
                    "accuracy_pruned": after_prune, "accuracy_finetuned": self.accuracy(model)}

        return self.cached(method, compute, sparsity=sparsity)

    def supermask_run(self, method: str) -> dict:
        def compute() -> dict:
            import torch

            import prunekit
            from prunekit.learned import Supermask

            torch.manual_seed(self.args.seed + 10)
            model = prunekit.create_model("lenet_300_100")
            if method == "random-net":
                return {"method": method, "density": 1.0, "accuracy": self.accuracy(model)}
            sm = Supermask() if method == "supermask" else Supermask("topk", sparsity=0.5)
            sm.wrap(model)
            self.fit(model, self.args.sm_steps, self.args.seed + 11, lr=0.1 if method == "supermask" else 0.01)
            sm.finalize()
            report = prunekit.sparsity_report(model)
            return {"method": method, "density": 1.0 - report.sparsity,
                    "layers": {r.name: 1.0 - r.sparsity for r in report.rows}, "accuracy": self.accuracy(model)}

        return self.cached(method, compute)


def run_seed(args: argparse.Namespace, train, test) -> dict:
    """Every method for ``args.seed`` (cached)."""
    bench = Bench(args, train, test)
    dense = bench.dense()
    dense_acc = bench.accuracy(dense)
    print(f"seed {args.seed}: dense LeNet-300-100 {100 * dense_acc:.2f}% test accuracy", flush=True)
    sm_rows = [bench.supermask_run(m) for m in SM_METHODS]
    rows = []
    for sparsity in args.sparsities:
        for method in PRUNE_METHODS:
            rows.append(bench.prune_run(method, sparsity, dense))
        print(f"  seed {args.seed}, sparsity {sparsity}: done", flush=True)
    return {"seed": args.seed, "config": bench.config, "dense_accuracy": dense_acc, "rows": rows,
            "supermask": sm_rows}


def _mean_spread(values: list[float | None]) -> str:
    """``mean ± half range`` in percent (or ``-``)."""
    vals = [v for v in values if v is not None]
    if not vals:
        return "       -       "
    mean = sum(vals) / len(vals)
    return f"{100 * mean:6.2f} ± {50 * (max(vals) - min(vals)):4.2f}%"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    if args.quick:
        args.dense_steps, args.ft_steps, args.sm_steps, args.fisher_batches = 300, 200, 300, 2
        args.sparsities = args.sparsities[:2]
        args.seeds = args.seeds[:1]
    train, test = load_data(args.data, args.quick)
    runs = []
    for seed in args.seeds:
        args.seed = seed
        runs.append(run_seed(args, train, test))

    n = len(runs)
    print(f"\nmean ± half range over {n} seed(s) {args.seeds}; dense: "
          f"{_mean_spread([r['dense_accuracy'] for r in runs])}")
    table = []
    for i, row in enumerate(runs[0]["rows"]):
        per_seed = [r["rows"][i] for r in runs]
        layers = " ".join(f"{100 * sum(r['layers'][k] for r in per_seed) / n:5.1f}" for k in row["layers"])
        table.append(f"{row['sparsity']:8.2f}  {row['method']:17s} {100 * row['achieved']:7.2f}%  "
                     f"{_mean_spread([r['accuracy_pruned'] for r in per_seed])}  "
                     f"{_mean_spread([r['accuracy_finetuned'] for r in per_seed])}   {layers}")
    print_table("sparsity  method             achieved   acc pruned         acc fine-tuned     "
                "per-layer sparsity (fc1 fc2 fc3)", table)
    sm_table = []
    for i, row in enumerate(runs[0]["supermask"]):
        per_seed = [r["supermask"][i] for r in runs]
        sm_table.append(f"{row['method']:28s} {_mean_spread([r['density'] for r in per_seed])}  "
                        f"{_mean_spread([r['accuracy'] for r in per_seed])}")
    print_table("frozen random LeNet-300-100   density            test acc", sm_table)
    if args.json:
        write_json(args.json, {"meta": run_meta(provenance(), "learned_masks", args.threads), "runs": runs})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
