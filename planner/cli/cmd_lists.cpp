// `deepfit models | quants | devices | frameworks`: what the databases hold.
#include <memory>

#include "cli_common.h"
#include "commands.h"
#include "hwdb/device_db.h"
#include "planner/catalog.h"
#include "reports/table.h"

namespace deepfit::cli {
namespace {

using nlohmann::json;

std::string opt_num(const std::optional<double>& v, int decimals) { return v ? reports::fixed(*v, decimals) : "n/a"; }

struct ListArgs {
  std::string format = "table";
  DeviceOptions device;  // devices only: --device-file adds a record to the listing
};

template <class Fn>
Command list_command(CLI::App& root, const char* name, const char* help, bool device_file, Fn body) {
  auto a = std::make_shared<ListArgs>();
  CLI::App* app = root.add_subcommand(name, help);
  app->add_option("--format", a->format, "table, json, md, csv");
  if (device_file) app->add_option("--device-file", a->device.device_file, "add a device record of your own");
  return {app, [a, body]() {
            const reports::Format f = reports::parse_format(a->format);
            planner::Catalog cat = planner::Catalog::load(planner::data_root());
            if (!a->device.device_file.empty()) a->device.resolve(cat);
            emit(body(cat, f));
            return 0;
          }};
}

}  // namespace

Command add_models_command(CLI::App& root) {
  return list_command(root, "models", "list the shipped models", false, [](const planner::Catalog& cat, reports::Format f) {
    json arr = json::array();
    reports::Table t;
    t.headers = {"id", "name", "architecture", "params B", "active B", "layers", "context", "released as"};
    t.right_align = {false, false, false, true, true, true, true, false};
    for (const auto& id : cat.model_ids()) {
      planner::ModelSpec m = cat.model(id);
      planner::ParamCounts p = planner::count_params(m, planner::tensor_inventory(m));
      arr.push_back({{"id", m.id}, {"name", m.display_name}, {"architecture", m.hf_architecture}, {"params_total", p.total},
                     {"params_main", p.main}, {"params_active_per_token", p.active_per_token}, {"num_layers", m.num_layers},
                     {"max_context_tokens", m.max_ctx_len}, {"released_format", m.released_format}, {"hf_repo", m.hf_repo},
                     {"release_date", m.release_date}, {"source", m.source}});
      t.rows.push_back({m.id, m.display_name, m.hf_architecture, reports::fixed(static_cast<double>(p.total) / 1e9, 1),
                        reports::fixed(static_cast<double>(p.active_per_token) / 1e9, 1), std::to_string(m.num_layers),
                        std::to_string(m.max_ctx_len), m.released_format});
      t.csv_rows.push_back({m.id, m.display_name, m.hf_architecture, std::to_string(p.total), std::to_string(p.active_per_token),
                            std::to_string(m.num_layers), std::to_string(m.max_ctx_len), m.released_format});
    }
    if (f == reports::Format::kJson) return json{{"models", arr}}.dump(2) + "\n";
    if (f == reports::Format::kCsv) t.headers = {"id", "name", "architecture", "params", "params_active_per_token", "layers", "context_tokens", "released_format"};
    return reports::render(t, f);
  });
}

Command add_quants_command(CLI::App& root) {
  return list_command(root, "quants", "list storage formats and quantization schemes", false, [](const planner::Catalog& cat, reports::Format f) {
    if (f == reports::Format::kJson) {
      json formats = json::array(), schemes = json::array();
      for (const auto& [id, x] : cat.quants.formats())
        formats.push_back({{"id", id}, {"block_weights", x.block_weights}, {"block_bits", x.block_bits},
                           {"bits_per_weight", x.bits_per_weight()}, {"ggml_type", x.ggml_type ? json(*x.ggml_type) : json(nullptr)},
                           {"source", x.source}});
      for (const auto& s : cat.quants.schemes())
        schemes.push_back({{"id", s.id}, {"kind", s.kind}, {"description", s.description}});
      return json{{"formats", formats}, {"schemes", schemes}}.dump(2) + "\n";
    }
    reports::Table t;
    t.headers = {"scheme", "kind", "description"};
    for (const auto& s : cat.quants.schemes()) t.rows.push_back({s.id, s.kind, s.description});
    reports::Table ft;
    ft.headers = {"format", "weights/block", "bits/block", "bits/weight"};
    ft.right_align = {false, true, true, true};
    for (const auto& [id, x] : cat.quants.formats())
      ft.rows.push_back({id, std::to_string(x.block_weights), std::to_string(x.block_bits), reports::fixed(x.bits_per_weight(), 4)});
    if (f == reports::Format::kCsv) return reports::render(t, f);
    return reports::render(t, f) + "\n" + reports::render(ft, f);
  });
}

Command add_devices_command(CLI::App& root) {
  return list_command(root, "devices", "list the device database", true, [](const planner::Catalog& cat, reports::Format f) {
    if (f == reports::Format::kJson) {
      json arr = json::array();
      for (const auto& d : cat.devices.all()) arr.push_back(hwdb::device_to_json(d));
      return json{{"devices", arr}}.dump(2) + "\n";
    }
    reports::Table t;
    t.headers = {"id", "name", "kind", "memory GB", "bandwidth GB/s", "bf16 TFLOPS", "fp8 TFLOPS", "fp4 TFLOPS", "USD/h"};
    t.right_align = {false, false, false, true, true, true, true, true, true};
    for (const auto& d : cat.devices.all()) {
      t.rows.push_back({d.id, d.name, hwdb::to_string(d.kind), reports::gb(static_cast<double>(d.memory_bytes)),
                        reports::fixed(d.memory_bandwidth_gbps, 0), opt_num(d.peak_tflops.bf16, 1), opt_num(d.peak_tflops.fp8, 1),
                        opt_num(d.peak_tflops.fp4, 1), d.price ? reports::fixed(d.price->usd_per_hour, 2) : "n/a"});
      auto raw = [](const std::optional<double>& v) { return v ? reports::fixed(*v, 3) : std::string(); };
      t.csv_rows.push_back({d.id, d.name, hwdb::to_string(d.kind), std::to_string(d.memory_bytes),
                            reports::fixed(d.memory_bandwidth_gbps * 1e9, 0), raw(d.peak_tflops.bf16), raw(d.peak_tflops.fp8),
                            raw(d.peak_tflops.fp4), d.price ? reports::fixed(d.price->usd_per_hour, 4) : ""});
    }
    if (f == reports::Format::kCsv)
      t.headers = {"id", "name", "kind", "memory_bytes", "memory_bandwidth_bytes_per_s", "bf16_tflops", "fp8_tflops", "fp4_tflops", "usd_per_hour"};
    return reports::render(t, f);
  });
}

Command add_frameworks_command(CLI::App& root) {
  return list_command(root, "frameworks", "list serving-framework profiles", false, [](const planner::Catalog& cat, reports::Format f) {
    if (f == reports::Format::kJson) {
      json arr = json::array();
      for (const auto& fw : cat.frameworks.all())
        arr.push_back({{"id", fw.id}, {"name", fw.name}, {"version_basis", fw.version_basis},
                       {"memory_fraction", fw.memory.memory_fraction}, {"fraction_of", fw.memory.fraction_of},
                       {"kv_block_tokens", fw.kv.block_tokens}, {"default_kv_dtype", fw.kv.default_dtype}, {"sources", fw.sources}});
      return json{{"frameworks", arr}}.dump(2) + "\n";
    }
    reports::Table t;
    t.headers = {"id", "name", "memory fraction", "of", "KV block", "default KV dtype", "basis"};
    for (const auto& fw : cat.frameworks.all())
      t.rows.push_back({fw.id, fw.name, reports::fixed(fw.memory.memory_fraction, 2), fw.memory.fraction_of,
                        std::to_string(fw.kv.block_tokens), fw.kv.default_dtype, fw.version_basis});
    return reports::render(t, f);
  });
}

}  // namespace deepfit::cli
