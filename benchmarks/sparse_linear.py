"""Sparse execution on the CPU: dense F.linear vs torch CSR vs prunekit's compiled kernel.

Part 1, a LLaMA-7B-shaped MLP (up 4096→11008, down 11008→4096, ReLU between) at
one token, float32 and bfloat16 weights, at 50 / 70 / 90 % unstructured
sparsity (random masks) and 2:4 (the 2 largest |w| of every 4 inputs). The
three implementations are timed in interleaved rounds (medians); the table
gives each one's speedup over dense, the kernel's path at one row (``bitmask``:
decode per 16 columns; ``index``: 16-bit column indices and gathers, taken for
weights more than 80 % zeros) and the fraction of the bytes-read limit of the
bytes that path reads:

    limit = dense weight bytes / bytes read by the path
            (bitmask: mask + kept values + row offsets; index: kept values + their 16-bit columns + row offsets)
    reached = speedup / limit

("reached" exceeds 100 % where dense F.linear itself reads its weights slower
than the memory allows, as a one-thread oneDNN/MKL matrix-vector product can.)

then the scaling of dense and of the kernel from 1 to ``--threads`` threads.
torch has no CPU CSR product for bfloat16 (its row says "-").

Part 2, a BERT-base-shaped encoder (transformers' BertModel from a local
BertConfig(), random weights, no download) with every encoder Linear pruned to
90 % (magnitude, written as zeros), 1 × 128 tokens, converted by
``prunekit.to_sparse``: the per-layer choices and the end-to-end speedup.

    python benchmarks/sparse_linear.py --threads 2 --json benchmarks/results/sparse_linear.json
    python benchmarks/sparse_linear.py --quick        # a short smoke run (noisy figures)
    python benchmarks/sparse_linear.py --skip-bert --patterns 90% --dtypes float32   # one row

On a shared machine pass ``--wait-quiet``: each configuration then starts when
other processes use less than a quarter of a core.
"""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import print_table, provenance, run_meta, wait_quiet, write_json  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import prunekit  # noqa: E402
from prunekit.execution import column_indices, compress, kernel_path, sparse_linear, to_sparse  # noqa: E402
from prunekit.execution.module import torch_sparse_weight  # noqa: E402
from prunekit.execution.native_kernel import kernel  # noqa: E402
from prunekit.timing import interleaved_medians  # noqa: E402

HIDDEN, INTER = 4096, 11008
PATTERNS = ("50%", "70%", "90%", "2:4")


def _prune(weight: torch.Tensor, pattern: str, gen: torch.Generator) -> torch.Tensor:
    if pattern == "2:4":
        blocks = weight.reshape(weight.shape[0], -1, 4)
        drop = blocks.abs().argsort(-1)[..., :2]
        return blocks.scatter(-1, drop, 0.0).reshape(weight.shape)
    sparsity = float(pattern.rstrip("%")) / 100
    return weight * (torch.rand(weight.shape, generator=gen) >= sparsity)


