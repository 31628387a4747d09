// `deepfit fit`: will the model fit, at this quantization, context and concurrency?
#include <memory>

#include "cli_common.h"
#include "commands.h"
#include "kernels/error.h"
#include "planner/fit.h"
#include "planner/gguf.h"
#include "reports/fit_report.h"

namespace deepfit::cli {

namespace {
struct FitArgs {
  std::string path, model, count = "1", quant, kv_dtype, context = "4096", concurrency = "1", framework, parallel;
  std::string offload = "none", format = "table";
  bool mtp = false;
  DeviceOptions device;
};
}  // namespace

Command add_fit_command(CLI::App& root) {
  auto a = std::make_shared<FitArgs>();
  CLI::App* app = root.add_subcommand("fit", "memory per device: weights, KV cache, activations, reserve; fits or not");
  app->add_option("path", a->path, "a .gguf file (header only is read) or a config.json");
  app->add_option("--model", a->model, "model id (see `deepfit models`) or a config.json path");
  a->device.add_to(*app);
  app->add_option("--count", a->count, "devices: N or auto (the fewest that fit)");
  app->add_option("--quant", a->quant, "quantization scheme(s), comma-separated (see `deepfit quants`); default: a standard set");
  app->add_option("--kv-dtype", a->kv_dtype, "KV cache dtype: bf16, fp16, fp8, q8_0, q4_0 (default: the framework's)");
  app->add_option("--context", a->context, "context tokens per sequence (K suffix = x1024)");
  app->add_option("--concurrency", a->concurrency, "concurrent sequences, comma-separated list");
  app->add_option("--framework", a->framework, "vllm, sglang, trtllm, llamacpp, mlx, ktransformers");
  app->add_option("--parallel", a->parallel, "split, e.g. tp8, tp8ep8, tp1ep8dp8, pp2tp8");
  app->add_option("--offload", a->offload, "none, experts, layers:N");
  app->add_flag("--mtp", a->mtp, "load the MTP module (speculative decoding)");
  app->add_option("--format", a->format, "table, json, md, csv");
  auto run = [a]() {
    const reports::Format format = reports::parse_format(a->format);
    planner::Catalog cat = planner::Catalog::load(planner::data_root());
    const std::optional<hwdb::Device> device = a->device.resolve(cat);
    planner::FitOptions opt;
    if (!a->framework.empty()) opt.framework = a->framework;
    if (!a->kv_dtype.empty()) opt.kv_dtype = a->kv_dtype;
    if (!a->parallel.empty()) opt.parallel = a->parallel;
    opt.count = a->count;
    opt.offload = a->offload;
    opt.mtp = a->mtp;
    opt.context_tokens = parse_tokens(a->context, "--context", 1, 1LL << 26);
    opt.concurrency = parse_int_list(a->concurrency, "--concurrency", 1, 1 << 24);
    if (!a->quant.empty()) opt.quants = split_list(a->quant);
    const hwdb::Device* dev = device ? &*device : nullptr;
    std::vector<planner::FitRecord> records;
    const bool is_gguf = a->path.size() > 5 && a->path.compare(a->path.size() - 5, 5, ".gguf") == 0;
    if (!a->path.empty() && !a->model.empty()) throw InputError("fit: give either a file or --model, not both");
    if (is_gguf) {
      if (!opt.quants.empty()) throw InputError("--quant: a GGUF file's tensor types are read from the file; drop --quant");
      planner::GgufModel g = planner::read_gguf_model(a->path, cat.quants);
      records.push_back(planner::plan_fit_stored(cat, opt, dev, g.model, g.stored, g.scheme));
    } else {
      opt.model = a->path.empty() ? a->model : a->path;
      if (opt.model.empty()) throw InputError("fit: missing --model (a model id, a config.json path, or a .gguf file)");
      records = planner::plan_fit(cat, opt, dev);
    }
    emit(reports::render_fit(records, format, stdout_wants_colour()));
    return 0;
  };
  return {app, run};
}

}  // namespace deepfit::cli
