// moe_gemm_bf16dot and pack_activations_bf16 (see moe_gemm_bf16.h): register-blocked VDPBF16PS
// tiles compiled for AVX512_BF16 and picked at run time (the library needs no -march flag), and
// plain loops for other CPUs. The memory-bound small-batch kernels live in moe_gemm_blocked.cpp.
#include "kernels/moe_gemm_bf16.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <type_traits>

#include "entry_checks.h"
#include "kernels/error.h"
#include "kernels/moe_gemm.h"
#include "kernels/quant_blocks.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace deepfit::kernels {
namespace {

using entry::fail;
using entry::expect_size;
using entry::overlaps;

constexpr std::size_t kLanes = 16;  // fp32 lanes of a 512-bit accumulator: vectors per dot
constexpr auto kPanel = static_cast<std::size_t>(kBf16PanelVectors);
static_assert(kPanel % kLanes == 0);

// Pairs of columns per cache block: a 64-vector panel block of 2048 pairs is 512 KiB of bf16, meant
// to stay in a core's L2 cache next to the weights streaming past it, while a tile's 6 x 64 partial
// sums go through y only once per block. Fixed (not chosen per call or per CPU), so no result
// depends on it.
constexpr std::size_t kBlockPairs = 2048;

// Where panel j of a packed buffer lives; see moe_gemm_bf16.h.
struct PackedLayout {
  std::size_t batch;
  std::size_t cols;
  std::size_t num_pairs;     // ceil(cols / 2)
  std::size_t batch_padded;  // batch rounded up to kLanes
  std::size_t num_panels() const { return (batch_padded + kPanel - 1) / kPanel; }
  std::size_t panel_begin(std::size_t j) const { return j * kPanel; }  // first vector
  std::size_t panel_width(std::size_t j) const { return std::min(kPanel, batch_padded - j * kPanel); }
  std::size_t panel_offset(std::size_t j) const { return 2 * num_pairs * j * kPanel; }  // uint16 elements
};

PackedLayout layout_of(std::int64_t batch, std::int64_t cols) {
  const auto b = static_cast<std::size_t>(batch);
  const auto k = static_cast<std::size_t>(cols);
  return {b, k, (k + 1) / 2, (b + kLanes - 1) / kLanes * kLanes};
}

std::uint16_t u16_at(const std::byte* p) {
  return static_cast<std::uint16_t>(std::to_integer<unsigned>(p[0]) | std::to_integer<unsigned>(p[1]) << 8);
}

// ---- Portable paths: the same layout and order of k, scalar code that GCC may vectorize for the
// baseline ISA.

void pack_portable(const float* x, const PackedLayout& l, std::uint16_t* packed) {
  for (std::size_t j = 0; j < l.num_panels(); ++j) {
    const std::size_t width = l.panel_width(j);
    std::uint16_t* panel = packed + l.panel_offset(j);
    for (std::size_t v = 0; v < width; ++v) {
      const std::size_t b = l.panel_begin(j) + v;
      const float* xb = x + b * l.cols;
      for (std::size_t p = 0; p < l.num_pairs; ++p) {
        const std::size_t k = 2 * p;
        std::uint16_t* out = panel + 2 * (p * width + v);
        out[0] = b < l.batch ? fp32_to_bf16(xb[k]) : std::uint16_t{0};
        out[1] = b < l.batch && k + 1 < l.cols ? fp32_to_bf16(xb[k + 1]) : std::uint16_t{0};
      }
    }
  }
}

// y[b][n] for the 16 vectors [v0, v0 + 16) of a panel and one row: one fp32 accumulator per
// vector, products (exact in fp32: 8-bit by 8-bit significands) added in order of k.
void row_lanes_portable(const std::byte* w, const std::uint16_t* panel, std::size_t width, std::size_t v0,
                        const PackedLayout& l, float* acc) {
  for (std::size_t v = 0; v < kLanes; ++v) acc[v] = 0.0f;
  for (std::size_t p = 0; p < l.num_pairs; ++p) {
    const float w0 = bf16_to_fp32(u16_at(w + 4 * p));
    const float w1 = 2 * p + 1 < l.cols ? bf16_to_fp32(u16_at(w + 4 * p + 2)) : 0.0f;
    const std::uint16_t* xp = panel + 2 * (p * width + v0);
    for (std::size_t v = 0; v < kLanes; ++v) acc[v] += w0 * bf16_to_fp32(xp[2 * v]);
    for (std::size_t v = 0; v < kLanes; ++v) acc[v] += w1 * bf16_to_fp32(xp[2 * v + 1]);
  }
}

void gemm_portable(const std::byte* weights, std::size_t rows, const std::uint16_t* packed, const PackedLayout& l,
                   float* y, std::size_t n_begin, std::size_t n_end) {
  const std::size_t row_bytes = 2 * l.cols;
  float acc[kLanes];
  for (std::size_t j = 0; j < l.num_panels(); ++j) {
    const std::size_t width = l.panel_width(j);
    const std::uint16_t* panel = packed + l.panel_offset(j);
    for (std::size_t n = n_begin; n < n_end; ++n) {
      for (std::size_t v0 = 0; v0 < width; v0 += kLanes) {
        row_lanes_portable(weights + n * row_bytes, panel, width, v0, l, acc);
        const std::size_t b0 = l.panel_begin(j) + v0;
        for (std::size_t v = 0; v < kLanes && b0 + v < l.batch; ++v) y[(b0 + v) * rows + n] = acc[v];
      }
    }
  }
}

// The rows of one tile for a panel of NB x 16 vectors: as many as keep NB x rows accumulators, NB
// activation registers and a broadcast register within the 32 zmm registers, about 24 dots per
// pair of columns so the dot unit always has independent work.
constexpr int tile_rows(int nb) { return nb == 1 ? 16 : nb == 2 ? 12 : nb == 3 ? 8 : 6; }
constexpr std::size_t kTileFloats = 384;  // max over NB of tile_rows(NB) * 16 NB
static_assert(tile_rows(1) * 16 <= 384 && tile_rows(2) * 32 <= 384 && tile_rows(3) * 48 <= 384 &&
              tile_rows(4) * 64 <= 384);

// ---- x86: AVX512_BF16. GCC 12's AVX-512 headers fill unused operands with self-initialized
// placeholders that -Wuninitialized reports once inlined at -O3 (fixed in GCC 13); the pragmas
// silence that for these bodies only.
#if defined(__x86_64__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512bf16")
namespace avx512 {

// fp32 -> bf16 bits in the low half of each 32-bit lane, exactly as fp32_to_bf16 (integer
// round to nearest even; NaN -> quiet NaN), so both paths pack the same bytes.
inline __m512i round_to_bf16(__m512 f) {
  const __m512i u = _mm512_castps_si512(f);
  const __m512i high = _mm512_srli_epi32(u, 16);
  const __m512i rounded = _mm512_srli_epi32(
      _mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7FFF)), _mm512_and_si512(high, _mm512_set1_epi32(1))),
      16);
  const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7FFFFFFF)),
                                                _mm512_set1_epi32(0x7F800000));
  return _mm512_mask_mov_epi32(rounded, nan, _mm512_or_si512(high, _mm512_set1_epi32(0x0040)));
}

