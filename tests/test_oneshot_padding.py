"""Padding is not calibration data: the same sentences calibrated unpadded (one by one, or in
equal-length batches) and padded into one batch with an attention mask give the same masks
(Wanda, SparseGPT, with and without OWL, with the head) and the same count of real tokens."""

from __future__ import annotations

import pytest
import torch

from prunekit.errors import InvalidParameterError
from prunekit.oneshot import oneshot_prune
from prunekit.oneshot.stats import InputStats

transformers = pytest.importorskip("transformers")

from test_oneshot import VOCAB, gpt2, llama, zoo  # the tiny LLaMA and GPT-2 of the one-shot tests

LENGTHS = [5, 5, 9, 9, 16, 3, 12, 12]
REAL = sum(LENGTHS)
PAD = 0


def sentences(seed: int = 3) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(1, VOCAB, (n,), generator=g) for n in LENGTHS]


def padded(sents: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """One batch, right-padded with ``PAD`` to the longest sentence, with its attention mask."""
    width = max(len(s) for s in sents)
    ids = torch.full((len(sents), width), PAD, dtype=torch.long)
    mask = torch.zeros((len(sents), width), dtype=torch.long)
    for row, s in enumerate(sents):
        ids[row, :len(s)] = s
        mask[row, :len(s)] = 1
    return {"input_ids": ids, "attention_mask": mask}


def one_by_one(sents: list[torch.Tensor]) -> list[torch.Tensor]:
    return [s.unsqueeze(0) for s in sents]


def equal_length_batches(sents: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """Sentences of the same length stacked into one batch each (a mask of ones: nothing padded)."""
    groups: dict[int, list[torch.Tensor]] = {}
    for s in sents:
        groups.setdefault(len(s), []).append(s)
    return [{"input_ids": torch.stack(g), "attention_mask": torch.ones(len(g), n, dtype=torch.long)}
            for n, g in groups.items()]


def masks(model) -> dict[str, torch.Tensor]:
    return {n: p.detach() == 0 for n, p in model.named_parameters() if p.dim() == 2}


def calibrate(make, data, **kw):
    model = make().double()  # float64: batched and single-row matmuls agree far below any score gap
    result = oneshot_prune(model, data, sparsity=0.5, **kw)
    return model, result


def assert_same_masks(a, b) -> None:
    ma, mb = masks(a), masks(b)
    assert ma.keys() == mb.keys()
    differ = {n: int((ma[n] != mb[n]).sum()) for n in ma if not torch.equal(ma[n], mb[n])}
    assert not differ, f"masks differ (entries per weight): {differ}"


@pytest.mark.parametrize("make", [llama, gpt2], ids=["llama", "gpt2"])
@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
@pytest.mark.parametrize("owl", [False, True], ids=["plain", "owl"])
def test_padded_batch_calibrates_like_the_unpadded_sentences(make, method, owl):
    kw = {"method": method, "head": make is llama}  # the LLaMA's untied head too (its own statistics)
    if owl:
        kw.update(owl=True, owl_lambda=0.2, owl_m=1.5)
    sents = sentences()
    single, r_single = calibrate(make, one_by_one(sents), **kw)
    grouped, r_grouped = calibrate(make, equal_length_batches(sents), **kw)
    pad, r_pad = calibrate(make, [padded(sents)], **kw)
    assert_same_masks(single, pad)
    assert_same_masks(grouped, pad)
    assert r_single.calibration_tokens == r_grouped.calibration_tokens == r_pad.calibration_tokens == REAL
    if owl:
        assert r_pad.outlier_ratios == pytest.approx(r_single.outlier_ratios, abs=1e-6)
        assert r_pad.block_sparsities == pytest.approx(r_single.block_sparsities, abs=1e-6)


def test_padded_batch_in_an_inputs_targets_pair_and_split_across_batches():
    sents = sentences()
    single, r_single = calibrate(llama, one_by_one(sents))
    pairs = [(padded(sents[:4]), None), (padded(sents[4:]), None)]
    pad, r_pad = calibrate(llama, pairs)
    assert_same_masks(single, pad)
    assert r_pad.calibration_tokens == REAL == r_single.calibration_tokens


def test_batches_without_a_mask_count_every_position():
    ids = torch.randint(1, VOCAB, (6, 10), generator=torch.Generator().manual_seed(0))
    _, as_tensor = calibrate(llama, ids, batch_size=4)
    _, as_dicts = calibrate(llama, [{"input_ids": ids}])
    assert as_tensor.calibration_tokens == as_dicts.calibration_tokens == 60


def test_a_mask_of_the_wrong_shape_or_values_is_refused_before_anything_changes():
    batch = padded(sentences())
    model = llama()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    wrong_values = dict(batch, attention_mask=batch["attention_mask"].double() * 0.5)
    all_padding = dict(batch, attention_mask=torch.zeros_like(batch["attention_mask"]))
    for bad in (wrong_values, all_padding):
        with pytest.raises(InvalidParameterError, match="data"):
            oneshot_prune(model, [bad], sparsity=0.5)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_input_stats_sum_only_the_real_positions():
    x = torch.randn(2, 4, 3, dtype=torch.float64)
    keep = torch.tensor([[True, True, False, False], [True, True, True, False]])
    masked = InputStats(3, norms=True, hessian=True, device=torch.device("cpu"))
    masked.add(x, keep)
    flat = InputStats(3, norms=True, hessian=True, device=torch.device("cpu"))
    flat.add(x.reshape(8, 3), keep)  # a layer fed (batch·tokens, in)
    real = InputStats(3, norms=True, hessian=True, device=torch.device("cpu"))
    real.add(x[keep])
    for stats in (masked, flat):
        assert stats.tokens == 5
        torch.testing.assert_close(stats.norms(), real.norms())
        torch.testing.assert_close(stats.hessian(), real.hessian())
    with pytest.raises(InvalidParameterError, match="attention mask"):
        masked.add(torch.randn(3, 4, 3), keep)


def test_a_model_that_takes_no_mask_refuses_a_padded_batch_and_calibrates_unpadded_ones():
    sents = sentences()
    model = zoo()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises(InvalidParameterError, match="attention_mask.*takes no attention mask"):
        oneshot_prune(model, [padded(sents)], sparsity=0.5)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    result = oneshot_prune(model, one_by_one(sents), sparsity=0.5)
    assert result.calibration_tokens == REAL


@pytest.mark.parametrize("owl", [False, True], ids=["plain", "owl"])
def test_a_failure_mid_pass_on_padded_data_leaves_the_model_as_it_was(owl):
    model = llama()
    before = {n: t.detach().clone() for n, t in (*model.named_parameters(), *model.named_buffers())}

    def fail_at_second_block(event) -> None:
        if event.stage == "prune" and event.block == 1 and event.status == "start":
            raise RuntimeError("stop")

    kw = {"owl": True, "owl_lambda": 0.2} if owl else {}
    with pytest.raises(RuntimeError, match="stop"):
        oneshot_prune(model, [padded(sentences())], method="sparsegpt", sparsity=0.5, mode="inplace",
                      progress=fail_at_second_block, **kw)
    after = dict((*model.named_parameters(), *model.named_buffers()))
    assert after.keys() == before.keys()
    assert all(torch.equal(after[n], t) for n, t in before.items())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
