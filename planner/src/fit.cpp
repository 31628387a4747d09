// `deepfit fit` (see fit.h).
#include "planner/fit.h"

#include <algorithm>

#include "kernels/error.h"

namespace deepfit::planner {

std::string default_framework(const Scheme& s, const hwdb::Device* device) {
  if (s.is_gguf()) return "llamacpp";
  if (s.id == "mlx-4bit") return "mlx";
  if (device && (device->kind == hwdb::DeviceKind::kApple || device->kind == hwdb::DeviceKind::kCpu)) return "llamacpp";
  return "vllm";
}

std::vector<std::string> default_quants(const ModelSpec& m) {
  std::vector<std::string> q = {"bf16", "fp8", "nvfp4", "awq-int4", "q8_0", "q6_k", "q5_k_m", "q4_k_m", "q3_k_m", "q2_k",
                                "iq2_xxs", "iq1_s"};
  if (m.released_format == "mxfp4") q.insert(q.begin() + 2, "mxfp4");
  return q;
}

FitRecord plan_fit_stored(const Catalog& cat, const FitOptions& opt, const hwdb::Device* device, const ModelSpec& m,
                          const StoredModel& stored, const Scheme& scheme) {
  FitRecord rec;
  rec.model_id = m.id;
  rec.model_name = m.display_name;
  rec.quant = scheme.id;
  rec.device = device ? std::optional<std::string>(device->id) : std::nullopt;
  rec.framework = opt.framework.value_or(default_framework(scheme, device));
  const Framework& fw = cat.frameworks.get(rec.framework);
  if (scheme.is_gguf() && rec.framework != "llamacpp" && rec.framework != "ktransformers")
    rec.notes.push_back("GGUF files are served by llama.cpp or ktransformers; " + fw.name + " GGUF support is limited");
  rec.kv_dtype = normalize_kv_dtype(opt.kv_dtype.value_or(m.dsa ? fw.kv.default_dtype_dsa : fw.kv.default_dtype), fw);
  rec.offload = parse_offload(opt.offload);
  if (rec.offload.kind == Offload::Kind::kExperts && !m.is_moe())
    throw InputError("--offload experts: " + m.display_name + " has no experts (hint: use layers:N)");
  rec.params = stored.params;
  rec.weights_bytes = stored.bytes;
  rec.notes.insert(rec.notes.end(), stored.notes.begin(), stored.notes.end());

  if (opt.context_tokens < 1 || opt.context_tokens > m.max_ctx_len)
    throw InputError("--context: " + std::to_string(opt.context_tokens) + " tokens is beyond " + m.display_name +
                     "'s maximum of " + std::to_string(m.max_ctx_len) + " (expected 1.." + std::to_string(m.max_ctx_len) + ")");

  FitSetup s;
  s.model = &m;
  s.stored = &stored;
  s.scheme = &scheme;
  s.device = device;
  s.framework = &fw;
  s.kv_dtype = rec.kv_dtype;
  s.offload = rec.offload;
  s.mtp = opt.mtp;
  if (opt.mtp && m.num_mtp_layers == 0) throw InputError("--mtp: " + m.display_name + " ships no MTP module");

  if (opt.count == "auto") {
    if (!device) throw InputError("--count auto needs --device (the fewest devices of which kind?)");
    if (opt.parallel) throw InputError("--count auto chooses the split itself; drop --parallel or give --count N");
    auto n = min_devices(s, opt.concurrency.front(), opt.context_tokens, opt.max_count);
    if (!n) throw InputError("--count auto: no count up to " + std::to_string(opt.max_count) + " devices fits this setup");
    rec.count = *n;
    rec.count_was_auto = true;
  } else {
    std::size_t used = 0;
    long long n = 0;
    try {
      n = std::stoll(opt.count, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != opt.count.size() || n < 1 || n > 65536)
      throw InputError("--count: expected a whole number of devices in 1..65536 or 'auto', got '" + opt.count + "'");
    rec.count = n;
  }
  rec.parallel = opt.parallel ? parse_parallel(*opt.parallel) : default_parallel(rec.count, rec.framework);
  check_parallel(rec.parallel, m, rec.count);
  s.count = rec.count;
  s.parallel = rec.parallel;

  for (const auto& t : stored.tensors)
    if (!t.tensor.mtp || opt.mtp) rec.weights_loaded_bytes += t.bytes;
  const KvPerToken kv = kv_of(s);
  rec.kv_bytes_per_token = kv.bytes_per_token();
  rec.kv_layout = kv.layout;
  rec.load = device_load(s);
  for (std::int64_t c : opt.concurrency) rec.results.push_back(fit_one(s, rec.load, kv, c, opt.context_tokens));

  if (device && !rec.results.front().fits.value_or(true) && !rec.count_was_auto && !opt.parallel)
    rec.min_devices = min_devices(s, opt.concurrency.front(), opt.context_tokens, opt.max_count);
  if (device && rec.results.front().fits == false) {
    if (rec.min_devices)
      rec.notes.push_back("does not fit " + std::to_string(rec.count) + " x " + device->id + "; needs at least " +
                          std::to_string(*rec.min_devices) + " x " + device->id + " (" +
                          to_string(default_parallel(*rec.min_devices, rec.framework)) + ")");
    else if (!opt.parallel && !rec.count_was_auto)
      rec.notes.push_back("does not fit on any count up to " + std::to_string(opt.max_count) + " x " + device->id);
  }
  if (kv.replicated_across_tp && rec.parallel.tp > 1)
    rec.notes.push_back("tensor parallelism keeps MLA's whole latent cache on each of the " + std::to_string(rec.parallel.tp) +
                        " ranks; attention data parallelism (e.g. --parallel tp1ep" + std::to_string(rec.count) + "dp" +
                        std::to_string(rec.count) + ") divides it");
  if (rec.load.host_bytes > 0)
    rec.notes.push_back("host RAM needed for offloaded weights: " + std::to_string(rec.load.host_bytes) + " bytes");
  if (m.num_mtp_layers > 0 && !opt.mtp && stored.bytes != rec.weights_loaded_bytes)
    rec.notes.push_back("the MTP module is stored but not loaded (pass --mtp for speculative decoding)");
  rec.notes.push_back("activation workspace is an estimate from tensor shapes and " + fw.name + "'s batch of " +
                      std::to_string(fw.memory.activation_tokens) + " tokens");
  return rec;
}

std::vector<FitRecord> plan_fit(const Catalog& cat, const FitOptions& opt, const hwdb::Device* device) {
  const ModelSpec m = cat.model(opt.model);
  std::vector<std::string> quants = opt.quants.empty() ? default_quants(m) : opt.quants;
  std::vector<FitRecord> out;
  for (const auto& q : quants) {
    const Scheme& scheme = cat.quants.scheme(q);
    const StoredModel stored = store_model(m, scheme, cat.quants);
    out.push_back(plan_fit_stored(cat, opt, device, m, stored, scheme));
  }
  return out;
}

}  // namespace deepfit::planner
