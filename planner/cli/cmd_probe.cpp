// `deepfit probe`: this machine as a device record (cached; --refresh measures again).
#include <cstdio>
#include <memory>

#include "cli_common.h"
#include "commands.h"
#include "hwdb/counters.h"
#include "hwdb/device_db.h"
#include "kernels/error.h"
#include "planner/host_probe.h"
#include "reports/table.h"

namespace deepfit::cli {

void progress_line(const std::string& line) { std::fprintf(stderr, "%s\n", line.c_str()); }

Command add_probe_command(CLI::App& root) {
  struct Args {
    bool refresh = false;
    std::string format = "table";
  };
  auto a = std::make_shared<Args>();
  CLI::App* app = root.add_subcommand("probe", "measure this machine (topology, bandwidth, compute) into the `host` device record");
  app->add_flag("--refresh", a->refresh, "measure again even when a cached record exists");
  app->add_option("--format", a->format, "table or json");
  return {app, [a]() {
            const reports::Format f = reports::parse_format(a->format);
            if (f == reports::Format::kMarkdown || f == reports::Format::kCsv)
              throw InputError("--format: probe prints table or json");
            hwdb::Device d = planner::host_device(a->refresh, progress_line);
            nlohmann::json j = hwdb::device_to_json(d);
            // Counter availability belongs to the machine's description (STYLE B11).
            hwdb::CounterGroup g = hwdb::CounterGroup::open({"cycles", "instructions", "task-clock"});
            nlohmann::json counters = nlohmann::json::object();
            g.start();
            g.stop();
            for (const auto& r : g.read()) counters[r.name] = r.value ? nlohmann::json("available") : nlohmann::json(r.reason);
            j["counters"] = counters;
            if (f == reports::Format::kJson) {
              emit(j.dump(2) + "\n");
              return 0;
            }
            reports::Table t;
            t.headers = {"figure", "value"};
            auto opt = [](const std::optional<double>& v, double scale, const char* unit) {
              return v ? reports::fixed(*v * scale, 1) + " " + unit : std::string("n/a");
            };
            t.rows = {{"cpu", d.name},
                      {"isa", d.measurements.value("isa", std::string("unknown"))},
                      {"memory", reports::gb(static_cast<double>(d.memory_bytes)) + " GB"},
                      {"triad bandwidth (all threads)", reports::fixed(d.memory_bandwidth_gbps, 1) + " GB/s"},
                      {"fp32 FMA", opt(d.peak_tflops.fp32, 1e3, "GFLOP/s")},
                      {"bf16 dot", opt(d.peak_tflops.bf16, 1e3, "GFLOP/s")},
                      {"int8 dot", opt(d.peak_tflops.int8, 1e3, "GOP/s")}};
            for (const auto& note : d.notes) t.rows.push_back({"note", note});
            for (const auto& [name, v] : counters.items()) t.rows.push_back({"counter " + name, v.get<std::string>()});
            emit(reports::render(t, f) + "record: " + planner::host_cache_path() + "\n");
            return 0;
          }};
}

}  // namespace deepfit::cli
