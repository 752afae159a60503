"""Figures of the tutorial docs/tutorials/bert-speed-size.md: a BERT pruned globally to 90%,
then saved, shrunk and run sparse; bytes on disk and latency of each form, side by side with dense.

A BERT with 4 layers, hidden size 512, 8 heads and an MLP of 2,048 (random weights, built from a local
BertConfig, nothing downloaded), 1 × 128 tokens. Forms:

* dense;
* masks (global magnitude, 90% of the encoder's Linear weights; torch's layout) and the same made
  permanent (zeros written);
* the compressed checkpoint of the masked model (``prunekit.save_sparse``);
* structurally shrunk: half the heads and half the MLP neurons removed, ``uniform=True``;
* the masked model after ``prunekit.to_sparse``.

Latencies are medians of interleaved rounds in one process (``prunekit.timing.interleaved_medians``).

    python docs/scripts/tutorial_bert.py [--threads 2] [--repeats 30]
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
import transformers  # noqa: E402

import prunekit  # noqa: E402
from prunekit.timing import interleaved_medians  # noqa: E402

from _tutorial_figures import provenance, publish, table  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--sparsity", type=float, default=0.9)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = transformers.BertConfig(hidden_size=512, num_hidden_layers=4, num_attention_heads=8,
                                     intermediate_size=2048)
    dense = transformers.BertModel(config).eval()
    inputs = {"input_ids": torch.randint(0, config.vocab_size, (1, 128))}

    masked = copy.deepcopy(dense)
    prunekit.prune(masked, args.sparsity, scope="global", include="encoder.*")
    permanent = copy.deepcopy(dense)  # a reparametrised model cannot be deep-copied: the same call again
    prunekit.prune(permanent, args.sparsity, scope="global", include="encoder.*", mode="permanent")
    shrunk = copy.deepcopy(dense)
    prunekit.prune_heads(shrunk, sparsity=0.5, uniform=True)
    prunekit.prune_mlp_neurons(shrunk, sparsity=0.5, uniform=True)
    sparse = copy.deepcopy(permanent)
    conversion = prunekit.to_sparse(sparse, inputs, threads=args.threads)
    print(conversion.table())

    with tempfile.TemporaryDirectory() as folder:
        def size(name: str, save) -> float:
            path = os.path.join(folder, name)
            save(path)
            return os.path.getsize(path) / 1e6

        sizes = {
            "dense": size("dense.pt", lambda p: torch.save(dense.state_dict(), p)),
            "masks": size("masked.pt", lambda p: torch.save(masked.state_dict(), p)),
            "permanent": size("permanent.pt", lambda p: torch.save(permanent.state_dict(), p)),
            "save_sparse": size("sparse.safetensors", lambda p: prunekit.save_sparse(masked, p)),
            "shrunk": size("shrunk.pt", lambda p: torch.save(shrunk.state_dict(), p)),
        }
        # the converted model's weights are the compressed ones: its file is save_sparse's size
        sizes["to_sparse"] = sizes["save_sparse"]

    def forward(model):
        def run() -> None:
            with torch.no_grad():
                model(**inputs)
        return run

    medians = interleaved_medians({"dense": forward(dense), "masks": forward(masked),
                                   "permanent": forward(permanent), "shrunk": forward(shrunk),
                                   "to_sparse": forward(sparse)}, repeats=args.repeats, warmup=3)
    medians["save_sparse"] = medians["permanent"]  # loads back to dense tensors

    def params(model) -> str:
        count = prunekit.measure.count_parameters(model)
        return f"{count.params / 1e6:.1f}M ({count.nonzero / 1e6:.1f}M non-zero)"

    labels = {
        "dense": ("dense", params(dense), "`torch.save`"),
        "masks": (f"{args.sparsity:.0%} masks (torch's layout)", params(masked), "`torch.save`"),
        "permanent": ("masks made permanent (zeros written)", params(permanent), "`torch.save`"),
        "save_sparse": ("compressed checkpoint, loaded back", params(permanent), "`prunekit.save_sparse`"),
        "shrunk": ("half the heads and MLP neurons removed", params(shrunk), "`torch.save`"),
        "to_sparse": (f"masks + `to_sparse` ({len(conversion.converted)} Linears converted)", params(permanent),
                      "`save_sparse_model`"),
    }
    rows = []
    for key, (label, count, how) in labels.items():
        rows.append([label, count, how, f"{sizes[key]:.1f} MB ({sizes[key] / sizes['dense']:.2f}×)",
                     f"{medians[key] * 1e3:.1f} ms", f"{medians['dense'] / medians[key]:.2f}×"])
    text = table(["model", "parameters", "saved with", "file", "latency, 1 × 128 tokens", "speedup"], rows)
    text += ("\n\nThe word embeddings (15.6M parameters) are not pruned in the masked forms; the shrunk "
             "model's outputs differ from the dense model's (fine-tune after shrinking).\n\n"
             + provenance(args.threads))
    print(text)
    publish("bert", text, page="bert-speed-size.md")


if __name__ == "__main__":
    main()