// Per vector, 16 pairs (32 columns) at a time: masked loads (zeros past cols, which also gives the
// zero partner of an odd last column), round, narrow to 16 bits, and scatter the 16 pair words to
// their rows of the panel (a stride of `width` words). Padded vectors get zeros.
void pack(const float* x, const PackedLayout& l, std::uint16_t* packed) {
  for (std::size_t j = 0; j < l.num_panels(); ++j) {
    const std::size_t width = l.panel_width(j);
    auto* panel = reinterpret_cast<int*>(packed + l.panel_offset(j));  // one 32-bit word per pair
    const __m512i stride = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                              _mm512_set1_epi32(static_cast<int>(width)));
    for (std::size_t v = 0; v < width; ++v) {
      const std::size_t b = l.panel_begin(j) + v;
      const bool padded = b >= l.batch;
      const float* xb = x + (padded ? 0 : b * l.cols);
      for (std::size_t p = 0; p < l.num_pairs; p += kLanes) {
        const std::size_t k = 2 * p;  // < cols, as p < num_pairs
        const std::size_t left = padded ? 0 : l.cols - k;  // columns still to read
        const auto lo_mask = static_cast<__mmask16>(left >= 16 ? 0xFFFF : (1u << left) - 1);
        const auto hi_mask = static_cast<__mmask16>(left >= 32 ? 0xFFFF : left <= 16 ? 0 : (1u << (left - 16)) - 1);
        const __m512i lo = round_to_bf16(_mm512_maskz_loadu_ps(lo_mask, padded ? xb : xb + k));
        const __m512i hi = round_to_bf16(_mm512_maskz_loadu_ps(hi_mask, left > 16 ? xb + k + 16 : xb));
        const __m512i pairs =
            _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvtepi32_epi16(lo)), _mm512_cvtepi32_epi16(hi), 1);
        const std::size_t num = std::min(kLanes, l.num_pairs - p);
        const auto store_mask = static_cast<__mmask16>(num >= 16 ? 0xFFFF : (1u << num) - 1);
        _mm512_mask_i32scatter_epi32(panel + p * width + v, store_mask, stride, pairs, 4);
      }
    }
  }
}

