"""The C++ source of the compressed sparse Linear kernel (built by :mod:`.native_kernel`).

Weight layout (see :mod:`.compressed`): for output row ``o`` and 16-column chunk
``c``, bit ``j`` of ``mask[o, c]`` says whether column ``16c + j`` is kept; the
kept values of row ``o`` lie packed, in column order, from ``values[row_ptr[o]]``.
The product ``y[r, o] = Σ_i x[r, i] · W[o, i] + b[o]`` decodes inside the loop:

* AVX-512: ``_mm512_maskz_expand_ps`` puts the next ``popcount(m)`` packed
  values into the lanes whose mask bit is set, one FMA with 16 ``x`` values
  per ``x`` row, the value pointer advances by ``popcount(m)`` (computed per
  group of four chunks from one 64-bit word, so no popcount chain forms).
  bf16: ``_mm512_maskz_expand_epi16`` (AVX512-VBMI2) expands 32 columns at
  once and ``_mm512_unpacklo/hi_epi16`` against zero put each value in the
  high half of a 32-bit lane, which is its float32; ``x`` is permuted once per
  call to the order of the unpacks;
* AVX2: the same per 8 columns, with a permutation table indexed by the mask byte;
* scalar: one loop over the set bits.

One value stream alone does not keep enough memory reads in flight to reach
a core's bandwidth, so with one ``x`` row four output rows from distant parts
of a thread's range are computed together (two with two ``x`` rows), and the
value and mask streams are prefetched 1 KiB ahead.

Up to 8 ``x`` rows (4 on AVX2) share one decode. Four paths (``choose_path``,
forced with ``path``):

* bitmask: the decode above, vectorised over columns (few rows);
* index: with the 16-bit column of each kept value (:mod:`.kernel_index`),
  gathers of ``x`` and one FMA per 16 kept values — work proportional to the
  kept values, for 1–2 rows of weights more than 80 % zeros;
* tiled: ``x`` in tiles of 16/32 rows, each kept value broadcast against one
  line of its column (:mod:`.kernel_index`), from 3 rows (weights > 80 %
  zeros), 8 rows (> 60 %) or 16 rows;
* rows: without column indices (more than 65536 input features), the
  bitmask path vectorised over rows (:mod:`.kernel_many_rows`): ``x``
  transposed, each output row's kept columns decoded once into a list
  (AVX-512 ``_mm512_maskz_compress_epi32``, AVX2 a table of set-bit
  positions), ``xT[i, :]`` times ``W[o, i]`` added to ``yT[o, :]``.

Output rows are split
over threads with ``at::parallel_for``. The ISA is chosen at run time
(``__builtin_cpu_supports``) and each path is compiled with its own
``__attribute__((target(...)))``, so the extension builds without ``-march``.
"""

from __future__ import annotations

from .kernel_index import INDEX_PATHS
from .kernel_many_rows import MANY_ROWS

__all__ = ["SOURCE", "FUNCTIONS"]

FUNCTIONS = ["sparse_linear", "sparse_linear_nd", "supported_isas", "choose_path"]

SOURCE = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>
#include <string>

