// Counters on a machine that may refuse them: software events must count or the test skips with
// the kernel's reason; hardware events must give a positive count or an "unavailable:" reason.
#include "hwdb/counters.h"

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace deepfit::hwdb {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

// Writes one byte per 4 KiB page of freshly allocated memory: page faults and CPU time.
std::size_t touch_new_memory() {
  constexpr std::size_t kBytes = std::size_t{16} << 20;
  auto buf = std::make_unique<unsigned char[]>(kBytes);  // value-initialized: writes every page
  for (std::size_t i = 0; i < kBytes; i += 4096) buf[i] = static_cast<unsigned char>(i >> 12);
  std::size_t sum = 0;
  for (std::size_t i = 0; i < kBytes; i += 4096) sum += buf[i];
  return sum;
}

// Skips the current test when the environment, not deepfit, prevents counting.
bool skip_reason(const CounterReading& r, std::string& why) {
  if (r.status == CounterStatus::kNotBuilt || r.status == CounterStatus::kRefused) {
    why = r.name + ": " + r.reason;
    return true;
  }
  return false;
}

TEST(CounterGroup, SoftwareEventsCountTouchedMemory) {
  CounterGroup g = CounterGroup::open({"task-clock", "page-faults"});
  g.start();
  volatile std::size_t sink = touch_new_memory();
  (void)sink;
  g.stop();
  std::vector<CounterReading> rs = g.read();
  ASSERT_EQ(rs.size(), 2u);
  for (const CounterReading& r : rs) {
    std::string why;
    if (skip_reason(r, why)) GTEST_SKIP() << "software events cannot be counted here: " << why;
    ASSERT_TRUE(r.value.has_value()) << r.name << ": " << r.reason;
    EXPECT_GT(*r.value, 0u) << r.name;
    EXPECT_EQ(r.status, CounterStatus::kOk);
    EXPECT_TRUE(r.reason.empty());
  }
  EXPECT_TRUE(g.available());
  EXPECT_EQ(g.unavailable_reason(), "");
}

TEST(CounterGroup, HardwareEventsGiveAPositiveCountOrAReasonNeverZero) {
  CounterGroup g = CounterGroup::open({"cycles", "instructions"});
  g.start();
  volatile std::size_t sink = touch_new_memory();
  (void)sink;
  g.stop();
  for (const CounterReading& r : g.read()) {
    if (r.value) {
      EXPECT_GT(*r.value, 0u) << r.name;
      EXPECT_EQ(r.status, CounterStatus::kOk);
    } else {
      EXPECT_NE(r.status, CounterStatus::kOk) << r.name;
      EXPECT_THAT(r.reason, StartsWith("unavailable:")) << r.name;
    }
  }
  if (!g.available()) {
    EXPECT_THAT(g.unavailable_reason(), HasSubstr("unavailable:"));
  }
}

TEST(CounterGroup, UnknownEventIsUnavailableAndNamed) {
  CounterGroup g = CounterGroup::open({"no-such-event"});
  g.start();
  g.stop();
  CounterReading r = g.read().at(0);
  EXPECT_FALSE(r.value.has_value());
  EXPECT_THAT(r.reason, StartsWith("unavailable:"));
  if (r.status == CounterStatus::kNotBuilt) GTEST_SKIP() << r.reason;
  EXPECT_EQ(r.status, CounterStatus::kUnknownEvent);
  EXPECT_THAT(r.reason, HasSubstr("no-such-event"));
  EXPECT_FALSE(g.available());
  EXPECT_THAT(g.unavailable_reason(), HasSubstr("no-such-event"));
}

TEST(CounterGroup, OneBadEventDoesNotSinkTheOthers) {
  CounterGroup g = CounterGroup::open({"no-such-event", "task-clock"});
  g.start();
  volatile std::size_t sink = touch_new_memory();
  (void)sink;
  g.stop();
  std::vector<CounterReading> rs = g.read();
  ASSERT_EQ(rs.size(), 2u);
  EXPECT_EQ(rs[0].name, "no-such-event");
  EXPECT_FALSE(rs[0].value.has_value());
  std::string why;
  if (skip_reason(rs[1], why)) GTEST_SKIP() << why;
  ASSERT_TRUE(rs[1].value.has_value()) << rs[1].reason;
  EXPECT_GT(*rs[1].value, 0u);
}

}  // namespace
}  // namespace deepfit::hwdb
