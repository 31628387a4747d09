// moe_gemm_fp8_blocked (see moe_gemm_fp8.h): FP8 e4m3 block-scaled matrix-vector products, 4 output
// rows at a time. An AVX-512 body picked at run time (no -march flag needed) and a portable loop for
// other CPUs; both follow the same per-tile blocking, so they share one error bound.
#include "kernels/moe_gemm_fp8.h"

#include <algorithm>
#include <array>
#include <cstddef>
#include <string>

#include "kernels/error.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace deepfit::kernels {
namespace {

// Rows per group: 4 rows' accumulators and weight streams fit the registers, and each activation
// load serves 4 rows.
constexpr std::int64_t kRowsPerGroup = 4;
constexpr auto kTile = static_cast<std::size_t>(kFp8ScaleTile);  // columns per scale tile
constexpr std::size_t kLanes = 16;                                 // fp32 lanes of a partial sum

// ---- Portable path. e4m3 -> fp32 through a 256-entry table; per tile 16 lane sums of at most 8
// products, then scaled and added to 16 running sums, reduced pairwise at the end.
// TODO(#4): an AVX2 path (VPMOVSXBW + VCVTPH2PS work the same at 256 bits).

// |e4m3| for the 7 low bits v: subnormals (exponent 0) m * 2^-9, normals (8 + m) * 2^(e - 10).
// 0x7F, e4m3's NaN, follows the normal pattern to 480, as the vector path reads it (moe_gemm_fp8.h).
constexpr float e4m3_magnitude(unsigned v) {
  const unsigned e = v >> 3;
  const unsigned m = v & 7u;
  float value = static_cast<float>(e == 0 ? m : 8 + m);
  for (int p = (e == 0 ? 1 : static_cast<int>(e)) - 10; p != 0; p += p > 0 ? -1 : 1) {
    value = p > 0 ? value * 2.0f : value * 0.5f;  // powers of two: exact
  }
  return value;
}

constexpr std::array<float, 256> make_fp8_table() {
  std::array<float, 256> t{};
  for (unsigned v = 0; v < 256; ++v) t[v] = (v & 0x80u) != 0 ? -e4m3_magnitude(v & 0x7Fu) : e4m3_magnitude(v);
  return t;
}

constexpr std::array<float, 256> kFp8Values = make_fp8_table();

const unsigned char* bytes_of(const std::byte* p) { return reinterpret_cast<const unsigned char*>(p); }

float fp8_row_portable(const unsigned char* w, std::size_t K, const float* scale_row, const float* x) {
  float acc[kLanes] = {};
  for (std::size_t k0 = 0; k0 < K; k0 += kTile) {
    const std::size_t len = std::min(kTile, K - k0);
    float tile[kLanes] = {};
    std::size_t i = 0;
    for (; i + kLanes <= len; i += kLanes) {
      for (std::size_t l = 0; l < kLanes; ++l) tile[l] += kFp8Values[w[k0 + i + l]] * x[k0 + i + l];
    }
    for (std::size_t l = 0; i + l < len; ++l) tile[l] += kFp8Values[w[k0 + i + l]] * x[k0 + i + l];
    const float s = scale_row[k0 / kTile];
    for (std::size_t l = 0; l < kLanes; ++l) acc[l] += tile[l] * s;
  }
  for (std::size_t width = kLanes / 2; width > 0; width /= 2) {
    for (std::size_t l = 0; l < width; ++l) acc[l] += acc[l + width];
  }
  return acc[0];
}

// The weights of the row group after the current one, [cursor, end), which the vector kernels
// prefetch while they compute the current group (see prefetch_rows and prefetch_next). Empty for
// the last group of a slice.
struct NextGroup {
  const std::byte* cursor;
  const std::byte* end;
};

// ---- x86: the AVX-512 body. GCC 12's AVX-512 headers fill the unused operand of many intrinsics
// with a self-initialized placeholder (_mm512_undefined_*), which -Wuninitialized reports inside
// those system headers once inlined here at -O3 (fixed in GCC 13); the pragmas silence that here only.
#if defined(__x86_64__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,f16c,fma")
namespace avx512 {

// Activation vectors per batched pass: their 4 x 16 running sums (4 KiB) stay on the stack, and
// each decoded tile serves 16 vectors before the next is decoded.
constexpr std::size_t kBatchChunk = 16;

// Software prefetch of the next row group, kBytes per call, one point per 64-byte line; points past
// the group's end are clamped to its last byte, so no address outside the weights is formed.
template <std::size_t kBytes>
inline void prefetch_next(NextGroup& next) {
  if (next.cursor >= next.end) return;
#pragma GCC unroll 16
  for (std::size_t off = 0; off < kBytes; off += 64) {
    const std::byte* p = next.end - next.cursor > static_cast<std::ptrdiff_t>(off) ? next.cursor + off : next.end - 1;
    _mm_prefetch(reinterpret_cast<const char*>(p), _MM_HINT_T1);
  }
  next.cursor = next.end - next.cursor > static_cast<std::ptrdiff_t>(kBytes) ? next.cursor + kBytes : next.end;
}

// Software prefetch for the streaming path (fp8_rows), into L2, kPrefetchBytes ahead of the loads
// on each of the R row streams (2 lines per row per 128-column tile); past a row's end, the same
// row of the next group. The group's R rows are R streams a row apart, which the hardware
// prefetchers alone follow too slowly to keep the decoding busy; prefetching the next group in
// address order (as moe_gemm_blocked does, and the batched path below) measured slower here than
// these per-row streams. Offsets are compared before a pointer is formed, so no address outside
// the weights is computed. always_inline: a separate function holding only prefetches reads as
// having no effect to GCC's pure-const analysis, which then drops the call.
constexpr std::size_t kPrefetchBytes = 4096;

template <int R>
[[gnu::always_inline]] inline void prefetch_rows(const std::byte* w, std::size_t K, std::size_t k0, NextGroup next) {
  const std::size_t ahead = k0 + kPrefetchBytes;
  const auto next_bytes = static_cast<std::size_t>(next.end - next.cursor);
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
    const std::byte* base = w + static_cast<std::size_t>(r) * K;
    std::size_t off = ahead;
    std::size_t limit = K;
    if (ahead >= K) {
      base = next.cursor;
      off = static_cast<std::size_t>(r) * K + (ahead - K);
      limit = next_bytes;
      if (off >= limit) continue;
    }
    _mm_prefetch(reinterpret_cast<const char*>(base + off), _MM_HINT_T1);
    _mm_prefetch(reinterpret_cast<const char*>(base + std::min(off + 64, limit - 1)), _MM_HINT_T1);
  }
}

// 16 e4m3 bytes -> 16 fp32 values times 2^-8, in column order. Sign-extending a byte to 16 bits and
// shifting left by 7 puts its low 7 bits (exponent and mantissa) at bits 7-13 and its sign at bits
// 14 and 15; clearing bit 14 leaves the fp16 with e4m3's fields under fp16's bias (15 instead of
// 7), i.e. exactly the e4m3 value times 2^-8, normals and subnormals alike (e4m3 subnormals
// m * 2^-9 become fp16 subnormals m * 2^-17, which VCVTPH2PS converts exactly, whatever MXCSR.DAZ
// says: the conversion does not apply it; the test checks with DAZ set). The 2^8 is folded
// into the tile scale. Bytes 0x7F/0xFF become +-1.875, i.e. +-480 after the 2^8.
// (An even/odd split of the bytes with 16-bit shifts, which saves the widening shuffle, measured no
// faster: VCVTPH2PS and the FMA, one each per 16 weights, are the limit, and the split needs the
// activations permuted, which costs the batched path more than it saves.)
inline __m512 fp8_to_ps(__m128i bytes) {
  const __m256i words = _mm256_slli_epi16(_mm256_cvtepi8_epi16(bytes), 7);
  return _mm512_cvtph_ps(_mm256_and_si256(words, _mm256_set1_epi16(static_cast<short>(0xBF80))));
}

inline __m128i load_16(const std::byte* p) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)); }