namespace {

struct Args {
  const uint16_t* mask;    // [out, chunks]
  const void* values;      // packed kept values (float or bf16 bits), padded by 32 entries
  const int64_t* row_ptr;  // [out + 1]
  int64_t chunks;          // ceil(in / 16)
  const float* x;          // [rows, ldx], ldx >= chunks * 16, zero padded
  int64_t ldx;
  int64_t rows;
  float* y;                // [rows, out]
  int64_t out;
  const float* bias;       // [out] or nullptr
  const float* xp;         // bf16 AVX-512 path: x with each 32 columns in the order of the unpack
};

inline float bf16_to_float(uint16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// ---------------------------------------------------------------- scalar
template <bool BF16>
void scalar_range(const Args& a, int64_t o0, int64_t o1) {
  for (int64_t o = o0; o < o1; ++o) {
    const uint16_t* m = a.mask + o * a.chunks;
    const float b = a.bias ? a.bias[o] : 0.f;
    for (int64_t r0 = 0; r0 < a.rows; r0 += 16) {
      const int64_t nr = std::min<int64_t>(16, a.rows - r0);
      float acc[16] = {0.f};
      int64_t k = a.row_ptr[o];
      for (int64_t c = 0; c < a.chunks; ++c) {
        uint32_t bits = m[c];
        while (bits) {
          const int j = __builtin_ctz(bits);
          bits &= bits - 1;
          float w;
          if constexpr (BF16) w = bf16_to_float(static_cast<const uint16_t*>(a.values)[k]);
          else w = static_cast<const float*>(a.values)[k];
          ++k;
          const float* xc = a.x + r0 * a.ldx + c * 16 + j;
          for (int64_t r = 0; r < nr; ++r) acc[r] += w * xc[r * a.ldx];
        }
      }
      for (int64_t r = 0; r < nr; ++r) a.y[(r0 + r) * a.out + o] = acc[r] + b;
    }
  }
}

// ---------------------------------------------------------------- AVX-512
template <bool BF16>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512vbmi2,popcnt")))
inline __m512 expand16(__mmask16 k, const void* p) {
  if constexpr (BF16) {
    const __m256i h = _mm256_maskz_expand_epi16(k, _mm256_loadu_si256(static_cast<const __m256i*>(p)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  } else {
    return _mm512_maskz_expand_ps(k, _mm512_loadu_ps(static_cast<const float*>(p)));
  }
}

// how far ahead of the value stream the few-row paths prefetch
constexpr int64_t kPrefetchBytes = 1024;

__attribute__((always_inline)) inline uint64_t load_words(const uint16_t* m) {  // four 16-bit mask words at once
  uint64_t w;
  std::memcpy(&w, m, sizeof w);
  return w;
}

// Offsets of the 2nd, 3rd and 4th chunk's values within a group of four, and the group's
// count: independent popcounts (a running p += popcount(m) per chunk would chain them).
__attribute__((always_inline)) inline void group_offsets(uint64_t w, int off[4], int& total) {
  off[0] = 0;
  off[1] = __builtin_popcountll(w & 0xffffull);
  off[2] = __builtin_popcountll(w & 0xffffffffull);
  off[3] = __builtin_popcountll(w & 0xffffffffffffull);
  total = __builtin_popcountll(w);
}

// S output rows at once, from S distant parts of the range [o0, o1): S independent value
// streams keep more memory reads in flight than one (one stream alone does not reach the
// memory bandwidth a core has). Stream s takes rows o0 + s * step + i.
template <int R, int S, bool BF16>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512vbmi2,popcnt")))
void avx512_rows(const Args& a, int64_t o0, int64_t step, int64_t r0) {
  using V = typename std::conditional<BF16, uint16_t, float>::type;
  constexpr int U = R <= 2 ? 2 : 1;  // independent accumulators per (stream, x row)
  const float* x = a.x + r0 * a.ldx;
  const int64_t ldx = a.ldx, chunks = a.chunks;
  for (int64_t i = 0; i < step; ++i) {
    const uint16_t* m[S];
    const V* p[S];
    __m512 acc[S][U][R];
#pragma GCC unroll 8
    for (int s = 0; s < S; ++s) {
      const int64_t o = o0 + s * step + i;
      m[s] = a.mask + o * chunks;
      p[s] = static_cast<const V*>(a.values) + a.row_ptr[o];
#pragma GCC unroll 8
      for (int u = 0; u < U; ++u)
#pragma GCC unroll 16
        for (int r = 0; r < R; ++r) acc[s][u][r] = _mm512_setzero_ps();
    }
    int64_t c = 0;
    for (; c + 4 <= chunks; c += 4) {
      int off[S][4], total[S];
#pragma GCC unroll 8
      for (int s = 0; s < S; ++s) {
        // the value stream's addresses depend on the mask words: fetch both well ahead
        _mm_prefetch(reinterpret_cast<const char*>(p[s]) + kPrefetchBytes, _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(m[s] + c) + kPrefetchBytes / 4, _MM_HINT_T0);
        group_offsets(load_words(m[s] + c), off[s], total[s]);
      }
      if constexpr (BF16) {
        // 32 columns per expand: 32 bf16 lanes, then the unpacks put each value in the high half
        // of a 32-bit lane (= its float32) in the order xp was permuted to
        const __m512i zero = _mm512_setzero_si512();
#pragma GCC unroll 2
        for (int h = 0; h < 2; ++h) {
          const float* xr = a.xp + r0 * ldx + (c + 2 * h) * 16;
          __m512 xl[R], xh[R];  // loaded once, shared by the S streams
#pragma GCC unroll 16
          for (int r = 0; r < R; ++r) { xl[r] = _mm512_loadu_ps(xr + r * ldx); xh[r] = _mm512_loadu_ps(xr + r * ldx + 16); }
#pragma GCC unroll 8
          for (int s = 0; s < S; ++s) {
            const __mmask32 k = _load_mask32(reinterpret_cast<__mmask32*>(const_cast<uint16_t*>(m[s] + c + 2 * h)));
            const __m512i v = _mm512_maskz_expand_epi16(k, _mm512_loadu_si512(p[s] + off[s][2 * h]));
            const __m512 wl = _mm512_castsi512_ps(_mm512_unpacklo_epi16(zero, v));
            const __m512 wh = _mm512_castsi512_ps(_mm512_unpackhi_epi16(zero, v));
#pragma GCC unroll 16
            for (int r = 0; r < R; ++r) {
              acc[s][0][r] = _mm512_fmadd_ps(wl, xl[r], acc[s][0][r]);
              acc[s][1 % U][r] = _mm512_fmadd_ps(wh, xh[r], acc[s][1 % U][r]);
            }
          }
        }
      } else {
#pragma GCC unroll 4
        for (int g = 0; g < 4; ++g) {
          __m512 xv[R];  // loaded once, shared by the S streams
#pragma GCC unroll 16
          for (int r = 0; r < R; ++r) xv[r] = _mm512_loadu_ps(x + r * ldx + (c + g) * 16);
#pragma GCC unroll 8
          for (int s = 0; s < S; ++s) {
            const __m512 w = expand16<BF16>(_load_mask16(reinterpret_cast<__mmask16*>(const_cast<uint16_t*>(m[s] + c + g))), p[s] + off[s][g]);
#pragma GCC unroll 16
            for (int r = 0; r < R; ++r) acc[s][g % U][r] = _mm512_fmadd_ps(w, xv[r], acc[s][g % U][r]);
          }
        }
      }
#pragma GCC unroll 8
      for (int s = 0; s < S; ++s) p[s] += total[s];
    }
    for (; c < chunks; ++c) {
#pragma GCC unroll 8
      for (int s = 0; s < S; ++s) {
        const uint32_t bits = m[s][c];
        const __m512 w = expand16<BF16>(static_cast<__mmask16>(bits), p[s]);
        p[s] += __builtin_popcount(bits);
#pragma GCC unroll 16
        for (int r = 0; r < R; ++r)
          acc[s][0][r] = _mm512_fmadd_ps(w, _mm512_loadu_ps(x + r * ldx + c * 16), acc[s][0][r]);
      }
    }
#pragma GCC unroll 8
    for (int s = 0; s < S; ++s) {
      const int64_t o = o0 + s * step + i;
      const float b = a.bias ? a.bias[o] : 0.f;
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) {
        __m512 sum = acc[s][0][r];
#pragma GCC unroll 8
        for (int u = 1; u < U; ++u) sum = _mm512_add_ps(sum, acc[s][u][r]);
        a.y[(r0 + r) * a.out + o] = _mm512_reduce_add_ps(sum) + b;
      }
    }
  }
}

// All rows of [o0, o1) for x rows r0 .. r0 + R - 1: S streams over the largest multiple of S, then one.
template <int R, bool BF16>
void avx512_block(const Args& a, int64_t o0, int64_t o1, int64_t r0) {
  constexpr int S = R == 1 ? 4 : (R == 2 ? 2 : 1);
  const int64_t step = (o1 - o0) / S;
  if (step > 0) avx512_rows<R, S, BF16>(a, o0, step, r0);
  if (S > 1 && o0 + S * step < o1) avx512_rows<R, 1, BF16>(a, o0 + S * step, o1 - o0 - S * step, r0);
}

template <bool BF16>
void avx512_range(const Args& a, int64_t o0, int64_t o1) {
  int64_t r = 0;
  for (; r + 8 <= a.rows; r += 8) avx512_block<8, BF16>(a, o0, o1, r);
  if (r + 4 <= a.rows) { avx512_block<4, BF16>(a, o0, o1, r); r += 4; }
  if (r + 2 <= a.rows) { avx512_block<2, BF16>(a, o0, o1, r); r += 2; }
  if (r < a.rows) avx512_block<1, BF16>(a, o0, o1, r);
}

// ---------------------------------------------------------------- AVX2
struct Table {
  alignas(32) int32_t perm[256][8];  // lane j takes packed value perm[m][j]
  alignas(32) int32_t keep[256][8];  // -1 where bit j of m is set
  alignas(32) int32_t where[256][8]; // the positions of m's set bits, packed
  Table() {
    for (int m = 0; m < 256; ++m) {
      int n = 0;
      for (int j = 0; j < 8; ++j) where[m][j] = 0;
      for (int j = 0; j < 8; ++j) if ((m >> j) & 1) where[m][n++] = j;
      n = 0;
      for (int j = 0; j < 8; ++j) {
        const bool set = (m >> j) & 1;
        perm[m][j] = set ? n : 0;
        keep[m][j] = set ? -1 : 0;
        n += set;
      }
    }
  }
};
const Table kTable;

template <bool BF16>
__attribute__((target("avx2,fma,popcnt")))
inline __m256 expand8(uint32_t k, const void* p) {
  __m256 v;
  if constexpr (BF16) {
    const __m128i h = _mm_loadu_si128(static_cast<const __m128i*>(p));
    v = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  } else {
    v = _mm256_loadu_ps(static_cast<const float*>(p));
  }
  const __m256i idx = _mm256_load_si256(reinterpret_cast<const __m256i*>(kTable.perm[k]));
  const __m256 keep = _mm256_castsi256_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(kTable.keep[k])));
  return _mm256_and_ps(_mm256_permutevar8x32_ps(v, idx), keep);
}

// As avx512_rows: S output rows at once (independent value streams), 8 columns per expand.
template <int R, int S, bool BF16>
__attribute__((target("avx2,fma,popcnt")))
void avx2_rows(const Args& a, int64_t o0, int64_t step, int64_t r0) {
  using V = typename std::conditional<BF16, uint16_t, float>::type;
  const float* x = a.x + r0 * a.ldx;
  const int64_t ldx = a.ldx, chunks = a.chunks;
  for (int64_t i = 0; i < step; ++i) {
    const uint16_t* m[S];
    const V* p[S];
    __m256 acc0[S][R], acc1[S][R];
#pragma GCC unroll 8
    for (int s = 0; s < S; ++s) {
      const int64_t o = o0 + s * step + i;
      m[s] = a.mask + o * chunks;
      p[s] = static_cast<const V*>(a.values) + a.row_ptr[o];
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) { acc0[s][r] = _mm256_setzero_ps(); acc1[s][r] = _mm256_setzero_ps(); }
    }
    int64_t c = 0;
    for (; c + 4 <= chunks; c += 4) {
      uint64_t w[S];
#pragma GCC unroll 8
      for (int s = 0; s < S; ++s) {
        _mm_prefetch(reinterpret_cast<const char*>(p[s]) + kPrefetchBytes, _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(m[s] + c) + kPrefetchBytes / 4, _MM_HINT_T0);
        w[s] = load_words(m[s] + c);
      }
#pragma GCC unroll 8
      for (int h = 0; h < 8; ++h) {  // eight groups of 8 columns
        __m256 xv[R];
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) xv[r] = _mm256_loadu_ps(x + r * ldx + c * 16 + 8 * h);
#pragma GCC unroll 8
        for (int s = 0; s < S; ++s) {
          const uint32_t byte = static_cast<uint32_t>(w[s] >> (8 * h)) & 0xffu;
          const int off = h ? __builtin_popcountll(w[s] & ((1ull << (8 * h)) - 1)) : 0;
          const __m256 wv = expand8<BF16>(byte, p[s] + off);
#pragma GCC unroll 8
          for (int r = 0; r < R; ++r) {
            if (h & 1) acc1[s][r] = _mm256_fmadd_ps(wv, xv[r], acc1[s][r]);
            else acc0[s][r] = _mm256_fmadd_ps(wv, xv[r], acc0[s][r]);
          }
        }
      }
#pragma GCC unroll 8
      for (int s = 0; s < S; ++s) p[s] += __builtin_popcountll(w[s]);
    }
    for (; c < chunks; ++c) {
#pragma GCC unroll 8
      for (int s = 0; s < S; ++s) {
        const uint32_t k = m[s][c];
        const uint32_t lo = k & 0xffu, hi = k >> 8;
        const __m256 wl = expand8<BF16>(lo, p[s]);
        p[s] += __builtin_popcount(lo);
        const __m256 wh = expand8<BF16>(hi, p[s]);
        p[s] += __builtin_popcount(hi);
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) {
          acc0[s][r] = _mm256_fmadd_ps(wl, _mm256_loadu_ps(x + r * ldx + c * 16), acc0[s][r]);
          acc1[s][r] = _mm256_fmadd_ps(wh, _mm256_loadu_ps(x + r * ldx + c * 16 + 8), acc1[s][r]);
        }
      }
    }
