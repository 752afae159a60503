"""Peak memory of pruning a Hugging Face folder streamed from disk against loading it whole.

A LLaMA-config causal LM with random weights (16 blocks of width 1024, MLP
2816, vocabulary 32,000, untied head: 271M parameters, 1.08 GB in fp32) is
generated once and saved with ``save_pretrained`` in shards of 200 MB under
``benchmarks/cache/oneshot_disk/`` (keyed by its config). Random weights are
enough for memory figures. Each run, in its own fresh subprocess, one after
another, prunes it with the same method from the same calibration ids and
writes a pruned Hugging Face folder:

* ``load + oneshot_prune``: ``from_pretrained``, ``oneshot_prune`` (offload
  none), ``save_pretrained``: the whole model in memory;
* ``load + oneshot_prune(disk)``: the same with ``offload="disk"``: the
  blocks wait on disk during pruning, but loading still holds the whole model;
* ``prune_pretrained``: ``prunekit.oneshot.prune_pretrained(folder, out, ...)``:
  the model built on meta, the parts outside the blocks read up front, one
  block read from the files at a time and written to its shard.

Reported per run: the process's peak RSS (``VmHWM`` of ``/proc/self/status``,
the kernel's high-water mark, imports included; not ``getrusage``'s
``ru_maxrss``, which a child inherits from the parent it was forked from),
its RSS after the imports and a warm-up forward of a tiny LLaMA (torch,
transformers and its lazily imported LLaMA modules), and the difference.
Afterwards the driver checks that the streamed output holds the same tensors,
bit for bit, as the load-everything output. Seconds are indicative only (no
wait for a quiet machine: memory figures do not need one; the "other" column
gives the CPU other processes used meanwhile).

    nice -n 10 python benchmarks/oneshot_disk.py --json benchmarks/results/oneshot_disk.json
    python benchmarks/oneshot_disk.py --quick        # a 2-block model of a few MB
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    ForeignLoad,
    PeakRSS,
    malloc_trim,
    print_table,
    provenance,
    rss_bytes,
    run_meta,
    write_json,
)

CACHE = Path(__file__).resolve().parent / "cache" / "oneshot_disk"
CONFIG = {"vocab_size": 32000, "hidden_size": 1024, "intermediate_size": 2816, "num_hidden_layers": 16,
          "num_attention_heads": 16, "num_key_value_heads": 16, "max_position_embeddings": 2048,
          "tie_word_embeddings": False}
QUICK_CONFIG = dict(CONFIG, vocab_size=1000, hidden_size=128, intermediate_size=352, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=4)
RUNS = ("load + oneshot_prune", "load + oneshot_prune(disk)", "prune_pretrained")


def model_folder(config: dict, shard: str) -> Path:
    """The cached random-weight model of ``config`` (generated and saved once)."""
    key = hashlib.sha1(json.dumps([config, shard], sort_keys=True).encode()).hexdigest()[:12]
    folder = CACHE / f"llama_{key}"
    if (folder / "config.json").is_file():
        return folder
    import torch
    import transformers

    print(f"generating the random-weight model into {folder} (once)", flush=True)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**config))
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial, max_shard_size=shard)
    partial.rename(folder)
    return folder


# -- worker side --------------------------------------------------------------------------


def peak_rss_bytes() -> int:
    """The high-water mark of this process's RSS (VmHWM), kept by the kernel: no sample can miss it."""
    found = re.search(r"^VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    if found is None:
        raise RuntimeError("VmHWM not found in /proc/self/status")
    return int(found.group(1)) * 1024


def worker(args, run: str, folder: Path, out: Path) -> dict:
    import torch
    import transformers

    from prunekit.oneshot import oneshot_prune, prune_pretrained

    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    vocab = json.loads((folder / "config.json").read_text())["vocab_size"]
    calibration = torch.randint(0, vocab, (args.samples, args.seq_len), generator=torch.Generator().manual_seed(0))
    # warm-up: the lazily imported LLaMA modules (about 140 MiB) and torch's thread pools are not the method's
    tiny = transformers.LlamaForCausalLM(transformers.LlamaConfig(**dict(QUICK_CONFIG, vocab_size=64)))
    with torch.no_grad():
        tiny(calibration[:1, :8] % 64)
    del tiny
    malloc_trim()
    baseline = rss_bytes()
    with ForeignLoad() as load, PeakRSS(0.005) as sampled:
        t0 = time.perf_counter()
        if run == "prune_pretrained":
            result = prune_pretrained(folder, out, calibration, args.method, args.sparsity)
        else:
            model = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
            result = oneshot_prune(model, calibration, args.method, args.sparsity,
                                   offload="disk" if run.endswith("(disk)") else "none")
            model.save_pretrained(out)
        seconds = time.perf_counter() - t0
    return {"run": run, "seconds": seconds, "other_cores": load.cores, "rss_after_warmup": baseline,
            "peak_rss_sampled": sampled.peak, "peak_rss": peak_rss_bytes(),
            "sparsity": result.report.sparsity, "params": result.report.model_params}


# -- driver side --------------------------------------------------------------------------


def spawn(args, run: str, folder: Path, out: Path) -> dict:
    cmd = [sys.executable, __file__, "--worker", run, "--folder", str(folder), "--out-dir", str(out),
           "--threads", str(args.threads), "--samples", str(args.samples), "--seq-len", str(args.seq_len),
           "--method", args.method, "--sparsity", str(args.sparsity)]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent / "src"))
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"worker {run} failed:\n{proc.stdout}\n{proc.stderr}")