// Mask of the first n < 16 lanes.
inline __mmask16 first_lanes(std::size_t n) { return static_cast<__mmask16>((1u << n) - 1u); }

// The arithmetic of one output (row r, vector b), the same on both paths below, in this order:
//   for each 128-column tile: tile = 0; for each 16 columns: tile = fma(w, x, tile) (the last
//     step of a partial tile masked: fma(+0, +0, tile)); acc = fma(tile, 2^8 scale, acc)
//   y = the 16-lane reduction of acc (_mm512_reduce_add_ps).

// One activation vector, R rows [n, n + R): w points at row n, row r's tile scales at srow[r].
template <int R>
void fp8_rows(const std::byte* w, std::size_t K, const float* const* srow, const float* x, float* y, NextGroup next) {
  __m512 acc[R];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
  for (std::size_t k0 = 0; k0 < K; k0 += kTile) {
    const std::size_t len = std::min(kTile, K - k0);
    __m512 tile[R];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) tile[r] = _mm512_setzero_ps();
    prefetch_rows<R>(w, K, k0, next);
    std::size_t i = 0;
    for (; i + kLanes <= len; i += kLanes) {
      const __m512 xv = _mm512_loadu_ps(x + k0 + i);
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        const __m512 wv = fp8_to_ps(load_16(w + static_cast<std::size_t>(r) * K + k0 + i));
        tile[r] = _mm512_fmadd_ps(wv, xv, tile[r]);
      }
    }
    if (i < len) {  // masked lanes load zeros
      const __mmask16 m = first_lanes(len - i);
      const __m512 xv = _mm512_maskz_loadu_ps(m, x + k0 + i);
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        const __m512 wv = fp8_to_ps(_mm_maskz_loadu_epi8(m, w + static_cast<std::size_t>(r) * K + k0 + i));
        tile[r] = _mm512_fmadd_ps(wv, xv, tile[r]);
      }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) acc[r] = _mm512_fmadd_ps(tile[r], _mm512_set1_ps(srow[r][k0 / kTile] * 256.0f), acc[r]);
  }
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) y[r] = _mm512_reduce_add_ps(acc[r]);
}

