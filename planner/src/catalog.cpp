// Catalog loading and model lookup.
#include "planner/catalog.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>

#include "hwdb/json_check.h"
#include "kernels/error.h"

namespace deepfit::planner {

std::string data_root() {
  if (const char* home = std::getenv("DEEPFIT_HOME"); home && *home) return home;
  return DEEPFIT_DATA_ROOT;
}

Catalog Catalog::load(const std::string& root) {
  Catalog c;
  c.root_ = root;
  c.devices = hwdb::DeviceDb::load_dir(root + "/hwdb/devices");
  c.quants = QuantDb::load(root + "/data/quants.json");
  c.frameworks = FrameworkDb::load_dir(root + "/data/frameworks");
  c.links = LinkDb::load(root + "/data/links.json");
  c.workloads = WorkloadDb::load(root + "/data/workloads.json");
  return c;
}

std::vector<std::string> Catalog::model_ids() const {
  std::vector<std::string> ids;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(root_ + "/data/models", ec))
    if (e.path().extension() == ".json") ids.push_back(e.path().stem().string());
  std::sort(ids.begin(), ids.end());
  return ids;
}

ModelSpec Catalog::model(const std::string& id_or_path) const {
  namespace fs = std::filesystem;
  std::error_code ec;
  const bool looks_like_path = (id_or_path.find('/') != std::string::npos) || (id_or_path.size() > 5 &&
                               id_or_path.compare(id_or_path.size() - 5, 5, ".json") == 0);
  if (looks_like_path) {
    if (!fs::is_regular_file(id_or_path, ec))
      throw InputError("--model: no such file '" + id_or_path + "' (expected a model id or a config.json path)");
    return model_from_config(hwdb::parse_json_file(id_or_path), id_or_path, false);
  }
  const std::string path = root_ + "/data/models/" + id_or_path + ".json";
  if (!fs::is_regular_file(path, ec))
    throw InputError("--model: unknown model '" + id_or_path + "' (hint: " + hwdb::did_you_mean(id_or_path, model_ids()) +
                     "`deepfit models` lists all, or pass a config.json path)");
  ModelSpec m = model_from_config(hwdb::parse_json_file(path), path, true);
  if (m.id != id_or_path) hwdb::json_fail({path, "/deepfit/id"}, "id '" + m.id + "' does not match the file name");
  return m;
}

}  // namespace deepfit::planner
