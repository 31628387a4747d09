// /proc/cpuinfo and sysfs parsing on captured text; the host itself is only smoke-tested.
#include "hwdb/host_info.h"

#include <fstream>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

namespace deepfit::hwdb {
namespace {

std::string read_fixture(const std::string& name) {
  std::ifstream in(std::string(DEEPFIT_SOURCE_DIR) + "/tests/fixtures/topologies/" + name);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(HostInfo, ParsesAvx512FlagsFromCapturedZen4Cpuinfo) {
  // First processor block of an AMD EPYC (family 25, model 17) VM.
  std::string text = read_fixture("cpuinfo_zen4.txt");
  ASSERT_FALSE(text.empty());
  std::optional<IsaFlags> f = parse_cpu_flags(text);
  ASSERT_TRUE(f.has_value());
  EXPECT_TRUE(f->avx2);
  EXPECT_TRUE(f->fma);
  EXPECT_TRUE(f->avx512f);
  EXPECT_TRUE(f->avx512bw);
  EXPECT_TRUE(f->avx512vl);
  EXPECT_TRUE(f->avx512_bf16);
  EXPECT_TRUE(f->avx512_vnni);
  EXPECT_FALSE(f->avx_vnni);
  EXPECT_FALSE(f->amx_tile);
  EXPECT_FALSE(f->amx_bf16);
  EXPECT_FALSE(f->neon);
  EXPECT_FALSE(f->sve);
  EXPECT_EQ(parse_model_name(text), "AMD EPYC");
}

TEST(HostInfo, ParsesAarch64Features) {
  std::string text =
      "processor\t: 0\nBogoMIPS\t: 2000.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 sve bf16\n"
      "CPU implementer\t: 0x41\n";
  std::optional<IsaFlags> f = parse_cpu_flags(text);
  ASSERT_TRUE(f.has_value());
  EXPECT_TRUE(f->neon);
  EXPECT_TRUE(f->sve);
  EXPECT_FALSE(f->avx2);
  EXPECT_EQ(to_string(*f), "neon sve");
  EXPECT_EQ(parse_model_name(text), std::nullopt);
}

TEST(HostInfo, MatchesTheFlagsKeyExactly) {
  // Newer kernels print "vmx flags" too; only the "flags" line counts.
  std::string text = "vmx flags\t: avx2 amx_tile\nflags\t\t: fpu sse2 fma\n";
  std::optional<IsaFlags> f = parse_cpu_flags(text);
  ASSERT_TRUE(f.has_value());
  EXPECT_TRUE(f->fma);
  EXPECT_FALSE(f->avx2);
  EXPECT_FALSE(f->amx_tile);
  EXPECT_EQ(parse_cpu_flags("processor\t: 0\n"), std::nullopt);
}

TEST(HostInfo, SysfsValuesParseStrictly) {
  EXPECT_EQ(parse_sysfs_bool("1\n"), true);
  EXPECT_EQ(parse_sysfs_bool(" 0 "), false);
  EXPECT_EQ(parse_sysfs_bool("2\n"), std::nullopt);
  EXPECT_EQ(parse_sysfs_bool(""), std::nullopt);
  EXPECT_EQ(parse_sysfs_int("2\n"), 2);
  EXPECT_EQ(parse_sysfs_int("-1\n"), -1);
  EXPECT_EQ(parse_sysfs_int("2x"), std::nullopt);
  EXPECT_EQ(parse_sysfs_int(""), std::nullopt);
}

TEST(HostInfo, ReadingTheHostDoesNotThrow) {
  EXPECT_NO_THROW((void)host_info());
}

}  // namespace
}  // namespace deepfit::hwdb
