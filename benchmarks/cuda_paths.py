"""The CUDA subset: the device tests on CUDA, then 2:4 semi-structured sparse against dense on the GPU.

Run as ``python benchmarks/cuda_paths.py`` from the repository root. Where there is no CUDA device it
says so and exits 0 (CI never has one). Otherwise:

1. ``pytest -m cuda`` over ``tests/``: every device-parametrised test on ``cuda`` (the CPU cases run in
   the ordinary suite).
2. A LLaMA-7B-shaped MLP (``d → ffn → d``, default 4096 → 11008 → 4096), 2:4-pruned on the GPU by
   ``prunekit.prune(structure=NM(2, 4))``, made permanent, cast to fp16 / bf16 and converted by
   ``prunekit.oneshot.to_semi_structured`` (torch's semi-structured sparse tensors: cuSPARSELt or
   CUTLASS). For each number of rows (tokens × batch) the dense and the converted stack are timed
   with ``torch.cuda.Event`` pairs, ``--repeats`` times after ``--warmup`` untimed runs; the table
   gives the medians side by side, the speedup ``dense / 2:4`` and the largest difference of the
   outputs relative to the largest dense output.

Exit status: 0 when the tests passed (or none could run) and every conversion succeeded, 1 otherwise.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO_ROOT, provenance, print_table, run_meta, write_json  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--d", type=int, default=4096, help="model width (input and output of the MLP)")
    p.add_argument("--ffn", type=int, default=11008, help="hidden width of the MLP")
    p.add_argument("--rows", type=int, nargs="+", default=[1, 16, 128, 512, 2048, 8192],
                   help="rows (tokens × batch) of the input")
    p.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=["fp16", "bf16"])
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--skip-tests", action="store_true", help="only the 2:4 timing")
    p.add_argument("--json", default=None, help="write the figures to this JSON file")
    return p.parse_args(argv)


def run_tests() -> int:
    """``pytest -m cuda`` over the suite, in a child process with this tree's ``src`` first."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT / "src"), os.environ.get("PYTHONPATH")])))
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "cuda", "tests"]
    print("$ " + " ".join(cmd[1:]), flush=True)
    return subprocess.run(cmd, cwd=REPO_ROOT, env=env).returncode


def mlp(d: int, ffn: int, device: torch.device) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(d, ffn), nn.ReLU(), nn.Linear(ffn, d)).to(device)


def median_ms(model: nn.Module, x: torch.Tensor, repeats: int, warmup: int) -> float:
    """Median of ``repeats`` forward times measured by CUDA events (after ``warmup`` untimed forwards)."""
    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        torch.cuda.synchronize()
        times = []
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            model(x)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
    return statistics.median(times)


def backend_name() -> str:
    from torch.sparse import semi_structured as ss

    return "CUTLASS" if ss.SparseSemiStructuredTensor._FORCE_CUTLASS else "cuSPARSELt"


def semi_structured(args: argparse.Namespace, device: torch.device) -> tuple[list[dict], bool]:
    import prunekit
    from prunekit.oneshot import to_semi_structured

    base = mlp(args.d, args.ffn, device)
    prunekit.prune(base, 0.5, structure=prunekit.NM(2, 4))  # magnitude 2:4 along the input dimension, on the GPU
    prunekit.make_permanent(base)
    results, ok = [], True
    for name in args.dtypes:
        dense = copy.deepcopy(base).to(DTYPES[name]).eval()
        sparse = copy.deepcopy(dense)
        converted = to_semi_structured(sparse)
        if converted != ["0", "2"]:
            print(f"{name}: to_semi_structured converted {converted}, expected both Linears (see the log)")
            ok = False
            continue
        for rows in args.rows:
            gen = torch.Generator(device=device).manual_seed(rows)
            x = torch.randn(rows, args.d, generator=gen, device=device, dtype=DTYPES[name])
            with torch.inference_mode():
                want, got = dense(x).float(), sparse(x).float()
            error = float((want - got).abs().max() / want.abs().max().clamp_min(1e-12))
            dense_ms = median_ms(dense, x, args.repeats, args.warmup)
            sparse_ms = median_ms(sparse, x, args.repeats, args.warmup)
            results.append({"dtype": name, "rows": rows, "dense_ms": dense_ms, "semi_structured_ms": sparse_ms,
                            "speedup": dense_ms / sparse_ms, "max_rel_error": error})
        del dense, sparse
        torch.cuda.empty_cache()
    return results, ok


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to run here (the CUDA cases of the tests are skipped with the reason "
              "'no CUDA device', and PyTorch has no 2:4 semi-structured kernels on the CPU).")
        return 0
    device = torch.device("cuda", torch.cuda.current_device())
    major, minor = torch.cuda.get_device_capability(device)
    print(f"device: {torch.cuda.get_device_name(device)} (compute capability {major}.{minor}), torch {torch.__version__}")
    tests_rc = 0 if args.skip_tests else run_tests()
    if tests_rc not in (0, 5):  # 5: no test selected
        print(f"pytest -m cuda failed (exit {tests_rc})")

    from prunekit.oneshot.semi_structured import semi_structured_available

    available, why = semi_structured_available(device)
    if not available:
        print(f"2:4 semi-structured timing not run: {why}")
        return 0 if tests_rc in (0, 5) else 1
    torch.backends.cuda.matmul.allow_tf32 = False
    results, ok = semi_structured(args, device)
    header = f"{'dtype':>5} {'rows':>6} {'dense ms':>9} {'2:4 ms':>9} {'speedup':>8} {'max rel err':>11}"
    print()
    print(f"MLP {args.d}→{args.ffn}→{args.d}, 2:4 semi-structured ({backend_name()}) against dense, "
          f"medians of {args.repeats} (CUDA events)")
    print_table(header, (f"{r['dtype']:>5} {r['rows']:>6} {r['dense_ms']:>9.3f} {r['semi_structured_ms']:>9.3f} "
                         f"{r['speedup']:>7.2f}× {r['max_rel_error']:>11.2e}" for r in results))
    if args.json:
        meta = run_meta(provenance(), "cuda_paths", torch.get_num_threads())
        meta.update(device=torch.cuda.get_device_name(device), capability=f"{major}.{minor}", backend=backend_name(),
                    shape=[args.d, args.ffn, args.d], tests_exit=tests_rc)
        write_json(args.json, {"meta": meta, "results": results})
    return 0 if ok and tests_rc in (0, 5) else 1


if __name__ == "__main__":
    sys.exit(main())
