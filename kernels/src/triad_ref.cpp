// Reference STREAM-like kernels (see triad.h): one element at a time, the specification the _simd
// variants must match. Also the shared entry checks. No vector code and no tuning here.
#include "kernels/triad.h"

#include <functional>
#include <initializer_list>
#include <string>

#include "kernels/error.h"

namespace deepfit::kernels {

namespace detail {

namespace {

// Whether the element ranges [p + begin, p + end) of two arrays share an address. std::less gives
// a total order on pointers even into different arrays, which the built-in < does not promise.
bool slices_overlap(std::span<const double> x, std::span<const double> y, std::size_t begin, std::size_t end) {
  if (begin == end) return false;
  const double* x0 = x.data() + begin;
  const double* y0 = y.data() + begin;
  const std::less<const double*> less;
  return less(x0, y0 + (end - begin)) && less(y0, x0 + (end - begin));
}

}  // namespace

void check_slice(const char* kernel, std::initializer_list<std::span<const double>> outputs,
                 std::initializer_list<std::span<const double>> inputs, std::size_t begin, std::size_t end) {
  // The message is built only on failure: the checks run on every call, timed ones included.
  const auto fail = [&](const std::string& what) {
    throw InputError(std::string(kernel) + ": slice [" + std::to_string(begin) + ", " + std::to_string(end) +
                     "): " + what);
  };
  if (begin > end) fail("begin is after end (expected begin <= end)");
  for (const auto& list : {outputs, inputs}) {
    for (const std::span<const double> s : list) {
      if (end > s.size())
        fail("runs past an array of " + std::to_string(s.size()) + " elements (expected end <= the size of every array)");
    }
  }
  for (const std::span<const double> out : outputs) {
    for (const std::span<const double> in : inputs) {
      if (slices_overlap(out, in, begin, end)) fail("an output overlaps an input (expected separate arrays)");
    }
  }
}

}  // namespace detail

void copy_ref(std::span<double> c, std::span<const double> a, std::size_t begin, std::size_t end) {
  detail::check_slice("copy_ref", {c}, {a}, begin, end);
  for (std::size_t i = begin; i < end; ++i) c[i] = a[i];
}

void scale_ref(std::span<double> b, std::span<const double> c, double q, std::size_t begin, std::size_t end) {
  detail::check_slice("scale_ref", {b}, {c}, begin, end);
  for (std::size_t i = begin; i < end; ++i) b[i] = q * c[i];
}

void add_ref(std::span<double> c, std::span<const double> a, std::span<const double> b, std::size_t begin,
             std::size_t end) {
  detail::check_slice("add_ref", {c}, {a, b}, begin, end);
  for (std::size_t i = begin; i < end; ++i) c[i] = a[i] + b[i];
}

void triad_ref(std::span<double> a, std::span<const double> b, std::span<const double> c, double q,
               std::size_t begin, std::size_t end) {
  detail::check_slice("triad_ref", {a}, {b, c}, begin, end);
  for (std::size_t i = begin; i < end; ++i) a[i] = b[i] + q * c[i];
}

double sum_ref(std::span<const double> a, std::size_t begin, std::size_t end) {
  detail::check_slice("sum_ref", {}, {a}, begin, end);
  double s = 0.0;
  for (std::size_t i = begin; i < end; ++i) s += a[i];
  return s;
}

}  // namespace deepfit::kernels