// B vectors (x at stride ldx, pointing at the tile's first column) times one decoded tile of R rows
// (dec[r]: len columns, zeros after them up to the next multiple of 16): the tile sums of fp8_rows,
// then folded into acc[r][b + j].
template <int R, int B>
inline void fp8_tile_batch(const float (*dec)[kTile], std::size_t len, const float* x, std::size_t ldx,
                           const __m512* scale, __m512 (*acc)[kBatchChunk], std::size_t b) {
  __m512 tile[R][B];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
    for (int j = 0; j < B; ++j) tile[r][j] = _mm512_setzero_ps();
  }
  const auto step = [&](std::size_t i, __mmask16 m) {
    __m512 wv[R];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) wv[r] = _mm512_load_ps(dec[r] + i);
#pragma GCC unroll 4
    for (int j = 0; j < B; ++j) {
      const __m512 xv = _mm512_maskz_loadu_ps(m, x + static_cast<std::size_t>(j) * ldx + i);
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) tile[r][j] = _mm512_fmadd_ps(wv[r], xv, tile[r][j]);
    }
  };
  std::size_t i = 0;
  for (; i + kLanes <= len; i += kLanes) step(i, static_cast<__mmask16>(0xFFFF));
  if (i < len) step(i, first_lanes(len - i));
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
    for (int j = 0; j < B; ++j) acc[r][b + j] = _mm512_fmadd_ps(tile[r][j], scale[r], acc[r][b + j]);
  }
}

// Vectors [0, num_vectors) of x (stride K) for R rows; outputs y[b * N + r]. Each R x 128 tile is
// decoded into a stack buffer once per chunk of up to 16 vectors, then multiplied 4 vectors at a
// time (R x 4 tile sums in registers). The same operations per output as fp8_rows, so the same bits.
template <int R>
void fp8_rows_batched(const std::byte* w, std::size_t K, const float* const* srow, const float* x,
                      std::size_t num_vectors, float* y, std::size_t N, NextGroup next) {
  alignas(64) float dec[R][kTile];
  __m512 acc[R][kBatchChunk];
  for (std::size_t b0 = 0; b0 < num_vectors; b0 += kBatchChunk) {
    const std::size_t nb = std::min(kBatchChunk, num_vectors - b0);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      for (std::size_t j = 0; j < nb; ++j) acc[r][j] = _mm512_setzero_ps();
    }
    for (std::size_t k0 = 0; k0 < K; k0 += kTile) {
      const std::size_t len = std::min(kTile, K - k0);
      std::size_t i = 0;
      for (; i + kLanes <= len; i += kLanes) {
        if (b0 == 0) prefetch_next<R * kLanes>(next);
#pragma GCC unroll 4
        for (int r = 0; r < R; ++r) {
          _mm512_store_ps(dec[r] + i, fp8_to_ps(load_16(w + static_cast<std::size_t>(r) * K + k0 + i)));
        }
      }
      if (i < len) {
        const __mmask16 m = first_lanes(len - i);
#pragma GCC unroll 4
        for (int r = 0; r < R; ++r) {
          _mm512_store_ps(dec[r] + i, fp8_to_ps(_mm_maskz_loadu_epi8(m, w + static_cast<std::size_t>(r) * K + k0 + i)));
        }
      }
      __m512 scale[R];
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) scale[r] = _mm512_set1_ps(srow[r][k0 / kTile] * 256.0f);
      const float* xt = x + b0 * K + k0;
      std::size_t j = 0;
      for (; j + 4 <= nb; j += 4) fp8_tile_batch<R, 4>(dec, len, xt + j * K, K, scale, acc, j);
      switch (nb - j) {
        case 3: fp8_tile_batch<R, 3>(dec, len, xt + j * K, K, scale, acc, j); break;
        case 2: fp8_tile_batch<R, 2>(dec, len, xt + j * K, K, scale, acc, j); break;
        case 1: fp8_tile_batch<R, 1>(dec, len, xt + j * K, K, scale, acc, j); break;
        default: break;
      }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      for (std::size_t j = 0; j < nb; ++j) y[(b0 + j) * N + static_cast<std::size_t>(r)] = _mm512_reduce_add_ps(acc[r][j]);
    }
  }
}

}  // namespace avx512
#pragma GCC pop_options
#pragma GCC diagnostic pop
#endif

