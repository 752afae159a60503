"""``prune_pretrained`` on encoder-only folders (BERT-style ``encoder.layer``, DistilBERT's
``transformer.layer``), bare or with a task head: block by block from the safetensors, calibrated
through the encoder with attention masks, written as a folder stock ``AutoModel`` loads."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from prunekit.errors import InvalidParameterError
from prunekit.oneshot import find_blocks, oneshot_prune, prune_pretrained
from conftest import materialised_blocks, watch_streamed_blocks

transformers = pytest.importorskip("transformers")

VOCAB = 64


def bert_config() -> transformers.BertConfig:
    return transformers.BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                                   intermediate_size=64, max_position_embeddings=32, num_labels=3)


def distil_config() -> transformers.DistilBertConfig:
    return transformers.DistilBertConfig(vocab_size=VOCAB, dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                                         max_position_embeddings=32, num_labels=3)


MODELS = {
    "BertModel": lambda: transformers.BertModel(bert_config()),
    "BertForSequenceClassification": lambda: transformers.BertForSequenceClassification(bert_config()),
    "BertForMaskedLM": lambda: transformers.BertForMaskedLM(bert_config()),  # decoder tied to the embedding
    "RobertaForSequenceClassification": lambda: transformers.RobertaForSequenceClassification(
        transformers.RobertaConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                   intermediate_size=64, max_position_embeddings=40, num_labels=3, pad_token_id=1)),
    "DistilBertModel": lambda: transformers.DistilBertModel(distil_config()),
    "DistilBertForSequenceClassification": lambda: transformers.DistilBertForSequenceClassification(
        distil_config()),
}


def saved(name: str, folder, seed: int = 0):
    torch.manual_seed(seed)
    MODELS[name]().save_pretrained(folder)
    return folder


def padded_batches(seed: int = 1, pad: int = 0) -> list[dict[str, torch.Tensor]]:
    """Two batches of 4 sequences of 12 tokens, the later positions of some rows padding."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for lengths in ((12, 7, 12, 3), (5, 12, 9, 12)):
        ids = torch.randint(4, VOCAB, (4, 12), generator=g)
        mask = torch.zeros(4, 12, dtype=torch.long)
        for row, length in enumerate(lengths):
            mask[row, :length] = 1
        out.append({"input_ids": ids.masked_fill(mask == 0, pad), "attention_mask": mask})
    return out


def encoder_linears(model: nn.Module) -> dict[str, torch.Tensor]:
    path, blocks = find_blocks(model)
    return {f"{path}.{i}.{n}": m.weight for i, b in enumerate(blocks) for n, m in b.named_modules()
            if isinstance(m, nn.Linear)}


@pytest.mark.parametrize("name,method", [
    ("BertModel", "wanda"),
    ("BertForSequenceClassification", "sparsegpt"),
    ("BertForMaskedLM", "wanda"),
    ("RobertaForSequenceClassification", "wanda"),
    ("DistilBertModel", "sparsegpt"),
    ("DistilBertForSequenceClassification", "wanda"),
])
def test_encoder_folder_streamed_equals_loading_it_and_stock_automodel_loads_it(name, method, tmp_path):
    source = saved(name, tmp_path / "in")
    before = {p.name: p.read_bytes() for p in source.iterdir()}
    result = prune_pretrained(source, tmp_path / "out", padded_batches(), method, 0.5)
    assert {p.name: p.read_bytes() for p in source.iterdir()} == before  # the input is only read

    # the same pruning as loading the model whole and calling oneshot_prune
    reference = getattr(transformers, name).from_pretrained(source).eval()
    expected = oneshot_prune(reference, padded_batches(), method, 0.5)
    pruned = getattr(transformers, name).from_pretrained(tmp_path / "out").eval()
    state, ref_state = pruned.state_dict(), reference.state_dict()
    assert state.keys() == ref_state.keys() and all(torch.equal(state[k], ref_state[k]) for k in state)
    assert result.layer_sparsity == expected.layer_sparsity
    assert result.calibration_tokens == expected.calibration_tokens == 12 + 7 + 12 + 3 + 5 + 12 + 9 + 12

    # stock AutoModel reads the folder: every encoder Linear at the sparsity, the rest as saved
    bare, info = transformers.AutoModel.from_pretrained(tmp_path / "out", output_loading_info=True)
    original, original_info = transformers.AutoModel.from_pretrained(source, output_loading_info=True)
    # what the input folder lacks for the bare model (BertForMaskedLM has no pooler), and nothing more
    assert info["missing_keys"] == original_info["missing_keys"] and not info["mismatched_keys"]
    torch.manual_seed(0)
    original = transformers.AutoModel.from_pretrained(source)
    torch.manual_seed(0)
    bare = transformers.AutoModel.from_pretrained(tmp_path / "out")
    linears = encoder_linears(bare)
    assert len(linears) == 6 * len(find_blocks(bare)[1])
    for layer, weight in linears.items():
        assert float((weight == 0).float().mean()) == 0.5, layer
    after = bare.state_dict()
    untouched = [k for k in original.state_dict() if k not in {f"{layer}.weight" for layer in linears}]
    assert len(untouched) > len(linears)
    for key in untouched:  # embeddings, norms, biases, pooler: as saved
        assert torch.equal(after[key], original.state_dict()[key]), key


