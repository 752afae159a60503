"""One-shot pruning of a small character-level GPT trained here: magnitude, Wanda, SparseGPT, OWL.

The model (``oneshot_gpt_model.py``: prunekit's zoo GPT, 4 blocks of width
192, trained on the first 90% of tinyshakespeare and cached) is pruned
block by block from 128 calibration windows of 128 characters of the
training text, then scored by perplexity on the held-out last 10% in
non-overlapping windows of 128 characters (the first ``--eval-tokens``).

Runs, each in a fresh subprocess (one after another) so that its pruning
wall time and peak RSS growth are its own:

* dense; magnitude / Wanda / SparseGPT at 50% unstructured, 4:8 and 2:4;
  at 70% unstructured without and with OWL (λ = 0.08, M = 5);
* outliers: the same model after an output-preserving rescaling that makes a
  few outlier feature channels (channels ``OUTLIER_CHANNELS`` of every
  LayerNorm scaled by ``c``, the columns of the linear layers reading them by
  ``1/c``): dense (unchanged perplexity), magnitude, Wanda, SparseGPT;
* memory: a wider random-weight GPT (12 blocks of width 512, 38M parameters)
  pruned with SparseGPT by the block-by-block engine (blocks in memory, or
  offloaded to disk) against the whole-model approach (hooks on every linear
  layer, one forward pass of the whole model, every layer's Hessian held at
  once), from 32 calibration windows.

Timings wait for a quiet machine first (``_common.wait_quiet``) and report the
CPU other processes used meanwhile.

    nice -n 10 python benchmarks/oneshot_gpt.py --json benchmarks/results/oneshot_gpt.json
    python benchmarks/oneshot_gpt.py --quick        # untrained 2-block model, small sets
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
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
    wait_quiet,
    write_json,
)

OUTLIER_CHANNELS = (7, 42, 99, 150)
OUTLIER_SCALE = 30.0
MEMORY_CONFIG = {"vocab_size": 65, "block_size": 128, "n_layer": 12, "n_head": 8, "n_embd": 512}


def runs(quick: bool) -> list[dict]:
    out: list[dict] = [{"name": "dense", "kind": "dense"}]
    for structure, sparsity in (("unstructured", 0.5), ("4:8", 0.5), ("2:4", 0.5)):
        for method in ("magnitude", "wanda", "sparsegpt"):
            out.append({"name": f"{method} {structure if structure != 'unstructured' else '50%'}",
                        "kind": "prune", "method": method, "structure": structure, "sparsity": sparsity})
    for owl in (False, True):
        for method in ("magnitude", "wanda", "sparsegpt"):
            out.append({"name": f"{method} 70%{' OWL' if owl else ''}", "kind": "prune", "method": method,
                        "structure": "unstructured", "sparsity": 0.7, "owl": owl})
    out.append({"name": "outliers: dense", "kind": "dense", "outliers": True})
    for method in ("magnitude", "wanda", "sparsegpt"):
        out.append({"name": f"outliers: {method} 50%", "kind": "prune", "method": method,
                    "structure": "unstructured", "sparsity": 0.5, "outliers": True})
    for approach in ("whole-model", "block", "block+disk"):
        out.append({"name": f"memory: {approach}", "kind": "memory", "approach": approach, "method": "sparsegpt",
                    "samples": 32})
    if quick:
        keep = {"dense", "outliers: dense", "magnitude 50%", "wanda 2:4", "sparsegpt 50%", "wanda 70% OWL", "outliers: wanda 50%",
                "memory: whole-model", "memory: block+disk"}
        out = [r for r in out if r["name"] in keep]
    return out


# -- worker side --------------------------------------------------------------------------


def add_outliers(model, channels=OUTLIER_CHANNELS, c: float = OUTLIER_SCALE) -> None:
    """Output-preserving rescaling: LayerNorm gain and bias of ``channels`` × c, the columns of
    the linear layers reading that LayerNorm × 1/c (q/k/v after ln_1, mlp.fc after ln_2)."""
    import torch

    idx = torch.tensor(channels)
    with torch.no_grad():
        for block in model.blocks:
            for norm, readers in ((block.ln_1, (block.attn.q_proj, block.attn.k_proj, block.attn.v_proj)),
                                  (block.ln_2, (block.mlp.fc,))):
                norm.weight[idx] *= c
                if norm.bias is not None:
                    norm.bias[idx] *= c
                for linear in readers:
                    linear.weight[:, idx] /= c


def load(args, spec):
    import torch
    from oneshot_gpt_model import CONFIG, data, get_model

    import prunekit
    from prunekit.cli.oneshot import sample_windows

    if spec["kind"] == "memory":
        torch.manual_seed(0)
        config = dict(MEMORY_CONFIG, n_layer=2, n_embd=128) if args.quick else MEMORY_CONFIG
        model = prunekit.create_model("gpt_tiny", **config).eval()
        tok, train_ids, val_ids = data()
    elif args.quick:
        torch.manual_seed(0)
        tok, train_ids, val_ids = data()
        model = prunekit.create_model("gpt_tiny", **dict(CONFIG, n_layer=2, vocab_size=tok.vocab_size)).eval()
    else:
        model, tok, train_ids, val_ids = get_model(allow_train=False)
    if spec.get("outliers"):
        add_outliers(model)
    calibration = sample_windows(train_ids, spec.get("samples", args.samples), args.seq_len, seed=0)
    return model, calibration, val_ids[: args.eval_tokens]


def whole_model_prune(model, calibration, method: str, sparsity: float) -> None:
    """The approach the block engine replaces: every layer's statistics from one pass of the dense model."""
    import torch

    from prunekit.oneshot.blocks import block_targets, set_weight_matrix, weight_matrix
    from prunekit.oneshot.methods import ONESHOT_METHODS
    from prunekit.oneshot.stats import collect_input_stats

    chosen = ONESHOT_METHODS.get(method)()
    targets = block_targets(model.blocks)  # every block's linear layers, named "<i>.attn.q_proj.weight" ...
    with collect_input_stats(targets, norms=chosen.norms, hessian=chosen.hessian) as stats, torch.no_grad():
        for batch in calibration.split(8):
            model(batch)
        for t in targets:
            new, keep = chosen.prune_layer(weight_matrix(t).float(), stats[t.name], sparsity, None,
                                           {"blocksize": 128, "percdamp": 0.01}, t.name)
            set_weight_matrix(t, (new if new is not None else weight_matrix(t).float()) * keep)


