"""Head and MLP-neuron surgery on Hugging Face BERT, DistilBERT, GPT-2, LLaMA (GQA) and ViT.

Tiny configs, random weights, fixed seeds; no downloads.
"""

from __future__ import annotations

import pytest
import torch

import prunekit
from prunekit.errors import InvalidParameterError
from prunekit.coupling import attention_layers, head_gates, mlp_layers, neuron_gates
from prunekit.surgery.hf_load import load_pretrained

tf = pytest.importorskip("transformers")
tf.logging.set_verbosity_error()

FAMILIES = ["bert", "distilbert", "gpt2", "llama", "vit", "deit"]


def make(kind: str, seed: int = 0):
    torch.manual_seed(seed)
    ids = {"input_ids": torch.randint(0, 50, (2, 7), generator=torch.Generator().manual_seed(1))}
    if kind == "bert":
        config = tf.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                               intermediate_size=24, max_position_embeddings=16)
        return tf.BertModel(config).eval(), ids
    if kind == "distilbert":
        config = tf.DistilBertConfig(vocab_size=50, dim=32, n_layers=2, n_heads=4, hidden_dim=24,
                                     max_position_embeddings=16)
        return tf.DistilBertModel(config).eval(), ids
    if kind == "gpt2":
        config = tf.GPT2Config(vocab_size=50, n_embd=32, n_layer=2, n_head=4, n_inner=24, n_positions=16)
        return tf.GPT2LMHeadModel(config).eval(), ids
    if kind == "llama":
        config = tf.LlamaConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                num_key_value_heads=2, intermediate_size=24, max_position_embeddings=16)
        return tf.LlamaForCausalLM(config).eval(), ids
    pixels = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    if kind == "deit":
        config = tf.DeiTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=24,
                               image_size=16, patch_size=8, num_labels=3)
        return tf.DeiTForImageClassificationWithTeacher(config).eval(), {"pixel_values": pixels}
    config = tf.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=24,
                          image_size=16, patch_size=8)
    return tf.ViTModel(config).eval(), {"pixel_values": pixels}


def output(model, x) -> torch.Tensor:
    with torch.no_grad():
        out = model(**x)
    logits = getattr(out, "logits", None)
    return logits if logits is not None else out.last_hidden_state


# the same count per layer (LLaMA/ViT need it); LLaMA: one query head from each of its 2 KV groups
HEADS = {"llama": {0: [0, 3], 1: [1, 2]}}
DEFAULT_HEADS = {0: [1, 3], 1: [0, 2]}
NEURONS = {0: [1, 5, 7, 20], 1: [0, 2, 3, 23]}


def heads_for(kind: str) -> dict[int, list[int]]:
    return HEADS.get(kind, DEFAULT_HEADS)


@pytest.mark.parametrize("kind", FAMILIES)
def test_removing_gated_heads_and_neurons_matches_masked_model(kind):
    model, x = make(kind)
    before = output(model, x)
    plan = heads_for(kind)
    with head_gates(model, attention_layers(model)) as gates, neuron_gates(model, mlp_layers(model)) as ngates:
        for layer, heads in plan.items():
            gates[layer][heads] = 0.0
        masked_heads = output(model, x)
        for layer, neurons in NEURONS.items():
            ngates[layer][neurons] = 0.0
        masked_both = output(model, x)
    assert not torch.allclose(masked_heads, before, atol=1e-3)  # the gates did act
    assert torch.equal(output(model, x), before)  # gates removed on exit
    prunekit.prune_heads(model, plan)
    assert torch.allclose(output(model, x), masked_heads, atol=1e-5)
    prunekit.prune_mlp_neurons(model, NEURONS)
    assert torch.allclose(output(model, x), masked_both, atol=1e-5)
    specs = attention_layers(model)
    assert [s.num_heads for s in specs.values()] == [2, 2]
    assert [s.size for s in mlp_layers(model).values()] == [20, 20]


@pytest.mark.parametrize("kind", FAMILIES)
def test_zero_ratio_changes_nothing(kind):
    model, x = make(kind)
    before = output(model, x)
    config = model.config.to_dict()
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    record = prunekit.prune_heads(model, sparsity=0.0)
    prunekit.prune_mlp_neurons(model, sparsity=0.0)
    assert record.removals == []
    assert torch.equal(output(model, x), before)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == shapes
    assert model.config.to_dict() == config


