"""Recipes: parsing, defaults, and errors that point at the file, line and key."""

from __future__ import annotations

import textwrap

import pytest

from prunekit import InvalidParameterError
from prunekit.recipes import example_recipe_path, list_example_recipes, load_recipe, parse_recipe

BASE = """\
model: {name: lenet_300_100}
data: {name: mnist_embedded, limit_train: 128}
train: {epochs: 1}
pruners:
  - name: mag
    criterion: magnitude
    sparsity: 0.5
finetune: {epochs: 1}
"""


def parse(text: str):
    return parse_recipe(textwrap.dedent(text), source="recipe.yaml")


def error(text: str) -> str:
    with pytest.raises(InvalidParameterError) as info:
        parse(text)
    return str(info.value)


def test_base_parses_with_defaults():
    recipe = parse(BASE)
    assert recipe.model.name == "lenet_300_100"
    assert recipe.data.batch_size == 64 and recipe.data.limit_train == 128
    assert recipe.pruners[0].mode == "inplace" and recipe.pruners[0].schedule is None
    assert [r.name for r in recipe.runs()] == ["mag"]
    assert recipe.export.permanent and recipe.evaluate.metric == "accuracy"


def test_packaged_demo_recipe():
    assert "demo" in list_example_recipes()
    recipe = load_recipe(example_recipe_path("demo"))
    names = [r.name for r in recipe.runs()]
    assert len(names) == len(set(names)) >= 8
    assert "magnitude-global-0.9" in names and "magnitude-2of4" in names
    assert recipe.model.name == "lenet5"
    realisations = {r.realisation() for r in recipe.runs()}
    assert realisations == {"masks", "shrunk"}  # masked runs next to a physically shrunk one
    assert recipe.finetune.epochs >= 1 and recipe.train is not None


def test_sparsity_out_of_range_points_at_line_and_key():
    text = BASE.replace("sparsity: 0.5", "sparsity: 1.5")
    message = error(text)
    assert message.startswith("recipe.yaml line 7, pruners[0].sparsity: expected a fraction in [0, 1] or None, got 1.5.")
    assert "Fix:" in message


def test_sparsity_list_item_error_names_the_item():
    message = error(BASE.replace("sparsity: 0.5", "sparsity: [0.5,\n      -0.2]"))
    assert "line 8, pruners[0].sparsity[1]" in message and "-0.2" in message


def test_sparsity_list_expands_into_runs():
    recipe = parse(BASE.replace("sparsity: 0.5", "sparsity: [0.5, 0.9]"))
    assert [(r.name, r.sparsity) for r in recipe.runs()] == [("mag-0.5", 0.5), ("mag-0.9", 0.9)]


def test_unknown_key_did_you_mean():
    message = error(BASE.replace("sparsity: 0.5", "sparsty: 0.5"))
    assert "recipe.yaml line 7, pruners[0].sparsty" in message
    assert "Did you mean 'sparsity'?" in message


def test_unknown_top_level_key_did_you_mean():
    message = error(BASE + "evalute: {metric: accuracy}\n")
    assert "line 9, evalute" in message and "Did you mean 'evaluate'?" in message


def test_unknown_criterion_names_registered_ones():
    message = error(BASE.replace("criterion: magnitude", "criterion: magnitud"))
    assert "recipe.yaml line 6, pruners[0].criterion" in message
    assert "Did you mean 'magnitude'?" in message


def test_unknown_structure():
    message = error(BASE.replace("criterion: magnitude", "criterion: magnitude\n    structure: chanel"))
    assert "line 7, pruners[0].structure" in message and "channel" in message


def test_unknown_model_and_dataset():
    message = error(BASE.replace("lenet_300_100", "lenet_300"))
    assert message.startswith("recipe.yaml line 1, model.name: expected a registered model name")
    assert "lenet_300_100" in message
    message = error(BASE.replace("mnist_embedded", "mnist_embeded"))
    assert "line 2, data.name" in message and "Did you mean 'mnist_embedded'?" in message


