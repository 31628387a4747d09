// STREAM-like memory-bandwidth kernels (copy, scale, add, triad, read-only sum) over a slice of
// double arrays. These are a variant of the STREAM kernels, not STREAM: results must be labelled
// STREAM-like. Kernels only; timing, threads and memory placement belong to the caller.
#pragma once

#include <cstddef>
#include <initializer_list>
#include <span>

namespace deepfit::kernels {

// How the _simd kernels write their output.
//   kCached: ordinary stores. The output stays in cache, and a line missing from cache is read
//     before it is written (write-allocate), which work_of does not count.
//   kNonTemporal: streaming stores that bypass the caches and skip the write-allocate read, so
//     the traffic is the compulsory bytes work_of counts. Right for working sets far larger than
//     the last-level cache; wrong for cache-resident ones (the output is sent to memory). The call
//     ends with a store fence, so the data is visible to other threads once it returns.
// The caller chooses (it knows the working set and the cache sizes) and records the choice with
// the result. On builds without streaming stores (see have_non_temporal_stores) both are kCached.
enum class StorePolicy { kCached, kNonTemporal };

// Whether kNonTemporal really streams in this build: true on x86 (SSE2 and AVX-512 streaming
// stores), false elsewhere.
bool have_non_temporal_stores();

// Common contract for every function below.
//   Layout: each span is a whole array [n] of contiguous doubles; the call touches only the
//     elements [begin, end) of each, so threads share arrays and pass disjoint slices.
//   Entry checks: begin <= end <= size() of every span, and an output's slice must not overlap an
//     input's slice (not even exactly); otherwise InputError, before anything is written.
//   Threading: handles exactly [begin, end) on the calling thread; no shared state, so any number
//     of threads may call concurrently on disjoint output slices.
//   Work per call: work_of(BandwidthShape{op, end - begin}) in kernels/work.h.
//   `_ref` is the specification: plain loops, one element at a time, ordinary stores.
//   `_simd` must match `_ref` bit for bit for copy, scale, add and triad, with either store
//     policy (each element goes through the same IEEE operations, in the same order, in both; the
//     library builds these files with -ffp-contract=off so `b + q*c` is never fused into an FMA).
//     sum_simd adds in a different order and matches sum_ref within (end - begin) * eps * sum|a[i]|.
//     Its own order is fixed (64 interleaved partial sums, then a fixed tree), so its result does
//     not depend on the ISA path taken or on the alignment of the data.
//   `_simd` uses AVX-512F when the CPU has it (checked at run time, so the library needs no -march
//   flag) and otherwise loops GCC vectorizes for the baseline ISA.

// c[i] = a[i]
void copy_ref(std::span<double> c, std::span<const double> a, std::size_t begin, std::size_t end);
void copy_simd(std::span<double> c, std::span<const double> a, std::size_t begin, std::size_t end,
               StorePolicy stores);

// b[i] = q * c[i]
void scale_ref(std::span<double> b, std::span<const double> c, double q, std::size_t begin, std::size_t end);
void scale_simd(std::span<double> b, std::span<const double> c, double q, std::size_t begin, std::size_t end,
                StorePolicy stores);

// c[i] = a[i] + b[i]
void add_ref(std::span<double> c, std::span<const double> a, std::span<const double> b, std::size_t begin,
             std::size_t end);
void add_simd(std::span<double> c, std::span<const double> a, std::span<const double> b, std::size_t begin,
              std::size_t end, StorePolicy stores);

// a[i] = b[i] + q * c[i], rounded after the multiply and after the add (two roundings, no FMA).
void triad_ref(std::span<double> a, std::span<const double> b, std::span<const double> c, double q,
               std::size_t begin, std::size_t end);
void triad_simd(std::span<double> a, std::span<const double> b, std::span<const double> c, double q,
                std::size_t begin, std::size_t end, StorePolicy stores);

// Returns the sum of a[i] over [begin, end); 0.0 for an empty slice. _ref adds left to right.
double sum_ref(std::span<const double> a, std::size_t begin, std::size_t end);
double sum_simd(std::span<const double> a, std::size_t begin, std::size_t end);

namespace detail {
// The entry checks of the common contract; shared by the variants, not an API of its own.
// Throws InputError naming `kernel`.
void check_slice(const char* kernel, std::initializer_list<std::span<const double>> outputs,
                 std::initializer_list<std::span<const double>> inputs, std::size_t begin, std::size_t end);
}  // namespace detail

}  // namespace deepfit::kernels
