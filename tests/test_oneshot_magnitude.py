"""Magnitude one-shot reads no calibration data: the model never runs, ``data`` is optional and not
read, and the masks are those of ``|W|`` (the same as a run that had data)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunekit.errors import InvalidParameterError
from prunekit.oneshot import find_blocks, oneshot_prune, prune_pretrained
from prunekit.oneshot import engine
from prunekit.oneshot.blocks import block_targets, weight_matrix
from prunekit.oneshot.magnitude import magnitude_keep
from prunekit.structures import NM

transformers = pytest.importorskip("transformers")

VOCAB = 64


def llama(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return transformers.LlamaForCausalLM(cfg).eval()


def calib() -> torch.Tensor:
    return torch.randint(0, VOCAB, (8, 16), generator=torch.Generator().manual_seed(1))


def count_forwards(model: nn.Module) -> list[str]:
    """Every module's forward call is appended to the returned list."""
    calls: list[str] = []
    for name, module in model.named_modules():
        module.register_forward_pre_hook(lambda *_args, name=name: calls.append(name))
    return calls


def expected_keeps(model: nn.Module, sparsity: float, nm=None) -> dict[str, torch.Tensor]:
    """``|W|`` keep masks of every block linear, one threshold per matrix, from the weights before pruning."""
    path, blocks = find_blocks(model)
    return {f"{path}.{i}.{t.name}": magnitude_keep(weight_matrix(t), sparsity, nm)
            for i, b in enumerate(blocks) for t in block_targets(b)}


def zeros(model: nn.Module) -> dict[str, torch.Tensor]:
    path, blocks = find_blocks(model)
    return {f"{path}.{i}.{t.name}": weight_matrix(t) != 0 for i, b in enumerate(blocks) for t in block_targets(b)}


# ids outside the vocabulary and a key no forward takes: any use of this data would fail
UNUSABLE = [{"input_ids": torch.full((2, 8), 10 * VOCAB), "not_an_argument": torch.zeros(2)}]


@pytest.mark.parametrize("data", [None, UNUSABLE])
def test_magnitude_never_runs_the_model_and_prunes_as_with_data(data):
    with_data = llama()
    oneshot_prune(with_data, calib(), "magnitude", 0.5)  # the reference: a run given real data
    model = llama()
    expected = expected_keeps(model, 0.5)
    calls = count_forwards(model)
    result = oneshot_prune(model, data, "magnitude", 0.5)
    assert calls == []
    assert result.calibration_tokens == 0
    for name, keep in zeros(model).items():
        assert torch.equal(keep, expected[name]), name
        assert result.layer_sparsity[name] == 0.5
    state, ref = model.state_dict(), with_data.state_dict()
    assert state.keys() == ref.keys() and all(torch.equal(state[k], ref[k]) for k in state)  # the data-run's


def test_magnitude_in_reparam_mode_with_head_and_n_m_needs_no_data():
    model = llama()
    expected = expected_keeps(model, 0.5)
    head = model.lm_head.weight.detach().clone()
    calls = count_forwards(model)
    oneshot_prune(model, None, "magnitude", 0.5, mode="reparam", head=True)
    assert calls == []
    path, blocks = find_blocks(model)
    for i, block in enumerate(blocks):
        for t in block_targets(block):
            assert torch.equal(t.keep_mask(), expected[f"{path}.{i}.{t.name}"])
    assert torch.equal(model.lm_head.weight_mask.bool(), magnitude_keep(head, 0.5))
    nm_model = llama()
    expected_nm = expected_keeps(nm_model, 0.5, nm=NM(2, 4))
    oneshot_prune(nm_model, None, "magnitude", structure="2:4")
    assert all(torch.equal(zeros(nm_model)[n], k) for n, k in expected_nm.items())


def test_methods_that_read_activations_still_need_data():
    for kwargs in ({"method": "wanda"}, {"method": "sparsegpt"}, {"method": "magnitude", "owl": True}):
        with pytest.raises(InvalidParameterError) as info:
            oneshot_prune(llama(), None, sparsity=0.5, **kwargs)
        assert info.value.param == "data", kwargs


def test_prune_pretrained_by_magnitude_reads_no_data_and_runs_nothing(tmp_path, monkeypatch):
    llama().save_pretrained(tmp_path / "in")
    reference = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "in").eval()
    oneshot_prune(reference, calib(), "magnitude", 0.5)

    def never(*_args, **_kwargs):
        raise AssertionError("the model was run")

    monkeypatch.setattr(engine, "capture_block_inputs", never)
    monkeypatch.setattr(engine, "run_block", never)
    result = prune_pretrained(tmp_path / "in", tmp_path / "out", None, "magnitude", 0.5)
    assert result.calibration_tokens == 0
    pruned = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    state, ref = pruned.state_dict(), reference.state_dict()
    assert state.keys() == ref.keys() and all(torch.equal(state[k], ref[k]) for k in state)
