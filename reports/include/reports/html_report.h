// The self-contained HTML report (issue #6): result documents as the commands write them (bench's
// Google Benchmark JSON, compare, fit, predict --context and validate JSON) turned into six inline
// SVG charts with their basis in words. Classifying and charting only; running the planner and
// reading files belong to the CLI.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace deepfit::reports {

// One result document and where it came from (a file name, or the command that made it).
struct ResultDoc {
  std::string origin;
  nlohmann::json doc;
};

// The kinds of document the report reads, recognised by their keys.
enum class DocKind { kBench, kCompare, kFit, kPosition, kValidate };
const char* to_string(DocKind k);
// kBench: "benchmarks"; kCompare: "rows" + "configs_tried"; kValidate: "rows" + "summary";
// kFit / kPosition: fit or predict records ("results", or "records" of them), kPosition when the
// records price decode at more than one context position (predict --context). InputError naming
// the origin for anything else.
DocKind classify(const ResultDoc& d);

struct ReportInput {
  std::string title;
  std::vector<std::string> intro;  // paragraphs above the charts (what was run, where)
  std::vector<ResultDoc> docs;
};

// The charts, in order: 1 roofline of the host from bench (measured roofs and kernel points),
// 2 output tokens/s against concurrency (total, per user) from compare, 3 cost per million output
// tokens per configuration from compare, 4 memory per device by quantization from fit, 5 cost per
// million tokens against context position from predict --context, 6 predicted against measured
// from validate. A chart whose documents are missing says so in words.
std::string html_report(const ReportInput& in);

}  // namespace deepfit::reports
