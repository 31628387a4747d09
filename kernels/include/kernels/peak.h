// Compute-throughput probes: register-resident loops of FMA, bf16 dot and int8 dot instructions
// that measure a core's arithmetic peak, plus run-time ISA checks. No memory traffic, no timing:
// the caller times a call and divides the work_of_* FLOPs by the elapsed time.
#pragma once

#include <cstdint>
#include <optional>

#include "kernels/work.h"

namespace deepfit::kernels {

// Whether this CPU and OS can run each instruction set (CPUID plus the OS's register-state
// support, through GCC's __builtin_cpu_supports). All false on non-x86 builds.
bool have_avx512f();
bool have_avx2_fma();
bool have_avx512_bf16();  // AVX512_BF16 (VDPBF16PS) and AVX512F
bool have_avx512_vnni();  // AVX512_VNNI (VPDPBUSD) and AVX512F

// Independent accumulator chains per probe: enough chains in flight to cover the instruction's
// latency times the number of pipes that issue it, so a probe is throughput-bound, not
// latency-bound; few enough to stay in registers. A sweep of 4 to 24 chains on an AVX-512 host:
// 4 were latency-bound, 8 to 16 gave the same rate, 24 spilled registers (int8). 12 leaves
// headroom for cores with a longer latency or more pipes.
inline constexpr std::int64_t kFmaFp32Avx512Accumulators = 12;
inline constexpr std::int64_t kFmaFp32Avx2Accumulators = 12;
inline constexpr std::int64_t kFmaFp32ScalarAccumulators = 8;
inline constexpr std::int64_t kDotBf16Accumulators = 12;
inline constexpr std::int64_t kDotInt8Accumulators = 12;

// Common contract of the probes.
//   Threading: runs entirely on the calling thread; no shared state, so every thread of a
//     multi-core measurement calls its own probe. Nothing is allocated.
//   Input: iterations >= 0 (else InputError). The seed is the only source of the operand values,
//     so the compiler cannot fold the loop; |seed| <= 16 keeps every value finite.
//   Result: a proof-of-work value that depends on every lane of every accumulator; it is
//     deterministic, and the tests recompute it with scalar code from the recurrences below.
//   std::nullopt when the CPU lacks the instruction set (see have_*); nothing is run then.
//   Work per call: the matching work_of_* below (0 bytes: everything stays in registers).
//
// FMA fp32, with L lanes and K accumulators (K*L values x[j], j = k*L + l):
//   x[j] = seed + j * 2^-10                                      (float arithmetic)
//   `iterations` times: x[j] = fma(x[j], 1 - 2^-12, seed * 2^-12) (one rounding; fixed point = seed)
//   returns the sum of (double)x[j] for j = 0, 1, ..., K*L-1, left to right.
// fma_fp32_probe: AVX-512F, L = 16 (VFMADD on zmm). fma_fp32_probe_avx2: AVX2+FMA, L = 8 (ymm).
// fma_fp32_probe_scalar: portable std::fma, L = 1, always available; on x86 builds without an FMA
// target std::fma is a library call, so it measures that code path, not the FMA units.
std::optional<double> fma_fp32_probe(std::int64_t iterations, float seed);
std::optional<double> fma_fp32_probe_avx2(std::int64_t iterations, float seed);
double fma_fp32_probe_scalar(std::int64_t iterations, float seed);

// bf16 dot (VDPBF16PS on zmm: 16 fp32 lanes, each adding 2 bf16 x bf16 products):
//   u[i] = bf16(seed + i * 2^-3), v[i] = bf16(seed - i * 2^-4), i in [0, 32), rounded to nearest even
//   x[j] = seed + j * 2^-7 for j = k*16 + l                     (float arithmetic)
//   `iterations` times: x[j] += u[2l] * v[2l] + u[2l+1] * v[2l+1] (fp32 accumulate)
//   returns the sum of (double)x[j], left to right.
// The instruction's internal rounding order is not modelled: the tests pick seeds for which every
// product and partial sum is exact in fp32, so any order gives the same bits.
std::optional<double> dot_bf16_probe(std::int64_t iterations, float seed);

// int8 dot (VPDPBUSD on zmm: 16 int32 lanes, each adding 4 u8 x s8 products, wrapping mod 2^32):
//   u[i] = uint8(seed + 7i), s[i] = int8(uint8((seed >> 8) + 5i)), i in [0, 64)  (mod 256)
//   x[j] = int32(seed + j) for j = k*16 + l                     (mod 2^32)
//   `iterations` times: x[j] += sum over q < 4 of u[4l+q] * s[4l+q] (mod 2^32)
//   returns the sum of (int64)x[j].
std::optional<std::int64_t> dot_int8_probe(std::int64_t iterations, std::uint32_t seed);

// Work per call of each probe; the FLOPs of the int8 probe are integer ops (a multiply-add is 2).
inline Work work_of_fma_fp32(std::int64_t iterations) {
  return work_of(ComputeProbeShape{iterations, kFmaFp32Avx512Accumulators, 16, 1});
}
inline Work work_of_fma_fp32_avx2(std::int64_t iterations) {
  return work_of(ComputeProbeShape{iterations, kFmaFp32Avx2Accumulators, 8, 1});
}
inline Work work_of_fma_fp32_scalar(std::int64_t iterations) {
  return work_of(ComputeProbeShape{iterations, kFmaFp32ScalarAccumulators, 1, 1});
}
inline Work work_of_dot_bf16(std::int64_t iterations) {
  return work_of(ComputeProbeShape{iterations, kDotBf16Accumulators, 16, 2});
}
inline Work work_of_dot_int8(std::int64_t iterations) {
  return work_of(ComputeProbeShape{iterations, kDotInt8Accumulators, 16, 4});
}

}  // namespace deepfit::kernels