def same_tensors(a: Path, b: Path) -> tuple[bool, int]:
    """Whether two Hugging Face folders hold the same tensors bit for bit (one tensor in memory at a time)."""
    import torch
    from safetensors import safe_open

    def where(folder: Path) -> dict[str, Path]:
        index = folder / "model.safetensors.index.json"
        if index.is_file():
            return {k: folder / f for k, f in json.loads(index.read_text())["weight_map"].items()}
        with safe_open(str(folder / "model.safetensors"), "pt") as handle:
            return dict.fromkeys(handle.keys(), folder / "model.safetensors")

    left, right = where(a), where(b)
    if left.keys() != right.keys():
        return False, 0
    for key in left:
        with safe_open(str(left[key]), "pt") as x, safe_open(str(right[key]), "pt") as y:
            if not torch.equal(x.get_tensor(key), y.get_tensor(key)):
                return False, 0
    return True, len(left)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run on a 2-block model of a few MB")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--samples", type=int, default=16, help="calibration sequences")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--method", default="wanda")
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--out-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(worker(args, args.worker, Path(args.folder), Path(args.out_dir))), flush=True)
        return 0
    config, shard = (QUICK_CONFIG, "1MB") if args.quick else (CONFIG, "200MB")
    folder = model_folder(config, shard)
    size = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    source = provenance()
    print(f"one-shot {args.method} at {args.sparsity:g} of {folder.name} ({size / 2**20:.1f} MiB of safetensors), "
          f"{args.samples} x {args.seq_len} calibration tokens; prunekit at {source['commit']}", flush=True)
    work = CACHE / "runs"
    shutil.rmtree(work, ignore_errors=True)
    results = []
    for index, run in enumerate(RUNS):
        r = spawn(args, run, folder, work / f"out{index}")
        results.append(r)
        print(f"  {run}: peak RSS {r['peak_rss'] / 2**20:.1f} MiB ({r['seconds']:.1f} s)", flush=True)
    identical, tensors = same_tensors(work / "out0", work / f"out{RUNS.index('prune_pretrained')}")
    shutil.rmtree(work, ignore_errors=True)
    print()
    print_table(f"{'run':<28} {'peak RSS MiB':>13} {'after warm-up':>14} {'peak - warm-up':>15} {'s':>7} "
                f"{'other':>6}",
                [f"{r['run']:<28} {r['peak_rss'] / 2**20:13.1f} {r['rss_after_warmup'] / 2**20:14.1f} "
                 f"{(r['peak_rss'] - r['rss_after_warmup']) / 2**20:15.1f} {r['seconds']:7.1f} "
                 f"{r['other_cores']:6.2f}" for r in results])
    print(f"streamed output identical to the load-everything output: {identical} ({tensors} tensors compared)")
    if args.json:
        write_json(args.json, {"meta": run_meta(source, "oneshot_disk", args.threads) | {
            "config": config, "shard": shard, "safetensors_bytes": size, "samples": args.samples,
            "seq_len": args.seq_len, "method": args.method, "sparsity": args.sparsity},
            "results": results, "identical": identical, "tensors_compared": tensors})
    return 0


if __name__ == "__main__":
    sys.exit(main())