@pytest.mark.parametrize("kind", FAMILIES)
def test_config_updated_and_save_pretrained_round_trip(kind, tmp_path):
    model, x = make(kind)
    prunekit.prune_heads(model, heads_for(kind))
    prunekit.prune_mlp_neurons(model, NEURONS)
    config = model.config
    mlp_field = {"distilbert": "hidden_dim", "gpt2": "n_inner"}.get(kind, "intermediate_size")
    assert getattr(config, mlp_field) == 20
    if kind == "llama":
        assert (config.num_attention_heads, config.num_key_value_heads, config.head_dim) == (2, 2, 8)
    elif kind in ("vit", "deit"):
        assert (config.num_attention_heads, config.head_dim) == (2, 8)
    else:  # head size is hidden / heads in these configs: counts go to prunekit_num_heads
        assert config.num_attention_heads == 4
        assert config.prunekit_num_heads == [2, 2]
    expected = output(model, x)
    model.save_pretrained(tmp_path)
    loaded = load_pretrained(type(model), str(tmp_path))
    assert torch.allclose(output(loaded, x), expected, atol=1e-6)
    assert sum(p.numel() for p in loaded.parameters()) == sum(p.numel() for p in model.parameters())
    if kind in ("llama", "vit", "deit"):  # the config alone describes the smaller model
        plain = type(model).from_pretrained(tmp_path)
        assert torch.allclose(output(plain, x), expected, atol=1e-6)
    else:
        with pytest.raises(RuntimeError):
            type(model).from_pretrained(tmp_path)


def test_non_uniform_heads_allowed_where_config_cannot_hold_heads(tmp_path):
    model, x = make("bert")
    prunekit.prune_heads(model, {0: [0], 1: [0, 1, 3]})
    assert model.config.prunekit_num_heads == [3, 1]
    expected = output(model, x)
    model.save_pretrained(tmp_path)
    assert torch.allclose(output(load_pretrained(tf.BertModel, str(tmp_path)), x), expected, atol=1e-6)


@pytest.mark.parametrize("kind", ["llama", "vit", "deit"])
def test_non_uniform_counts_go_to_per_layer_fields_where_config_holds_one_value(kind, tmp_path):
    model, x = make(kind)
    prunekit.prune_heads(model, {0: [0, 3]})
    prunekit.prune_mlp_neurons(model, {0: [1], 1: [1, 2]})
    assert model.config.num_attention_heads == 4 and model.config.intermediate_size == 24  # the built sizes
    assert model.config.prunekit_num_heads == [2, 4] and model.config.prunekit_mlp_sizes == [23, 22]
    expected = output(model, x)
    model.save_pretrained(tmp_path)
    assert torch.allclose(output(load_pretrained(type(model), str(tmp_path)), x), expected, atol=1e-6)