inline __m512bh as_bh(__m512i v) { return reinterpret_cast<__m512bh>(v); }

inline std::uint32_t u32_at(const std::byte* p) {
  std::uint32_t v;
  std::memcpy(&v, p, sizeof v);  // x86 is little-endian, like the stored weights
  return v;
}

// One tile: R rows x NB x 16 vectors over `num_pairs` pairs of columns. w: the first row at the
// block's first pair; x: the panel at the block's first pair. acc[r][i] lane v holds y of row r and
// vector 16 i + v; it starts from `tile` (the previous column blocks) or from zero. `half_last`:
// the block ends with the odd last column, whose weight is read alone (zero-extended: its
// partner in x is zero) so no byte past the row is touched.
template <int R, int NB>
void tile_dot(const std::byte* w, std::size_t row_bytes, const std::uint16_t* x, std::size_t num_pairs,
              bool half_last, bool accumulate, float* tile) {
  constexpr std::size_t kWidth = kLanes * NB;
  __m512 acc[R][NB];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
    for (int i = 0; i < NB; ++i) {
      acc[r][i] = accumulate ? _mm512_load_ps(tile + r * kWidth + i * kLanes) : _mm512_setzero_ps();
    }
  }
  const auto step = [&](std::size_t p, auto half) {
    __m512bh xv[NB];
#pragma GCC unroll 4
    for (int i = 0; i < NB; ++i) xv[i] = as_bh(_mm512_loadu_si512(x + 2 * (p * kWidth + i * kLanes)));
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const std::byte* wp = w + static_cast<std::size_t>(r) * row_bytes + 4 * p;
      const std::uint32_t bits = half ? u16_at(wp) : u32_at(wp);
      const __m512bh wv = as_bh(_mm512_set1_epi32(static_cast<int>(bits)));
#pragma GCC unroll 4
      for (int i = 0; i < NB; ++i) acc[r][i] = _mm512_dpbf16_ps(acc[r][i], wv, xv[i]);
    }
  };
  const std::size_t full = num_pairs - (half_last ? 1 : 0);
  for (std::size_t p = 0; p < full; ++p) step(p, std::false_type{});
  if (half_last) step(full, std::true_type{});
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
    for (int i = 0; i < NB; ++i) _mm512_store_ps(tile + r * kWidth + i * kLanes, acc[r][i]);
  }
}

// tile_dot<R, NB> for a run-time R in [1, tile_rows(NB)].
template <int NB, int R = 1>
void tile_dot_rows(int rows, const std::byte* w, std::size_t row_bytes, const std::uint16_t* x, std::size_t num_pairs,
                   bool half_last, bool accumulate, float* tile) {
  if constexpr (R <= tile_rows(NB)) {
    if (rows == R) {
      tile_dot<R, NB>(w, row_bytes, x, num_pairs, half_last, accumulate, tile);
    } else {
      tile_dot_rows<NB, R + 1>(rows, w, row_bytes, x, num_pairs, half_last, accumulate, tile);
    }
  } else {
    DEEPFIT_ASSERT(false, "tile_dot_rows: row count out of range");
  }
}

