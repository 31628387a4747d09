// How a model is split over devices: tensor (tp), expert (ep), pipeline (pp) and attention
// data (dp) parallelism, parsed from strings like "tp8", "tp8ep8", "tp1ep8dp8", "pp2tp8".
#pragma once

#include <cstdint>
#include <string>

#include "planner/model_spec.h"

namespace deepfit::planner {

struct ParallelPlan {
  std::int64_t tp = 1, ep = 1, pp = 1, dp = 1;
  std::string text;  // as the user wrote it, or as deepfit chose it

  std::int64_t num_devices() const { return tp * pp * dp; }
  bool dp_attention() const { return dp > 1; }
};

// Strict parse: components (tp|ep|pp|dp)N in any order, each at most once; InputError otherwise.
ParallelPlan parse_parallel(const std::string& text);
std::string to_string(const ParallelPlan& p);

// Checks the plan against the model and device count: tp divides the head count, ep divides the
// expert count and tp*dp, pp at most the layer count, tp*pp*dp equals the count. InputError names --parallel.
void check_parallel(const ParallelPlan& p, const ModelSpec& m, std::int64_t count);

// The split a framework uses by default on `count` devices: llama.cpp splits layers (pp), the
// GPU servers use tensor parallelism.
ParallelPlan default_parallel(std::int64_t count, const std::string& framework_id);

}  // namespace deepfit::planner
