"""Shrunk Hugging Face models saved as folders that stock transformers loads.

Every case is pruned with ``uniform=True`` (the same count in every layer),
saved with ``prunekit.surgery.save_pretrained``, then loaded by stock
``AutoModel*.from_pretrained`` in one child process that never imports
prunekit; its outputs must equal the shrunk model's. BERT and GPT-2 heads
cannot be written to their configs: the save must say so.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest
import torch

import prunekit
from prunekit.errors import InvalidParameterError
from prunekit.surgery import load_pretrained, save_pretrained
from prunekit.surgery.head_selection import select_uniform
from prunekit.surgery.hf_save import NOTE

tf = pytest.importorskip("transformers")
tf.logging.set_verbosity_error()

IDS = torch.randint(0, 50, (2, 7), generator=torch.Generator().manual_seed(1))
PIXELS = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def make(family: str):
    torch.manual_seed(0)
    if family == "bert":
        return tf.BertModel(tf.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                          intermediate_size=24, max_position_embeddings=16)).eval()
    if family == "distilbert":
        return tf.DistilBertModel(tf.DistilBertConfig(vocab_size=50, dim=32, n_layers=2, n_heads=4, hidden_dim=24,
                                                      max_position_embeddings=16)).eval()
    if family == "gpt2":
        return tf.GPT2LMHeadModel(tf.GPT2Config(vocab_size=50, n_embd=32, n_layer=2, n_head=4, n_inner=24,
                                                n_positions=16)).eval()
    if family == "llama":  # grouped-query attention: 4 query heads on 2 key/value heads
        return tf.LlamaForCausalLM(tf.LlamaConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2,
                                                  num_attention_heads=4, num_key_value_heads=2, intermediate_size=24,
                                                  max_position_embeddings=16)).eval()
    if family == "deit":
        return tf.DeiTModel(tf.DeiTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                          intermediate_size=24, image_size=16, patch_size=8)).eval()
    return tf.ViTModel(tf.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=24,
                                    image_size=16, patch_size=8)).eval()


AUTO = {"bert": "AutoModel", "distilbert": "AutoModel", "gpt2": "AutoModelForCausalLM",
        "llama": "AutoModelForCausalLM", "vit": "AutoModel", "deit": "AutoModel"}


def inputs(family: str) -> dict[str, torch.Tensor]:
    return {"pixel_values": PIXELS} if family in ("vit", "deit") else {"input_ids": IDS}


def output(model, family: str) -> torch.Tensor:
    with torch.no_grad():
        out = model(**inputs(family))
    logits = getattr(out, "logits", None)
    return logits if logits is not None else out.last_hidden_state


# family, what is removed, options; the config fields the stock model must then show
STOCK = {
    "bert-neurons": ("bert", "neurons", {}, {"intermediate_size": 12}),
    "distilbert-neurons": ("distilbert", "neurons", {}, {"hidden_dim": 12}),
    "gpt2-neurons": ("gpt2", "neurons", {}, {"n_inner": 12}),
    "llama-neurons": ("llama", "neurons", {}, {"intermediate_size": 12}),
    "llama-heads-group": ("llama", "heads", {"gqa": "group"}, {"num_attention_heads": 2, "num_key_value_heads": 1}),
    "llama-heads-query": ("llama", "heads", {"gqa": "query"}, {"num_attention_heads": 2, "num_key_value_heads": 2}),
    "vit-heads": ("vit", "heads", {}, {"num_attention_heads": 2}),
    "vit-neurons": ("vit", "neurons", {}, {"intermediate_size": 12}),
    "deit-heads": ("deit", "heads", {}, {"num_attention_heads": 2}),
}

# runs in a fresh interpreter: stock transformers only
CHILD = r"""
import json, os, sys
import torch, transformers
root = sys.argv[1]
cases = json.load(open(os.path.join(root, "cases.json")))
info = {}
for name, (auto, family) in cases.items():
    folder = os.path.join(root, name)
    model, loading = getattr(transformers, auto).from_pretrained(folder, output_loading_info=True)
    model.eval()
    x = torch.load(os.path.join(root, "inputs.pt"))[family]
    with torch.no_grad():
        out = model(**x)
    out = out.logits if getattr(out, "logits", None) is not None else out.last_hidden_state
    torch.save(out, os.path.join(folder, "stock_output.pt"))
    info[name] = {"class": type(model).__name__, "config": model.config.to_dict(),
                  "loading": {k: sorted(map(str, v)) for k, v in loading.items()}}
