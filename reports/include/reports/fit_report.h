// Rendering of `deepfit fit` records: the JSON record (key names fixed by DESIGN.md) and the
// table/Markdown/CSV views.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "planner/compare.h"
#include "planner/fit.h"
#include "reports/table.h"

namespace deepfit::reports {

nlohmann::json fit_to_json(const planner::FitRecord& r);
// One record: the record itself; several (one per quantization): {"records": [...]}.
nlohmann::json fits_to_json(const std::vector<planner::FitRecord>& records);
Table fit_table(const std::vector<planner::FitRecord>& records, bool colour = false);
// `colour`: ANSI colours in the text table (the CLI passes true only on a TTY without NO_COLOR).
std::string render_fit(const std::vector<planner::FitRecord>& records, Format f, bool colour = false);
// `predict` view: speed and cost per concurrency (JSON is the same record as fit's, speed filled).
std::string render_predict(const std::vector<planner::FitRecord>& records, Format f);

}  // namespace deepfit::reports

namespace deepfit::reports {

// `deepfit compare` as its JSON document: {"model", "rows":[...], "configs_tried", "configs_fit",
// "notes"}, each row the configuration plus its speed keys (null where not computable).
nlohmann::json compare_to_json(const std::string& model, const planner::Comparison& c);

}  // namespace deepfit::reports