// One panel of NB x 16 vectors over the rows [n_begin, n_end): column blocks outermost, so the
// panel's block stays in L2 while the slice's rows stream past it; the partial sums of a tile go
// through y between blocks (stored and reloaded exactly, so blocking does not change any bit).
template <int NB>
void gemm_panel(const std::byte* weights, std::size_t rows, const std::uint16_t* panel, const PackedLayout& l,
                std::size_t b0, float* y, std::size_t n_begin, std::size_t n_end) {
  constexpr std::size_t kWidth = kLanes * NB;
  constexpr auto kRows = static_cast<std::size_t>(tile_rows(NB));
  const std::size_t row_bytes = 2 * l.cols;
  const std::size_t valid = std::min(kWidth, l.batch - b0);  // vectors of the panel that y holds
  const std::size_t num_blocks = std::max<std::size_t>(1, (l.num_pairs + kBlockPairs - 1) / kBlockPairs);
  const std::size_t block_pairs = (l.num_pairs + num_blocks - 1) / num_blocks;
  alignas(64) float tile[kTileFloats] = {};
  for (std::size_t kb = 0; kb < num_blocks; ++kb) {
    const std::size_t p0 = std::min(l.num_pairs, kb * block_pairs);
    const std::size_t p1 = std::min(l.num_pairs, p0 + block_pairs);
    const bool half_last = l.cols % 2 == 1 && p1 == l.num_pairs;
    const bool accumulate = kb > 0;
    for (std::size_t n = n_begin; n < n_end; n += kRows) {
      const std::size_t R = std::min(kRows, n_end - n);
      if (accumulate) {
        for (std::size_t v = 0; v < valid; ++v) {
          for (std::size_t r = 0; r < R; ++r) tile[r * kWidth + v] = y[(b0 + v) * rows + n + r];
        }
      }
      const std::byte* w = weights + n * row_bytes + 4 * p0;
      const std::uint16_t* x = panel + 2 * p0 * kWidth;
      if (R == kRows) {
        tile_dot<tile_rows(NB), NB>(w, row_bytes, x, p1 - p0, half_last, accumulate, tile);
      } else {
        tile_dot_rows<NB>(static_cast<int>(R), w, row_bytes, x, p1 - p0, half_last, accumulate, tile);
      }
      for (std::size_t v = 0; v < valid; ++v) {
        for (std::size_t r = 0; r < R; ++r) y[(b0 + v) * rows + n + r] = tile[r * kWidth + v];
      }
    }
  }
}

void gemm(const std::byte* weights, std::size_t rows, const std::uint16_t* packed, const PackedLayout& l, float* y,
          std::size_t n_begin, std::size_t n_end) {
  for (std::size_t j = 0; j < l.num_panels(); ++j) {
    const std::uint16_t* panel = packed + l.panel_offset(j);
    const std::size_t b0 = l.panel_begin(j);
    switch (l.panel_width(j) / kLanes) {
      case 1: gemm_panel<1>(weights, rows, panel, l, b0, y, n_begin, n_end); break;
      case 2: gemm_panel<2>(weights, rows, panel, l, b0, y, n_begin, n_end); break;
      case 3: gemm_panel<3>(weights, rows, panel, l, b0, y, n_begin, n_end); break;
      case 4: gemm_panel<4>(weights, rows, panel, l, b0, y, n_begin, n_end); break;
      default: DEEPFIT_ASSERT(false, "moe_gemm_bf16dot: panel width is not 16 to 64 vectors");
    }
  }
}

}  // namespace avx512
#pragma GCC pop_options
#pragma GCC diagnostic pop
#endif

void check_isa(const char* kernel, detail::GemmBf16Isa isa) {
  if (!detail::cpu_has(isa)) fail(kernel, "this CPU lacks the requested instruction set");
}

// packed_activations_bf16_size with its errors named after `kernel`.
std::int64_t packed_size(const char* kKernel, std::int64_t batch, std::int64_t cols) {
  if (batch < 0 || cols < 0) {
    fail(kKernel, "shape [" + std::to_string(batch) + "][" + std::to_string(cols) + "] (expected batch, cols >= 0)");
  }
  constexpr std::int64_t kMax = std::numeric_limits<std::int64_t>::max();
  const std::int64_t num_pairs = cols / 2 + cols % 2;
  const std::int64_t lanes = static_cast<std::int64_t>(kLanes);
  const std::int64_t batch_padded = batch / lanes * lanes + (batch % lanes != 0 ? lanes : 0);
  if (num_pairs != 0 && batch_padded > kMax / 2 / num_pairs) {
    fail(kKernel, "packed size overflows: batch " + std::to_string(batch) + " x cols " + std::to_string(cols));
  }
  return 2 * num_pairs * batch_padded;
}

}  // namespace

