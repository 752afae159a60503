"""Property tests on random shapes: exactness, monotonicity, bit-exact round trips."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import prunekit

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])

sparsities = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
seeds = st.integers(min_value=0, max_value=2**31 - 1)


def _mask(module, name="weight"):
    return module._buffers[name + "_mask"] != 0


@st.composite
def linear_specs(draw):
    return draw(st.integers(1, 12)), draw(st.integers(1, 12))


@st.composite
def conv_specs(draw):
    return draw(st.integers(1, 6)), draw(st.integers(1, 6)), draw(st.integers(1, 3))


def _linear(out_f, in_f, seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(in_f, out_f))


def _conv(out_c, in_c, k, seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(in_c, out_c, k))


@SETTINGS
@given(shape=linear_specs(), s=sparsities, seed=seeds, criterion=st.sampled_from(["l1", "l2", "random"]),
       mode=st.sampled_from(["reparam", "inplace"]))
def test_local_element_exact(shape, s, seed, criterion, mode):
    model = _linear(*shape, seed)
    prunekit.prune(model, s, criterion=criterion, min_keep=0, mode=mode, params=("weight", "bias"))
    for name in ("weight", "bias"):
        mask = _mask(model[0], name)
        assert int((~mask).sum()) == round(s * mask.numel())
        assert bool((getattr(model[0], name).detach()[~mask] == 0).all())


@SETTINGS
@given(shape=conv_specs(), s=sparsities, seed=seeds, dim=st.sampled_from([None, 0, 1, 2, 3]))
def test_local_channel_exact(shape, s, seed, dim):
    model = _conv(*shape, seed)
    spec = "channel" if dim is None else f"channel:{dim}"
    prunekit.prune(model, s, structure=spec, criterion="l2", min_keep=0)
    mask = _mask(model[0]).movedim(0 if dim is None else dim, 0)
    flat = mask.reshape(mask.shape[0], -1)
    assert bool((flat.all(1) | ~flat.any(1)).all())
    assert int((~flat.any(1)).sum()) == round(s * mask.shape[0])


@SETTINGS
@given(shape=conv_specs(), s=sparsities, seed=seeds)
def test_local_kernel_exact(shape, s, seed):
    out_c, in_c, k = shape
    model = _conv(out_c, in_c, k, seed)
    prunekit.prune(model, s, structure="kernel", min_keep=0)
    mask = _mask(model[0]).reshape(out_c * in_c, -1)
    assert bool((mask.all(1) | ~mask.any(1)).all())
    assert int((~mask.any(1)).sum()) == round(s * out_c * in_c)


@SETTINGS
@given(rows=st.integers(1, 4), cols=st.integers(1, 4), nr=st.integers(1, 4), nc=st.integers(1, 4),
       s=sparsities, seed=seeds, conv=st.booleans())
def test_local_block_exact(rows, cols, nr, nc, s, seed, conv):
    out_f, in_f = rows * nr, cols * nc
    model = _conv(out_f, in_f, 2, seed) if conv else _linear(out_f, in_f, seed)
    prunekit.prune(model, s, structure=f"block:{rows}x{cols}", min_keep=0)
    mask = _mask(model[0]).reshape(out_f, in_f, -1)
    blocks = mask.reshape(nr, rows, nc, cols, -1).permute(0, 2, 1, 3, 4).reshape(nr * nc, -1)
    assert bool((blocks.all(1) | ~blocks.any(1)).all())
    assert int((~blocks.any(1)).sum()) == round(s * nr * nc)


@SETTINGS
@given(shapes=st.lists(linear_specs(), min_size=1, max_size=4), s=sparsities, seed=seeds,
       criterion=st.sampled_from(["l1", "random"]))
def test_global_element_exact(shapes, s, seed, criterion):
    torch.manual_seed(seed)
    model = nn.Sequential(*[nn.Linear(i, o) for o, i in shapes])
    prunekit.prune(model, s, scope="global", criterion=criterion, min_keep=0)
    total = sum(m.weight.numel() for m in model)
    zeros = sum(int((~_mask(m)).sum()) for m in model)
    assert zeros == round(s * total)
    report = prunekit.sparsity_report(model)
    assert report.params == total
    assert report.params - report.nonzero >= zeros  # pruned entries read as zeros


@SETTINGS
@given(shapes=st.lists(linear_specs(), min_size=1, max_size=3), seed=seeds,
       steps=st.lists(sparsities, min_size=2, max_size=5),
       scope=st.sampled_from(["local", "global"]),
       structure=st.sampled_from(["element", "channel"]),
       mode=st.sampled_from(["reparam", "inplace"]))
def test_monotonic_masks(shapes, seed, steps, scope, structure, mode):
    torch.manual_seed(seed)
    model = nn.Sequential(*[nn.Linear(i, o) for o, i in shapes])
    pruner = prunekit.Pruner(model, scope=scope, structure=structure, min_keep=0, mode=mode)
    previous = None
    best = 0.0
    for s in sorted(steps) + [min(steps)]:
        pruner.step(s)
        masks = [_mask(m).clone() for m in model]
        if previous is not None:
            for new, old in zip(masks, previous):
                assert bool((new <= old).all()), "new mask must be a subset of the old"
        best = max(best, s)
        if scope == "local":
            for m, mask in zip(model, masks):
                units = mask.shape[0] if structure == "channel" else mask.numel()
                dead = int((~mask.any(1)).sum()) if structure == "channel" else int((~mask).sum())
                assert dead == round(best * units)
        elif structure == "element":
            total = sum(mask.numel() for mask in masks)
            assert sum(int((~mask).sum()) for mask in masks) == round(best * total)
        previous = masks


def _pruned_model(seed, s, mode, structure, bias):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.Flatten(), nn.Linear(4 * 2 * 2, 8), nn.Linear(8, 4))
    params = ("weight", "bias") if bias else "weight"
    prunekit.prune(model, s, structure=structure, mode=mode, min_keep=0, params=params)
    return model


def _fresh(seed):
    torch.manual_seed(seed + 1)
    return nn.Sequential(nn.Conv2d(2, 4, 3), nn.Flatten(), nn.Linear(4 * 2 * 2, 8), nn.Linear(8, 4))


def _assert_same_pruning(a, b, bitwise=True):
    """Same masks and effective values; ``bitwise`` also compares the sign of zeros.

    save_sparse stores only the kept values, so a pruned entry comes back as +0.0
    where the original model may hold -0.0 (orig * 0 of a negative weight).
    """
    names = ("0", "2", "3")
    for n in names:
        ma, mb = dict(a.named_modules())[n], dict(b.named_modules())[n]
        for p in ("weight", "bias"):
            ka, kb = ma._buffers.get(p + "_mask"), mb._buffers.get(p + "_mask")
            assert (ka is None) == (kb is None), (n, p)
            if ka is not None:
                assert ka.dtype == kb.dtype and torch.equal(ka, kb), (n, p)
            ea, eb = getattr(ma, p).detach(), getattr(mb, p).detach()
            assert ea.dtype == eb.dtype
            assert torch.equal(ea, eb), (n, p)
            if bitwise:
                assert torch.equal(ea.view(torch.int32), eb.view(torch.int32)), (n, p)  # incl. the sign of zeros
            else:
                kept = ea != 0
                assert torch.equal(ea[kept].view(torch.int32), eb[kept].view(torch.int32)), (n, p)
    for key in a.state_dict():
        if not key.endswith("_orig"):
            assert torch.equal(a.state_dict()[key], b.state_dict()[key]), key
    x = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


@SETTINGS
@given(seed=seeds, s=st.floats(0.0, 0.999), mode=st.sampled_from(["reparam", "inplace"]),
       structure=st.sampled_from(["element", "channel"]), bias=st.booleans())
def test_save_load_sparse_round_trip(seed, s, mode, structure, bias):
    model = _pruned_model(seed, s, mode, structure, bias)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.safetensors"
        size = prunekit.save_sparse(model, path)
        assert size == path.stat().st_size > 0
        fresh = _fresh(seed)
        loaded = prunekit.load_sparse(path, fresh)
        assert loaded is fresh
        _assert_same_pruning(model, fresh, bitwise=False)
        sd = prunekit.load_sparse(path)
        assert set(sd) == set(model.state_dict())
        for key, value in model.state_dict().items():
            if key.endswith("_orig"):  # pruned originals are not stored: they come back as 0
                mask = model.state_dict()[key[:-5] + "_mask"] != 0
                assert torch.equal(sd[key][mask], value[mask]) and bool((sd[key][~mask] == 0).all()), key
            else:
                assert sd[key].dtype == value.dtype and torch.equal(sd[key], value), key


@SETTINGS
@given(seed=seeds, s=st.floats(0.0, 0.999), mode=st.sampled_from(["reparam", "inplace"]),
       structure=st.sampled_from(["element", "channel"]), bias=st.booleans())
def test_state_dict_round_trip(seed, s, mode, structure, bias):
    model = _pruned_model(seed, s, mode, structure, bias)
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    fresh = _fresh(seed)
    prunekit.load_pruned_state_dict(fresh, sd)
    _assert_same_pruning(model, fresh)
    # the state dict, including reparam originals, comes back exactly
    for key, value in sd.items():
        assert torch.equal(fresh.state_dict()[key], value), key
    # and through a torch file on disk
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.pt"
        torch.save(sd, path)
        again = _fresh(seed)
        prunekit.load_pruned_state_dict(again, prunekit.load_state_dict_file(path))
        _assert_same_pruning(model, again)


# -- corrupted sparse checkpoints: a clear error or a bit-exact load, never a different model --------

_HOSTILE_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-2**40, 2**40), st.floats(allow_nan=True),
    st.text(max_size=6), st.sampled_from(["float32", "int32", "bool", "float16", "dense", "zeros", "reparam",
                                          "inplace", "bitmask", "index", "0.weight", "2.bias"]),
    st.lists(st.integers(-5, 2**33), max_size=4), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
_FIELDS = ["shape", "dtype", "state", "encoding", "mask_dtype", "alias", "<entry>"]


def _reference_file(tmp: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(40, 40), nn.ReLU(), nn.Linear(40, 4))
    prunekit.prune(model, 0.99, include="0")  # index encoding, reparam
    prunekit.prune(model, 0.5, include="2", mode="inplace")  # bitmask encoding, inplace
    path = tmp / "ref.safetensors"
    prunekit.save_sparse(model, path)
    return path, prunekit.load_sparse(path)


def _load_or_error(path: Path) -> dict[str, torch.Tensor] | None:
    try:
        return prunekit.load_sparse(path)
    except prunekit.PrunekitError:
        return None


def _bit_exact(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return list(a) == list(b) and all(
        a[k].dtype == b[k].dtype and a[k].shape == b[k].shape
        and torch.equal(a[k].reshape(-1).view(torch.uint8), b[k].reshape(-1).view(torch.uint8)) for k in a
    )


@SETTINGS
@given(data=st.data(), flips=st.integers(1, 3))
def test_corrupted_bytes_give_an_error_or_the_same_model(data, flips):
    with tempfile.TemporaryDirectory() as tmp:
        path, reference = _reference_file(Path(tmp))
        raw = bytearray(path.read_bytes())
        for _ in range(flips):
            pos = data.draw(st.integers(0, len(raw) - 1), label="position")
            raw[pos] ^= data.draw(st.integers(1, 255), label="xor")
        if data.draw(st.booleans(), label="truncate"):
            raw = raw[: data.draw(st.integers(0, len(raw)), label="length")]
        bad = Path(tmp) / "bad.safetensors"
        bad.write_bytes(bytes(raw))
        loaded = _load_or_error(bad)
        assert loaded is None or _bit_exact(loaded, reference)


def _edited(path: Path, out: Path, name: str, field: str, value: object, keep_checksum: bool) -> Path:
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    import json

    with safe_open(str(path), framework="pt") as handle:
        meta = dict(handle.metadata())
    if not keep_checksum:
        meta.pop("sha256")
    entries = json.loads(meta["tensors"])
    if field == "<entry>":
        entries[name] = value
    else:
        entries[name][field] = value
    meta["tensors"] = json.dumps(entries)
    save_file(load_file(str(path)), str(out), metadata=meta)
    return out


@SETTINGS
@given(name=st.sampled_from(["0.weight", "0.bias", "2.weight", "2.bias"]), field=st.sampled_from(_FIELDS),
       value=_HOSTILE_VALUES)
def test_corrupted_fields_give_an_error_or_a_bounded_load(name, field, value):
    with tempfile.TemporaryDirectory() as tmp:
        path, reference = _reference_file(Path(tmp))
        stale = _edited(path, Path(tmp) / "stale.safetensors", name, field, value, keep_checksum=True)
        loaded = _load_or_error(stale)  # the checksum still describes the unedited file
        assert loaded is None or _bit_exact(loaded, reference)
        bare = _edited(path, Path(tmp) / "bare.safetensors", name, field, value, keep_checksum=False)
        loaded = _load_or_error(bare)  # no checksum: only the field checks stand between it and the model
        if loaded is not None:
            limit = 64 * bare.stat().st_size + 64 * 2**20
            assert sum(t.numel() * t.element_size() for t in loaded.values()) <= limit
            assert all(torch.equal(loaded[k], reference[k]) for k in ("0.weight_orig", "2.weight")
                       if k in loaded and loaded[k].shape == reference[k].shape and name[0] != k[0])
