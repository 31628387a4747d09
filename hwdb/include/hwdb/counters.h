// Hardware and software event counters for the calling thread: names encoded by libpfm4, counted
// through perf_event_open. Refused events are reported as unavailable with a reason, never as 0.
// No aggregation across threads and no sampling.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace deepfit::hwdb {

enum class CounterStatus {
  kOk,            // counted; value is set
  kNotBuilt,      // built with DEEPFIT_WITH_LIBPFM=OFF
  kUnknownEvent,  // libpfm4 could not encode the name (typo, or no such event on this CPU)
  kRefused,       // perf_event_open or its ioctl failed (no PMU, perf_event_paranoid, seccomp...)
  kNotScheduled,  // opened, but the kernel never ran it during the interval
  kReadFailed,    // read() on the counter failed
};

const char* to_string(CounterStatus status);

struct CounterReading {
  std::string name;                     // as requested
  std::optional<std::uint64_t> value;   // set exactly when status == kOk
  CounterStatus status = CounterStatus::kNotBuilt;
  std::string reason;                   // "" when counted, else "unavailable: ..."
  // time_running / time_enabled when counted. Below 1 the kernel multiplexed the counter and
  // value is extrapolated (raw * enabled / running); report the fraction alongside the value.
  std::optional<double> running_fraction;
};

// A set of counters opened together, each on its own file descriptor (no group leader), so one
// refused event does not take the others down.
//
// What is counted: the thread that called open(), user space only (perf_event_paranoid >= 2,
// the usual default, forbids kernel-mode counts to unprivileged users, and the kernels we time
// run in user space), on any CPU; threads it creates later are not counted.
// Event names are libpfm4's: generic perf names ("cycles", "instructions", "cache-misses",
// "task-clock", "page-faults") or PMU-specific ones ("perf::PERF_COUNT_SW_TASK_CLOCK").
// Move-only; the descriptors close with the object.
class CounterGroup {
 public:
  // Never throws for an event that cannot be counted: that event's reading says why.
  static CounterGroup open(const std::vector<std::string>& event_names);

  CounterGroup(CounterGroup&& other) noexcept;
  CounterGroup& operator=(CounterGroup&& other) noexcept;
  ~CounterGroup();

  // True when every requested event is counting.
  bool available() const;
  // "" when available(); otherwise each distinct reason once, with the events it applies to:
  // "cycles, instructions: unavailable: perf_event_open failed: ...". Print it once, not per run.
  const std::string& unavailable_reason() const;

  // start() resets and enables every open counter; stop() disables them. An ioctl failure turns
  // that event into kRefused.
  void start();
  void stop();
  // One reading per requested event, in request order. Must follow a start() (a bug otherwise).
  // Reading between start() and stop() gives the counts so far.
  std::vector<CounterReading> read() const;

 private:
  struct Impl;
  explicit CounterGroup(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace deepfit::hwdb
