// One device record (hwdb/devices/<id>.json): memory, bandwidth, dense peaks per dtype, links,
// price, and the source of every number. Plain data; loading and validation live in device_db.h.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace deepfit::hwdb {

enum class DeviceKind { kGpu, kTpu, kNpu, kApple, kCpu, kApu };

const char* to_string(DeviceKind kind);

// Dense peak throughput per dtype in TFLOP/s (int8 in TOP/s); nullopt where the hardware has none.
struct PeakTflops {
  std::optional<double> fp32, tf32, bf16, fp16, fp8, int8, fp4;
  // FP16 tensor rate with FP16 accumulation, recorded only where it differs from `fp16` (which is
  // the FP32-accumulate rate): GeForce cards run it at twice the rate. Software that asks cuBLAS for
  // CUBLAS_COMPUTE_16F (llama.cpp's CUDA GEMMs) gets it.
  std::optional<double> fp16_acc16;
};

struct ScaleUp {
  std::string kind;  // nvlink4, infinity-fabric, ici, ...
  double bandwidth_gbps = 0;
  std::optional<bool> bidirectional;  // nullopt: the vendor does not say
};

struct Price {
  double usd_per_hour = 0;
  std::string date;
  std::string source;
};

struct MemoryConfig {
  std::int64_t memory_bytes = 0;
  double memory_bandwidth_gbps = 0;
};

struct Device {
  std::string id;
  std::string name;
  std::string vendor;
  DeviceKind kind = DeviceKind::kGpu;
  std::int64_t memory_bytes = 0;
  double memory_bandwidth_gbps = 0;
  PeakTflops peak_tflops;
  std::optional<double> tdp_w;
  std::optional<ScaleUp> scale_up;
  std::optional<double> scale_out_gbps;
  std::optional<std::int64_t> pcie_gen;
  std::int64_t devices_per_node = 1;
  std::optional<std::int64_t> launch_year;  // nullopt: unknown (a probed host)
  std::optional<Price> price;
  std::vector<MemoryConfig> memory_configs;    // Apple/APU/CPU purchasable configurations
  std::optional<double> gpu_memory_fraction;   // unified memory: share the GPU may use by default
  std::map<std::string, std::string> sources;  // field -> where the number comes from
  std::vector<std::string> notes;
  nlohmann::json measurements;                  // probed hosts: every figure measured, with provenance
  std::string origin;                           // file it was loaded from
  std::vector<std::string> overrides;           // one-run overrides applied (said in every result)

  bool unified_memory() const { return gpu_memory_fraction.has_value(); }
};

}  // namespace deepfit::hwdb