def _mlp_weights(pattern: str, dtype: torch.dtype, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    up = _prune(torch.randn(INTER, HIDDEN, generator=gen) * 0.02, pattern, gen).to(dtype)
    down = _prune(torch.randn(HIDDEN, INTER, generator=gen) * 0.02, pattern, gen).to(dtype)
    return up, down


def bench_mlp(args: argparse.Namespace) -> list[dict]:
    rows = []
    for dtype in [getattr(torch, d) for d in args.dtypes]:
        for pattern in args.patterns:
            up, down = _mlp_weights(pattern, dtype)
            cu, cd = compress(up), compress(down)
            iu, id_ = column_indices(cu), column_indices(cd)  # derived once per layer, as SparseLinear does
            x = torch.randn(1, HIDDEN, dtype=dtype)
            fns = {
                "dense": lambda: F.linear(torch.relu(F.linear(x, up)), down),
                "prunekit": lambda: sparse_linear(torch.relu(sparse_linear(x, cu, cols=iu)), cd, cols=id_),
            }
            if dtype == torch.float32:
                su, sd = torch_sparse_weight(up, "csr"), torch_sparse_weight(down, "csr")
                fns["csr"] = lambda: F.linear(torch.relu(F.linear(x, su)), sd)
            torch.testing.assert_close(fns["prunekit"]().float(), fns["dense"]().float(), rtol=2e-2, atol=2e-3)
            paths = [kernel_path(c, 1) for c in (cu, cd)]
            path = "/".join(dict.fromkeys(paths))
            read = sum(c.nnz * (c.values.element_size() + 2) + c.row_ptr.numel() * 8 if p == "index" else c.nbytes
                       for c, p in zip((cu, cd), paths))
            limit = (cu.dense_nbytes + cd.dense_nbytes) / read
            scaling = {}
            for threads in sorted({1, args.threads}):
                torch.set_num_threads(threads)
                if args.wait_quiet:
                    wait_quiet()
                scaling[threads] = interleaved_medians(fns, repeats=args.repeats, warmup=args.warmup)
            med = scaling[args.threads]
            row = {"dtype": str(dtype).replace("torch.", ""), "pattern": pattern, "path": path, "limit": limit,
                   "ms": {k: v * 1e3 for k, v in med.items()},
                   "speedup": {k: med["dense"] / v for k, v in med.items() if k != "dense"},
                   "scaling_ms": {str(t): {k: v * 1e3 for k, v in m.items()} for t, m in scaling.items()}}
            row["reached"] = row["speedup"]["prunekit"] / limit
            rows.append(row)
            del fns
            gc.collect()
    torch.set_num_threads(args.threads)
    header = (f"{'dtype':<9} {'sparsity':>8} {'dense ms':>9} {'csr ms':>8} {'csr x':>6} {'kernel ms':>9} "
              f"{'kernel x':>8} {'path':>7} {'limit x':>7} {'reached':>7}  scaling 1->{args.threads} (dense, kernel)")
    lines = []
    for r in rows:
        ms, sp = r["ms"], r["speedup"]
        csr = (f"{ms['csr']:>8.3f} {sp['csr']:>5.2f}x") if "csr" in ms else f"{'-':>8} {'-':>6}"
        s1, s2 = r["scaling_ms"]["1"], r["scaling_ms"][str(args.threads)]
        lines.append(f"{r['dtype']:<9} {r['pattern']:>8} {ms['dense']:>9.3f} {csr} {ms['prunekit']:>9.3f} "
                     f"{sp['prunekit']:>7.2f}x {r['path']:>7} {r['limit']:>6.2f}x {r['reached']:>6.0%}  "
                     f"{s1['dense'] / s2['dense']:.2f}x, {s1['prunekit'] / s2['prunekit']:.2f}x")
    print_table(header, lines)
    print("limit = dense bytes / bytes the path reads, s = bytes a value (4 fp32, 2 bf16), p = sparsity: "
          "bitmask s / (1/8 + (1-p) s), index s / ((1-p) (s + 2)) (+ 8 bytes a row offset); reached = kernel x / limit")
    return rows


def bench_bert(args: argparse.Namespace) -> dict:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig() if not args.quick else BertConfig(num_hidden_layers=2)
    model = BertModel(config).eval()
    prunekit.prune(model, 0.9, include="encoder.*", mode="permanent")
    ids = torch.randint(0, config.vocab_size, (1, 128))
    if args.wait_quiet:
        wait_quiet()
    result = to_sparse(model, {"input_ids": ids}, threads=args.threads, repeats=max(3, args.repeats // 2),
                       warmup=args.warmup, model_repeats=args.repeats)
    print()
    print(f"BERT-base-shaped encoder ({config.num_hidden_layers} layers), 90% of every encoder Linear, 1 x 128 tokens")
    print(result.table())
    return {"layers": config.num_hidden_layers, **result.to_dict()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="few repeats and a 2-layer BERT: checks the script runs")
    parser.add_argument("--skip-mlp", action="store_true")
    parser.add_argument("--skip-bert", action="store_true")
    parser.add_argument("--wait-quiet", action="store_true")
    parser.add_argument("--patterns", nargs="+", choices=PATTERNS, default=list(PATTERNS),
                        help="MLP sparsities to run (default: all)")
    parser.add_argument("--dtypes", nargs="+", choices=("float32", "bfloat16"), default=["float32", "bfloat16"],
                        help="MLP weight dtypes to run (default: both)")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.warmup = 3, 1
    source = provenance()
    torch.set_num_threads(args.threads)
    kernel()  # build (or load the cached build) before any timing
    payload = {"meta": run_meta(source, "sparse_linear", args.threads)}
    if not args.skip_mlp:
        payload["mlp"] = bench_mlp(args)
    if not args.skip_bert:
        payload["bert"] = bench_bert(args)
    if args.json:
        write_json(args.json, payload)


if __name__ == "__main__":
    main()
