"""Dense against shrunk in onnxruntime: a zoo model shrunk to a fraction of its MACs, both exported to ONNX.

``prunekit.structural_prune`` shrinks the model (channel groups, L1 magnitude,
``--macs-target`` of the dense MACs); ``prunekit.export_onnx`` exports the
dense and the shrunk model with torch's dynamo exporter and checks each in
onnxruntime against torch; ``prunekit.onnx_latency`` times both onnxruntime
sessions in interleaved rounds (medians) at ``--threads`` intra-op threads.
The weights are the random initialisation (the time does not depend on them).

    python benchmarks/onnx_latency.py --model resnet56 --macs-target 0.5 --batch 1 --threads 2
    python benchmarks/onnx_latency.py --model vgg16_bn --batch 8 --json benchmarks/results/onnx_latency.json
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import provenance, run_meta, wait_quiet, write_json  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet56", help="a zoo model (default resnet56)")
    parser.add_argument("--macs-target", type=float, default=0.5, help="fraction of the dense MACs kept")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--quiet-load", type=float, default=0.25, help="wait until other processes use less "
                        "than this many cores before timing")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()

    import torch

    import prunekit
    from prunekit.measure import count_macs, count_parameters

    source = provenance()
    torch.manual_seed(0)
    dense = prunekit.create_model(args.model).eval()
    x = prunekit.zoo.example_input(args.model, args.batch)
    shrunk = copy.deepcopy(dense)
    prunekit.structural_prune(shrunk, x, macs_target=args.macs_target, criterion="magnitude")
    shrunk.eval()
    rows = {}
    with tempfile.TemporaryDirectory(prefix="onnx-latency-") as tmp:
        files = {}
        for name, model in (("dense", dense), ("shrunk", shrunk)):
            result = prunekit.export_onnx(model, x, Path(tmp) / f"{name}.onnx")
            files[name] = result.path
            rows[name] = {"macs": count_macs(model, x, norms=False).dense_macs,
                          "params": count_parameters(model).params, "onnx_bytes": result.bytes,
                          "max_abs_error": result.max_abs_error}
        wait_quiet(args.quiet_load)
        times = prunekit.onnx_latency(files, x, threads=args.threads, repeats=args.repeats, warmup=args.warmup)
    for name in rows:
        rows[name]["ort_ms"] = times[name]
    print(f"{args.model}, input {tuple(x.shape)}, onnxruntime {args.threads} thread(s), "
          f"median of {args.repeats} interleaved runs")
    print(f"{'':8} {'MACs':>14} {'params':>11} {'ONNX bytes':>12} {'ort ms':>9} {'max |ort - torch|':>18}")
    for name, row in rows.items():
        print(f"{name:8} {row['macs']:>14,} {row['params']:>11,} {row['onnx_bytes']:>12,} {row['ort_ms']:>9.3f} "
              f"{row['max_abs_error']:>18.2e}")
    mac_ratio = rows["dense"]["macs"] / rows["shrunk"]["macs"]
    speedup = rows["dense"]["ort_ms"] / rows["shrunk"]["ort_ms"]
    print(f"MACs {mac_ratio:.2f}x fewer; onnxruntime speedup {speedup:.2f}x ({speedup / mac_ratio:.2f} of the MAC "
          "reduction)")
    if args.json:
        write_json(args.json, {"meta": run_meta(source, "onnx_latency", args.threads) | vars(args),
                               "rows": rows, "mac_ratio": mac_ratio, "speedup": speedup})


if __name__ == "__main__":
    main()