def test_wrong_types():
    assert "line 2, data.batch_size: expected an int >= 1, got '64'" in error(
        BASE.replace("limit_train: 128", "batch_size: '64'"))
    assert "line 3, train.epochs: expected an int >= 0, got -1" in error(BASE.replace("epochs: 1}\npruners", "epochs: -1}\npruners"))
    assert "line 3, train.lr: expected a float > 0" in error(BASE.replace("train: {epochs: 1}", "train: {lr: zero}"))
    assert "line 4, pruners: expected a non-empty list" in error(BASE.split("pruners:")[0] + "pruners: {}\n")
    assert "line 9, export.permanent: expected true or false" in error(
        BASE.replace("finetune: {epochs: 1}", "export:\n  permanent: 'yes'"))
    assert "pruners[0].scope: expected a scope among local, global, lamp, erk" in error(
        BASE.replace("sparsity: 0.5", "sparsity: 0.5\n    scope: globl"))


def test_schedule_errors():
    text = BASE.replace("sparsity: 0.5", "sparsity: 0.5\n    schedule: {name: agp, start: 0, end: 3}")
    message = error(text)
    assert "line 8, pruners[0].schedule.end" in message and "finetune.epochs" in message
    message = error(BASE.replace("sparsity: 0.5", "sparsity: 0.5\n    schedule: {name: cubc}"))
    assert "pruners[0].schedule.name" in message and "Did you mean" in message
    ok = parse(BASE.replace("sparsity: 0.5", "sparsity: 0.5\n    schedule: {name: agp, start: 0, end: 0}"))
    assert ok.runs()[0].method()["schedule"]["name"] == "agp"


def test_nm_structure_unquoted_and_fixed_sparsity():
    recipe = parse(BASE.replace("sparsity: 0.5", "structure: 2:4"))  # YAML 1.1 would read 124
    run = recipe.runs()[0]
    assert run.pruner.structure == "2:4" and run.sparsity is None
    message = error(BASE.replace("sparsity: 0.5", "structure: '2:4'\n    sparsity: 0.9"))
    assert "pruners[0].sparsity: expected null or 0.5" in message


def test_missing_sections_and_values():
    assert "expected a value for 'model'" in error(BASE.split("\n", 1)[1])
    assert "pruners[0]: expected a sparsity" in error(BASE.replace("    sparsity: 0.5\n", ""))
    assert "expected a 'train' section when model.weights is null" in error(BASE.replace("train: {epochs: 1}\n", ""))


def test_yaml_syntax_and_duplicates():
    message = error(BASE.replace("data: {name: mnist_embedded, limit_train: 128}", "data: {name: [oops"))
    assert message.startswith("recipe.yaml line ") and "valid YAML" in message
    message = error(BASE.replace("    sparsity: 0.5\n", "    sparsity: 0.5\n    sparsity: 0.6\n"))
    assert "line 8, pruners[0].sparsity: expected each key once (also on line 7)" in message


def test_duplicate_run_names():
    text = BASE.replace("finetune: {epochs: 1}\n", "  - name: mag\n    sparsity: 0.9\nfinetune: {epochs: 1}\n")
    assert "pruners[1].name: expected a run name used once" in error(text)


def test_load_recipe_file_errors(tmp_path):
    with pytest.raises(InvalidParameterError, match="an existing YAML file"):
        load_recipe(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text(BASE.replace("sparsity: 0.5", "sparsity: 2"))
    with pytest.raises(InvalidParameterError, match=r"^bad.yaml line 7, pruners\[0\].sparsity"):
        load_recipe(bad)


def test_normalised_yaml_round_trips():
    recipe = parse(BASE.replace("sparsity: 0.5", "sparsity: [0.5, 0.8]\n    schedule: {name: agp, end: 0}"))
    again = parse_recipe(recipe.to_yaml(), source="again.yaml")
    assert again.fingerprint() == recipe.fingerprint()
    changed = parse(BASE.replace("sparsity: 0.5", "sparsity: 0.6"))
    assert changed.fingerprint() != parse(BASE).fingerprint()


def test_older_keys_still_read_with_a_warning():
    from prunekit.deprecation import reset_warnings

    reset_warnings()
    with pytest.warns(FutureWarning, match="'pruners'"):
        recipe = parse(BASE)
    assert recipe.runs()[0].pruner.criterion == "magnitude"
    assert recipe.runs()[0].param("prune.sparsity") == "recipe.yaml line 7, pruners[0].sparsity"
    with pytest.warns(FutureWarning, match="sparse_checkpoint"):
        recipe = parse(BASE + "export: {sparse_checkpoint: false}\n")
    assert recipe.export.checkpoint is False
    assert "runs:" in recipe.to_yaml() and "pruners" not in recipe.to_yaml()
