// STREAM-like memory-bandwidth kernels (copy, scale, add, triad, read-only sum) over a slice of
// double arrays. These are a variant of the STREAM kernels, not STREAM: results must be labelled
// STREAM-like. Kernels only; timing, threads and memory placement belong to the caller.
#pragma once

#include <cstddef>
#include <initializer_list>
#include <span>

namespace deepfit::kernels {

// Common contract for every function below.
//   Layout: each span is a whole array [n] of contiguous doubles; the call touches only the
//     elements [begin, end) of each, so threads share arrays and pass disjoint slices.
//   Entry checks: begin <= end <= size() of every span, and an output's slice must not overlap an
//     input's slice (not even exactly); otherwise InputError, before anything is written.
//   Threading: handles exactly [begin, end) on the calling thread; no shared state, so any number
//     of threads may call concurrently on disjoint output slices.
//   Work per call: work_of(BandwidthShape{op, end - begin}) in kernels/work.h.
//   `_ref` is the specification: plain loops, one element at a time.
//   `_simd` must match `_ref` bit for bit for copy, scale, add and triad (each element goes
//     through the same IEEE operations, in the same order, in both; the library builds these files
//     with -ffp-contract=off so `b + q*c` is never fused into an FMA). sum_simd adds in a different
//     order and matches sum_ref within (end - begin) * eps * sum|a[i]|. Its own order is fixed
//     (64 interleaved partial sums, then a fixed tree), so its result does not depend on the ISA
//     path taken or on the alignment of the data.
//   `_simd` uses AVX-512F when the CPU has it (checked at run time, so the library needs no -march
//   flag) and otherwise loops GCC vectorizes for the baseline ISA. On large slices (see
//   kStreamingStoreMinBytes) the AVX-512 path writes with non-temporal stores, which skip the
//   write-allocate read; it ends with a store fence, so the results are visible to other threads
//   once the call returns.

// c[i] = a[i]
void copy_ref(std::span<double> c, std::span<const double> a, std::size_t begin, std::size_t end);
void copy_simd(std::span<double> c, std::span<const double> a, std::size_t begin, std::size_t end);

// b[i] = q * c[i]
void scale_ref(std::span<double> b, std::span<const double> c, double q, std::size_t begin, std::size_t end);
void scale_simd(std::span<double> b, std::span<const double> c, double q, std::size_t begin, std::size_t end);

// c[i] = a[i] + b[i]
void add_ref(std::span<double> c, std::span<const double> a, std::span<const double> b, std::size_t begin,
             std::size_t end);
void add_simd(std::span<double> c, std::span<const double> a, std::span<const double> b, std::size_t begin,
              std::size_t end);

// a[i] = b[i] + q * c[i], rounded after the multiply and after the add (two roundings, no FMA).
void triad_ref(std::span<double> a, std::span<const double> b, std::span<const double> c, double q,
               std::size_t begin, std::size_t end);
void triad_simd(std::span<double> a, std::span<const double> b, std::span<const double> c, double q,
                std::size_t begin, std::size_t end);

// Returns sum of a[i] over [begin, end); 0.0 for an empty slice. _ref adds left to right in double.
double sum_ref(std::span<const double> a, std::size_t begin, std::size_t end);
double sum_simd(std::span<const double> a, std::size_t begin, std::size_t end);

// Slices of at least this many bytes per output are written with non-temporal stores by the
// AVX-512 path of the _simd kernels. Below it the output may still be in cache and is better left
// there; a slice this big has usually come from memory, and a streaming store saves its
// write-allocate read.
inline constexpr std::size_t kStreamingStoreMinBytes = std::size_t{1} << 20;

namespace detail {
// The entry checks of the common contract; shared by the variants, not an API of its own.
// Throws InputError naming `kernel`.
void check_slice(const char* kernel, std::initializer_list<std::span<const double>> outputs,
                 std::initializer_list<std::span<const double>> inputs, std::size_t begin, std::size_t end);
}  // namespace detail

}  // namespace deepfit::kernels