info["prunekit imported"] = any(m == "prunekit" or m.startswith("prunekit.") for m in sys.modules)
json.dump(info, open(os.path.join(root, "info.json"), "w"))
"""


@pytest.fixture(scope="module")
def stock(tmp_path_factory):
    """Prune and save every case, load them all in one child process; (root, info, shrunk outputs)."""
    root = tmp_path_factory.mktemp("stock")
    expected, classes = {}, {}
    for name, (family, what, options, _) in STOCK.items():
        model = make(family)
        if what == "heads":
            prunekit.prune_heads(model, sparsity=0.5, uniform=True, **options)
        else:
            prunekit.prune_mlp_neurons(model, sparsity=0.5, uniform=True)
        saved = save_pretrained(model, root / name)
        assert saved.stock and saved.load_with == "transformers" and saved.reason is None, (name, saved)
        assert not (root / name / NOTE).exists()
        expected[name] = output(model, family)
        classes[name] = type(model).__name__
    torch.save({f: inputs(f) for f in AUTO}, root / "inputs.pt")
    (root / "cases.json").write_text(json.dumps({n: (AUTO[c[0]], c[0]) for n, c in STOCK.items()}))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the child cannot even find prunekit's tree
    done = subprocess.run([sys.executable, "-c", CHILD, str(root)], capture_output=True, text=True, env=env,
                          timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    info = json.loads((root / "info.json").read_text())
    return root, info, expected, classes


def test_the_stock_loader_never_imported_prunekit(stock):
    _, info, _, _ = stock
    assert info["prunekit imported"] is False


@pytest.mark.parametrize("name", sorted(STOCK))
def test_stock_from_pretrained_loads_the_shrunk_model(stock, name):
    root, info, expected, classes = stock
    case = info[name]
    assert case["class"] == classes[name]
    assert case["loading"] == {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": [], "error_msgs": []}
    for field, value in STOCK[name][3].items():
        assert case["config"][field] == value, field
    got = torch.load(root / name / "stock_output.pt")
    torch.testing.assert_close(got, expected[name], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("family", ["bert", "gpt2", "distilbert"])
def test_heads_of_families_without_head_dim_say_prunekit_is_needed(family, tmp_path, caplog):
    model = make(family)
    prunekit.prune_heads(model, sparsity=0.5, uniform=True)
    expected = output(model, family)
    with caplog.at_level(logging.WARNING, logger="prunekit.surgery.hf_save"):
        saved = save_pretrained(model, tmp_path)
    assert not saved.stock and saved.load_with == "prunekit.surgery.load_pretrained"
    assert "head_dim" in saved.reason and "prunekit_num_heads" in saved.reason
    assert any("cannot load" in r.getMessage() and "load_pretrained" in r.getMessage() for r in caplog.records)
    note = (tmp_path / NOTE).read_text()
    assert "prunekit.surgery.load_pretrained" in note and type(model).__name__ in note
    with pytest.raises(RuntimeError):  # the message is true: stock loading refuses the folder
        type(model).from_pretrained(tmp_path)
    torch.testing.assert_close(output(load_pretrained(type(model), str(tmp_path)), family), expected)


def test_per_layer_head_counts_save_says_prunekit_is_needed(tmp_path, caplog):
    model = make("bert")
    prunekit.prune_heads(model, {0: [0], 1: [0, 1, 3]})
    with caplog.at_level(logging.WARNING, logger="prunekit.surgery.hf_save"):
        saved = save_pretrained(model, tmp_path)
    assert not saved.stock and "[3, 1]" in saved.reason
    assert (tmp_path / NOTE).exists() and caplog.records
    # pruned again to a stock-loadable model and saved in the same folder: the stale note goes
    model = make("bert")
    prunekit.prune_mlp_neurons(model, sparsity=0.25, uniform=True)
    assert save_pretrained(model, tmp_path).stock and not (tmp_path / NOTE).exists()


def test_shapes_the_config_does_not_describe_are_refused_before_writing(tmp_path):
    model = make("vit")
    prunekit.prune_mlp_neurons(model, sparsity=0.5, uniform=True)
    model.config.intermediate_size = 24  # as if the config had not been updated (channel surgery does not)
    with pytest.raises(InvalidParameterError, match=r"mlp\.fc1\.weight: \(12, 32\) here, \(24, 32\) in stock"):
        save_pretrained(model, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_uniform_keeps_each_layers_best_units_and_the_same_count():
    model = make("bert")
    scores = {0: torch.tensor([4.0, 1.0, 3.0, 2.0]), 1: torch.tensor([1.0, 2.0, 3.0, 4.0])}
    record = prunekit.prune_heads(model, sparsity=0.5, uniform=True, importance=scores)
    assert record.kept == {"encoder.layer.0.attention.self": [0, 2], "encoder.layer.1.attention.self": [2, 3]}
    assert model.config.prunekit_num_heads == [2, 2]


def test_uniform_selection_equalises_layers_of_different_widths():
    scores = {"a": torch.arange(8.0), "b": torch.tensor([5.0, 0.0, 4.0, 1.0, 3.0, 2.0])}
    plan = select_uniform({"a": 8, "b": 6}, scores, 0.5)
    assert plan == {"a": [0, 1, 2, 3], "b": [1, 3]}  # 4 kept in each: round(0.5 * mean 7), at most 6


def test_uniform_refuses_other_counts_and_global_scope():
    model = make("bert")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(InvalidParameterError, match="uniform=True"):
        prunekit.prune_heads(model, {0: [0], 1: [0, 1]}, uniform=True)
    with pytest.raises(InvalidParameterError, match="scope"):
        prunekit.prune_heads(model, sparsity=0.5, uniform=True, scope="global")
    with pytest.raises(InvalidParameterError, match="uniform"):
        prunekit.prune_mlp_neurons(model, sparsity=0.5, uniform="yes")
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("family", ["llama", "vit"])
def test_per_layer_counts_where_the_config_holds_one_value_need_prunekit(family, tmp_path, caplog):
    model = make(family)
    if family == "llama":  # layer 0: one query head from each group; layer 1: a whole group (2 on 1)
        prunekit.prune_heads(model, {0: [1, 3], 1: [2, 3]})
        assert model.config.prunekit_num_key_value_heads == [2, 1]
    else:
        prunekit.prune_heads(model, sparsity=0.5, scope="global",
                             importance={0: torch.arange(4.0), 1: torch.arange(4.0) + 10})
    prunekit.prune_mlp_neurons(model, {0: [1, 5, 7], 1: [0]})
    assert model.config.num_attention_heads == 4 and model.config.intermediate_size == 24  # the built size
    assert model.config.prunekit_mlp_sizes == [21, 23]
    expected = output(model, family)
    with caplog.at_level(logging.WARNING, logger="prunekit.surgery.hf_save"):
        saved = save_pretrained(model, tmp_path)
    assert not saved.stock and saved.load_with == "prunekit.surgery.load_pretrained"
    assert "differ between layers" in saved.reason and "prunekit_mlp_sizes" in saved.reason
    assert caplog.records and (tmp_path / NOTE).exists()
    with pytest.raises(RuntimeError):
        type(model).from_pretrained(tmp_path)
    loaded = load_pretrained(type(model), str(tmp_path))
    torch.testing.assert_close(output(loaded, family), expected)
    # made uniform again by pruning further: the config's own fields, the per-layer fields gone
    prunekit.prune_mlp_neurons(model, {0: [0, 1], 1: [2, 3, 4, 5]})
    assert model.config.intermediate_size == 19 and not hasattr(model.config, "prunekit_mlp_sizes")


def test_save_shrunk_replay_leaves_no_stale_per_layer_fields(tmp_path):
    from prunekit.surgery import load_shrunk, save_shrunk

    model = make("llama")
    prunekit.prune_mlp_neurons(model, {0: [1, 5, 7], 1: [0]})  # per layer: [21, 23]
    prunekit.prune_mlp_neurons(model, {0: [0, 1], 1: [2, 3, 4, 5]})  # uniform again: 19
    save_shrunk(model, tmp_path / "m.safetensors")
    fresh = load_shrunk(make("llama"), tmp_path / "m.safetensors")
    assert fresh.config.intermediate_size == 19 and not hasattr(fresh.config, "prunekit_mlp_sizes")
    torch.testing.assert_close(output(fresh, "llama"), output(model, "llama"))
    assert save_pretrained(fresh, tmp_path / "folder").stock


def test_save_pretrained_refuses_a_model_without_a_config(tmp_path):
    with pytest.raises(InvalidParameterError, match="save_shrunk"):
        save_pretrained(torch.nn.Linear(2, 2), tmp_path)


# -- the command line and recipes reach uniform= ------------------------------------------


def test_cli_uniform_reaches_prune_mlp_neurons(tmp_path, capsys):
    from prunekit.cli import main

    out = tmp_path / "shrunk"
    code = main(["prune", "gpt_tiny", "--structure", "neuron", "--sparsity", "0.5", "--uniform", "--shrink",
                 "--out", str(out), "--latency-repeats", "2", "--latency-warmup", "0"])
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["prune_mlp_neurons"]["uniform"] is True
    assert len(set(report["prune_mlp_neurons"]["after"].values())) == 1


@pytest.mark.parametrize("argv, message", [
    (["--structure", "head", "--sparsity", "0.5", "--scope", "global", "--uniform", "--shrink"],
     "--scope: expected 'local' with --uniform"),
    (["--structure", "head", "--sparsity", "0.5", "--uniform"], "--uniform"),
    (["--structure", "channel", "--sparsity", "0.5", "--uniform", "--shrink"], "--uniform"),
])
def test_cli_uniform_errors(tmp_path, capsys, argv, message):
    from prunekit.cli import main

    assert main(["prune", "gpt_tiny", *argv, "--out", str(tmp_path / "o")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "prunekit prune: error: " in err and message in err
    assert not (tmp_path / "o" / "model.safetensors").exists()


RECIPE = """\
title: t
model: {name: gpt_tiny}
data: {name: mnist_embedded}
train: {epochs: 1}
runs:
  - name: h
    heads: {sparsity: 0.5, uniform: true}
    neurons: {sparsity: 0.5, uniform: UNIFORM}
"""


def test_recipe_heads_and_neurons_take_uniform():
    from prunekit.recipes import parse_recipe

    run = parse_recipe(RECIPE.replace("UNIFORM", "true"), source="r.yaml").runs()[0]
    assert run.heads.uniform is True and run.neurons.uniform is True
    with pytest.raises(InvalidParameterError, match=r"r\.yaml line 8, runs\[0\]\.neurons\.uniform: expected True or False"):
        parse_recipe(RECIPE.replace("UNIFORM", "3"), source="r.yaml")
