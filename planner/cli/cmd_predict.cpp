// `deepfit predict`: fit plus serving speed and cost per concurrency.
#include <memory>

#include "cli_common.h"
#include "commands.h"
#include "kernels/error.h"
#include "planner/predict.h"
#include "reports/fit_report.h"

namespace deepfit::cli {

Command add_predict_command(CLI::App& root) {
  struct Args {
    std::string model, count = "1", quant, kv_dtype, concurrency = "1,8,64", framework, parallel, offload = "none", format = "table";
    std::string input, output, context, workload, host_device, host_calibration;
    bool mtp = false;
    double mtp_acceptance = 0.85;
    std::optional<double> usd_per_kwh;
    DeviceOptions device;
  };
  auto a = std::make_shared<Args>();
  CLI::App* app = root.add_subcommand("predict", "decode/prefill speed, TTFT/TPOT and cost per concurrency, with basis and expected error");
  app->add_option("--model", a->model, "model id or config.json path")->required();
  a->device.add_to(*app);
  app->add_option("--count", a->count, "devices: N or auto");
  app->add_option("--quant", a->quant, "quantization scheme(s), comma-separated (default: the released format)");
  app->add_option("--kv-dtype", a->kv_dtype, "KV cache dtype (default: the framework's)");
  app->add_option("--concurrency", a->concurrency, "concurrent requests, comma-separated (default 1,8,64)");
  app->add_option("--input", a->input, "input tokens per request (default 1024)");
  app->add_option("--output", a->output, "output tokens per request (default 256)");
  app->add_option("--workload", a->workload, "named request lengths instead of --input/--output (sharegpt, ...; see data/workloads.json)");
  app->add_option("--context", a->context, "price decode at these KV positions (comma-separated, K suffix ok): cost vs token position");
  app->add_option("--framework", a->framework, "vllm, sglang, trtllm, llamacpp, mlx, ktransformers");
  app->add_option("--parallel", a->parallel, "split, e.g. tp8, tp8ep8, tp1ep8dp8");
  app->add_option("--offload", a->offload, "none, experts (routed experts in host RAM) or layers:N (the last N layers in host RAM), computed by --host-device");
  app->add_option("--host-device", a->host_device, "the CPU of a hybrid run (a device id, or host for this machine's probe)");
  app->add_option("--host-calibration", a->host_calibration,
                  "with --device host --framework deepfit: price decode with this host's fit (deepfit validate --write-calibration FILE)");
  app->add_flag("--mtp", a->mtp, "MTP speculative decoding: load the MTP module, one draft token per step");
  app->add_option("--mtp-acceptance", a->mtp_acceptance, "acceptance rate of the draft token (default 0.85; DeepSeek reports 0.85-0.90)");
  app->add_option("--usd-per-kwh", a->usd_per_kwh, "electricity price: adds the energy cost per million output tokens at TDP");
  app->add_option("--format", a->format, "table, json, md, csv");
  return {app, [a]() {
            const reports::Format f = reports::parse_format(a->format);
            planner::Catalog cat = planner::Catalog::load(planner::data_root());
            const std::optional<hwdb::Device> device = a->device.resolve(cat);
            if (!device) throw InputError("predict: missing --device (speed depends on the hardware)");
            planner::FitOptions opt;
            opt.model = a->model;
            opt.count = a->count;
            if (!a->framework.empty()) opt.framework = a->framework;
            if (!a->kv_dtype.empty()) opt.kv_dtype = a->kv_dtype;
            if (!a->parallel.empty()) opt.parallel = a->parallel;
            opt.offload = a->offload;
            opt.mtp = a->mtp;
            opt.concurrency = parse_int_list(a->concurrency, "--concurrency", 1, 1 << 20);
            if (!a->quant.empty()) opt.quants = split_list(a->quant);
            planner::ServingOptions so;
            if (!a->workload.empty()) {
              if (!a->input.empty() || !a->output.empty()) throw InputError("--workload: give either --workload or --input/--output, not both");
              const planner::Workload& w = cat.workloads.get(a->workload);
              so.input_tokens = w.input_tokens;
              so.output_tokens = w.output_tokens;
            } else {
              so.input_tokens = parse_tokens(a->input.empty() ? "1024" : a->input, "--input", 1, 1LL << 24);
              so.output_tokens = parse_tokens(a->output.empty() ? "256" : a->output, "--output", 1, 1LL << 24);
            }
            if (a->mtp) {
              if (!(a->mtp_acceptance >= 0 && a->mtp_acceptance <= 1))
                throw InputError("--mtp-acceptance: " + std::to_string(a->mtp_acceptance) + " is not a rate between 0 and 1");
              so.mtp_acceptance = a->mtp_acceptance;
            }
            if (a->usd_per_kwh) {
              if (!(*a->usd_per_kwh > 0 && *a->usd_per_kwh < 100))
                throw InputError("--usd-per-kwh: expected a price between 0 and 100 USD per kWh");
              so.usd_per_kwh = a->usd_per_kwh;
            }
            std::optional<hwdb::Device> host;
            if (!a->host_device.empty()) {
              DeviceOptions hd;
              hd.device = a->host_device;
              host = hd.resolve(cat);
              if (host->kind != hwdb::DeviceKind::kCpu) throw InputError("--host-device: '" + a->host_device + "' is not a CPU");
              so.host = &*host;
            }
            const planner::CalibrationDb cal = planner::CalibrationDb::load(cat.root() + "/data/calibration.json");
            std::optional<planner::HostCalibration> hc;
            if (!a->host_calibration.empty()) {
              hc = planner::HostCalibration::load(a->host_calibration);
              so.host_calibration = &*hc;
            }
            std::vector<planner::FitRecord> records;
            if (a->context.empty()) {
              records = planner::plan_predict(cat, cal, opt, so, *device);
            } else {
              for (std::int64_t ctx : parse_int_list(a->context, "--context", 1, 1LL << 26)) {
                so.decode_context = ctx;
                for (auto& r : planner::plan_predict(cat, cal, opt, so, *device)) records.push_back(std::move(r));
              }
            }
            emit(reports::render_predict(records, f));
            return 0;
          }};
}

}  // namespace deepfit::cli
