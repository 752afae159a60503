"""C++ source of the kernel's many-row path, part of :data:`.kernel_source.SOURCE`.

For many ``x`` rows the decode is amortised the other way round: ``x`` is
transposed to ``xT`` (in × rows, rows rounded up to 16), each output row's kept
columns are decoded once into a list without a branch per bit (AVX-512
``_mm512_maskz_compress_epi32``; AVX2 a table of set-bit positions), and for
each kept ``W[o, i]`` the row ``xT[i, :]`` times ``W[o, i]`` is added to
``yT[o, :]``, up to 8 vectors of rows at once.
"""

from __future__ import annotations

__all__ = ["MANY_ROWS"]

MANY_ROWS = r"""
// ---------------------------------------------------------------- many rows
// For many x rows the decode is amortised the other way round: xT = x transposed
// [in, rows_p] (rows_p = rows rounded up to 16), and for each kept W[o, i] the
// row xT[i, :] is multiplied by W[o, i] and added to yT[o, :] (vectorised over rows).
struct TokenArgs {
  const uint16_t* mask; const void* values; const int64_t* row_ptr; int64_t chunks;
  const float* xt; int64_t rows_p; float* yt; const float* bias;
};

template <bool BF16>
inline float value_at(const void* values, int64_t k) {
  if constexpr (BF16) return bf16_to_float(static_cast<const uint16_t*>(values)[k]);
  else return static_cast<const float*>(values)[k];
}

// The columns of row o's kept values, packed into cols (branch-free: the trip count of a
// loop over the set bits of each chunk would be mispredicted once a chunk). Returns the count.
__attribute__((target("avx512f,avx512bw,avx512vl,popcnt")))
int64_t columns_avx512(const uint16_t* m, int64_t chunks, int32_t* cols) {
  const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  int64_t n = 0;
  for (int64_t c = 0; c < chunks; ++c) {
    const uint32_t bits = m[c];
    const __m512i v = _mm512_maskz_compress_epi32(static_cast<__mmask16>(bits), _mm512_add_epi32(iota, _mm512_set1_epi32(static_cast<int32_t>(c * 16))));
    _mm512_storeu_si512(cols + n, v);
    n += __builtin_popcount(bits);
  }
  return n;
}

__attribute__((target("avx2,popcnt")))
int64_t columns_avx2(const uint16_t* m, int64_t chunks, int32_t* cols) {
  int64_t n = 0;
  for (int64_t c = 0; c < chunks; ++c) {
    const uint32_t bits = m[c];
#pragma GCC unroll 2
    for (int h = 0; h < 2; ++h) {
      const uint32_t byte = (bits >> (8 * h)) & 0xffu;
      const __m256i v = _mm256_add_epi32(_mm256_load_si256(reinterpret_cast<const __m256i*>(kTable.where[byte])),
                                         _mm256_set1_epi32(static_cast<int32_t>(c * 16 + 8 * h)));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(cols + n), v);
      n += __builtin_popcount(byte);
    }
  }
  return n;
}

int64_t columns_scalar(const uint16_t* m, int64_t chunks, int32_t* cols) {
  int64_t n = 0;
  for (int64_t c = 0; c < chunks; ++c)
    for (int j = 0; j < 16; ++j) {
      cols[n] = static_cast<int32_t>(c * 16 + j);
      n += (m[c] >> j) & 1;
    }
  return n;
}

template <int NV, bool BF16>
__attribute__((target("avx512f,avx512bw,avx512vl")))
void token_avx512_block(const TokenArgs& a, int64_t o, int64_t t0, const int32_t* cols, int64_t n) {
  __m512 acc[NV];
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v) acc[v] = _mm512_setzero_ps();
  const int64_t k0 = a.row_ptr[o];
  const float* xt = a.xt + t0;
  for (int64_t q = 0; q < n; ++q) {
    const __m512 w = _mm512_set1_ps(value_at<BF16>(a.values, k0 + q));
    const float* row = xt + static_cast<int64_t>(cols[q]) * a.rows_p;
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[v] = _mm512_fmadd_ps(w, _mm512_loadu_ps(row + 16 * v), acc[v]);
  }
  const __m512 b = _mm512_set1_ps(a.bias ? a.bias[o] : 0.f);
  float* y = a.yt + o * a.rows_p + t0;
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v) _mm512_storeu_ps(y + 16 * v, _mm512_add_ps(acc[v], b));
}

template <int NV, bool BF16>
__attribute__((target("avx2,fma")))
void token_avx2_block(const TokenArgs& a, int64_t o, int64_t t0, const int32_t* cols, int64_t n) {
  __m256 acc[NV];
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v) acc[v] = _mm256_setzero_ps();
  const int64_t k0 = a.row_ptr[o];
  const float* xt = a.xt + t0;
  for (int64_t q = 0; q < n; ++q) {
    const __m256 w = _mm256_set1_ps(value_at<BF16>(a.values, k0 + q));
    const float* row = xt + static_cast<int64_t>(cols[q]) * a.rows_p;
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[v] = _mm256_fmadd_ps(w, _mm256_loadu_ps(row + 8 * v), acc[v]);
  }
  const __m256 b = _mm256_set1_ps(a.bias ? a.bias[o] : 0.f);
  float* y = a.yt + o * a.rows_p + t0;
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v) _mm256_storeu_ps(y + 8 * v, _mm256_add_ps(acc[v], b));
}

template <bool BF16>
void token_scalar_block(const TokenArgs& a, int64_t o, int64_t t0, const int32_t* cols, int64_t n) {
  float acc[16] = {0.f};
  const int64_t k0 = a.row_ptr[o];
  for (int64_t q = 0; q < n; ++q) {
    const float w = value_at<BF16>(a.values, k0 + q);
    const float* row = a.xt + static_cast<int64_t>(cols[q]) * a.rows_p + t0;
    for (int r = 0; r < 16; ++r) acc[r] += w * row[r];
  }
  const float b = a.bias ? a.bias[o] : 0.f;
  for (int r = 0; r < 16; ++r) a.yt[o * a.rows_p + t0 + r] = acc[r] + b;
}

template <bool BF16>
void token_range(const TokenArgs& a, int64_t o0, int64_t o1, int64_t isa) {
  std::vector<int32_t> cols(a.chunks * 16 + 16);
  for (int64_t o = o0; o < o1; ++o) {
    int64_t t = 0;
    if (isa == 3) {
      const int64_t n = columns_avx512(a.mask + o * a.chunks, a.chunks, cols.data());
      for (; t + 128 <= a.rows_p; t += 128) token_avx512_block<8, BF16>(a, o, t, cols.data(), n);
      if (t + 64 <= a.rows_p) { token_avx512_block<4, BF16>(a, o, t, cols.data(), n); t += 64; }
      if (t + 32 <= a.rows_p) { token_avx512_block<2, BF16>(a, o, t, cols.data(), n); t += 32; }
      if (t < a.rows_p) token_avx512_block<1, BF16>(a, o, t, cols.data(), n);
    } else if (isa == 2) {
      const int64_t n = columns_avx2(a.mask + o * a.chunks, a.chunks, cols.data());
      for (; t + 64 <= a.rows_p; t += 64) token_avx2_block<8, BF16>(a, o, t, cols.data(), n);
      if (t + 32 <= a.rows_p) { token_avx2_block<4, BF16>(a, o, t, cols.data(), n); t += 32; }
      if (t < a.rows_p) token_avx2_block<2, BF16>(a, o, t, cols.data(), n);
    } else {
      const int64_t n = columns_scalar(a.mask + o * a.chunks, a.chunks, cols.data());
      for (; t < a.rows_p; t += 16) token_scalar_block<BF16>(a, o, t, cols.data(), n);
    }
  }
}

"""
