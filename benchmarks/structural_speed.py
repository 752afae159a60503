"""Wall time of one structural pruning call to half the MACs: prunekit against Torch-Pruning.

Models (ImageNet sizes, random weights, one 224×224 input, batch 1): ``resnet18_imagenet``,
``resnet50_imagenet``, ``mobilenetv2_imagenet``, ``vgg16_bn_imagenet`` (VGG-16-BN with the
25088-4096-4096 classifier) from ``prunekit.zoo``. Each is built once; both libraries prune their
own deep copy of the same weights, in the same process, on ``--threads`` threads.

* ``prunekit``: ``prunekit.structural_prune(model, x, macs_target=0.5)`` (group L1 magnitude,
  local ranking; the call includes finding the groups, counting MACs before and after, the search
  for the channel ratio that meets the MACs target, and the removal).
* ``torch-pruning``: Torch-Pruning 1.6 (``pip install torch-pruning``; a benchmark-only dependency)
  ``MetaPruner(model, x, importance=MagnitudeImportance(p=1), pruning_ratio=R,
  global_pruning=False, ignored_layers=[last Linear])`` and ``pruner.step()``. Torch-Pruning takes a
  per-channel ratio, not a MACs target, so ``R`` is searched first: bisection (``--tp-bisections``
  steps on [0, 0.8]) for the smallest ratio whose pruned copy has at most half the MACs, each candidate
  built, stepped and counted on a fresh copy. Two times are printed: ``tp s`` is ONE pruner
  construction and step at the ratio found (the search not counted: the strictest comparison),
  ``tp+search s`` the search and that step together (what reaching the target costs a user).

Each library's call is timed ``--repeats`` times (5), alternating, each on a fresh copy; the
minimum is shown (all runs are in the JSON). Columns: seconds of each; ``ratio`` = prunekit s /
tp s; ``tp R``: Torch-Pruning's ratio; MACs after / before of each (both counted by
``prunekit.measure.count_macs(norms=False)``: Conv/Linear MACs); ``exact``: the largest absolute
difference between the pruned model's logits and those of the original with the removed channels
zeroed (``prunekit.surgery.mask_groups``; BatchNorm statistics randomised so that a wrong coupling
would show), for prunekit, and for Torch-Pruning where its pruning history maps onto prunekit's
groups. ``load``: the most CPU (in cores) other processes used during any timed call
(``_common.ForeignLoad``); on a shared machine the figures are noisy.

    python benchmarks/structural_speed.py
    python benchmarks/structural_speed.py --models vgg16_bn_imagenet --no-tp
    python benchmarks/structural_speed.py --tp-ratios resnet50_imagenet=0.2984 --json out.json
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ForeignLoad, cpu_model, print_table, provenance, run_meta, write_json  # noqa: E402

MODELS = ("resnet18_imagenet", "resnet50_imagenet", "mobilenetv2_imagenet", "vgg16_bn_imagenet")
TARGET = 0.5


def randomise_norms(model, seed: int = 2) -> None:
    """Non-trivial BatchNorm statistics and affine parameters (a wrong coupling then shows)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.rand(n, generator=g) - 0.5)


def dense_macs(model, x) -> int:
    import prunekit

    return prunekit.measure.count_macs(model, x, norms=False).dense_macs


def masked_error(original, pruned, x, keep) -> float:
    """Largest |pruned(x) - masked original(x)| with the channels not in ``keep`` zeroed."""
    import torch
    from prunekit.surgery import find_groups, mask_groups

    masked = copy.deepcopy(original).eval()
    groups = find_groups(masked, x)
    names = {g.name for g in groups}
    keep = {k: torch.as_tensor(sorted(v), dtype=torch.long) for k, v in keep.items() if k in names}
    mask_groups(masked, keep, groups)
    with torch.no_grad():
        return float((pruned.eval()(x) - masked(x)).abs().max())


def tp_keep(original, x, history) -> dict | None:
    """Torch-Pruning's removals (``pruner.pruning_history()``) as prunekit group keeps, or None
    when a root layer is not the producer of exactly one prunekit group."""
    import torch
    from prunekit.surgery import find_groups

    groups = find_groups(copy.deepcopy(original), x)
    by_producer = {}
    for g in groups:
        for s in g.producers():
            if s.tensor == "weight" and s.dim == 0:
                by_producer.setdefault(s.name, g)
    keep = {}
    for layer, out_channels, idxs in history:
        g = by_producer.get(layer)
        if g is None or not out_channels or g.name in keep:
            return None
        s = next(s for s in g.producers() if s.name == layer and s.tensor == "weight")
        channel_of = {int(p): c for c, p in enumerate(s.index.reshape(len(s.index), -1)[:, 0].tolist())}
        gone = {channel_of[int(i)] for i in idxs if int(i) in channel_of}
        keep[g.name] = torch.tensor(sorted(set(range(g.size)) - gone), dtype=torch.long)
    return keep


def last_linear(model):
    import torch

    return [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]


def tp_step(model, x, ratio: float):
    import torch_pruning as tp

    pruner = tp.pruner.MetaPruner(model, x, importance=tp.importance.MagnitudeImportance(p=1),
                                  pruning_ratio=ratio, global_pruning=False, ignored_layers=[last_linear(model)])
    pruner.step()
    return pruner


