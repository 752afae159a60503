"""prunekit.execution's compressed weight format and compiled kernel against F.linear."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prunekit.errors import InvalidParameterError
from prunekit.execution import (column_indices, compress, index_limit_speedup, kernel_path, limit_speedup,
                                sparse_linear, torch_linear)
from prunekit.execution import native_kernel
from prunekit.native import missing_requirements


@pytest.fixture(scope="module")
def isas():
    """The compiled kernel, built once per test session (cached by torch); the ISAs this CPU runs."""
    missing = missing_requirements()
    if missing:
        pytest.skip("cannot build prunekit.execution's kernel here: missing " + "; ".join(missing))
    native_kernel.kernel()
    return {False: native_kernel.supported_isas(False), True: native_kernel.supported_isas(True)}


def _weight(out: int, inp: int, pattern: str, density: float, dtype: torch.dtype, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out, inp, generator=g)
    if pattern == "random":
        w[torch.rand(out, inp, generator=g) >= density] = 0
    elif pattern == "zero rows":
        w[torch.rand(out, inp, generator=g) >= density] = 0
        w[::2] = 0
    elif pattern == "all zero":
        w.zero_()
    elif pattern == "2:4":
        cols = inp - inp % 4
        blocks = w[:, :cols].reshape(out, -1, 4).clone()
        drop = blocks.abs().argsort(-1)[..., :2]
        w[:, :cols] = blocks.scatter(-1, drop, 0.0).reshape(out, cols)
    return w.to(dtype)


def _tolerance(inp: int) -> float:
    return 1e-5 + 2e-6 * inp


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    out=st.integers(1, 40),
    inp=st.sampled_from([1, 2, 15, 16, 17, 33, 64, 100, 1000]),
    rows=st.one_of(st.integers(1, 16), st.integers(17, 40)),
    pattern=st.sampled_from(["random", "zero rows", "all zero", "dense", "2:4"]),
    density=st.floats(0.0, 1.0),
    bf16=st.booleans(),
    bias=st.booleans(),
    isa_index=st.integers(0, 2),
    path=st.sampled_from(list(native_kernel.PATHS)),
    seed=st.integers(0, 2**16),
)
def test_kernel_equals_dense_linear(isas, out, inp, rows, pattern, density, bf16, bias, isa_index, path, seed):
    dtype = torch.bfloat16 if bf16 else torch.float32
    w = _weight(out, inp, pattern, density, dtype, seed)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(rows, inp, generator=g)
    b = torch.randn(out, generator=g) if bias else None
    isa = isas[bf16][isa_index % len(isas[bf16])]
    got = sparse_linear(x, compress(w), b, isa=isa, path=path)
    want = F.linear(x, w.float(), b)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=_tolerance(inp))


@pytest.mark.parametrize("isa", ["scalar", "avx2", "avx512"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_each_isa_forced_on_odd_shapes(isas, isa, dtype):
    """Every path this CPU has runs when forced, on few rows (vectorised over columns), more rows
    (vectorised over rows; sooner for sparse weights) and widths around the 16-column chunks."""
    if isa not in isas[dtype == torch.bfloat16]:
        pytest.skip(f"this CPU lacks {isa} (supported: {isas[dtype == torch.bfloat16]})")
    # dense enough (random 0.9) and sparse (zero rows 0.4): the two decide between the paths above 8 rows
    for inp, pattern, density in [(1, "zero rows", 0.4), (17, "random", 0.9), (33, "zero rows", 0.4),
                                  (1000, "zero rows", 0.4), (1000, "random", 0.9)]:
        w = _weight(23, inp, pattern, density, dtype, inp)
        packed = compress(w)
        cols = column_indices(packed)
        for rows in (1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 47, 130):
            x = torch.randn(rows, inp)
            for path in native_kernel.PATHS:
                torch.testing.assert_close(sparse_linear(x, packed, isa=isa, path=path, cols=cols),
                                           F.linear(x, w.float()), rtol=1e-5, atol=_tolerance(inp))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_one_row_index_path_with_rows_of_uneven_length(isas, dtype):
    """One x row on the index path: several output rows run together, so rows that end at
    different points (empty, shorter or longer than one 32-value step, full) must each get their
    own sum and bias, for every count of output rows (whole groups of rows and a remainder)."""
    g = torch.Generator().manual_seed(3)
    inp = 700
    lengths = [0, 1, 15, 16, 17, 31, 32, 33, 64, 95, 700, 250, 0, 3, 129]
    for out in range(1, len(lengths) + 1):
        w = torch.zeros(out, inp)
        for o in range(out):
            n = lengths[(o * 7) % len(lengths)]
            w[o, torch.randperm(inp, generator=g)[:n]] = torch.randn(n, generator=g)
        w = w.to(dtype)
        b = torch.randn(out, generator=g)
        x = torch.randn(1, inp, generator=g)
        packed = compress(w)
        for isa in isas[dtype == torch.bfloat16]:
            got = sparse_linear(x, packed, b, isa=isa, path="index", cols=column_indices(packed))
            torch.testing.assert_close(got, F.linear(x, w.float(), b), rtol=1e-5, atol=_tolerance(inp))


def test_column_indices_follow_the_values():
    w = _weight(9, 70, "zero rows", 0.3, torch.float32, 5)
    packed = compress(w)
    cols = column_indices(packed)
    assert cols.dtype == torch.int16 and cols.numel() == packed.nnz + 32
    rows = torch.repeat_interleave(torch.arange(9), packed.row_ptr.diff())
    assert torch.equal(w[rows, cols[: packed.nnz].long()], packed.values[: packed.nnz])
    wide = compress(torch.zeros(1, 65537))
    assert column_indices(wide) is None  # 16-bit columns: the index paths stop at 65536 inputs
    with pytest.raises(InvalidParameterError, match="path: expected 'auto', 'bitmask' or 'rows'"):
        sparse_linear(torch.randn(1, 65537), wide, path="tiled")


def test_auto_path_by_rows_and_density(isas):
    sparse = compress(_weight(64, 256, "random", 0.1, torch.float32, 0))
    half = compress(_weight(64, 256, "random", 0.5, torch.float32, 0))
    assert [kernel_path(sparse, r) for r in (1, 2, 3, 128)] == ["index", "index", "tiled", "tiled"]
    assert [kernel_path(half, r) for r in (1, 8, 15, 16)] == ["bitmask", "bitmask", "bitmask", "tiled"]
    wide = compress(torch.zeros(2, 65537))
    assert [kernel_path(wide, r) for r in (1, 40)] == ["bitmask", "rows"]
    with pytest.raises(InvalidParameterError, match="path: expected one of 'auto'"):
        sparse_linear(torch.randn(1, 256), sparse, path="gather")


def test_environment_variable_forces_an_isa(isas, monkeypatch):
    w = _weight(8, 40, "random", 0.5, torch.float32, 0)
    x = torch.randn(3, 40)
    monkeypatch.setenv("PRUNEKIT_SPARSE_ISA", "scalar")
    torch.testing.assert_close(sparse_linear(x, compress(w)), F.linear(x, w))
    monkeypatch.setenv("PRUNEKIT_SPARSE_ISA", "avx9")
    with pytest.raises(InvalidParameterError, match="PRUNEKIT_SPARSE_ISA: expected one of 'auto'"):
        sparse_linear(x, compress(w))


def test_leading_dims_and_input_dtype_are_kept(isas):
    w = _weight(12, 20, "random", 0.3, torch.float32, 1)
    x = torch.randn(2, 3, 20)
    y = sparse_linear(x, compress(w))
    assert y.shape == (2, 3, 12)
    torch.testing.assert_close(y, F.linear(x, w))
    assert sparse_linear(x.bfloat16(), compress(w)).dtype == torch.bfloat16


def test_bad_input_names_the_parameter(isas):
    packed = compress(_weight(4, 8, "random", 0.5, torch.float32, 0))
    with pytest.raises(InvalidParameterError, match=r"x: expected a tensor whose last dim is in_features=8, got <Tensor \(3, 9\)>"):
        sparse_linear(torch.randn(3, 9), packed)
    with pytest.raises(InvalidParameterError, match="isa: expected one of"):
        sparse_linear(torch.randn(3, 8), packed, isa="sse")
    with pytest.raises(InvalidParameterError, match="weight: expected a float32 or bfloat16 tensor"):
        compress(torch.zeros(3, 3, dtype=torch.float16))
    with pytest.raises(InvalidParameterError, match="weight: expected a 2-D tensor"):
        compress(torch.zeros(3))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_compression_round_trip_and_bytes(dtype):
    w = _weight(10, 37, "zero rows", 0.3, dtype, 3)
    packed = compress(w)
    assert torch.equal(packed.to_dense(), w)
    assert torch.equal(packed.keep_mask(), w != 0)
    assert packed.nnz == int((w != 0).sum())
    size = 4 if dtype == torch.float32 else 2
    assert packed.nbytes == 10 * 3 * 2 + packed.nnz * size + 11 * 8
    # stock-op fallback: the same product
    x = torch.randn(4, 37)
    torch.testing.assert_close(torch_linear(x, packed), F.linear(x, w.float()))


def test_two_four_reaches_the_same_bytes_as_two_bit_indices():
    w = _weight(64, 64, "2:4", 1.0, torch.float32, 0)
    packed = compress(w)
    assert packed.sparsity == 0.5
    values_and_indices = 64 * 64 // 2 * (4 + 0.25)  # half the values + 2 bits each
    assert packed.mask.numel() * 2 + packed.nnz * 4 == values_and_indices


def test_speedup_limit_formula():
    assert limit_speedup(0.5, 4) == pytest.approx(1.882, abs=1e-3)
    assert limit_speedup(0.9, 4) == pytest.approx(7.619, abs=1e-3)
    assert limit_speedup(0.7, 2) == pytest.approx(2.759, abs=1e-3)
    assert index_limit_speedup(0.9, 4) == pytest.approx(6.667, abs=1e-3)
    assert index_limit_speedup(0.9, 2) == pytest.approx(5.0)
