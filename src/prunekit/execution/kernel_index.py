"""C++ source of the kernel's column-index paths, part of :data:`.kernel_source.SOURCE`.

Both read, beside the packed values, ``cols``: the 16-bit column of each kept
value (row by row, aligned with ``values``, padded by 32 entries), derived from
the bitmask once per layer (:func:`~.compressed.column_indices`); the work is
then proportional to the kept values, not to the columns.

* index (few rows, very sparse): 16 kept values at a time, their ``x`` entries
  fetched with one gather (AVX-512 ``_mm512_i32gather_ps``, AVX2
  ``_mm256_i32gather_ps``; ``x`` is in L1/L2) and one FMA against 16 packed
  values. Bytes read: ``nnz · (s + 2)`` (values and indices) against the
  bitmask's ``out · in / 8 + nnz · s``. With one ``x`` row (AVX-512), four
  output rows from the four quarters of a thread's range run together (four
  value streams in flight, prefetched 512 values ahead).
* tiled rows (many rows): ``x`` is laid out as tiles of 16 rows,
  ``xt[tile, column, 16]``, so one column of one tile is one 64-byte line; for
  each tile (kept in L1/L2) and each output row, every kept ``W[o, i]`` is
  broadcast and multiplied by the line ``xt[tile, i, :]`` (four accumulators).
"""

from __future__ import annotations

__all__ = ["INDEX_PATHS"]

