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
