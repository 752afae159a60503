"""Recipes reach every realisation: shrink (+ fine-tune), heads and neurons, one-shot, export, resume."""

from __future__ import annotations

import inspect
import textwrap
from dataclasses import fields

import pytest
import torch
import yaml
from torch import nn

import prunekit
from prunekit import InvalidParameterError
from prunekit.params import PRUNE_PARAMS, SPARSITY, STRUCTURAL_PARAMS
from prunekit.recipes import parse_recipe
from prunekit.recipes.declared import (
    DECLARED,
    RECIPE_ONLY,
    RENAMED,
    STAGE_PARAMS,
    stage_schema,
)
from prunekit.recipes.specs import (
    HeadsSpec,
    NeuronsSpec,
    OneShotSpec,
    PrunerSpec,
    ShrinkSpec,
)
from prunekit.runner import Runner, run_recipe
from prunekit.runner.measures import load_datasets, measure
from prunekit.validation import validate

SHRINK = """\
title: shrink
model: {name: lenet5}
data: {name: mnist_embedded, limit_train: 128, limit_test: 64, batch_size: 32, kwargs: {normalize: mnist}}
train: {epochs: 1, lr: 0.02}
runs:
  - name: masked
    prune: {criterion: l2, structure: channel, sparsity: 0.5, exclude: fc2}
  - name: shrunk
    shrink: {macs_target: 0.5, criterion: l1, round_to: 2}
  - name: both
    shrink: {sparsity: 0.25}
    prune: {sparsity: 0.5}
finetune: {epochs: 1, lr: 0.01}
evaluate: {latency: {batch_size: 32, repeats: 3, warmup: 1, threads: 1}}
"""


def parse(text: str):
    return parse_recipe(textwrap.dedent(text), source="r.yaml")


def error(text: str) -> str:
    with pytest.raises(InvalidParameterError) as info:
        parse(text)
    return str(info.value)


def test_stage_errors_name_the_key_and_line():
    message = error(SHRINK.replace("macs_target: 0.5", "macs_target: 1.5"))
    assert message.startswith("r.yaml line 9, runs[1].shrink.macs_target: expected a float in (0, 1] or None, got 1.5.")
    assert "Fix:" in message
    message = error(SHRINK.replace("macs_target: 0.5", "macs_target: 0.5, sparsity: 0.3"))
    assert "runs[1].shrink.macs_target: expected exactly one of sparsity, macs_target and latency_target" in message
    assert "runs[1].shrink: expected exactly one of" in error(SHRINK.replace("macs_target: 0.5, ", ""))
    message = error(SHRINK.replace("shrink: {sparsity: 0.25}", "shrnk: {sparsity: 0.25}"))
    assert "line 11, runs[2].shrnk" in message and "Did you mean 'shrink'?" in message
    message = error(SHRINK.replace("shrink: {sparsity: 0.25}", "shrink: {sparsity: [0.25, 0.5]}").replace(
        "prune: {sparsity: 0.5}", "prune: {sparsity: [0.5, 0.7]}"))
    assert "runs[2].prune: expected a list in one stage of a run at most" in message
    assert "name other than 'dense'" in error(SHRINK.replace("name: masked", "name: dense"))
    message = error(SHRINK.replace("prune: {sparsity: 0.5}", "oneshot: {sparsity: 0.5, mode: permanent}"))
    assert "runs[2].oneshot.mode: expected 'inplace' or 'reparam' when the recipe fine-tunes" in message
    assert "runs[0]: expected at least one stage" in error(SHRINK.replace(
        "    prune: {criterion: l2, structure: channel, sparsity: 0.5, exclude: fc2}\n", ""))


def test_sweep_expands_and_method_describes_the_stages():
    recipe = parse(SHRINK.replace("macs_target: 0.5", "macs_target: [0.5, 0.7]"))
    names = [r.name for r in recipe.runs()]
    assert names == ["masked", "shrunk-0.5", "shrunk-0.7", "both"]
    run = recipe.runs()[2]
    assert run.shrink.macs_target == 0.7 and run.shrinks and not run.masks
    method = run.method()
    assert method["mode"] == "shrunk" and method["realisation"] == "shrunk" and method["structure"] == "channel"
    assert recipe.runs()[3].realisation() == "shrunk+masks"
    again = parse_recipe(recipe.to_yaml(), source="again.yaml")
    assert again.fingerprint() == recipe.fingerprint()


def test_shrink_approximate_reaches_the_stage():
    assert parse(SHRINK).runs()[1].shrink.approximate is False
    assert parse(SHRINK.replace("round_to: 2}", "round_to: 2, approximate: true}")).runs()[1].shrink.approximate is True


