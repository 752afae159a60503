"""The zoo GPT's heads and MLP neurons are found through its layer handlers, removed by
prune_heads / prune_mlp_neurons with the outputs of the gated model, and saved and loaded;
every zoo model declares the input it takes."""

from __future__ import annotations

import copy

import pytest
import torch

import prunekit
from prunekit.coupling import (
    LayerHandler,
    MlpSpec,
    attention_layers,
    consumer,
    head_gates,
    mlp_layers,
    neuron_gates,
    producer,
    register_layer_handler,
    unregister_layer_handler,
)
from prunekit.errors import InvalidParameterError
from prunekit.zoo import (
    create_model,
    example_input,
    list_models,
    model_input,
    model_input_shape,
)


def _gpt(**kwargs):
    torch.manual_seed(0)
    return create_model("gpt_tiny", n_layer=2, n_embd=32, n_head=4, block_size=16, **kwargs).eval()


def _ids(batch=3, length=16, seed=1):
    return torch.randint(0, 65, (batch, length), generator=torch.Generator().manual_seed(seed))


def test_gpt_heads_and_neurons_are_found():
    model = _gpt()
    heads, mlps = attention_layers(model), mlp_layers(model)
    assert list(heads) == ["blocks.0.attn", "blocks.1.attn"]
    assert list(mlps) == ["blocks.0.mlp", "blocks.1.mlp"]
    spec = heads["blocks.0.attn"]
    assert (spec.num_heads, spec.num_kv_heads, spec.head_dim) == (4, 4, 8)
    assert [s.module for s in spec.query + spec.key_value + spec.output] == [
        "blocks.0.attn.q_proj", "blocks.0.attn.k_proj", "blocks.0.attn.v_proj", "blocks.0.attn.out_proj"]
    assert mlps["blocks.1.mlp"].size == 128


def _gated(dense, specs, gates_of, removed, x):
    with torch.no_grad(), gates_of(dense, specs) as gates:
        for key, units in removed.items():
            gates[key][units] = 0.0
        return dense(x)


def test_prune_heads_equals_the_gated_model_and_loads_back(tmp_path):
    model = _gpt()
    dense = copy.deepcopy(model)
    x = _ids()
    record = prunekit.prune_heads(model, sparsity=0.5, importance="l2")
    removed = {k: [h for h in range(4) if h not in kept] for k, kept in record.kept.items()}
    assert all(len(v) == 2 for v in removed.values())
    for block in model.blocks:
        assert block.attn.n_head == 2 and block.attn.q_proj.out_features == 16
        assert block.attn.out_proj.in_features == 16 and block.attn.head_dim == 8
    with torch.no_grad():
        got = model(x)
    torch.testing.assert_close(got, _gated(dense, attention_layers(dense), head_gates, removed, x),
                               rtol=1e-5, atol=1e-6)
    path = tmp_path / "heads.safetensors"
    prunekit.save_shrunk(model, path)
    torch.manual_seed(5)  # another initialisation: the file's weights must replace it
    loaded = prunekit.load_shrunk(create_model("gpt_tiny", n_layer=2, n_embd=32, n_head=4, block_size=16), path)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), got)
    assert [b.attn.n_head for b in loaded.blocks] == [2, 2]


def test_prune_mlp_neurons_equals_the_gated_model():
    model = _gpt()
    dense = copy.deepcopy(model)
    neurons = {"blocks.0.mlp": [0, 5, 7], "blocks.1.mlp": [127]}
    prunekit.prune_mlp_neurons(model, neurons)
    assert model.blocks[0].mlp.fc.out_features == 125 and model.blocks[0].mlp.proj.in_features == 125
    assert model.blocks[1].mlp.fc.out_features == 127
    x = _ids()
    with torch.no_grad():
        got = model(x)
    torch.testing.assert_close(got, _gated(dense, mlp_layers(dense), neuron_gates, neurons, x), rtol=1e-5, atol=1e-6)
    # a neuron that matters changes the outputs: the comparison can fail
    with torch.no_grad():
        assert not torch.allclose(got, dense(x), atol=1e-6)


def test_prune_mlp_neurons_by_sparsity_and_gradient():
    model = _gpt()
    x = _ids(length=17)
    data = [(x[:, :-1], x[:, 1:])]
    prunekit.prune_mlp_neurons(model, sparsity=0.25, importance="gradient", data=data)
    assert [b.mlp.fc.out_features for b in model.blocks] == [96, 96]


def test_bad_neuron_request_leaves_the_model_untouched():
    model = _gpt()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(InvalidParameterError, match="neuron indices in"):
        prunekit.prune_mlp_neurons(model, {"blocks.0.mlp": [1], "blocks.1.mlp": [500]})
    with pytest.raises(InvalidParameterError, match="neurons_to_prune"):
        prunekit.prune_mlp_neurons(model, {"blocks.9.mlp": [1]})
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("name", list_models())
def test_every_zoo_model_declares_an_input_it_accepts(name):
    model = create_model(name).eval()
    example = example_input(name, 2)
    assert tuple(example.shape) == (2, *model_input_shape(name))
    if model_input(name).vocab is not None:
        assert example.dtype == torch.long and int(example.max()) < model_input(name).vocab
    with torch.no_grad():
        assert model(example).shape[0] == 2


def test_model_input_shapes_and_unknown_models():
    assert model_input_shape("lenet5") == (1, 28, 28)
    assert model_input_shape("resnet20") == (3, 32, 32)
    assert model_input_shape("gpt_tiny") == (128,) and model_input("gpt_tiny").vocab == 65
    prunekit.zoo.MODELS.register("tiny_undeclared", lambda: torch.nn.Linear(2, 2))
    try:
        with pytest.raises(InvalidParameterError, match="register_model"):
            model_input_shape("tiny_undeclared")
    finally:
        prunekit.zoo.MODELS.unregister("tiny_undeclared")
    with pytest.raises(InvalidParameterError, match="input_shape"):
        prunekit.zoo.register_model("tiny_bad", lambda: torch.nn.Linear(2, 2), input_shape=(0,))


class _TwoLayer(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up, self.down = torch.nn.Linear(3, 6), torch.nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(torch.relu(self.up(x)))


def test_a_users_mlp_type_takes_part_through_its_layer_handler():
    def spec(name, module):
        return MlpSpec(name, 6, producers=(producer(f"{name}.up", module.up),),
                       consumers=(consumer(f"{name}.down", module.down),))

    torch.manual_seed(0)
    model = torch.nn.Sequential(_TwoLayer(), _TwoLayer())
    with pytest.raises(InvalidParameterError, match="structural_prune"):
        mlp_layers(model)
    register_layer_handler(_TwoLayer, LayerHandler(mlp=spec))
    try:
        assert list(mlp_layers(model)) == ["0", "1"]
        prunekit.prune_mlp_neurons(model, sparsity=0.5)
    finally:
        unregister_layer_handler(_TwoLayer)
    assert [m.up.out_features for m in model] == [3, 3] and model(torch.randn(2, 3)).shape == (2, 3)