std::int64_t packed_activations_bf16_size(std::int64_t batch, std::int64_t cols) {
  return packed_size("packed_activations_bf16_size", batch, cols);
}

namespace detail {

bool cpu_has(GemmBf16Isa isa) {
  if (isa == GemmBf16Isa::kPortable) return true;
#if defined(__x86_64__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512bf16");
#else
  return false;
#endif
}

GemmBf16Isa best_gemm_bf16_isa() {
  return cpu_has(GemmBf16Isa::kAvx512Bf16) ? GemmBf16Isa::kAvx512Bf16 : GemmBf16Isa::kPortable;
}

void pack_activations_bf16_on(GemmBf16Isa isa, std::span<const float> x, std::int64_t batch, std::int64_t cols,
                              std::span<std::uint16_t> packed) {
  constexpr const char* kKernel = "pack_activations_bf16";
  const std::int64_t size = packed_size(kKernel, batch, cols);  // checks batch, cols >= 0
  if (cols != 0 && batch > std::numeric_limits<std::int64_t>::max() / cols) {
    fail(kKernel, "x size overflows: batch " + std::to_string(batch) + " x cols " + std::to_string(cols));
  }
  expect_size(kKernel, "x", x.size(), batch * cols);
  expect_size(kKernel, "packed", packed.size(), size);
  if (overlaps(x, packed)) fail(kKernel, "packed overlaps x (expected separate arrays)");
  check_isa(kKernel, isa);
  const PackedLayout l = layout_of(batch, cols);
#if defined(__x86_64__)
  if (isa == GemmBf16Isa::kAvx512Bf16) {
    avx512::pack(x.data(), l, packed.data());
    return;
  }
#endif
  pack_portable(x.data(), l, packed.data());
}

void moe_gemm_bf16dot_on(GemmBf16Isa isa, const MatvecShape& shape, std::span<const std::byte> weights,
                         const ActivationsBf16& xp, std::span<float> y, std::int64_t n_begin, std::int64_t n_end) {
  constexpr const char* kKernel = "moe_gemm_bf16dot";
  check_matvec(kKernel, shape, weights.size(), y, n_begin, n_end);
  if (shape.weight_format != WeightFormat::kBf16) {
    fail(kKernel, "takes BF16 weights only (Q8_0 and Q4_K: quantize_activations_q8, then moe_gemm_blocked_q8)");
  }
  if (xp.batch != shape.batch || xp.cols != shape.cols) {
    fail(kKernel, "packed activations are [" + std::to_string(xp.batch) + "][" + std::to_string(xp.cols) +
                      "] (expected [batch " + std::to_string(shape.batch) + "][cols " + std::to_string(shape.cols) +
                      "])");
  }
  expect_size(kKernel, "xp.packed", xp.packed.size(), packed_size(kKernel, shape.batch, shape.cols));
  if (overlaps(xp.packed, y)) fail(kKernel, "y overlaps the packed activations (expected separate arrays)");
  check_isa(kKernel, isa);
  const PackedLayout l = layout_of(shape.batch, shape.cols);
  const auto rows = static_cast<std::size_t>(shape.rows);
  const auto begin = static_cast<std::size_t>(n_begin);
  const auto end = static_cast<std::size_t>(n_end);
  if (begin == end || l.batch == 0) return;
#if defined(__x86_64__)
  if (isa == GemmBf16Isa::kAvx512Bf16) {
    avx512::gemm(weights.data(), rows, xp.packed.data(), l, y.data(), begin, end);
    return;
  }
#endif
  gemm_portable(weights.data(), rows, xp.packed.data(), l, y.data(), begin, end);
}

}  // namespace detail

void pack_activations_bf16(std::span<const float> x, std::int64_t batch, std::int64_t cols,
                           std::span<std::uint16_t> packed) {
  detail::pack_activations_bf16_on(detail::best_gemm_bf16_isa(), x, batch, cols, packed);
}

void moe_gemm_bf16dot(const MatvecShape& shape, std::span<const std::byte> weights, const ActivationsBf16& xp,
                      std::span<float> y, std::int64_t n_begin, std::int64_t n_end) {
  detail::moe_gemm_bf16dot_on(detail::best_gemm_bf16_isa(), shape, weights, xp, y, n_begin, n_end);
}

}  // namespace deepfit::kernels