def test_runtime_check_errors_before_anything_is_written(tmp_path):
    text = SHRINK.replace("round_to: 2}", "round_to: 2, exclude: conv9}")
    with pytest.raises(InvalidParameterError) as info:
        run_recipe(parse(text), tmp_path / "out")
    assert str(info.value).startswith("r.yaml line 9, runs[1].shrink.exclude: expected names or patterns")
    assert not (tmp_path / "out").exists()
    text = SHRINK.replace("criterion: l1,", "criterion: l7,")
    with pytest.raises(InvalidParameterError, match=r"runs\[1\]\.shrink\.criterion"):
        run_recipe(parse(text), tmp_path / "out2")
    assert not (tmp_path / "out2").exists()


@pytest.fixture(scope="module")
def shrunk(tmp_path_factory):
    out = tmp_path_factory.mktemp("shrink") / "out"
    recipe = parse(SHRINK)
    return out, recipe, run_recipe(recipe, out)


def test_shrink_with_finetune_writes_a_smaller_model_that_loads_back(shrunk):
    out, recipe, report = shrunk
    runs = {r["name"]: r for r in report["runs"]}
    dense = report["dense"]
    small = runs["shrunk"]
    assert small["method"]["realisation"] == "shrunk" and small["checkpoint"]["format"] == "shrunk"
    assert small["measures"]["params"] < 0.6 * dense["params"]
    assert small["measures"]["macs"] <= 0.5 * dense["macs"]
    assert small["budget"] == runs["masked"]["budget"] == report["dense_budget"]
    assert len(small["history"]["epoch_losses"]) == 1  # fine-tuned after shrinking
    model = prunekit.load_shrunk(prunekit.create_model("lenet5"), out / small["checkpoint"]["path"])
    assert sum(p.numel() for p in model.parameters()) == small["measures"]["params"]
    test = load_datasets(recipe)[1]
    again = measure(recipe, model, test)
    assert again["metric"] == small["measures"]["metric"] and again["loss"] == pytest.approx(small["measures"]["loss"])
    # masked channels keep the dense shapes; the shrunk model does not
    masked = runs["masked"]
    assert masked["measures"]["params"] == dense["params"] and masked["method"]["realisation"] == "masks"
    both = runs["both"]
    assert both["method"]["realisation"] == "shrunk+masks"
    assert both["measures"]["params"] < dense["params"] and both["measures"]["nonzero"] < 0.6 * both["measures"]["params"]


def test_resume_recomputes_only_the_lost_shrink_run(shrunk):
    out, recipe, report = shrunk
    (out / "state" / "run-shrunk.json").unlink()
    runner = Runner(recipe, out)
    again = runner.run()
    assert runner.computed == ["shrunk"] and runner.skipped == ["dense", "masked", "both"]
    old = next(r for r in report["runs"] if r["name"] == "shrunk")["measures"]
    new = next(r for r in again["runs"] if r["name"] == "shrunk")["measures"]
    assert {k: v for k, v in old.items() if k != "latency_ms"} == {k: v for k, v in new.items() if k != "latency_ms"}


TEXT = "the quick brown fox jumps over the lazy dog. " * 60

GPT = """\
model: {name: gpt_tiny, kwargs: {vocab_size: 30, n_layer: 2, n_head: 4, n_embd: 32, block_size: 16}}
data: {name: text_char, path: corpus.txt, batch_size: 16, eval_batch_size: 32, eval_split: val,
       kwargs: {block_size: 16}}
train: {epochs: 1, lr: 0.003, optimizer: adam}
runs:
%s
finetune: {epochs: 1, lr: 0.001, optimizer: adam}
evaluate: {metric: perplexity, latency: null}
"""


def gpt_recipe(tmp_path, runs: str):
    (tmp_path / "corpus.txt").write_text(TEXT)
    return parse_recipe(GPT % textwrap.indent(textwrap.dedent(runs), "  "), source="gpt.yaml", base_dir=tmp_path)


def _hf_gpt2(vocab_size: int = 30, block_size: int = 16) -> torch.nn.Module:
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(vocab_size=vocab_size, n_positions=block_size, n_embd=32, n_layer=2, n_head=4)
    return transformers.GPT2LMHeadModel(config)


def test_heads_and_neurons_recipe_on_a_tiny_transformer(tmp_path):
    # prune_heads / prune_mlp_neurons know Hugging Face families and nn.MultiheadAttention; a model
    # registered in the zoo by the user is built by name like any other
    pytest.importorskip("transformers")
    prunekit.zoo.MODELS.register("test_hf_gpt2", _hf_gpt2)
    try:
        _heads_and_neurons(tmp_path)
    finally:
        prunekit.zoo.MODELS.unregister("test_hf_gpt2")


