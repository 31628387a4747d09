// Shared helpers for planner tests: the shipped catalog, loaded once per process.
#pragma once

#include "planner/catalog.h"

namespace deepfit::planner::test {

inline const Catalog& catalog() {
  static const Catalog cat = Catalog::load(DEEPFIT_SOURCE_DIR);
  return cat;
}

}  // namespace deepfit::planner::test
