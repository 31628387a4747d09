// Declared work per kernel call: FLOPs and compulsory bytes, the one formula that the roofline,
// the benchmark counters and the tests share. Plain arithmetic; the kernels live in their own headers.
#pragma once

#include <cstdint>

#include "kernels/error.h"

namespace deepfit::kernels {

// `flops`: an FMA counts as 2; integer kernels put their integer operations here (a multiply-add
// is 2 ops). `bytes`: compulsory traffic, i.e. each input element read once and each output
// element written once. Write-allocate traffic (reading an output line before overwriting it) is
// excluded, so ordinary stores can move up to one more pass over each output than `bytes` says.
struct Work {
  double flops;
  double bytes;
};

// The STREAM-like memory-bandwidth ops of kernels/triad.h, over `n` doubles each:
//   kCopy  c = a         0 FLOPs   16n bytes (read a, write c)
//   kScale b = q*c       n FLOPs   16n bytes (read c, write b)
//   kAdd   c = a + b     n FLOPs   24n bytes (read a and b, write c)
//   kTriad a = b + q*c   2n FLOPs  24n bytes (read b and c, write a); a multiply and an add, not an FMA
//   kSum   s = sum(a)    n FLOPs    8n bytes (read a)
// Byte counts follow STREAM's convention (words named in the loop, write-allocate excluded).
enum class BandwidthOp { kCopy, kScale, kAdd, kTriad, kSum };

struct BandwidthShape {
  BandwidthOp op;
  std::int64_t n;  // elements in the slice, >= 0
};

inline Work work_of(const BandwidthShape& s) {
  DEEPFIT_ASSERT(s.n >= 0, "work_of(BandwidthShape): negative element count");
  const double n = static_cast<double>(s.n);
  constexpr double kWordBytes = sizeof(double);
  switch (s.op) {
    case BandwidthOp::kCopy: return {0.0, 2 * kWordBytes * n};
    case BandwidthOp::kScale: return {n, 2 * kWordBytes * n};
    case BandwidthOp::kAdd: return {n, 3 * kWordBytes * n};
    case BandwidthOp::kTriad: return {2 * n, 3 * kWordBytes * n};
    case BandwidthOp::kSum: return {n, kWordBytes * n};
  }
  DEEPFIT_ASSERT(false, "work_of(BandwidthShape): unknown op");
}

// A register-resident compute-throughput probe (kernels/peak.h): `iterations` rounds, each issuing
// one vector instruction on each of `num_accumulators` independent chains; every instruction does
// `macs_per_lane` multiply-adds in each of its `lanes` output lanes. Operands never leave the
// registers, so the compulsory traffic is 0 bytes.
struct ComputeProbeShape {
  std::int64_t iterations;        // >= 0
  std::int64_t num_accumulators;  // independent dependency chains, >= 1
  std::int64_t lanes;             // output lanes per instruction (vector bits / accumulator bits)
  std::int64_t macs_per_lane;     // 1 for an fp32 FMA, 2 for a bf16 pair dot, 4 for an int8 quad dot
};

inline Work work_of(const ComputeProbeShape& s) {
  DEEPFIT_ASSERT(s.iterations >= 0 && s.num_accumulators >= 1 && s.lanes >= 1 && s.macs_per_lane >= 1,
                 "work_of(ComputeProbeShape): counts out of range");
  return {2.0 * static_cast<double>(s.iterations) * static_cast<double>(s.num_accumulators) *
              static_cast<double>(s.lanes) * static_cast<double>(s.macs_per_lane),
          0.0};
}

}  // namespace deepfit::kernels

namespace deepfit::kernels {

// ---- Matrix-vector products over stored weight formats (kernels/moe_gemm.h, kernels/quant_blocks.h).

// How each row of a weight matrix is stored: BF16 (one 2-byte value per weight), or the GGUF
// blocks of llama.cpp's ggml-common.h: Q8_0 (34 bytes per 32 weights: fp16 scale and 32 int8),
// Q4_K (144 bytes per 256 weights: fp16 d and dmin, 12 bytes of 6-bit scales and mins, 128 bytes
// of 4-bit quants). A row is a whole number of blocks; blocks never straddle rows.
enum class WeightFormat { kBf16, kQ8_0, kQ4_K };

struct WeightBlockGeometry {
  std::int64_t weights;  // consecutive weights of a row that one block holds
  std::int64_t bytes;    // bytes one block occupies, scales included
};

// The one table of block sizes; quant_blocks.h and work_of(MatvecShape) both read it.
constexpr WeightBlockGeometry block_geometry(WeightFormat f) {
  switch (f) {
    case WeightFormat::kBf16: return {1, 2};
    case WeightFormat::kQ8_0: return {32, 34};
    case WeightFormat::kQ4_K: return {256, 144};
  }
  DEEPFIT_ASSERT(false, "block_geometry: unknown WeightFormat");
}

// Bytes of one stored row of `cols` weights. `cols` must be >= 0 and a whole number of blocks
// (checked: kernels reject such shapes with InputError before they get here).
inline std::int64_t weight_row_bytes(WeightFormat f, std::int64_t cols) {
  const WeightBlockGeometry g = block_geometry(f);
  DEEPFIT_ASSERT(cols >= 0 && cols % g.weights == 0, "weight_row_bytes: cols is not a whole number of blocks");
  return cols / g.weights * g.bytes;
}

// y[b][n] = sum over k of W[n][k] * x[b][k], for b < batch, n < rows, k < cols: `rows` stored
// weight rows of `cols` weights each, `batch` fp32 activation vectors of `cols`, fp32 outputs.
// For a kernel call over the output rows [n_begin, n_end), rows = n_end - n_begin.
struct MatvecShape {
  std::int64_t batch;  // activation vectors, >= 0
  std::int64_t rows;   // output rows N, >= 0
  std::int64_t cols;   // reduction length K, >= 0 and a whole number of the format's blocks
  WeightFormat weight_format;
};

// flops = 2 * batch * rows * cols (one multiply-add per weight and activation vector).
// bytes = rows * weight_row_bytes(format, cols)   the weights, exact block bytes, read once
//       + 4 * batch * cols                        the fp32 activations, read once
//       + 4 * batch * rows                        the fp32 outputs, written once.
// The int8 copy of the activations that the Q8_0 and Q4_K kernels read (quantize_activations_q8)
// is derived from the fp32 input and is not counted again; write-allocate is excluded (see Work).
inline Work work_of(const MatvecShape& s) {
  DEEPFIT_ASSERT(s.batch >= 0 && s.rows >= 0 && s.cols >= 0, "work_of(MatvecShape): negative dimension");
  const double batch = static_cast<double>(s.batch);
  const double rows = static_cast<double>(s.rows);
  const double cols = static_cast<double>(s.cols);
  constexpr double kFloatBytes = sizeof(float);
  const double weight_bytes = rows * static_cast<double>(weight_row_bytes(s.weight_format, s.cols));
  return {2.0 * batch * rows * cols, weight_bytes + kFloatBytes * batch * cols + kFloatBytes * batch * rows};
}

}  // namespace deepfit::kernels
