// Device records: the shipped database loads whole, a few vetted facts hold, and every invalid
// fixture in tests/fixtures/devices/ fails with a message that names the file and JSON path.
// Tests hwdb/src/device_db.cpp and hwdb/src/json_check.cpp.
#include "hwdb/device_db.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include "hwdb/json_check.h"
#include "kernels/error.h"

namespace deepfit::hwdb {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr std::int64_t kGiB = std::int64_t{1} << 30;

const std::string kSourceDir = DEEPFIT_SOURCE_DIR;

const DeviceDb& shipped() {
  static const DeviceDb db = DeviceDb::load_dir(kSourceDir + "/hwdb/devices");
  return db;
}

std::string fixture(const std::string& name) { return kSourceDir + "/tests/fixtures/devices/" + name; }

// The InputError message of loading a fixture that must fail; a fixture that loads is a failure.
std::string load_error(const std::string& name) {
  try {
    load_device_file(fixture(name), true);
  } catch (const InputError& e) {
    return e.what();
  }
  ADD_FAILURE() << name << " loaded, but it is a fixture with a defect";
  return "";
}

template <class Fn>
std::string input_error_of(Fn&& fn) {
  try {
    fn();
  } catch (const InputError& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected deepfit::InputError, nothing was thrown";
  return "";
}

std::vector<std::string> shipped_ids() {
  std::vector<std::string> ids;
  for (const auto& d : shipped().all()) ids.push_back(d.id);
  return ids;
}

// ---------------------------------------------------------------------------------------------
// The shipped database

TEST(DeviceDb, LoadsEveryShippedRecord) {
  const DeviceDb& db = shipped();
  const std::vector<std::string> expected = {
      "h100-sxm", "h100-pcie", "h100-nvl", "h800-sxm", "h20", "h200-sxm", "h200-nvl", "b200", "b300", "gb200",
      "gb300", "a100-sxm-80g", "a100-sxm-40g", "a100-pcie-80g", "l40s", "l4", "rtx-3090", "rtx-4090", "rtx-5090",
      "rtx-6000-ada", "rtx-pro-6000", "dgx-spark", "mi300x", "mi325x", "mi350x", "mi355x", "tpu-v5e", "tpu-v5p",
      "tpu-v6e", "tpu-v7", "gaudi3", "trainium2", "m1-max", "m2-ultra", "m3-max", "m3-ultra", "m4-pro", "m4-max",
      "ryzen-ai-max-395", "epyc-9654", "epyc-9755", "xeon-6980p", "xeon-gold-6454s", "ampereone-a192-32x",
      "core-i7-14700", "epyc-7c13", "epyc-9374f", "xeon-8136", "xeon-8352y", "xeon-gold-6430", "l20", "rtx-4090d"};
  for (const auto& id : expected) EXPECT_NE(db.find(id), nullptr) << "missing device record: " << id;

  // One record per *.json file, each named after its id, sorted by id.
  std::size_t files = 0;
  for (const auto& e : std::filesystem::directory_iterator(kSourceDir + "/hwdb/devices"))
    if (e.path().extension() == ".json") ++files;
  EXPECT_EQ(db.all().size(), files);
  for (std::size_t i = 1; i < db.all().size(); ++i) EXPECT_LT(db.all()[i - 1].id, db.all()[i].id);
  for (const auto& d : db.all())
    EXPECT_EQ(std::filesystem::path(d.origin).stem().string(), d.id) << d.origin;
}

// Every device a published measurement in the reference set ran on must be plannable.
TEST(DeviceDb, HoldsEveryDeviceOfThePublicReference) {
  const std::string path = kSourceDir + "/../shared/reference/public.jsonl";
  if (!std::filesystem::exists(path)) GTEST_SKIP() << "reference set not present: " << path;
  std::ifstream in(path);
  ASSERT_TRUE(in) << "cannot read " << path;
  std::set<std::string> devices;
  std::string line;
  int line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const Json row = parse_json_text(line, path + ":" + std::to_string(line_no));
    ASSERT_TRUE(row.contains("device") && row.at("device").is_string()) << path << ":" << line_no;
    devices.insert(row.at("device").get<std::string>());
    // The CPU of a hybrid run (experts in host RAM) is a device too.
    if (row.contains("host_device") && row.at("host_device").is_string())
      devices.insert(row.at("host_device").get<std::string>());
  }
  ASSERT_FALSE(devices.empty());
  for (const auto& id : devices) EXPECT_NE(shipped().find(id), nullptr) << "reference device without a record: " << id;
}

// File -> Device -> JSON gives back the file (same keys and values), and JSON text -> Device is
// lossless, for every shipped record (memory_configs, gpu_memory_fraction, null fields included).
TEST(DeviceDb, EveryShippedRecordRoundTripsThroughJson) {
  for (const auto& d : shipped().all()) {
    const Json j = device_to_json(d);
    EXPECT_EQ(j, parse_json_file(d.origin)) << d.id;
    const Device back = device_from_json(parse_json_text(j.dump(), "round-trip"), "round-trip", d.id);
    EXPECT_EQ(device_to_json(back), j) << d.id;
  }
}

// ---------------------------------------------------------------------------------------------
// Facts from the vetted reference /work/shared/reference/devices.md (main table rows and the
// "common traps" list). Line numbers are that file's.

const Device& dev(const std::string& id) { return shipped().get(id); }

TEST(ShippedDevices, H100SxmPeaksAreDenseNotSparse) {
  // devices.md:20 "NVIDIA H100 SXM5 80GB | ... | BF16 d 989.4 | FP8 d 1978.9"; devices.md:61 trap:
  // "H100 SXM BF16 is 989 dense, not 1,979; FP8 1,979 not 3,958".
  const Device& d = dev("h100-sxm");
  ASSERT_TRUE(d.peak_tflops.bf16 && d.peak_tflops.fp8);
  EXPECT_DOUBLE_EQ(*d.peak_tflops.bf16, 989.4);
  EXPECT_DOUBLE_EQ(*d.peak_tflops.fp8, 1978.9);
}

TEST(ShippedDevices, A100HasNoFp8) {
  // devices.md:29-30 (A100 SXM4 80GB, A100 40GB): FP8 column "–"; devices.md:62 trap: "A100 has no
  // FP8. Any A100 FP8 value is wrong"; devices.md:184 (A100 80GB incl. PCIe): "no FP8".
  for (const char* id : {"a100-sxm-80g", "a100-sxm-40g", "a100-pcie-80g"})
    EXPECT_FALSE(dev(id).peak_tflops.fp8.has_value()) << id;
}

TEST(ShippedDevices, H100PcieBandwidthIs2000GBps) {
  // devices.md:21 "NVIDIA H100 PCIe 80GB | 80 | 2000"; devices.md:68 trap: "H100 PCIe is HBM2e at
  // 2.0 TB/s ... not HBM3/3.35 TB/s".
  EXPECT_DOUBLE_EQ(dev("h100-pcie").memory_bandwidth_gbps, 2000.0);
}

TEST(ShippedDevices, Rtx3090BandwidthIs936GBps) {
  // devices.md:37 "NVIDIA GeForce RTX 3090 | 24 | 936"; devices.md:69 trap: "RTX 3090 is 936 GB/s
  // (1,008 GB/s is RTX 3090 Ti / RTX 4090)".
  EXPECT_DOUBLE_EQ(dev("rtx-3090").memory_bandwidth_gbps, 936.0);
}

TEST(ShippedDevices, Gb200IsStoredPerGpuNotPerSuperchip) {
  // devices.md:27 "NVIDIA GB200 (per B200 GPU in GB200 NVL72) | 186 (192) | 8000 | ... | BF16 d 2500 |
  // ... | FP4 d 10000"; devices.md:64 trap: "GB200 superchip = 2 GPUs (40 PF FP4 sparse, 384 GB,
  // 16 TB/s). Store per GPU: 186 GB, 8 TB/s, 10 PF FP4 dense."
  const Device& d = dev("gb200");
  EXPECT_DOUBLE_EQ(d.memory_bandwidth_gbps, 8000.0);
  ASSERT_TRUE(d.peak_tflops.bf16 && d.peak_tflops.fp4);
  EXPECT_DOUBLE_EQ(*d.peak_tflops.bf16, 2500.0);
  EXPECT_DOUBLE_EQ(*d.peak_tflops.fp4, 10000.0);
  // "186 GB" read either as decimal GB or as GiB (the database's label x 2^30 convention): one GPU,
  // never the 384 GB superchip or the early 192 GB figure.
  EXPECT_GE(d.memory_bytes, std::int64_t{186'000'000'000});
  EXPECT_LE(d.memory_bytes, 186 * kGiB);
}

TEST(ShippedDevices, Mi300xFp8IsDense) {
  // devices.md:39 "AMD Instinct MI300X | ... | FP8 d 2614.9"; devices.md:70 trap: "MI300X/MI325X FP8
  // 2,614.9 is dense (5,229.8 is sparse)".
  const Device& d = dev("mi300x");
  ASSERT_TRUE(d.peak_tflops.fp8);
  EXPECT_DOUBLE_EQ(*d.peak_tflops.fp8, 2614.9);
}

TEST(ShippedDevices, GeForceFp16AccumulateRateIsTwiceTheFp32AccumulateRate) {
  // devices.md:8 "GeForce cards: the FP16-accumulate rate is 2x higher"; devices.md:215 (Ada
  // whitepaper, RTX 4090) "FP16 w/ FP16 accumulate 330.3"; the GA102 whitepaper's RTX 3090 row
  // gives 71 with FP32 accumulate, 142 with FP16.
  ASSERT_TRUE(dev("rtx-4090").peak_tflops.fp16_acc16);
  EXPECT_DOUBLE_EQ(*dev("rtx-4090").peak_tflops.fp16_acc16, 330.3);
  ASSERT_TRUE(dev("rtx-3090").peak_tflops.fp16_acc16);
  EXPECT_DOUBLE_EQ(*dev("rtx-3090").peak_tflops.fp16_acc16, 142.0);
  // devices.md:216 "Workstation/datacenter Ada parts (RTX 6000 Ada, L40S) are not halved": no
  // separate rate there, nor on datacenter parts.
  for (const char* id : {"rtx-6000-ada", "l40s", "a6000", "h100-sxm", "a100-sxm-80g"})
    EXPECT_FALSE(dev(id).peak_tflops.fp16_acc16.has_value()) << id;
}

// ---------------------------------------------------------------------------------------------
// Fixtures: valid-gpu.json is a complete valid record; every other file is a copy of it with
// exactly one defect (and its id set to its own file name so that only that defect can trip).

TEST(LoadDeviceFile, ValidFixtureLoadsAndRoundTrips) {
  const std::string path = fixture("valid-gpu.json");
  const Device d = load_device_file(path, true);
  EXPECT_EQ(d.id, "valid-gpu");
  EXPECT_EQ(d.name, "Test GPU 80GB (fixture)");
  EXPECT_EQ(d.vendor, "testvendor");
  EXPECT_EQ(d.kind, DeviceKind::kGpu);
  EXPECT_EQ(d.memory_bytes, 80 * kGiB);
  EXPECT_DOUBLE_EQ(d.memory_bandwidth_gbps, 3350.0);
  EXPECT_EQ(d.peak_tflops.fp32, 67.0);
  EXPECT_EQ(d.peak_tflops.tf32, 494.7);
  EXPECT_EQ(d.peak_tflops.bf16, 989.4);
  EXPECT_EQ(d.peak_tflops.fp16, 989.4);
  EXPECT_EQ(d.peak_tflops.fp8, 1978.9);
  EXPECT_EQ(d.peak_tflops.int8, 1978.9);
  EXPECT_FALSE(d.peak_tflops.fp4.has_value());  // null in the file: the hardware has none
  EXPECT_EQ(d.tdp_w, 700.0);
  ASSERT_TRUE(d.scale_up.has_value());
  EXPECT_EQ(d.scale_up->kind, "nvlink4");
  EXPECT_DOUBLE_EQ(d.scale_up->bandwidth_gbps, 900.0);
  EXPECT_EQ(d.scale_up->bidirectional, true);
  EXPECT_EQ(d.scale_out_gbps, 50.0);
  EXPECT_EQ(d.pcie_gen, 5);
  EXPECT_EQ(d.devices_per_node, 8);
  EXPECT_EQ(d.launch_year, 2022);
  ASSERT_TRUE(d.price.has_value());
  EXPECT_DOUBLE_EQ(d.price->usd_per_hour, 2.5);
  EXPECT_EQ(d.price->date, "2025-01-01");
  EXPECT_EQ(d.price->source, "test fixture");
  EXPECT_TRUE(d.memory_configs.empty());
  EXPECT_FALSE(d.gpu_memory_fraction.has_value());
  EXPECT_FALSE(d.unified_memory());
  EXPECT_EQ(d.sources.size(), 3u);
  EXPECT_EQ(d.sources.at("peak_tflops"), "test fixture");
  EXPECT_EQ(d.notes.size(), 1u);
  EXPECT_EQ(d.origin, path);
  EXPECT_TRUE(d.overrides.empty());

  // Device -> JSON is the file again; JSON text -> Device -> JSON changes nothing.
  const Json j = device_to_json(d);
  EXPECT_EQ(j, parse_json_file(path));
  const Device back = device_from_json(parse_json_text(j.dump(2), "round-trip"), "round-trip", "valid-gpu");
  EXPECT_EQ(device_to_json(back), j);
  EXPECT_EQ(back.memory_bytes, d.memory_bytes);
  EXPECT_EQ(back.peak_tflops.tf32, d.peak_tflops.tf32);
  EXPECT_EQ(back.origin, "round-trip");
}

TEST(LoadDeviceFile, Fp16AccumulateRateMustExceedTheFp16Rate) {
  // valid-gpu.json has fp16 989.4; an FP16-accumulate rate at or below it says nothing new and is
  // most likely the FP32-accumulate figure typed twice.
  Json j = parse_json_file(fixture("valid-gpu.json"));
  j["peak_tflops"]["fp16_acc16"] = 989.4;
  EXPECT_THAT(input_error_of([&] { device_from_json(j, "acc16.json", "valid-gpu"); }),
              AllOf(HasSubstr("acc16.json: /peak_tflops/fp16_acc16: expected a rate above fp16")));
  j["peak_tflops"]["fp16_acc16"] = 1978.8;
  const Device d = device_from_json(j, "acc16.json", "valid-gpu");
  ASSERT_TRUE(d.peak_tflops.fp16_acc16);
  EXPECT_DOUBLE_EQ(*d.peak_tflops.fp16_acc16, 1978.8);
  EXPECT_EQ(device_to_json(d), j);
}

TEST(LoadDeviceFile, UnknownKeyIsRejectedWithTheAllowedKeys) {
  // "mem_bw_gpbs": a typo of memory_bandwidth_gbps.
  EXPECT_THAT(load_error("unknown-key.json"),
              AllOf(HasSubstr("unknown-key.json: /mem_bw_gpbs: unknown key 'mem_bw_gpbs'"),
                    HasSubstr("allowed keys: "), HasSubstr("memory_bandwidth_gbps")));
}

TEST(LoadDeviceFile, MissingMemoryBytesIsRejected) {
  EXPECT_THAT(load_error("missing-memory-bytes.json"),
              HasSubstr("missing-memory-bytes.json: /memory_bytes: missing required key 'memory_bytes'"));
}

TEST(LoadDeviceFile, BandwidthGivenAsStringIsRejected) {
  EXPECT_THAT(load_error("wrong-type-bandwidth.json"),
              AllOf(HasSubstr("wrong-type-bandwidth.json: /memory_bandwidth_gbps: expected a number"),
                    HasSubstr("GB/s"), HasSubstr("got string \"3350\"")));
}

TEST(LoadDeviceFile, BandwidthInMegabytesPerSecondIsOutOfRange) {
  // 3350000: H100's 3.35 TB/s written in MB/s by mistake.
  EXPECT_THAT(load_error("bandwidth-in-mbps.json"),
              AllOf(HasSubstr("bandwidth-in-mbps.json: /memory_bandwidth_gbps: value 3350000 out of range"),
                    HasSubstr("GB/s")));
}

TEST(LoadDeviceFile, NegativeMemoryIsOutOfRange) {
  EXPECT_THAT(load_error("negative-memory.json"),
              AllOf(HasSubstr("negative-memory.json: /memory_bytes: value -85899345920 out of range"),
                    HasSubstr("bytes")));
}

TEST(LoadDeviceFile, UnknownKindIsRejected) {
  EXPECT_THAT(load_error("bad-kind.json"),
              AllOf(HasSubstr("bad-kind.json: /kind: unknown kind 'gpgpu'"), HasSubstr("gpu, tpu, npu, apple, cpu, apu")));
}

TEST(LoadDeviceFile, IdMustMatchTheFileName) {
  // id-mismatch.json is valid-gpu.json unchanged: its id is "valid-gpu".
  EXPECT_THAT(load_error("id-mismatch.json"),
              AllOf(HasSubstr("id-mismatch.json: /id: id 'valid-gpu' does not match the file name"),
                    HasSubstr("'id-mismatch'")));
  // A user's --device-file may be named anything.
  EXPECT_EQ(load_device_file(fixture("id-mismatch.json"), false).id, "valid-gpu");
}

TEST(LoadDeviceFile, PeakTflopsWithoutASourceIsRejected) {
  EXPECT_THAT(load_error("missing-peak-source.json"),
              HasSubstr("missing-peak-source.json: /sources: missing the source of 'peak_tflops'"));
}

TEST(LoadDeviceFile, TrailingCommaIsMalformedJsonWithItsLine) {
  // The comma ends line 39; the parser stops at the '}' on line 40.
  EXPECT_THAT(load_error("trailing-comma.json"),
              AllOf(HasSubstr("trailing-comma.json: malformed JSON"), HasSubstr("line 40")));
}

TEST(LoadDeviceFile, MemoryConfigsMustContainTheTopLevelMemory) {
  // The only configuration is 96 GiB; the record says 80 GiB.
  EXPECT_THAT(load_error("memory-configs-mismatch.json"),
              AllOf(HasSubstr("memory-configs-mismatch.json: /memory_configs: "),
                    HasSubstr("must equal one of the memory_configs")));
}

TEST(LoadDeviceFile, MissingFileIsAnInputError) {
  EXPECT_THAT(input_error_of([] { load_device_file(fixture("no-such-device.json"), true); }),
              AllOf(HasSubstr("no-such-device.json"), HasSubstr("cannot open")));
}

// ---------------------------------------------------------------------------------------------
// Lookup and "did you mean"

TEST(DeviceDb, UnknownIdSuggestsCloseIds) {
  EXPECT_THAT(input_error_of([] { shipped().get("h100"); }),
              AllOf(HasSubstr("unknown device 'h100'"), HasSubstr("h100-sxm")));
  EXPECT_EQ(shipped().find("h100"), nullptr);
  EXPECT_EQ(&shipped().get("h100-sxm"), shipped().find("h100-sxm"));
}

TEST(ClosestNames, RanksIdsStartingWithTheQueryFirst) {
  // "h200" is the start of h200-nvl and h200-sxm; b200 and h20 are one edit away but say less.
  const std::vector<std::string> closest = closest_names("h200", shipped_ids());
  ASSERT_GE(closest.size(), 2u);
  EXPECT_EQ(closest[0], "h200-nvl");
  EXPECT_EQ(closest[1], "h200-sxm");
}

TEST(ClosestNames, ReturnsNothingForAFarName) {
  EXPECT_TRUE(closest_names("zzzzzzzzzzzzzzzzzzzz", shipped_ids()).empty());
  EXPECT_EQ(did_you_mean("zzzzzzzzzzzzzzzzzzzz", shipped_ids()), "");
}

// ---------------------------------------------------------------------------------------------
// One-run overrides

TEST(OverridePrice, SetsThePriceAndRecordsTheOverride) {
  Device d = dev("h100-sxm");
  override_price(d, 1.25);
  ASSERT_TRUE(d.price.has_value());
  EXPECT_DOUBLE_EQ(d.price->usd_per_hour, 1.25);
  ASSERT_EQ(d.overrides.size(), 1u);
  EXPECT_THAT(d.overrides[0], HasSubstr("price overridden"));
  EXPECT_THAT(device_to_json(d).at("overrides").dump(), HasSubstr("price overridden"));
  // The shipped record is untouched.
  EXPECT_DOUBLE_EQ(dev("h100-sxm").price->usd_per_hour, 2.99);
  EXPECT_TRUE(dev("h100-sxm").overrides.empty());
}

TEST(OverridePrice, RejectsNonPositiveAndNonFinite) {
  for (double bad : {0.0, -1.0, std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity()}) {
    Device d = dev("h100-sxm");
    EXPECT_THAT(input_error_of([&] { override_price(d, bad); }), HasSubstr("--price-per-hour")) << bad;
    EXPECT_TRUE(d.overrides.empty());
  }
}

TEST(SelectMemoryGb, PicksAShippedConfiguration) {
  // hwdb/devices/m3-ultra.json memory_configs: 96, 256 and 512 GiB (103079215104, 274877906944,
  // 549755813888 bytes), all at 819 GB/s; the record's default is 512 GiB.
  Device d512 = dev("m3-ultra");
  select_memory_gb(d512, 512);
  EXPECT_EQ(d512.memory_bytes, 512 * kGiB);
  EXPECT_EQ(d512.memory_bytes, std::int64_t{549755813888});
  EXPECT_DOUBLE_EQ(d512.memory_bandwidth_gbps, 819.0);
  ASSERT_EQ(d512.overrides.size(), 1u);
  EXPECT_THAT(d512.overrides[0], HasSubstr("549755813888"));

  Device d96 = dev("m3-ultra");
  select_memory_gb(d96, 96);
  EXPECT_EQ(d96.memory_bytes, std::int64_t{103079215104});
  ASSERT_EQ(d96.overrides.size(), 1u);
  EXPECT_THAT(d96.overrides[0], HasSubstr("103079215104"));
}

TEST(SelectMemoryGb, RejectsASizeWithoutAConfigurationAndListsThem) {
  Device d = dev("m3-ultra");
  EXPECT_THAT(input_error_of([&] { select_memory_gb(d, 100); }),
              AllOf(HasSubstr("--memory-gb"), HasSubstr("m3-ultra"), HasSubstr("100"), HasSubstr("96, 256, 512")));
  EXPECT_EQ(d.memory_bytes, 512 * kGiB);  // unchanged
  EXPECT_TRUE(d.overrides.empty());
}

TEST(SelectMemoryGb, OverridesMemoryOfADeviceWithoutConfigurations) {
  Device d = dev("h100-sxm");
  ASSERT_TRUE(d.memory_configs.empty());
  select_memory_gb(d, 96);
  EXPECT_EQ(d.memory_bytes, std::int64_t{96'000'000'000});
  EXPECT_DOUBLE_EQ(d.memory_bandwidth_gbps, 3350.0);  // only memory changes
  ASSERT_EQ(d.overrides.size(), 1u);
  EXPECT_THAT(d.overrides[0], AllOf(HasSubstr("memory overridden"), HasSubstr("96000000000")));
}

TEST(SelectMemoryGb, RejectsNonPositive) {
  Device d = dev("h100-sxm");
  EXPECT_THAT(input_error_of([&] { select_memory_gb(d, 0); }), HasSubstr("--memory-gb"));
  EXPECT_THAT(input_error_of([&] { select_memory_gb(d, -8); }), HasSubstr("--memory-gb"));
  EXPECT_EQ(d.memory_bytes, 80 * kGiB);
  EXPECT_TRUE(d.overrides.empty());
}

// ---------------------------------------------------------------------------------------------
// json_check

const JsonWhere kWhere{"t.json", ""};

TEST(JsonCheck, GetIntRejectsAFraction) {
  const Json j = Json::parse(R"({"n": 1.5})");
  EXPECT_THAT(input_error_of([&] { get_int(j, kWhere, "n", 1, 10, "layers"); }),
              AllOf(HasSubstr("t.json: /n: expected an integer in [1, 10]"), HasSubstr("1.5")));
}

TEST(JsonCheck, GetIntRejectsANumberInAString) {
  const Json j = Json::parse(R"({"n": "3"})");
  EXPECT_THAT(input_error_of([&] { get_int(j, kWhere, "n", 1, 10, ""); }),
              AllOf(HasSubstr("t.json: /n: expected an integer"), HasSubstr("got string \"3\"")));
}

TEST(JsonCheck, GetIntAcceptsAnIntegerInRangeOnly) {
  const Json j = Json::parse(R"({"n": 3, "big": 11, "neg": -1})");
  EXPECT_EQ(get_int(j, kWhere, "n", 1, 10, ""), 3);
  EXPECT_THAT(input_error_of([&] { get_int(j, kWhere, "big", 1, 10, ""); }), HasSubstr("/big: value 11 out of range"));
  EXPECT_THAT(input_error_of([&] { get_int(j, kWhere, "neg", 1, 10, ""); }), HasSubstr("/neg: value -1 out of range"));
  EXPECT_THAT(input_error_of([&] { get_int(j, kWhere, "absent", 1, 10, ""); }),
              HasSubstr("t.json: /absent: missing required key 'absent'"));
}

TEST(JsonCheck, GetNumberOrNullAcceptsNull) {
  const Json j = Json::parse(R"({"x": null, "y": 2.5, "s": "2.5"})");
  EXPECT_FALSE(get_number_or_null(j, kWhere, "x", 0, 10, "GB/s").has_value());
  EXPECT_EQ(get_number_or_null(j, kWhere, "y", 0, 10, "GB/s"), 2.5);
  EXPECT_THAT(input_error_of([&] { get_number_or_null(j, kWhere, "s", 0, 10, "GB/s"); }),
              AllOf(HasSubstr("t.json: /s: expected a number"), HasSubstr("got string")));
  // null is "none", absent is still an error: optional fields are written out explicitly.
  EXPECT_THAT(input_error_of([&] { get_number_or_null(j, kWhere, "z", 0, 10, "GB/s"); }),
              HasSubstr("missing required key 'z'"));
}

TEST(JsonCheck, GetNumberRejectsNull) {
  const Json j = Json::parse(R"({"x": null})");
  EXPECT_THAT(input_error_of([&] { get_number(j, kWhere, "x", 0, 10, "W"); }), HasSubstr("t.json: /x: is null"));
}

TEST(JsonCheck, WhereNamesNestedPaths) {
  EXPECT_EQ(kWhere.str(), "t.json: /");
  EXPECT_EQ((kWhere / "memory_configs" / std::size_t{2} / "memory_bytes").str(), "t.json: /memory_configs/2/memory_bytes");
}

}  // namespace
}  // namespace deepfit::hwdb
