// Helpers of the kernels' entry checks (STYLE 7, K2): the InputError they throw, sizes that must
// not overflow, span sizes, and overlapping arrays. Internal to kernels/src.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <span>
#include <string>

#include "kernels/error.h"

namespace deepfit::kernels::entry {

[[noreturn]] inline void fail(const char* kernel, const std::string& what) { throw InputError(std::string(kernel) + ": " + what); }

// a * b for non-negative counts, or InputError when it does not fit an int64.
inline std::int64_t checked_product(const char* kernel, std::int64_t a, std::int64_t b, const char* what) {
  if (a != 0 && b > std::numeric_limits<std::int64_t>::max() / a) {
    fail(kernel, std::string(what) + " overflows: " + std::to_string(a) + " x " + std::to_string(b));
  }
  return a * b;
}

inline void expect_size(const char* kernel, const char* what, std::size_t got, std::int64_t expected) {
  if (got != static_cast<std::size_t>(expected)) {
    fail(kernel, std::string(what) + " has " + std::to_string(got) + " elements (expected " + std::to_string(expected) + ")");
  }
}

// Whether two arrays share memory; std::less gives a total order on unrelated pointers.
template <typename A, typename B>
bool overlaps(std::span<A> a, std::span<B> b) {
  if (a.empty() || b.empty()) return false;
  const auto* a0 = reinterpret_cast<const std::byte*>(a.data());
  const auto* b0 = reinterpret_cast<const std::byte*>(b.data());
  const std::less<const std::byte*> less;
  return less(a0, b0 + b.size_bytes()) && less(b0, a0 + a.size_bytes());
}

}  // namespace deepfit::kernels::entry