// Calls rows(R, n) over [n_begin, n_end) in groups of kRowsPerGroup, then the last 1-3 rows. A
// row's arithmetic does not depend on its group size, so results do not depend on the slicing.
template <typename Rows>
void for_row_groups(std::int64_t n_begin, std::int64_t n_end, Rows&& rows) {
  std::int64_t n = n_begin;
  for (; n + kRowsPerGroup <= n_end; n += kRowsPerGroup) rows.template operator()<kRowsPerGroup>(n);
  switch (n_end - n) {
    case 3: rows.template operator()<3>(n); break;
    case 2: rows.template operator()<2>(n); break;
    case 1: rows.template operator()<1>(n); break;
    default: break;
  }
}

}  // namespace

namespace detail {

void moe_gemm_fp8_blocked_on(MatvecIsa isa, const Fp8MatvecShape& shape, std::span<const std::byte> weights,
                             std::span<const float> scales, std::span<const float> x, std::span<float> y,
                             std::int64_t n_begin, std::int64_t n_end) {
  constexpr const char* kKernel = "moe_gemm_fp8_blocked";
  check_fp8_matvec(kKernel, shape, weights, scales, x, y, n_begin, n_end);
  if (!cpu_has(isa)) throw InputError(std::string(kKernel) + ": this CPU lacks the requested instruction set");
  const auto K = static_cast<std::size_t>(shape.cols);
  const auto N = static_cast<std::size_t>(shape.rows);
  const auto batch = static_cast<std::size_t>(shape.batch);
  const auto tile_cols = static_cast<std::size_t>(fp8_scale_tiles(shape.cols));
  for_row_groups(n_begin, n_end, [&]<std::int64_t R>(std::int64_t n) {
    const std::byte* w = weights.data() + static_cast<std::size_t>(n) * K;
    const float* srow[R];
    for (std::int64_t r = 0; r < R; ++r) {
      srow[r] = scales.data() + static_cast<std::size_t>((n + r) / kFp8ScaleTile) * tile_cols;
    }
    float* out = y.data() + static_cast<std::size_t>(n);
#if defined(__x86_64__)
    if (isa != MatvecIsa::kPortable) {
      const std::int64_t next_rows = std::min(kRowsPerGroup, n_end - n - R);
      const std::byte* next_begin = w + R * K;
      const NextGroup next{next_begin, next_begin + static_cast<std::size_t>(std::max<std::int64_t>(next_rows, 0)) * K};
      if (batch == 1) {
        avx512::fp8_rows<R>(w, K, srow, x.data(), out, next);
      } else if (batch > 1) {
        avx512::fp8_rows_batched<R>(w, K, srow, x.data(), batch, out, N, next);
      }
      return;
    }
#endif
    for (std::size_t b = 0; b < batch; ++b) {
      for (std::int64_t r = 0; r < R; ++r) {
        out[b * N + static_cast<std::size_t>(r)] =
            fp8_row_portable(bytes_of(w + static_cast<std::size_t>(r) * K), K, srow[r], x.data() + b * K);
      }
    }
  });
}

}  // namespace detail

void moe_gemm_fp8_blocked(const Fp8MatvecShape& shape, std::span<const std::byte> weights,
                          std::span<const float> scales, std::span<const float> x, std::span<float> y,
                          std::int64_t n_begin, std::int64_t n_end) {
  detail::moe_gemm_fp8_blocked_on(detail::best_matvec_isa(), shape, weights, scales, x, y, n_begin, n_end);
}

}  // namespace deepfit::kernels