#pragma GCC unroll 8
    for (int s = 0; s < S; ++s) {
      const int64_t o = o0 + s * step + i;
      const float b = a.bias ? a.bias[o] : 0.f;
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const __m256 sum = _mm256_add_ps(acc0[s][r], acc1[s][r]);
        const __m128 q = _mm_add_ps(_mm256_castps256_ps128(sum), _mm256_extractf128_ps(sum, 1));
        const __m128 hh = _mm_add_ps(q, _mm_movehl_ps(q, q));
        const __m128 t = _mm_add_ss(hh, _mm_shuffle_ps(hh, hh, 1));
        a.y[(r0 + r) * a.out + o] = _mm_cvtss_f32(t) + b;
      }
    }
  }
}

template <int R, bool BF16>
void avx2_block(const Args& a, int64_t o0, int64_t o1, int64_t r0) {
  constexpr int S = R == 1 ? 4 : (R == 2 ? 2 : 1);
  const int64_t step = (o1 - o0) / S;
  if (step > 0) avx2_rows<R, S, BF16>(a, o0, step, r0);
  if (S > 1 && o0 + S * step < o1) avx2_rows<R, 1, BF16>(a, o0 + S * step, o1 - o0 - S * step, r0);
}

template <bool BF16>
void avx2_range(const Args& a, int64_t o0, int64_t o1) {
  int64_t r = 0;
  for (; r + 4 <= a.rows; r += 4) avx2_block<4, BF16>(a, o0, o1, r);
  if (r + 2 <= a.rows) { avx2_block<2, BF16>(a, o0, o1, r); r += 2; }
  if (r < a.rows) avx2_block<1, BF16>(a, o0, o1, r);
}