def worker(args, spec: dict) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    from prunekit.oneshot import lm_perplexity, oneshot_prune

    rss_start = rss_bytes()
    model, calibration, held_out = load(args, spec)
    out: dict = {"spec": spec, "params": sum(p.numel() for p in model.parameters()),
                 "calibration": list(calibration.shape), "eval_tokens": len(held_out) - 1}
    if spec["kind"] != "dense":
        with torch.no_grad():
            model(calibration[:8])  # warm-up: thread pools and allocator caches are not the method's memory
        malloc_trim()
        events: list[int] = []
        waited, _ = wait_quiet(args.quiet_load, 1.0, args.max_wait)
        before = rss_bytes()
        with ForeignLoad() as load_meter, PeakRSS() as peak:
            t0 = time.perf_counter()
            if spec.get("approach") == "whole-model":
                whole_model_prune(model, calibration, spec["method"], 0.5)
                result = None
            else:
                def progress(event) -> None:
                    if not events:
                        peak.peak = rss_bytes()  # from the capture on (after any offloading to disk)
                    events.append(1)

                result = oneshot_prune(model, calibration, method=spec["method"],
                                       structure=spec.get("structure", "unstructured"),
                                       sparsity=spec.get("sparsity", 0.5), owl=spec.get("owl", False),
                                       offload="disk" if spec.get("approach") == "block+disk" else "none",
                                       progress=progress)
            seconds = time.perf_counter() - t0
        out.update({
            "seconds": seconds, "waited_for_quiet_s": waited, "foreign_load_cores": load_meter.cores,
            "rss_process_start": rss_start, "rss_before": before,
            "peak_rss": peak.peak, "peak_extra_bytes": peak.peak - before,
        })
        if result is not None:
            out.update({"block_sparsities": result.block_sparsities, "outlier_ratios": result.outlier_ratios,
                        "sparsity": result.report.sparsity, "peak_block_bytes": result.peak_block_bytes,
                        "nm_invalid_groups": sum((result.report.extras.get("nm_invalid_groups") or {}).values())})
    if spec["kind"] != "memory":
        out["perplexity"] = lm_perplexity(model, held_out, args.seq_len, batch_size=16).perplexity
    return out


def block_sensitivity(args, sparsity: float = 0.78) -> list[dict]:
    """Perplexity with only one block's linear layers magnitude-pruned to ``sparsity`` (OWL's highest level)."""
    import torch
    from oneshot_gpt_model import get_model

    from prunekit.oneshot import lm_perplexity
    from prunekit.oneshot.blocks import block_targets, weight_matrix
    from prunekit.oneshot.magnitude import magnitude_keep

    torch.set_num_threads(args.threads)
    model, _, _, val_ids = get_model(allow_train=False)
    held_out = val_ids[: args.eval_tokens]
    out = [{"block": None, "perplexity": lm_perplexity(model, held_out, args.seq_len, 16).perplexity}]
    for index in range(len(model.blocks)):
        pruned = copy.deepcopy(model)
        with torch.no_grad():
            for target in block_targets(pruned.blocks[index]):
                weight = weight_matrix(target)
                weight.mul_(magnitude_keep(weight, sparsity))
        out.append({"block": index, "perplexity": lm_perplexity(pruned, held_out, args.seq_len, 16).perplexity})
        print(f"  only block {index} at {sparsity:.0%}: ppl {out[-1]['perplexity']:.3f} "
              f"(dense {out[0]['perplexity']:.3f})", flush=True)
    return out


