"""Bytes on disk of a pruned model: prunekit.save_sparse against torch.save.

Model: 6 blocks of Linear(768->3072), GELU, Linear(3072->768) with biases
(28.3M parameters, 113 MB fp32). At each sparsity (unstructured magnitude,
local: every Linear weight pruned to the same fraction) the script writes:

* ``dense torch.save``           torch.save(state_dict) of the unpruned model (the 1.00x reference)
* ``torch-pruned torch.save``    torch.nn.utils.prune.l1_unstructured, then torch.save(state_dict)
                                 (weight_orig + float weight_mask: about twice dense)
* ``prunekit reparam torch.save``  prunekit.prune(mode="reparam"), torch.save(state_dict) (same layout as torch)
* ``prunekit inplace torch.save``  prunekit.prune(mode="inplace"), torch.save(state_dict) (weight + bool mask)
* ``save_sparse reparam``        prunekit.save_sparse of the reparam-mode model
* ``save_sparse inplace``        prunekit.save_sparse of the inplace-mode model
* ``save_sparse permanent``      prunekit.save_sparse after prunekit.make_permanent (zeros detected)

and checks the round trip: prunekit.load_sparse into a freshly built model
(different seed, so every value must come from the file) gives bit-identical
outputs (torch.equal) to the pruned model on a random batch.

    python benchmarks/disk_size.py
    python benchmarks/disk_size.py --quick
    python benchmarks/disk_size.py --json out.json
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import print_table, provenance, run_meta, write_json  # noqa: E402

SPARSITIES = (0.5, 0.9, 0.99)
TARGET_AT_90 = 0.15  # save_sparse at most 0.15x the dense fp32 size at 90%


def build_model(blocks: int, d: int, hidden: int, seed: int):
    import torch
    from torch import nn

    torch.manual_seed(seed)
    layers = []
    for _ in range(blocks):
        layers += [nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, d)]
    return nn.Sequential(*layers).eval()


def file_size(path: str) -> int:
    return os.path.getsize(path)


def torch_save(state_dict, path: str) -> tuple[int, float]:
    import torch

    t0 = time.perf_counter()
    torch.save(state_dict, path)
    return file_size(path), time.perf_counter() - t0


def save_sparse(model, path: str) -> tuple[int, float]:
    import prunekit

    t0 = time.perf_counter()
    size = prunekit.save_sparse(model, path)
    seconds = time.perf_counter() - t0
    assert size == file_size(path)
    return size, seconds


def round_trip(model, path: str, args: argparse.Namespace, x) -> tuple[bool, float]:
    """load_sparse into a fresh model (other seed): outputs bit-identical to ``model``'s?"""
    import torch

    import prunekit

    fresh = build_model(args.blocks, args.d, args.hidden, args.seed + 12345)
    t0 = time.perf_counter()
    prunekit.load_sparse(path, fresh)
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        same = torch.equal(model(x), fresh(x))
    return same, seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 block")
    parser.add_argument("--blocks", type=int, default=None, help="default 6 (1 with --quick)")
    parser.add_argument("--d", type=int, default=768)
    parser.add_argument("--hidden", type=int, default=3072)
    parser.add_argument("--sparsities", default=",".join(str(s) for s in SPARSITIES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    parser.add_argument("--dir", default=None, help="where to write the files (default: a temporary directory)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    source = provenance()  # the prunekit source measured, taken before the run
    args.blocks = args.blocks or (1 if args.quick else 6)

    import torch
    from torch import nn
    from torch.nn.utils import prune as torch_prune

    import prunekit

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    sparsities = [float(s) for s in args.sparsities.split(",")]
    x = torch.randn(16, args.d, generator=torch.Generator().manual_seed(args.seed + 7))

    if args.dir:
        os.makedirs(args.dir, exist_ok=True)
        tmp, folder = None, args.dir
    else:
        tmp = tempfile.TemporaryDirectory()
        folder = tmp.name
    dense_model = build_model(args.blocks, args.d, args.hidden, args.seed)
    params = sum(p.numel() for p in dense_model.parameters())
    dense_bytes, _ = torch_save(dense_model.state_dict(), os.path.join(folder, "dense.pt"))
    print(f"disk size: {args.blocks} blocks of Linear({args.d}<->{args.hidden}) with bias = {params / 1e6:.1f}M params; "
          f"dense torch.save = {dense_bytes / 1e6:.1f} MB; torch {torch.__version__}, {threads} threads, "
          f"{os.cpu_count()} CPUs; prunekit at {source}", flush=True)

    rows = []

    def add(sparsity, what, size, seconds, round_trip_ok=None, load_seconds=None):
        rows.append({
            "sparsity": sparsity, "what": what, "bytes": size, "mb": size / 1e6,
            "ratio_to_dense": size / dense_bytes, "save_seconds": seconds,
            "round_trip_bit_identical": round_trip_ok, "load_seconds": load_seconds,
        })

    def add_save_sparse(sparsity, kind, model, tag):
        """prunekit.save_sparse of ``model`` and its load_sparse round trip, as row "save_sparse <kind>"."""
        path = os.path.join(folder, f"pk_{kind}_{tag}.safetensors")
        size, seconds = save_sparse(model, path)
        ok, load_seconds = round_trip(model, path, args, x)
        add(sparsity, f"save_sparse {kind}", size, seconds, ok, load_seconds)

    for s in sparsities:
        tag = f"{s:g}"
        add(s, "dense torch.save", dense_bytes, None)

        # torch.nn.utils.prune baseline
        m = build_model(args.blocks, args.d, args.hidden, args.seed)
        for mod in m.modules():
            if isinstance(mod, nn.Linear):
                torch_prune.l1_unstructured(mod, "weight", amount=s)
        size, sec = torch_save(m.state_dict(), os.path.join(folder, f"torch_{tag}.pt"))
        add(s, "torch-pruned torch.save", size, sec)
        with torch.no_grad():
            ref_out = m(x)
        del m

        # prunekit, reparam mode, then inplace mode (and that made permanent)
        for mode in ("reparam", "inplace"):
            m = build_model(args.blocks, args.d, args.hidden, args.seed)
            prunekit.prune(m, s, criterion="magnitude", mode=mode)
            if mode == "reparam":
                with torch.no_grad():
                    same_as_torch = torch.equal(m(x), ref_out)
            size, sec = torch_save(m.state_dict(), os.path.join(folder, f"pk_{mode}_{tag}.pt"))
            add(s, f"prunekit {mode} torch.save", size, sec)
            add_save_sparse(s, mode, m, tag)
            if mode == "inplace":
                prunekit.make_permanent(m)
                add_save_sparse(s, "permanent", m, tag)
            del m
        rows[-1]["prunekit_reparam_outputs_equal_torch"] = same_as_torch

    header = f"{'sparsity':>8}  {'file':<28} {'MB':>8} {'x dense':>8} {'save s':>7} {'round trip':>11}"
    lines = []
    for r in rows:
        rt = "-" if r["round_trip_bit_identical"] is None else ("bit-exact" if r["round_trip_bit_identical"] else "DIFFERS")
        sec = "-" if r["save_seconds"] is None else f"{r['save_seconds']:.2f}"
        lines.append(f"{r['sparsity']:>8.0%}  {r['what']:<28} {r['mb']:>8.2f} {r['ratio_to_dense']:>7.3f}x {sec:>7} {rt:>11}")
    print()
    print_table(header, lines)
    print()
    for s in sparsities:
        same = [r for r in rows if r["sparsity"] == s and "prunekit_reparam_outputs_equal_torch" in r]
        if same:
            print(f"{s:.0%}: prunekit reparam outputs equal torch l1_unstructured outputs: "
                  f"{same[0]['prunekit_reparam_outputs_equal_torch']}")
    bad = [r for r in rows if r["round_trip_bit_identical"] is False]
    for r in bad:
        print(f"ROUND TRIP FAILED: {r['what']} at {r['sparsity']:.0%}")
    at90 = [r for r in rows if abs(r["sparsity"] - 0.9) < 1e-9 and r["what"].startswith("save_sparse")]
    for r in at90:
        ok = r["ratio_to_dense"] <= TARGET_AT_90
        print(f"target at 90%: {r['what']} <= {TARGET_AT_90}x dense: {'met' if ok else 'MISSED'} ({r['ratio_to_dense']:.3f}x)")
    if args.json:
        meta = {
            **run_meta(source, "disk_size", threads),
            "params": params,
            "dense_bytes": dense_bytes,
            "target_at_90": TARGET_AT_90,
            "nice": os.nice(0),
        }
        write_json(args.json, {"meta": meta, "rows": rows})
    if tmp:
        tmp.cleanup()
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