""" + MANY_ROWS + INDEX_PATHS + r"""
// ---------------------------------------------------------------- dispatch
enum Isa : int64_t { kAuto = 0, kScalar = 1, kAvx2 = 2, kAvx512 = 3 };
// Paths: bitmask decode vectorised over columns (few rows); column-index gathers (few rows,
// very sparse); bitmask decode vectorised over rows (many rows, no column indices); 16-row
// tiles with column indices (many rows).
enum Path : int64_t { kPathAuto = 0, kBitmask = 1, kIndex = 2, kRows = 3, kTiled = 4 };
// Without column indices: the many-row bitmask path above kManyRows x rows, or above kFewRows
// when the weight is sparser than kSparse. With them (measured on AVX-512, fp32): the tiled
// path from kTiledRows[0] x rows for weights sparser than kTiledSparse[0], kTiledRows[1]
// sparser than kTiledSparse[1], else kTiledRows[2]; below that the gather path up to
// kIndexRows rows for weights sparser than kIndexSparse, else the bitmask path.
constexpr int64_t kFewRows = 8, kManyRows = 32, kIndexRows = 2;
constexpr double kSparse = 0.7, kIndexSparse = 0.8;
constexpr int64_t kTiledRows[3] = {3, 8, 16};
constexpr double kTiledSparse[2] = {0.8, 0.6};

