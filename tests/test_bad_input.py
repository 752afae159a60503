"""Bad input to the Python API: each case raises InvalidParameterError naming the
parameter, with the expected form, what was given and a fix; nothing else escapes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import prunekit
from prunekit.coupling import find_groups
from prunekit.errors import InvalidParameterError
from prunekit.targets import check_pattern, pattern_matches, select_targets

pytestmark = pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))


def batch(rows: int = 4, features: int = 8, labels: list[int] | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    torch.manual_seed(1)
    y = torch.tensor(labels) if labels is not None else torch.randint(0, 4, (rows,))
    return [(torch.randn(rows, features), y)]


def empty_layers() -> nn.Module:
    return nn.Sequential(nn.Linear(8, 0), nn.Linear(0, 4))


# (id, call, the parameter the error names, a word its message must contain)
CASES = [
    ("include-invalid-regex", lambda: prunekit.prune(mlp(), 0.5, include="re:["), "include", "regular expression"),
    ("exclude-invalid-regex", lambda: prunekit.prune(mlp(), 0.5, exclude="re:(fc"), "exclude", "regular expression"),
    ("include-list-invalid-regex", lambda: select_targets(mlp(), include=["0.*", "re:*x"]), "include",
     "regular expression"),
    ("override-invalid-regex", lambda: prunekit.Pruner(mlp(), overrides={"re:[": 0.5}).step(0.5), "overrides",
     "regular expression"),
    ("include-not-iterable", lambda: select_targets(mlp(), include=5), "include", "string"),
    ("include-items-not-strings", lambda: select_targets(mlp(), include=[1, 2]), "include", "string"),
    ("types-not-iterable", lambda: prunekit.prune(mlp(), 0.5, types=5), "types", "module classes"),
    ("params-not-iterable", lambda: prunekit.prune(mlp(), 0.5, params=5), "params", "params=['weight', 'bias']"),
    ("pattern-not-a-string", lambda: check_pattern(3, "include"), "include", "string"),
    ("pattern-matches-invalid-regex", lambda: pattern_matches("re:(", "fc"), "pattern", "regular expression"),
    ("meta-device-model", lambda: prunekit.prune(mlp().to("meta"), 0.5), "model", "meta"),
    ("meta-device-model-snip", lambda: prunekit.prune(mlp().to("meta"), 0.5, criterion="snip",
                                                      context={"data": batch()}), "model", "meta"),
    ("meta-device-model-synflow", lambda: prunekit.prune(mlp().to("meta"), 0.5, criterion="synflow",
                                                         context={"input_shape": (8,)}), "model", "meta"),
    ("meta-device-model-obd", lambda: prunekit.prune(mlp().to("meta"), 0.5, criterion="obd",
                                                     context={"data": batch()}), "model", "meta"),
    ("meta-device-find-groups", lambda: find_groups(mlp().to("meta"), torch.randn(2, 8)), "model", "meta"),
    ("only-zero-sized-layers", lambda: prunekit.prune(empty_layers(), 0.5), "targets", "non-empty"),
    ("only-zero-sized-layers-global", lambda: prunekit.prune(empty_layers(), 0.5, scope="global"), "targets",
     "non-empty"),
    ("only-zero-sized-layers-lamp", lambda: prunekit.prune(empty_layers(), 0.5, scope="lamp"), "targets",
     "non-empty"),
    ("only-zero-sized-layers-erk", lambda: prunekit.prune(empty_layers(), 0.5, scope="erk"), "targets",
     "non-empty"),
    ("snip-wrong-input-shape", lambda: prunekit.prune(mlp(), 0.5, criterion="snip", context={"data": batch(features=7)}),
     "data", "(4, 7)"),
    ("grasp-wrong-input-shape",
     lambda: prunekit.prune(mlp(), 0.5, criterion="grasp", context={"data": batch(features=7)}), "data", "(4, 7)"),
    ("obd-wrong-input-shape", lambda: prunekit.prune(mlp(), 0.5, criterion="obd", context={"data": batch(features=7)}),
     "data", "(4, 7)"),
    ("snip-wrong-input-dtype",
     lambda: prunekit.prune(mlp(), 0.5, criterion="snip", context={"data": [(torch.ones(4, 8, dtype=torch.long),
                                                                              torch.zeros(4, dtype=torch.long))]}),
     "data", "int64"),
    ("synflow-wrong-input-shape",
     lambda: prunekit.prune(mlp(), 0.5, criterion="synflow", context={"input_shape": (7,)}), "input_shape", "(1, 7)"),
    ("synflow-wrong-data-shape",
     lambda: prunekit.prune(mlp(), 0.5, criterion="synflow", context={"data": batch(features=7)}), "input_shape",
     "(1, 7)"),
    ("find-groups-wrong-input-shape", lambda: find_groups(mlp(), torch.randn(2, 7)), "example_inputs", "(2, 7)"),
    ("find-groups-wrong-input-dtype", lambda: find_groups(mlp(), torch.ones(2, 8, dtype=torch.long)),
     "example_inputs", "int64"),
    ("snip-labels-out-of-range",
     lambda: prunekit.prune(mlp(), 0.5, criterion="snip", context={"data": batch(labels=[0, 1, 2, 9])}), "data",
     "[0, 4)"),
    ("grasp-labels-out-of-range",
     lambda: prunekit.prune(mlp(), 0.5, criterion="grasp", context={"data": batch(labels=[0, 1, 2, 4])}), "data",
     "[0, 4)"),
    ("obd-negative-labels",
     lambda: prunekit.prune(mlp(), 0.5, criterion="obd", context={"data": batch(labels=[0, 1, 2, -5])}), "data",
     "[0, 4)"),
    ("snip-labels-miscounted",
     lambda: prunekit.prune(mlp(), 0.5, criterion="snip", context={"data": batch(labels=[0, 1, 2])}), "data",
     "one target per prediction"),
]


@pytest.mark.parametrize("call, param, word", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_raises_the_error_form(call, param, word):
    with pytest.raises(InvalidParameterError) as info:
        call()
    error = info.value
    assert error.param == param
    assert word in str(error)
    assert error.expected and error.fix and "Fix:" in error.fix


def test_zero_sized_layers_are_skipped_and_the_rest_is_pruned():
    model = nn.ModuleList([nn.Linear(8, 0), nn.Linear(8, 8)])
    for scope in ("local", "global", "lamp", "erk"):
        prunekit.prune(model, 0.5, scope=scope, mode="permanent")
    assert [t.name for t in select_targets(model)] == ["1.weight"]
    assert (model[1].weight == 0).any()


def test_a_meta_model_can_still_be_selected():
    # one-shot pruning selects the targets of blocks still on meta; only scoring needs values
    assert [t.name for t in select_targets(mlp().to("meta"))] == ["0.weight", "2.weight"]


def test_ignored_labels_are_accepted():
    data = batch(labels=[0, 1, -100, 3])  # cross-entropy's ignore_index
    prunekit.prune(mlp(), 0.5, criterion="snip", context={"data": data})


def test_bad_input_leaves_the_model_as_it_was():
    model = mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(InvalidParameterError):
        prunekit.prune(model, 0.5, criterion="snip", context={"data": batch(labels=[0, 1, 2, 9])})
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("call, wrong, right", [
    (lambda m, kw: prunekit.prune(m, 0.5, **kw), "scop", "scope"),
    (lambda m, kw: prunekit.Pruner(m, **kw), "criterio", "criterion"),
    (lambda m, kw: prunekit.structural_prune(m, torch.randn(1, 4), sparsity=0.5, **kw), "round_too", "round_to"),
    (lambda m, kw: prunekit.fit(m, [(torch.randn(2, 4), torch.tensor([0, 1]))], **kw), "epoch", "epochs"),
])
def test_unknown_keyword_arguments_name_the_closest_one(call, wrong, right) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(prunekit.validation.UnknownArgumentError, match=rf"^{wrong}: expected a keyword argument of "
                       rf".*Did you mean '{right}'\?") as info:
        call(model, {wrong: 1})
    assert isinstance(info.value, TypeError)  # code catching Python's own TypeError keeps working
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_checked_functions_keep_their_signature_for_help() -> None:
    import inspect

    assert "scope" in inspect.signature(prunekit.prune).parameters
    assert "kwargs" not in inspect.signature(prunekit.prune).parameters
    assert "min_keep" in inspect.signature(prunekit.Pruner).parameters


def test_calibration_ids_outside_the_vocabulary_are_refused_before_anything_changes() -> None:
    torch.manual_seed(0)
    model = prunekit.create_model("gpt_tiny", n_layer=1)
    vocab = model.get_input_embeddings().num_embeddings if hasattr(model, "get_input_embeddings") else next(
        m for m in model.modules() if isinstance(m, nn.Embedding)).num_embeddings
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ids = torch.randint(0, vocab, (4, 16))
    ids[2, 5] = vocab + 3
    with pytest.raises(InvalidParameterError, match=rf"^data: expected token ids in \[0, {vocab}\).*to {vocab + 3}>"):
        prunekit.oneshot_prune(model, ids, method="wanda", sparsity=0.5)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