# -- driver side --------------------------------------------------------------------------


def spawn(args, spec: dict) -> dict:
    cmd = [sys.executable, __file__, "--worker", json.dumps(spec), "--threads", str(args.threads),
           "--samples", str(args.samples), "--seq-len", str(args.seq_len), "--eval-tokens", str(args.eval_tokens),
           "--quiet-load", str(args.quiet_load), "--max-wait", str(args.max_wait)] + (["--quick"] if args.quick else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=dict(os.environ, PYTHONPATH=str(
        Path(__file__).resolve().parent.parent / "src")))
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"worker {spec['name']} failed:\n{proc.stdout}\n{proc.stderr}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: untrained 2-block models, small sets")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--samples", type=int, default=None, help="calibration windows (128; 16 with --quick)")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--eval-tokens", type=int, default=None, help="held-out tokens scored (32768; 4096 quick)")
    parser.add_argument("--only", help="comma-separated run names (default: all)")
    parser.add_argument("--quiet-load", type=float, default=0.5)
    parser.add_argument("--max-wait", type=float, default=60.0)
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--block-sensitivity", action="store_true",
                        help="only: perplexity with one block at a time magnitude-pruned to 78%% (why OWL hurts here)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.samples = args.samples or (16 if args.quick else 128)
    args.eval_tokens = args.eval_tokens or (4096 if args.quick else 32768)
    if args.worker:
        print("RESULT " + json.dumps(worker(args, json.loads(args.worker))), flush=True)
        return 0
    source = provenance()
    if args.block_sensitivity:
        result = block_sensitivity(args)
        if args.json:
            write_json(args.json, {"meta": run_meta(source, "oneshot_gpt --block-sensitivity", args.threads),
                                   "results": result})
        return 0
    plan = runs(args.quick)
    if args.only:
        wanted = {n.strip() for n in args.only.split(",")}
        plan = [r for r in plan if r["name"] in wanted]
    print(f"one-shot pruning of a char GPT on tinyshakespeare: {len(plan)} runs, {args.samples} x {args.seq_len} "
          f"calibration tokens, perplexity on {args.eval_tokens} held-out tokens; prunekit at {source}", flush=True)
    results = []
    for spec in plan:
        r = spawn(args, spec)
        r["name"] = spec["name"]
        results.append(r)
        ppl = f"ppl {r['perplexity']:.3f}" if "perplexity" in r else ""
        extra = (f" {r['seconds']:.2f} s, peak +{r['peak_extra_bytes'] / 2**20:.1f} MiB, other load "
                 f"{r['foreign_load_cores']:.2f} cores") if "seconds" in r else ""
        print(f"  {spec['name']}: {ppl}{extra}", flush=True)

    dense = {r["name"]: r["perplexity"] for r in results if r["spec"]["kind"] == "dense"}
    header = f"{'run':<28} {'ppl':>9} {'x dense':>8} {'prune s':>8} {'peak MiB':>9} {'other cores':>11}"
    lines = []
    for r in results:
        if r["spec"]["kind"] == "memory":
            continue
        base = dense.get("outliers: dense" if r["spec"].get("outliers") else "dense")
        lines.append(f"{r['name']:<28} {r['perplexity']:9.3f} {r['perplexity'] / base if base else math.nan:8.3f} "
                     + (f"{r['seconds']:8.2f} {r['peak_extra_bytes'] / 2**20:9.1f} {r['foreign_load_cores']:11.2f}"
                        if "seconds" in r else f"{'':8} {'':9} {'':11}"))
    print()
    print_table(header, lines)
    mem = [r for r in results if r["spec"]["kind"] == "memory"]
    if mem:
        print()
        print_table(f"{'memory run':<24} {'params':>10} {'RSS before MiB':>15} {'peak MiB':>9} {'peak-before MiB':>16} "
                    f"{'s':>7}",
                    [f"{r['name']:<24} {r['params']:>10,} {r['rss_before'] / 2**20:15.1f} {r['peak_rss'] / 2**20:9.1f} "
                     f"{r['peak_extra_bytes'] / 2**20:16.1f} {r['seconds']:7.2f}" for r in mem])
    if args.json:
        import torch

        write_json(args.json, {"meta": run_meta(source, "oneshot_gpt", args.threads) | {
            "samples": args.samples, "seq_len": args.seq_len, "eval_tokens": args.eval_tokens,
            "outlier_channels": OUTLIER_CHANNELS, "outlier_scale": OUTLIER_SCALE, "memory_config": MEMORY_CONFIG,
            "torch": torch.__version__}, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