bool has_avx512(bool bf16) {
  __builtin_cpu_init();
  const bool base = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
                    && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("popcnt");
  return base && (!bf16 || __builtin_cpu_supports("avx512vbmi2"));
}

bool has_avx2() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("popcnt");
}

}  // namespace

// The ISAs this CPU runs, per weight dtype: {"scalar", "avx2", "avx512"} as available.
std::vector<std::string> supported_isas(bool bf16) {
  std::vector<std::string> out{"scalar"};
  if (has_avx2()) out.push_back("avx2");
  if (has_avx512(bf16)) out.push_back("avx512");
  return out;
}

// The path sparse_linear takes for `rows` x rows (see enum Path), the weight holding nnz of out * chunks * 16.
int64_t choose_path(int64_t rows, int64_t nnz, int64_t out, int64_t chunks, bool has_cols) {
  const double density = static_cast<double>(nnz) / static_cast<double>(std::max<int64_t>(1, out * chunks * 16));
  if (!has_cols) return rows > kManyRows || (rows > kFewRows && density < 1.0 - kSparse) ? kRows : kBitmask;
  const int64_t tiled_from = density < 1.0 - kTiledSparse[0] ? kTiledRows[0]
                             : (density < 1.0 - kTiledSparse[1] ? kTiledRows[1] : kTiledRows[2]);
  if (rows >= tiled_from) return kTiled;
  if (rows <= kIndexRows && density < 1.0 - kIndexSparse) return kIndex;
  return kBitmask;
}

