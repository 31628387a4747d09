// deepfit's error types, shared by every module (header-only, standard library only).
// Only planner/cli turns them into exit codes; DEEPFIT_ASSERT is for bugs, never for user input.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>

namespace deepfit {

// Bad input: flags, JSON, names, impossible shapes, files. The message says what is wrong, where,
// the value received and what was expected. The CLI prints it as one line and exits 2.
class InputError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

[[noreturn]] inline void assert_fail(const char* file, int line, const char* cond, const std::string& msg) {
  std::fprintf(stderr, "deepfit: internal error at %s:%d: %s (%s)\n", file, line, msg.c_str(), cond);
  std::abort();
}

}  // namespace deepfit

// Always on, also in Release: a failed check is a bug in deepfit, not bad input.
#define DEEPFIT_ASSERT(cond, msg) \
  do { if (!(cond)) ::deepfit::assert_fail(__FILE__, __LINE__, #cond, (msg)); } while (0)