INDEX_PATHS = r"""
// ---------------------------------------------------------------- column-index paths
struct IndexArgs {
  const uint16_t* cols;    // the column of each packed value, padded by 32 entries
  const void* values;
  const int64_t* row_ptr;
  const float* x;          // index path: [rows, ldx]; tiled path: [tiles, ldx, 16]
  int64_t ldx;
  int64_t rows;
  float* y;                // index path: [rows, out]; tiled path: [tiles, out, 16]
  int64_t out;
  const float* bias;
};

template <bool BF16>
__attribute__((target("avx512f,avx512bw,avx512vl")))
inline __m512 load_values16(const void* values, int64_t k) {
  if constexpr (BF16) {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(values) + k));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  } else {
    return _mm512_loadu_ps(static_cast<const float*>(values) + k);
  }
}

// how many values ahead the gather path prefetches
constexpr int64_t kIndexAhead = 1024;

template <int R, bool BF16>
__attribute__((target("avx512f,avx512bw,avx512vl")))
void index_avx512_rows(const IndexArgs& a, int64_t o0, int64_t o1, int64_t r0) {
  const float* x = a.x + r0 * a.ldx;
  const int64_t es = BF16 ? 2 : 4;
  for (int64_t o = o0; o < o1; ++o) {
    int64_t k = a.row_ptr[o];
    const int64_t end = a.row_ptr[o + 1];
    __m512 acc0[R], acc1[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) { acc0[r] = _mm512_setzero_ps(); acc1[r] = _mm512_setzero_ps(); }
    for (; k + 32 <= end; k += 32) {
      // 32 values are 128 (float32) or 64 (bf16) bytes and their columns 64: every line, well ahead
      _mm_prefetch(reinterpret_cast<const char*>(a.values) + (k + kIndexAhead) * es, _MM_HINT_T0);
      if (!BF16) _mm_prefetch(reinterpret_cast<const char*>(a.values) + (k + kIndexAhead + 16) * es, _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(a.cols + k + kIndexAhead), _MM_HINT_T0);
      const __m512i i0 = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.cols + k)));
      const __m512i i1 = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.cols + k + 16)));
      const __m512 w0 = load_values16<BF16>(a.values, k), w1 = load_values16<BF16>(a.values, k + 16);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        acc0[r] = _mm512_fmadd_ps(w0, _mm512_i32gather_ps(i0, x + r * a.ldx, 4), acc0[r]);
        acc1[r] = _mm512_fmadd_ps(w1, _mm512_i32gather_ps(i1, x + r * a.ldx, 4), acc1[r]);
      }
    }
    for (; k < end; k += 16) {  // the last 1..31 values: lanes past the row's end masked off
      const int64_t n = std::min<int64_t>(16, end - k);
      const __mmask16 m = static_cast<__mmask16>((1u << n) - 1u);
      const __m512i i0 = _mm512_maskz_cvtepu16_epi32(m, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.cols + k)));
      const __m512 w0 = _mm512_maskz_mov_ps(m, load_values16<BF16>(a.values, k));
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r)
        acc0[r] = _mm512_fmadd_ps(w0, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, i0, x + r * a.ldx, 4), acc0[r]);
    }
    const float b = a.bias ? a.bias[o] : 0.f;
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) a.y[(r0 + r) * a.out + o] = _mm512_reduce_add_ps(_mm512_add_ps(acc0[r], acc1[r])) + b;
  }
}

// One x row, four output rows from the four quarters of [o0, o1) at once: four independent value
// streams keep more memory reads in flight than one or two (timed against one, two and eight
// streams and other prefetch distances: four, kStreamAhead values ahead, was the fastest; the
// loop then reads its bytes about as fast as a plain sequential read of them).
constexpr int kStreams = 4;
constexpr int64_t kStreamAhead = 512;

template <bool BF16>
__attribute__((target("avx512f,avx512bw,avx512vl"), always_inline))
inline void index_step32(const IndexArgs& a, int64_t k, __m512& acc0, __m512& acc1) {
  const int64_t es = BF16 ? 2 : 4;
  _mm_prefetch(reinterpret_cast<const char*>(a.values) + (k + kStreamAhead) * es, _MM_HINT_T0);
  if (!BF16) _mm_prefetch(reinterpret_cast<const char*>(a.values) + (k + kStreamAhead + 16) * es, _MM_HINT_T0);
  _mm_prefetch(reinterpret_cast<const char*>(a.cols + k + kStreamAhead), _MM_HINT_T0);
  const __m512i i0 = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.cols + k)));
  const __m512i i1 = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.cols + k + 16)));
  acc0 = _mm512_fmadd_ps(load_values16<BF16>(a.values, k), _mm512_i32gather_ps(i0, a.x, 4), acc0);
  acc1 = _mm512_fmadd_ps(load_values16<BF16>(a.values, k + 16), _mm512_i32gather_ps(i1, a.x, 4), acc1);
}

template <bool BF16>
__attribute__((target("avx512f,avx512bw,avx512vl"), always_inline))
inline void index_tail(const IndexArgs& a, int64_t k, int64_t end, __m512& acc) {
  for (; k < end; k += 16) {
    const int64_t n = std::min<int64_t>(16, end - k);
    const __mmask16 m = static_cast<__mmask16>((1u << n) - 1u);
    const __m512i i0 = _mm512_maskz_cvtepu16_epi32(m, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.cols + k)));
    const __m512 w0 = _mm512_maskz_mov_ps(m, load_values16<BF16>(a.values, k));
    acc = _mm512_fmadd_ps(w0, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, i0, a.x, 4), acc);
  }
}

template <bool BF16>
__attribute__((target("avx512f,avx512bw,avx512vl")))
void index_avx512_streams(const IndexArgs& a, int64_t o0, int64_t o1) {
  constexpr int S = kStreams;
  const int64_t part = (o1 - o0) / S;
  for (int64_t i = 0; i < part; ++i) {
    int64_t o[S], k[S], e[S];
    __m512 lo[S], hi[S];
#pragma GCC unroll 4
    for (int j = 0; j < S; ++j) {
      o[j] = o0 + j * part + i;
      k[j] = a.row_ptr[o[j]];
      e[j] = a.row_ptr[o[j] + 1];
      lo[j] = _mm512_setzero_ps();
      hi[j] = _mm512_setzero_ps();
    }
    for (;;) {  // all S rows together while each has 32 values left
      bool room = true;
#pragma GCC unroll 4
      for (int j = 0; j < S; ++j) room = room && k[j] + 32 <= e[j];
      if (!room) break;
#pragma GCC unroll 4
      for (int j = 0; j < S; ++j) { index_step32<BF16>(a, k[j], lo[j], hi[j]); k[j] += 32; }
    }
    for (int j = 0; j < S; ++j) {  // then each row's rest on its own
      for (; k[j] + 32 <= e[j]; k[j] += 32) index_step32<BF16>(a, k[j], lo[j], hi[j]);
      index_tail<BF16>(a, k[j], e[j], lo[j]);
      a.y[o[j]] = _mm512_reduce_add_ps(_mm512_add_ps(lo[j], hi[j])) + (a.bias ? a.bias[o[j]] : 0.f);
    }
  }
  if (o0 + S * part < o1) index_avx512_rows<1, BF16>(a, o0 + S * part, o1, 0);
}

template <int R, bool BF16>
__attribute__((target("avx2,fma")))
void index_avx2_rows(const IndexArgs& a, int64_t o0, int64_t o1, int64_t r0) {
  const float* x = a.x + r0 * a.ldx;
  for (int64_t o = o0; o < o1; ++o) {
    int64_t k = a.row_ptr[o];
    const int64_t end = a.row_ptr[o + 1];
    __m256 acc[R];
    float tail[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) { acc[r] = _mm256_setzero_ps(); tail[r] = 0.f; }
    for (; k + 8 <= end; k += 8) {
      const __m256i idx = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a.cols + k)));
      __m256 w;
      if constexpr (BF16) {
        const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(a.values) + k));
        w = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
      } else {
        w = _mm256_loadu_ps(static_cast<const float*>(a.values) + k);
      }
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) acc[r] = _mm256_fmadd_ps(w, _mm256_i32gather_ps(x + r * a.ldx, idx, 4), acc[r]);
    }
    for (; k < end; ++k) {
      const float w = value_at<BF16>(a.values, k);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) tail[r] += w * x[r * a.ldx + a.cols[k]];
    }
    const float b = a.bias ? a.bias[o] : 0.f;
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m128 q = _mm_add_ps(_mm256_castps256_ps128(acc[r]), _mm256_extractf128_ps(acc[r], 1));
      const __m128 hh = _mm_add_ps(q, _mm_movehl_ps(q, q));
      const __m128 t = _mm_add_ss(hh, _mm_shuffle_ps(hh, hh, 1));
      a.y[(r0 + r) * a.out + o] = _mm_cvtss_f32(t) + tail[r] + b;
    }
  }
}

template <bool BF16>
void index_scalar_range(const IndexArgs& a, int64_t o0, int64_t o1) {
  for (int64_t r = 0; r < a.rows; ++r)
    for (int64_t o = o0; o < o1; ++o) {
      float acc = 0.f;
      for (int64_t k = a.row_ptr[o]; k < a.row_ptr[o + 1]; ++k)
        acc += value_at<BF16>(a.values, k) * a.x[r * a.ldx + a.cols[k]];
      a.y[r * a.out + o] = acc + (a.bias ? a.bias[o] : 0.f);
    }
}

template <bool BF16>
void index_range(const IndexArgs& a, int64_t o0, int64_t o1, int64_t isa) {
  int64_t r = 0;
  if (isa == 3) {
    for (; r + 4 <= a.rows; r += 4) index_avx512_rows<4, BF16>(a, o0, o1, r);
    if (r + 2 <= a.rows) { index_avx512_rows<2, BF16>(a, o0, o1, r); r += 2; }
    if (r < a.rows && a.rows == 1) index_avx512_streams<BF16>(a, o0, o1);
    else if (r < a.rows) index_avx512_rows<1, BF16>(a, o0, o1, r);
  } else if (isa == 2) {
    for (; r + 4 <= a.rows; r += 4) index_avx2_rows<4, BF16>(a, o0, o1, r);
    if (r + 2 <= a.rows) { index_avx2_rows<2, BF16>(a, o0, o1, r); r += 2; }
    if (r < a.rows) index_avx2_rows<1, BF16>(a, o0, o1, r);
  } else {
    index_scalar_range<BF16>(a, o0, o1);
  }
}

// Tiled rows: for each tile of TW x rows, y[r, o] = sum_k W[o, cols[k]] * xt[tile, cols[k], r - tile TW] + b[o];
// AVX-512: TW = 16 or 32; the sums of 16 outputs go to y [rows, out] through a small buffer.
template <int TW, bool BF16>
__attribute__((target("avx512f,avx512bw,avx512vl")))
void tiled_avx512_range(const IndexArgs& a, int64_t o0, int64_t o1) {
  constexpr int NV = TW / 16;
  const int64_t tiles = (a.rows + TW - 1) / TW;
  // the sums of 16 outputs for the tile's rows, [output][TW], written to y [rows, out] by gathers
  alignas(64) float buf[16 * TW];
  const __m512i step = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                          _mm512_set1_epi32(TW));
  for (int64_t t = 0; t < tiles; ++t) {
    const float* xt = a.x + t * a.ldx * TW;
    {
      for (int64_t o = o0; o < o1; ++o) {
        int64_t k = a.row_ptr[o];
        const int64_t end = a.row_ptr[o + 1];
        // U values at once, U * NV independent accumulators (the FMA latency, not the loads, bounds
        // one accumulator chain per value)
        constexpr int U = 4;
        __m512 acc[U][NV];
#pragma GCC unroll 4
        for (int u = 0; u < U; ++u)
#pragma GCC unroll 2
          for (int v = 0; v < NV; ++v) acc[u][v] = _mm512_setzero_ps();
        for (; k + U <= end; k += U) {
#pragma GCC unroll 4
          for (int u = 0; u < U; ++u) {
            const __m512 w = _mm512_set1_ps(value_at<BF16>(a.values, k + u));
            const float* p = xt + TW * static_cast<int64_t>(a.cols[k + u]);
#pragma GCC unroll 2
            for (int v = 0; v < NV; ++v) acc[u][v] = _mm512_fmadd_ps(w, _mm512_loadu_ps(p + 16 * v), acc[u][v]);
          }
        }
        for (; k < end; ++k) {
          const __m512 w = _mm512_set1_ps(value_at<BF16>(a.values, k));
          const float* p = xt + TW * static_cast<int64_t>(a.cols[k]);
#pragma GCC unroll 2
          for (int v = 0; v < NV; ++v) acc[0][v] = _mm512_fmadd_ps(w, _mm512_loadu_ps(p + 16 * v), acc[0][v]);
        }
#pragma GCC unroll 2
        for (int v = 0; v < NV; ++v) {
          acc[0][v] = _mm512_add_ps(_mm512_add_ps(acc[0][v], acc[1][v]), _mm512_add_ps(acc[2][v], acc[3][v]));
        }
        const __m512 b = _mm512_set1_ps(a.bias ? a.bias[o] : 0.f);
        const int64_t slot = (o - o0) % 16;
#pragma GCC unroll 2
        for (int v = 0; v < NV; ++v) _mm512_store_ps(buf + slot * TW + 16 * v, _mm512_add_ps(b, acc[0][v]));
        if (slot == 15 || o + 1 == o1) {  // 16 outputs (or the last few) done: y[r, og .. o] for the tile's rows
          const int64_t og = o - slot, n = slot + 1;
          const __mmask16 m = static_cast<__mmask16>((1u << n) - 1u);
          const int64_t live = std::min<int64_t>(TW, a.rows - t * TW);
          for (int64_t r = 0; r < live; ++r)
            _mm512_mask_storeu_ps(a.y + (t * TW + r) * a.out + og, m,
                                  _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, step, buf + r, 4));
        }
      }
    }
  }
}

template <bool BF16>
__attribute__((target("avx2,fma")))
void tiled_avx2_range(const IndexArgs& a, int64_t o0, int64_t o1) {
  const int64_t tiles = (a.rows + 15) / 16;
  for (int64_t t = 0; t < tiles; ++t) {
    const float* xt = a.x + t * a.ldx * 16;
    for (int64_t o = o0; o < o1; ++o) {
      __m256 lo0 = _mm256_setzero_ps(), hi0 = _mm256_setzero_ps(), lo1 = _mm256_setzero_ps(), hi1 = _mm256_setzero_ps();
      int64_t k = a.row_ptr[o];
      const int64_t end = a.row_ptr[o + 1];
      for (; k + 2 <= end; k += 2) {
        const __m256 w0 = _mm256_set1_ps(value_at<BF16>(a.values, k)), w1 = _mm256_set1_ps(value_at<BF16>(a.values, k + 1));
        const float* p0 = xt + 16 * static_cast<int64_t>(a.cols[k]);
        const float* p1 = xt + 16 * static_cast<int64_t>(a.cols[k + 1]);
        lo0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(p0), lo0);
        hi0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(p0 + 8), hi0);
        lo1 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(p1), lo1);
        hi1 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(p1 + 8), hi1);
      }
      if (k < end) {
        const __m256 w0 = _mm256_set1_ps(value_at<BF16>(a.values, k));
        const float* p0 = xt + 16 * static_cast<int64_t>(a.cols[k]);
        lo0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(p0), lo0);
        hi0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(p0 + 8), hi0);
      }
      const __m256 b = _mm256_set1_ps(a.bias ? a.bias[o] : 0.f);
      alignas(32) float acc[16];
      _mm256_store_ps(acc, _mm256_add_ps(_mm256_add_ps(lo0, lo1), b));
      _mm256_store_ps(acc + 8, _mm256_add_ps(_mm256_add_ps(hi0, hi1), b));
      for (int64_t j = 0; j < 16 && t * 16 + j < a.rows; ++j) a.y[(t * 16 + j) * a.out + o] = acc[j];
    }
  }
}

template <bool BF16>
void tiled_scalar_range(const IndexArgs& a, int64_t o0, int64_t o1) {
  const int64_t tiles = (a.rows + 15) / 16;
  for (int64_t t = 0; t < tiles; ++t)
    for (int64_t o = o0; o < o1; ++o) {
      float acc[16] = {0.f};
      for (int64_t k = a.row_ptr[o]; k < a.row_ptr[o + 1]; ++k) {
        const float w = value_at<BF16>(a.values, k);
        const float* p = a.x + t * a.ldx * 16 + 16 * static_cast<int64_t>(a.cols[k]);
        for (int j = 0; j < 16; ++j) acc[j] += w * p[j];
      }
      for (int64_t j = 0; j < 16 && t * 16 + j < a.rows; ++j) a.y[(t * 16 + j) * a.out + o] = acc[j] + (a.bias ? a.bias[o] : 0.f);
    }
}

// xt[tile, c, j] = x[tile TW + j, c] (zero past the last row) for the tiles [t0, t1), TW = 16 or 32.
__attribute__((target("avx512f,avx512bw,avx512vl")))
void tile_x_avx512(const float* x, int64_t rows, int64_t ldx, int64_t tw, float* xt, int64_t t0, int64_t t1) {
  const __m512i step = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                          _mm512_set1_epi32(static_cast<int32_t>(ldx)));
  for (int64_t t = t0; t < t1; ++t)
    for (int64_t v = 0; v < tw / 16; ++v) {
      const int64_t r0 = t * tw + 16 * v;
      const int64_t live = std::min<int64_t>(16, std::max<int64_t>(0, rows - r0));
      const __mmask16 m = static_cast<__mmask16>((1u << live) - 1u);
      const float* src = x + std::min<int64_t>(r0, rows - 1) * ldx;
      float* dst = xt + t * ldx * tw + 16 * v;
      for (int64_t c = 0; c < ldx; ++c)
        _mm512_storeu_ps(dst + c * tw, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, step, src + c, 4));
    }
}

void tile_x_scalar(const float* x, int64_t rows, int64_t ldx, int64_t tw, float* xt, int64_t t0, int64_t t1) {
  for (int64_t t = t0; t < t1; ++t)
    for (int64_t j = 0; j < tw; ++j) {
      const int64_t r = t * tw + j;
      for (int64_t c = 0; c < ldx; ++c) xt[(t * ldx + c) * tw + j] = r < rows ? x[r * ldx + c] : 0.f;
    }
}

// The tile width the tiled path uses: 32 rows on AVX-512 when there are at least 32, else 16.
inline int64_t tile_width(int64_t rows, int64_t isa) { return isa == 3 && rows >= 32 ? 32 : 16; }

template <bool BF16>
void tiled_range(const IndexArgs& a, int64_t o0, int64_t o1, int64_t isa) {
  if (isa == 3 && tile_width(a.rows, isa) == 32) tiled_avx512_range<32, BF16>(a, o0, o1);
  else if (isa == 3) tiled_avx512_range<16, BF16>(a, o0, o1);
  else if (isa == 2) tiled_avx2_range<BF16>(a, o0, o1);
  else tiled_scalar_range<BF16>(a, o0, o1);
}

"""