def tp_search(model, x, goal: int, bisections: int) -> tuple[float, int]:
    """Smallest Torch-Pruning ratio in [0, 0.8] (to 0.8 / 2**bisections) whose copy has <= ``goal`` MACs."""
    lo, hi = 0.0, 0.8
    tried = 0
    for _ in range(bisections):
        mid = (lo + hi) / 2
        twin = copy.deepcopy(model)
        tp_step(twin, x, mid)
        tried += 1
        if dense_macs(twin, x) <= goal:
            hi = mid
        else:
            lo = mid
    return hi, tried


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated zoo names")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=224, help="input height and width")
    parser.add_argument("--no-tp", action="store_true", help="time prunekit only")
    parser.add_argument("--tp-bisections", type=int, default=9)
    parser.add_argument("--tp-ratios", default="", help="name=ratio,... : skip Torch-Pruning's search for these")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls of each library (alternating); the minimum is shown")
    parser.add_argument("--no-exact", action="store_true", help="skip the exactness checks")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    import torch
    import prunekit

    torch.set_num_threads(args.threads)
    tp_version = None
    if not args.no_tp:
        try:
            import torch_pruning  # noqa: F401
            from importlib.metadata import version

            tp_version = version("torch-pruning")
        except ImportError:
            print("Torch-Pruning is not installed (pip install torch-pruning): timing prunekit only.")
            args.no_tp = True
    given = {k: float(v) for k, v in (item.split("=") for item in args.tp_ratios.split(",") if item)}
    source = provenance()
    print(f"machine: {cpu_model()}, {args.threads} threads; prunekit commit {source['commit']}"
          + (" (uncommitted changes under src/)" if source["src_uncommitted"] else "")
          + f"; torch {torch.__version__}; Torch-Pruning {tp_version or 'not used'}")
    print(f"target: MACs after / before <= {TARGET}; input 1x3x{args.size}x{args.size}")
    if not args.no_tp:
        print(f"Torch-Pruning: MetaPruner + MagnitudeImportance(p=1), local, last Linear ignored; its ratio is searched "
              f"by bisection ({args.tp_bisections} pruned copies on [0, 0.8]) unless given; 'tp s' times one "
              "construction + step at that ratio, 'tp+search s' adds the search")
    rows = []
    for name in [m for m in args.models.split(",") if m]:
        torch.manual_seed(0)
        original = prunekit.create_model(name).eval()
        randomise_norms(original)
        x = torch.randn(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            original(x)  # warm up the kernels and the allocator
        base = dense_macs(original, x)
        row = {"model": name, "params": sum(p.numel() for p in original.parameters()), "macs": base}

        ratio, tried, search_s = None, 0, 0.0
        if not args.no_tp:
            if name in given:
                ratio = given[name]
            else:
                t0 = time.perf_counter()
                ratio, tried = tp_search(original, x, int(base * TARGET), args.tp_bisections)
                search_s = time.perf_counter() - t0
        times: dict[str, list[float]] = {"prunekit": [], "tp": []}
        loads: list[float] = []
        for repeat in range(args.repeats):  # the two calls alternate; each on a fresh copy
            model = copy.deepcopy(original)
            with ForeignLoad() as load:
                t0 = time.perf_counter()
                result = prunekit.structural_prune(model, x, macs_target=TARGET)
                times["prunekit"].append(time.perf_counter() - t0)
            loads.append(load.cores)
            if repeat == 0:
                row["prunekit_macs_ratio"] = dense_macs(model, x) / base
                if not args.no_exact:
                    kept = {}
                    for record in result.records:
                        kept.update(record.kept)
                    row["prunekit_exact"] = masked_error(original, model, x, kept)
            del model
            if ratio is None:
                continue
            model = copy.deepcopy(original)
            with ForeignLoad() as load:
                t0 = time.perf_counter()
                pruner = tp_step(model, x, ratio)
                times["tp"].append(time.perf_counter() - t0)
            loads.append(load.cores)
            if repeat == 0:
                row.update(tp_ratio=ratio, tp_candidates=tried, tp_macs_ratio=dense_macs(model, x) / base)
                if not args.no_exact:
                    keep = tp_keep(original, x, pruner.pruning_history())
                    row["tp_exact"] = masked_error(original, model, x, keep) if keep is not None else None
            del model, pruner
        row["prunekit_s"] = min(times["prunekit"])
        row["prunekit_runs_s"] = times["prunekit"]
        if times["tp"]:
            row["tp_s"] = min(times["tp"])
            row["tp_runs_s"] = times["tp"]
            row["tp_search_s"] = search_s + row["tp_s"] if tried else None
        row["load"] = max(loads)
        rows.append(row)
        print(f"  {name}: done", flush=True)

    def fmt(value, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    header = (f"{'model':<22}{'params':>8}{'prunekit s':>12}{'tp s':>8}{'ratio':>7}{'tp+search s':>13}"
              f"{'tp R':>7}{'MACs pk':>9}{'MACs tp':>9}{'exact pk':>10}{'exact tp':>10}{'load':>6}")
    lines = []
    for r in rows:
        ratio = r["prunekit_s"] / r["tp_s"] if r.get("tp_s") else None
        load = r["load"]
        lines.append(f"{r['model']:<22}{r['params'] / 1e6:>7.1f}M{r['prunekit_s']:>12.2f}{fmt(r.get('tp_s'), '.2f'):>8}"
                     f"{fmt(ratio, '.2f'):>7}{fmt(r.get('tp_search_s'), '.1f'):>13}{fmt(r.get('tp_ratio'), '.4f'):>7}"
                     f"{r['prunekit_macs_ratio']:>9.3f}{fmt(r.get('tp_macs_ratio'), '.3f'):>9}"
                     f"{fmt(r.get('prunekit_exact'), '.1e'):>10}{fmt(r.get('tp_exact'), '.1e'):>10}{load:>6.2f}")
    print()
    print_table(header, lines)
    if args.json:
        meta = run_meta(source, "structural_speed", args.threads)
        meta.update({"torch_pruning": tp_version, "target": TARGET, "size": args.size,
                     "tp_bisections": args.tp_bisections})
        write_json(args.json, {"meta": meta, "rows": rows})


if __name__ == "__main__":
    main()