def _heads_and_neurons(tmp_path):
    (tmp_path / "corpus.txt").write_text(TEXT)
    text = (GPT % "  - name: heads\n    heads: {sparsity: 0.5, criterion: magnitude}\n    neurons: {sparsity: 0.25}")
    text = text.replace("{name: gpt_tiny, kwargs: {vocab_size: 30, n_layer: 2, n_head: 4, n_embd: 32, block_size: 16}}",
                        "{name: test_hf_gpt2}")
    recipe = parse_recipe(text, source="gpt.yaml", base_dir=tmp_path)
    report = run_recipe(recipe, tmp_path / "out")
    run = report["runs"][0]
    assert run["method"]["structure"] == "head" and run["method"]["realisation"] == "shrunk"
    assert run["measures"]["params"] < report["dense"]["params"]
    assert run["measures"]["metric"] > 1.0  # a perplexity
    model = prunekit.load_shrunk(_hf_gpt2(), tmp_path / "out" / run["checkpoint"]["path"])
    assert sum(p.numel() for p in model.parameters()) == run["measures"]["params"]
    assert model.transformer.h[0].mlp.c_fc.weight.shape[1] == 96  # 128 hidden neurons, a quarter removed
    x = torch.randint(0, 30, (2, 16))
    assert model(x).logits.shape == (2, 16, 30)


def test_oneshot_recipe_on_the_tiny_gpt_with_a_calibration_set(tmp_path):
    recipe = gpt_recipe(tmp_path, """\
        - name: wanda
          oneshot: {method: wanda, sparsity: 0.5, owl: true, owl_lambda: 0.05, data: {split: train, samples: 8}}
        - name: sgpt24
          oneshot: {method: sparsegpt, structure: "2:4", data: {samples: 4, batch_size: 2}}
        """)
    report = run_recipe(recipe, tmp_path / "out")
    runs = {r["name"]: r for r in report["runs"]}
    wanda = runs["wanda"]
    assert wanda["method"]["criterion"] == "wanda+owl" and wanda["sparsity"] == 0.5
    assert wanda["stages"]["oneshot"]["calibration_tokens"] == 8 * 16
    blocks = [l for l in wanda["layers"] if l["name"].startswith("blocks.")]
    pruned = sum(l["params"] - l["nonzero"] for l in blocks) / sum(l["params"] for l in blocks)
    assert pruned == pytest.approx(0.5, abs=0.02)  # kept through fine-tuning by the masks
    assert runs["sgpt24"]["method"]["structure"] == "2:4" and runs["sgpt24"]["checkpoint"]["format"] == "sparse"
    assert wanda["budget"] == runs["sgpt24"]["budget"] == report["dense_budget"]


def test_latency_target_shrink(tmp_path):
    text = SHRINK.split("runs:")[0] + "runs:\n  - name: fast\n    shrink: {latency_target: 0.6, criterion: l2}\n" \
        "finetune: {epochs: 0}\nevaluate: {latency: {batch_size: 8, repeats: 3, warmup: 1, threads: 1}}\n"
    report = run_recipe(parse(text), tmp_path / "out")
    run = report["runs"][0]
    assert run["method"]["stages"]["shrink"]["allocation"] == "latency"
    assert run["measures"]["params"] < report["dense"]["params"]
    assert "r.yaml line 7, runs[0].shrink.allocation: expected 'latency' with latency_target" in error(
        text.replace("criterion: l2}", "criterion: l2, allocation: ranking}"))


# -- the recipe schema is the declarations: it cannot drift from the Python checks ----------

SPECS = {"prune": PrunerSpec, "shrink": ShrinkSpec, "heads": HeadsSpec, "neurons": NeuronsSpec, "oneshot": OneShotSpec}
FUNCTIONS = {"prune": (prunekit.prune, prunekit.Pruner.__init__), "shrink": (prunekit.structural_prune,),
             "heads": (prunekit.prune_heads,), "neurons": (prunekit.prune_mlp_neurons,),
             "oneshot": (prunekit.oneshot_prune,)}
BASES = {"prune": {"sparsity": 0.5}, "shrink": {"macs_target": 0.5}, "heads": {"sparsity": 0.25},
         "neurons": {"sparsity": 0.25}, "oneshot": {"sparsity": 0.5}}


def stage_recipe(kind: str, stage: dict) -> str:
    head = SHRINK.split("runs:")[0]
    return head + yaml.safe_dump({"runs": [{"name": "r", kind: stage}], "finetune": {"epochs": 0}})


def accepted_keys(kind: str) -> set[str]:
    """The keys the reader itself accepts, read off its refusal of an unknown key."""
    message = error(stage_recipe(kind, {**BASES[kind], "no_such_key": 1}))
    listed = message.split("expected one of the keys ", 1)[1].split(", got", 1)[0]
    return set(listed.split(", "))