def test_gqa_whole_groups_and_per_group_queries():
    model, x = make("llama")
    attn = model.model.layers[0].self_attn
    with head_gates(model, attention_layers(model)) as gates:
        gates[0][[0, 1]] = 0.0  # the whole first KV group
        gates[1][[0, 1]] = 0.0
        masked = output(model, x)
    prunekit.prune_heads(model, {0: [0, 1], 1: [0, 1]})
    assert torch.allclose(output(model, x), masked, atol=1e-5)
    assert (attn.q_proj.out_features, attn.k_proj.out_features, attn.v_proj.out_features) == (16, 8, 8)
    assert attn.num_key_value_groups == 2 and model.config.num_key_value_heads == 1

    model, _ = make("llama")
    record = prunekit.prune_heads(model, sparsity=0.5, gqa="query")
    assert all(len(kept) == 2 and kept[0] // 2 != kept[1] // 2 for kept in record.kept.values())
    assert model.config.num_key_value_heads == 2 and model.config.num_attention_heads == 2

    model, _ = make("llama")
    record = prunekit.prune_heads(model, sparsity=0.5, gqa="group")
    assert all(kept[0] // 2 == kept[1] // 2 for kept in record.kept.values())
    assert model.config.num_key_value_heads == 1


def test_gqa_round_to_is_met_or_refused():
    model, x = make("llama")  # 4 heads of size 8 in 2 key/value groups
    before = output(model, x)
    with pytest.raises(InvalidParameterError, match="round_to") as info:
        prunekit.prune_heads(model, sparsity=0.5, gqa="query", round_to=32)  # 2 heads x 8 is no multiple of 32
    assert info.value.param == "round_to" and "Fix:" in str(info.value)
    assert torch.equal(output(model, x), before)
    prunekit.prune_heads(model, sparsity=0.5, gqa="query", round_to=16)
    assert model.model.layers[0].self_attn.q_proj.out_features == 16


def test_gqa_unequal_groups_refused():
    model, x = make("llama")
    before = output(model, x)
    with pytest.raises(InvalidParameterError, match="same\\s+number of query heads"):
        prunekit.prune_heads(model, {0: [0], 1: [0]})  # group 0 keeps 1 query head, group 1 keeps 2
    with pytest.raises(InvalidParameterError, match="local"):
        prunekit.prune_heads(model, sparsity=0.5, scope="global")
    assert torch.equal(output(model, x), before)


@pytest.mark.parametrize(
    ("request_", "match"),
    [
        ({5: [0]}, "layers among"),
        ({0: [4]}, r"head indices in \[0, 4\)"),
        ({0: [-1]}, r"head indices in \[0, 4\)"),
        ({0: [0, 1, 2, 3], 1: [0, 1, 2, 3]}, "fewer than all 4 heads"),
        ({0: [1, 1]}, "distinct head indices"),
        ({0: "a"}, "list of head indices"),
    ],
)
def test_bad_head_requests_leave_the_model_untouched(request_, match):
    model, x = make("bert")
    before = output(model, x)
    with pytest.raises(InvalidParameterError, match=match):
        prunekit.prune_heads(model, request_)
    assert torch.equal(output(model, x), before)
    assert model.encoder.layer[0].attention.self.query.out_features == 32


def test_bad_arguments():
    model, _ = make("gpt2")
    with pytest.raises(InvalidParameterError, match="exactly one of heads_to_prune and sparsity"):
        prunekit.prune_heads(model)
    with pytest.raises(InvalidParameterError, match="exactly one of"):
        prunekit.prune_heads(model, {0: [1]}, sparsity=0.5)
    with pytest.raises(InvalidParameterError, match="sparsity"):
        prunekit.prune_heads(model, sparsity=1.0)
    with pytest.raises(InvalidParameterError, match="importance"):
        prunekit.prune_heads(model, sparsity=0.5, importance="hrank")  # a channel-group score only
    with pytest.raises(InvalidParameterError, match="data"):
        prunekit.prune_heads(model, sparsity=0.5, importance="gradient")
    with pytest.raises(InvalidParameterError, match=r"neuron indices in \[0, 24\)"):
        prunekit.prune_mlp_neurons(model, {0: [24]})
    with pytest.raises(InvalidParameterError, match="structural_prune"):
        prunekit.prune_mlp_neurons(torch.nn.Sequential(torch.nn.Linear(2, 2)), sparsity=0.5)


def test_gradient_importance_ranks_an_irrelevant_head_last_and_prunes():
    model, _x = make("gpt2")
    c_proj = model.transformer.h[1].attn.c_proj  # Conv1D: rows of the weight are the head inputs
    with torch.no_grad():
        c_proj.weight[2 * 8:3 * 8] = 0.0  # head 2 of layer 1 no longer reaches the output
    g = torch.Generator().manual_seed(3)
    batches = [{"input_ids": (ids := torch.randint(0, 50, (2, 7), generator=g)), "labels": ids} for _ in range(3)]
    scores = prunekit.score_heads(model, "gradient", data=batches)
    assert int(scores[1].argmin()) == 2 and float(scores[1][2]) == 0.0
    assert all(abs(float(s.norm()) - 1.0) < 1e-5 for s in scores.values())  # L2-normalised per layer
    assert float(scores[0].min()) > 0.0
    record = prunekit.prune_heads(model, sparsity=0.25, importance="gradient", data=batches)
    assert 2 not in record.kept["transformer.h.1.attn"]
    assert model.config.prunekit_num_heads == [3, 3]
    assert model.transformer.h[1].attn.split_size == 24


def test_mlp_magnitude_ratio_prunes_weakest_neurons():
    model, x = make("llama")
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight[:, 5] = 0.0
        model.model.layers[0].mlp.gate_proj.weight[5] = 0.0
        model.model.layers[0].mlp.up_proj.weight[5] = 0.0
    prunekit.prune_mlp_neurons(model, sparsity=0.25)
    assert model.config.intermediate_size == 18
    assert model.model.layers[0].mlp.intermediate_size == 18
    assert model.model.layers[0].mlp.down_proj.in_features == 18
    assert output(model, x).shape == (2, 7, 50)


@pytest.mark.parametrize("mode", ["reparam", "inplace"])
def test_heads_removed_from_a_mask_pruned_model(mode):
    model, x = make("distilbert")  # (GPT-2's LM head is tied to the embedding: reparam masks differ there)
    prunekit.prune(model, sparsity=0.5, mode=mode)
    reference, _ = make("distilbert")  # same seed, same magnitude masks, made permanent so heads can be gated
    prunekit.make_permanent(prunekit.prune(reference, sparsity=0.5, mode=mode))
    with head_gates(reference, attention_layers(reference)) as gates:
        gates[0][[1]] = 0.0
        gates[1][[2]] = 0.0
        expected = output(reference, x)
    prunekit.prune_heads(model, {0: [1], 1: [2]})
    assert torch.allclose(output(model, x), expected, atol=1e-5)
    attn = model.transformer.layer[0].attention
    assert attn.q_lin.weight_mask.shape == (24, 32) and attn.out_lin.weight_mask.shape == (32, 24)


def test_save_shrunk_load_shrunk_round_trip(tmp_path):
    from prunekit.surgery import load_shrunk, save_shrunk

    def gpt2(seed: int):  # without the LM head tied to the embedding (save_shrunk refuses shared tensors)
        torch.manual_seed(seed)
        return tf.GPT2Model(tf.GPT2Config(vocab_size=50, n_embd=32, n_layer=2, n_head=4, n_inner=24, n_positions=16))

    model, x = gpt2(0).eval(), make("gpt2")[1]
    prunekit.prune_heads(model, {0: [1], 1: [0, 3]})
    prunekit.prune_mlp_neurons(model, NEURONS)
    expected = output(model, x)
    save_shrunk(model, tmp_path / "small.safetensors")
    fresh = load_shrunk(gpt2(7), tmp_path / "small.safetensors").eval()
    assert torch.allclose(output(fresh, x), expected, atol=1e-6)
    assert fresh.h[1].attn.split_size == 16 and fresh.config.prunekit_num_heads == [3, 2]
    assert fresh.config.n_inner == 20