// y[r, o] = sum_i x[r, i] W[o, i] + b[o] with W in the bitmask + packed values layout.
// x: float32 [rows, ldx] contiguous, ldx = 16 * chunks, zero padded past in_features.
// cols (optional): int16 [nnz + 32], the column of each packed value (the index paths need it).
// path: 0 = auto (choose_path), else one of enum Path.
torch::Tensor sparse_linear(torch::Tensor x, torch::Tensor mask, torch::Tensor values, torch::Tensor row_ptr,
                            c10::optional<torch::Tensor> bias, int64_t isa, c10::optional<torch::Tensor> cols,
                            int64_t path) {
  TORCH_CHECK(x.device().is_cpu() && mask.device().is_cpu() && values.device().is_cpu(), "CPU tensors only");
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == torch::kFloat && x.is_contiguous(), "x: contiguous float32 [rows, 16*chunks]");
  TORCH_CHECK(mask.dim() == 2 && mask.scalar_type() == torch::kShort && mask.is_contiguous(), "mask: contiguous int16 [out, chunks]");
  TORCH_CHECK(values.dim() == 1 && values.is_contiguous(), "values: contiguous 1-D");
  TORCH_CHECK(row_ptr.dim() == 1 && row_ptr.scalar_type() == torch::kLong && row_ptr.is_contiguous(), "row_ptr: contiguous int64");
  const int64_t out = mask.size(0), chunks = mask.size(1);
  TORCH_CHECK(row_ptr.numel() == out + 1, "row_ptr must have out + 1 entries");
  TORCH_CHECK(x.size(1) == chunks * 16, "x must be padded to 16 * chunks columns");
  const bool bf16 = values.scalar_type() == torch::kBFloat16;
  TORCH_CHECK(bf16 || values.scalar_type() == torch::kFloat, "values must be float32 or bfloat16");
  const int64_t* rp = row_ptr.data_ptr<int64_t>();
  TORCH_CHECK(values.numel() >= rp[out] + 32, "values must hold the packed values plus 32 padding entries");
  const float* b = nullptr;
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK(bias->scalar_type() == torch::kFloat && bias->is_contiguous() && bias->numel() == out, "bias: float32 [out]");
    b = bias->data_ptr<float>();
  }
  if (isa == kAuto) isa = has_avx512(bf16) ? kAvx512 : (has_avx2() ? kAvx2 : kScalar);
  TORCH_CHECK(isa != kAvx512 || has_avx512(bf16), "this CPU lacks the AVX-512 features (F, BW, VL", bf16 ? ", VBMI2" : "", ")");
  TORCH_CHECK(isa != kAvx2 || has_avx2(), "this CPU lacks AVX2/FMA");
  TORCH_CHECK(isa >= kScalar && isa <= kAvx512, "isa must be 0 (auto), 1 (scalar), 2 (avx2) or 3 (avx512)");
  auto y = torch::empty({x.size(0), out}, x.options());
  Args a{reinterpret_cast<const uint16_t*>(mask.data_ptr()), values.data_ptr(), rp, chunks,
         x.data_ptr<float>(), x.size(1), x.size(0), y.data_ptr<float>(), out, b, nullptr};
  if (a.rows == 0 || out == 0) return y;
  const bool has_cols = cols.has_value() && cols->defined();
  if (has_cols)
    TORCH_CHECK(cols->scalar_type() == torch::kShort && cols->dim() == 1 && cols->is_contiguous()
                && cols->numel() >= rp[out] + 32, "cols: contiguous int16 [nnz + 32]");
  TORCH_CHECK(path >= kPathAuto && path <= kTiled, "path must be 0 (auto), 1 (bitmask), 2 (index), 3 (rows) or 4 (tiled)");
  if (path == kPathAuto) path = choose_path(a.rows, rp[out], out, chunks, has_cols);
  TORCH_CHECK(has_cols || (path != kIndex && path != kTiled), "the index and tiled paths need cols");
  if (path == kIndex || path == kTiled) {
    const uint16_t* cp = reinterpret_cast<const uint16_t*>(cols->data_ptr());
    if (path == kIndex) {
      IndexArgs ia{cp, a.values, rp, a.x, a.ldx, a.rows, a.y, out, b};
      const int64_t grain_i = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, rp[out] / out + 1));
      at::parallel_for(0, out, grain_i, [&](int64_t o0, int64_t o1) {
        if (bf16) index_range<true>(ia, o0, o1, isa); else index_range<false>(ia, o0, o1, isa);
      });
      return y;
    }
    const int64_t tw = tile_width(a.rows, isa), tiles = (a.rows + tw - 1) / tw;
    auto xt = torch::empty({tiles, a.ldx, tw}, x.options());
    float* xtp = xt.data_ptr<float>();
    at::parallel_for(0, tiles, 1, [&](int64_t t0, int64_t t1) {
      if (isa == kAvx512) tile_x_avx512(a.x, a.rows, a.ldx, tw, xtp, t0, t1);
      else tile_x_scalar(a.x, a.rows, a.ldx, tw, xtp, t0, t1);
    });
    IndexArgs ta{cp, a.values, rp, xtp, a.ldx, a.rows, a.y, out, b};
    const int64_t grain_t = std::max<int64_t>(1, 8192 / std::max<int64_t>(1, (rp[out] / out + 1) * tiles));
    at::parallel_for(0, out, grain_t, [&](int64_t o0, int64_t o1) {
      if (bf16) tiled_range<true>(ta, o0, o1, isa); else tiled_range<false>(ta, o0, o1, isa);
    });
    return y;
  }
  if (path == kRows) {
    const int64_t rows_p = (a.rows + 15) / 16 * 16;
    auto xt = torch::zeros({chunks * 16, rows_p}, x.options());
    xt.narrow(1, 0, a.rows).copy_(x.t());
    auto yt = torch::empty({out, rows_p}, x.options());
    TokenArgs t{a.mask, a.values, rp, chunks, xt.data_ptr<float>(), rows_p, yt.data_ptr<float>(), b};
    const int64_t grain_t = std::max<int64_t>(1, 8192 / std::max<int64_t>(1, (rp[out] / std::max<int64_t>(1, out) + 1) * rows_p / 16));
    at::parallel_for(0, out, grain_t, [&](int64_t o0, int64_t o1) {
      if (bf16) token_range<true>(t, o0, o1, isa); else token_range<false>(t, o0, o1, isa);
    });
    y.copy_(yt.narrow(1, 0, a.rows).t());
    return y;
  }
  torch::Tensor xp;
  if (bf16 && isa == kAvx512) {
    // per 32 columns: unpacklo takes words 8L..8L+3 of each 128-bit lane L, unpackhi 8L+4..8L+7
    xp = torch::empty_like(x);
    const float* src = x.data_ptr<float>();
    float* dst = xp.data_ptr<float>();
    const int64_t ld = x.size(1), blocks = ld / 32;
    for (int64_t r = 0; r < a.rows; ++r)
      for (int64_t b = 0; b < blocks; ++b)
        for (int L = 0; L < 4; ++L)
          for (int j = 0; j < 4; ++j) {
            dst[r * ld + 32 * b + 4 * L + j] = src[r * ld + 32 * b + 8 * L + j];
            dst[r * ld + 32 * b + 16 + 4 * L + j] = src[r * ld + 32 * b + 8 * L + 4 + j];
          }
    a.xp = dst;
  }
  void (*fn)(const Args&, int64_t, int64_t);
  if (isa == kAvx512) fn = bf16 ? avx512_range<true> : avx512_range<false>;
  else if (isa == kAvx2) fn = bf16 ? avx2_range<true> : avx2_range<false>;
  else fn = bf16 ? scalar_range<true> : scalar_range<false>;
  // grain: at least ~64K weight entries per task so that small layers are not split too finely
  const int64_t grain = std::max<int64_t>(1, 65536 / std::max<int64_t>(1, chunks * 16));
  at::parallel_for(0, out, grain, [&](int64_t o0, int64_t o1) { fn(a, o0, o1); });
  return y;
}

// The same for x of shape [..., in_features] and any floating dtype: flattened, converted to
// float32 and zero padded here (cheaper than the same steps in Python); y has x's dtype.
torch::Tensor sparse_linear_nd(torch::Tensor x, torch::Tensor mask, torch::Tensor values, torch::Tensor row_ptr,
                               c10::optional<torch::Tensor> bias, int64_t isa, int64_t in_features,
                               c10::optional<torch::Tensor> cols, int64_t path) {
  TORCH_CHECK(x.dim() >= 1 && x.size(-1) == in_features, "x: last dim must be in_features");
  auto sizes = x.sizes().vec();
  auto x2 = x.reshape({-1, in_features});
  if (x2.scalar_type() != torch::kFloat) x2 = x2.to(torch::kFloat);
  const int64_t width = mask.size(1) * 16;
  if (width != in_features) x2 = at::constant_pad_nd(x2, {0, width - in_features}, 0);
  auto y = sparse_linear(x2.contiguous(), mask, values, row_ptr, bias, isa, cols, path);
  sizes.back() = mask.size(0);
  y = y.view(sizes);
  if (x.scalar_type() != torch::kFloat) y = y.to(x.scalar_type());
  return y;
}
"""