def shard_tensors(folder) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out: dict[str, torch.Tensor] = {}
    for file in sorted(folder.glob("*.safetensors")):
        out.update(load_file(str(file)))
    return out


def test_calibration_runs_through_the_encoder_with_its_attention_mask(tmp_path):
    source = saved("BertForSequenceClassification", tmp_path / "in")
    prune_pretrained(source, tmp_path / "pad0", padded_batches(pad=0), "wanda", 0.5)
    other = padded_batches(pad=0)
    g = torch.Generator().manual_seed(9)
    for batch in other:  # other tokens at the padded positions: masked out, they change nothing
        noise = torch.randint(4, VOCAB, batch["input_ids"].shape, generator=g)
        batch["input_ids"] = torch.where(batch["attention_mask"] == 1, batch["input_ids"], noise)
    prune_pretrained(source, tmp_path / "noise", other, "wanda", 0.5)
    unmasked = [{"input_ids": b["input_ids"]} for b in other]  # the same ids read without the mask
    result = prune_pretrained(source, tmp_path / "unmasked", unmasked, "wanda", 0.5)
    assert result.calibration_tokens == 2 * 4 * 12
    pad0, noise, plain = (shard_tensors(tmp_path / n) for n in ("pad0", "noise", "unmasked"))
    assert pad0.keys() == noise.keys() == plain.keys()
    assert all(torch.equal(pad0[k], noise[k]) for k in pad0)
    assert not all(torch.equal(pad0[k], plain[k]) for k in pad0)


def test_never_more_than_one_encoder_block_is_materialised(tmp_path, monkeypatch):
    source = saved("BertForSequenceClassification", tmp_path / "in")
    seen, stores = watch_streamed_blocks(monkeypatch)
    prune_pretrained(source, tmp_path / "out", padded_batches(), "wanda", 0.5, owl=True)
    assert len(seen) > 3 * 2 * 2
    assert max(len(m) for m in seen) == 1 and materialised_blocks(stores[0]) == []
    assert all(p.device.type == "cpu" for n, p in stores[0].slots.model.named_parameters() if ".layer." not in n)


def _rewrite_config(folder, **changes):
    config = json.loads((folder / "config.json").read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_a_folder_without_architectures_is_read_as_the_model_its_weights_fill(tmp_path):
    source = _rewrite_config(saved("BertModel", tmp_path / "bert"), architectures=None)
    prune_pretrained(source, tmp_path / "bert_out", padded_batches(), "wanda", 0.5)
    assert set(shard_tensors(tmp_path / "bert_out")) == set(shard_tensors(source))  # no LM head invented
    torch.manual_seed(0)
    llama = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64))
    llama.save_pretrained(tmp_path / "llama")
    _rewrite_config(tmp_path / "llama", architectures=None)
    prune_pretrained(tmp_path / "llama", tmp_path / "llama_out", torch.randint(0, VOCAB, (4, 8)), "wanda", 0.5)
    assert "lm_head.weight" in shard_tensors(tmp_path / "llama_out")  # the causal LM, head included


def test_architectures_it_cannot_read_are_named_with_what_is_supported(tmp_path):
    t5 = transformers.T5ForConditionalGeneration(transformers.T5Config(
        vocab_size=VOCAB, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=2))
    t5.save_pretrained(tmp_path / "t5")
    clip = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=16, bos_token_id=0, eos_token_id=1, pad_token_id=1))
    clip.save_pretrained(tmp_path / "clip")
    custom = _rewrite_config(saved("BertModel", tmp_path / "custom"), architectures=["MyOwnBert"])
    unknown = _rewrite_config(saved("BertModel", tmp_path / "unknown"), model_type="my_own_bert",
                              architectures=["MyOwnBert"])
    cases = [
        (tmp_path / "t5", "model_dir", ["T5ForConditionalGeneration", "encoder-decoder", "encoder-only"]),
        (tmp_path / "clip", "blocks", ["CLIPTextModel", "encoder.layer", "ModuleLists in this model: "
                                       "encoder.layers"]),
        (custom, "model_dir", ["MyOwnBert", "a class transformers provides", "trust_remote_code=True"]),
        (unknown, "model_dir", ["my_own_bert", "a model type transformers knows"]),
    ]
    for folder, param, words in cases:
        before = sorted(p.name for p in tmp_path.iterdir())
        with pytest.raises(InvalidParameterError) as info:
            prune_pretrained(folder, tmp_path / "out", torch.randint(0, VOCAB, (2, 8)), "wanda", 0.5)
        assert info.value.param == param, folder.name
        assert all(w in str(info.value) for w in words), str(info.value)
        assert "causal LM" in str(info.value) and "BERT" in str(info.value)
        assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written
    # the fix the blocks error gives works
    result = prune_pretrained(tmp_path / "clip", tmp_path / "clip_out", torch.randint(2, VOCAB, (2, 8)), "wanda",
                              0.5, blocks="encoder.layers")
    assert set(result.layer_sparsity.values()) == {0.5}