@pytest.mark.parametrize("kind", list(SPECS))
def test_stage_keys_are_the_declared_parameters(kind):
    to_recipe = {python: key for key, python in RENAMED.get(kind, {}).items()}
    declared = {to_recipe.get(name, name) for name in DECLARED[kind]}
    # the reader accepts exactly the declared parameters and the recipe's own keys
    assert accepted_keys(kind) == declared | set(RECIPE_ONLY[kind])
    # every accepted key reaches the stage's spec (a declared parameter is never read and dropped)
    assert {f.name for f in fields(SPECS[kind])} - {"name", "line"} == declared | set(RECIPE_ONLY[kind])
    # and every declaration names a real keyword of the function the stage calls
    keywords = set().union(*(inspect.signature(f).parameters for f in FUNCTIONS[kind]))
    assert set(DECLARED[kind]) <= keywords


CASES = [
    ("prune", "criterion", "nope"), ("prune", "scope", "globl"), ("prune", "min_keep", -1),
    ("prune", "mode", "inplac"),
    ("shrink", "sparsity", 1.5), ("shrink", "criterion", "nope"), ("shrink", "max_layer_ratio", 1.5),
    ("shrink", "round_to", 0), ("shrink", "allocation", "fast"), ("shrink", "normalize", "meen"),
    ("shrink", "approximate", "yes"),
    ("heads", "sparsity", 1.5), ("heads", "criterion", "nope"), ("heads", "gqa", "both"),
    ("neurons", "sparsity", 1.0), ("neurons", "criterion", "l7"),
    ("oneshot", "method", "snip"), ("oneshot", "structure", "block:4x4"), ("oneshot", "percdamp", 0),
    ("oneshot", "blocksize", 0), ("oneshot", "owl_m", 0), ("oneshot", "sparsity", 1.0),
]


@pytest.mark.parametrize("kind, key, value", CASES)
def test_the_recipe_refuses_what_the_declaration_refuses_in_the_same_words(kind, key, value):
    python = RENAMED.get(kind, {}).get(key, key)
    with pytest.raises(InvalidParameterError) as declared:
        validate(DECLARED[kind], {python: value})
    stage = {k: v for k, v in BASES[kind].items() if k != key or kind != "shrink"} | {key: value}
    if kind == "shrink" and key == "sparsity":
        stage.pop("macs_target")
    message = " ".join(error(stage_recipe(kind, stage)).split())
    assert f"runs[0].{kind}.{key}: expected {declared.value.expected}, got {value!r}" in message


def test_the_functions_refuse_in_the_declared_words():
    with pytest.raises(InvalidParameterError) as recipe:
        parse(stage_recipe("heads", {"sparsity": 1.5}))
    with pytest.raises(InvalidParameterError) as python:
        prunekit.prune_heads(nn.Linear(2, 2), sparsity=1.5)
    assert recipe.value.expected == python.value.expected
    with pytest.raises(InvalidParameterError) as recipe:
        parse(stage_recipe("oneshot", {"sparsity": 0.5, "method": "snip"}))
    with pytest.raises(InvalidParameterError) as python:
        prunekit.oneshot_prune(nn.Linear(2, 2), None, method="snip")
    assert recipe.value.expected == python.value.expected
    with pytest.raises(InvalidParameterError) as recipe:
        parse(stage_recipe("shrink", {"macs_target": 0.5, "criterion": "nope"}))
    with pytest.raises(InvalidParameterError) as python:
        prunekit.structural_prune(nn.Linear(2, 2), torch.zeros(1, 2), sparsity=0.5, criterion="nope")
    assert recipe.value.expected == python.value.expected


def test_a_prune_level_is_the_declared_fraction():
    """The stated narrowings: a recipe's prune levels are fractions (counts are for the Python call)."""
    assert SPARSITY in PRUNE_PARAMS["sparsity"].constraint.constraints
    message = error(stage_recipe("prune", {"sparsity": 1.5}))
    assert f"runs[0].prune.sparsity: expected {SPARSITY.describe()} or None, got 1.5" in message
    assert "runs[0].prune.sparsity: expected" in error(stage_recipe("prune", {"sparsity": 3}))
    # and a heads criterion is a score's name: {layer: scores} tensors are for the Python call
    assert "runs[0].heads.criterion: expected a registered head score" in error(
        stage_recipe("heads", {"sparsity": 0.25, "criterion": {"a": 1}}))


def test_stage_schema_comes_from_the_declarations():
    shrink = stage_schema("shrink")
    assert shrink["macs_target"]["expected"] == STRUCTURAL_PARAMS["macs_target"].constraint.describe()
    assert shrink["criterion"]["default"] == "l1" and "data" in shrink
    assert stage_schema("heads")["gqa"]["choices"] == ["query", "group"]
    assert STAGE_PARAMS["heads"]["criterion"].name == "importance"
    assert "wanda" in stage_schema("oneshot")["method"]["expected"]
