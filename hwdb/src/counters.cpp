// perf_event counters encoded by libpfm4 (see counters.h). With DEEPFIT_HAVE_LIBPFM=0 every event
// reports "unavailable: built without libpfm4"; nothing here interprets the counts.
#include "hwdb/counters.h"

#include <algorithm>
#include <cerrno>
#include <mutex>
#include <system_error>
#include <utility>

#include <sys/ioctl.h>
#include <unistd.h>

#ifndef DEEPFIT_HAVE_LIBPFM
#error "DEEPFIT_HAVE_LIBPFM must be defined to 0 or 1 by hwdb/CMakeLists.txt"
#endif
#if DEEPFIT_HAVE_LIBPFM
#include <perfmon/pfmlib_perf_event.h>
#endif

#include "kernels/error.h"

namespace deepfit::hwdb {
namespace {

// Owns one perf event file descriptor.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) {
      reset();
      fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { reset(); }

  int get() const { return fd_; }
  bool is_open() const { return fd_ >= 0; }
  void reset() {
    if (fd_ >= 0) ::close(fd_);  // nothing useful to do if close fails on a counter fd
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

struct Event {
  std::string name;
  UniqueFd fd;
  CounterStatus status = CounterStatus::kNotBuilt;
  std::string reason;
};

#if DEEPFIT_HAVE_LIBPFM

// std::system_category().message is thread-safe, unlike strerror.
std::string errno_text(int err) { return std::system_category().message(err); }

// pfm_initialize must run once per process; its result is kept for every later open().
int pfm_init_result() {
  static std::once_flag once;
  static int result = PFM_SUCCESS;
  std::call_once(once, [] { result = pfm_initialize(); });
  return result;
}

// libpfm4 does not document its encoding functions as thread-safe: serialize them.
std::mutex& pfm_mutex() {
  static std::mutex m;
  return m;
}

std::string open_failure_hint(int err) {
  switch (err) {
    case ENOENT:
      return " (the kernel exposes no such event here; virtual machines often have no hardware PMU)";
    case EACCES:
    case EPERM:
      return " (refused by /proc/sys/kernel/perf_event_paranoid or a seccomp/container policy; "
             "CAP_PERFMON or a lower paranoid level allows it)";
    case ENOSYS:
      return " (the kernel has no perf_event support)";
    case EOPNOTSUPP:
      return " (the PMU does not support this event or mode)";
    default:
      return "";
  }
}

Event open_event(const std::string& name) {
  Event ev;
  ev.name = name;
  if (int init = pfm_init_result(); init != PFM_SUCCESS) {
    ev.status = CounterStatus::kRefused;
    ev.reason = std::string("unavailable: pfm_initialize failed: ") + pfm_strerror(init);
    return ev;
  }
  perf_event_attr attr{};
  pfm_perf_encode_arg_t arg{};
  arg.attr = &attr;
  arg.size = sizeof arg;
  int enc = PFM_SUCCESS;
  {
    std::lock_guard<std::mutex> lock(pfm_mutex());
    // PFM_PLM3: user space only (see counters.h).
    enc = pfm_get_os_event_encoding(name.c_str(), PFM_PLM3, PFM_OS_PERF_EVENT_EXT, &arg);
  }
  if (enc != PFM_SUCCESS) {
    ev.status = CounterStatus::kUnknownEvent;
    ev.reason = "unavailable: libpfm4 cannot encode event '" + name +
                "': pfm_get_os_event_encoding: " + pfm_strerror(enc) +
                " (expected a libpfm4 name such as cycles, instructions, cache-misses, task-clock, page-faults)";
    return ev;
  }
  attr.size = sizeof attr;
  attr.disabled = 1;
  attr.inherit = 0;
  attr.read_format = PERF_FORMAT_TOTAL_TIME_ENABLED | PERF_FORMAT_TOTAL_TIME_RUNNING;
  int fd = perf_event_open(&attr, 0 /* calling thread */, -1 /* any CPU */, -1 /* no group */, PERF_FLAG_FD_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    ev.status = CounterStatus::kRefused;
    ev.reason = "unavailable: perf_event_open failed: " + errno_text(err) + open_failure_hint(err);
    return ev;
  }
  ev.fd = UniqueFd(fd);
  ev.status = CounterStatus::kOk;
  return ev;
}

void ioctl_or_refuse(Event& ev, unsigned long request, const char* request_name) {
  if (!ev.fd.is_open()) return;
  if (::ioctl(ev.fd.get(), request, 0) != 0) {
    ev.status = CounterStatus::kRefused;
    ev.reason = std::string("unavailable: ioctl(") + request_name + ") failed: " + errno_text(errno);
    ev.fd.reset();
  }
}

CounterReading read_event(const Event& ev) {
  CounterReading r{ev.name, std::nullopt, ev.status, ev.reason, std::nullopt};
  if (ev.status != CounterStatus::kOk) return r;
  // Layout fixed by read_format = TOTAL_TIME_ENABLED | TOTAL_TIME_RUNNING without GROUP or ID.
  struct {
    std::uint64_t value, time_enabled_ns, time_running_ns;
  } buf{};
  ssize_t n = ::read(ev.fd.get(), &buf, sizeof buf);
  if (n != static_cast<ssize_t>(sizeof buf)) {
    r.status = CounterStatus::kReadFailed;
    r.reason = n < 0 ? "unavailable: read failed: " + errno_text(errno)
                     : "unavailable: read returned " + std::to_string(n) + " bytes, expected " +
                           std::to_string(sizeof buf);
    return r;
  }
  if (buf.time_running_ns == 0) {
    r.status = CounterStatus::kNotScheduled;
    r.reason = "unavailable: not scheduled (the kernel never ran this counter during the interval)";
    return r;
  }
  if (buf.time_running_ns >= buf.time_enabled_ns) {
    r.value = buf.value;
    r.running_fraction = 1.0;
    return r;
  }
  // Multiplexed: extrapolate. long double keeps the 64-bit count exact on x86-64.
  long double scaled = static_cast<long double>(buf.value) * static_cast<long double>(buf.time_enabled_ns) /
                       static_cast<long double>(buf.time_running_ns);
  r.value = static_cast<std::uint64_t>(scaled + 0.5L);
  r.running_fraction = static_cast<double>(buf.time_running_ns) / static_cast<double>(buf.time_enabled_ns);
  return r;
}

#else  // DEEPFIT_HAVE_LIBPFM

Event open_event(const std::string& name) {
  Event ev;
  ev.name = name;
  ev.status = CounterStatus::kNotBuilt;
  ev.reason = "unavailable: built without libpfm4 (DEEPFIT_WITH_LIBPFM=OFF)";
  return ev;
}

CounterReading read_event(const Event& ev) {
  return CounterReading{ev.name, std::nullopt, ev.status, ev.reason, std::nullopt};
}

#endif  // DEEPFIT_HAVE_LIBPFM

}  // namespace

const char* to_string(CounterStatus status) {
  switch (status) {
    case CounterStatus::kOk: return "ok";
    case CounterStatus::kNotBuilt: return "not-built";
    case CounterStatus::kUnknownEvent: return "unknown-event";
    case CounterStatus::kRefused: return "refused";
    case CounterStatus::kNotScheduled: return "not-scheduled";
    case CounterStatus::kReadFailed: return "read-failed";
  }
  return "?";
}

struct CounterGroup::Impl {
  std::vector<Event> events;
  bool started = false;
  std::string unavailable_reason;

  void refresh_reason() {
    // Each distinct reason once, in first-seen order, with the events it applies to.
    std::vector<std::pair<std::string, std::string>> groups;  // reason -> "a, b"
    for (const Event& ev : events) {
      if (ev.status == CounterStatus::kOk) continue;
      auto it = std::find_if(groups.begin(), groups.end(), [&](const auto& g) { return g.first == ev.reason; });
      if (it == groups.end()) groups.emplace_back(ev.reason, ev.name);
      else it->second += ", " + ev.name;
    }
    unavailable_reason.clear();
    for (const auto& [reason, names] : groups)
      unavailable_reason += (unavailable_reason.empty() ? "" : "; ") + names + ": " + reason;
  }
};

CounterGroup::CounterGroup(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CounterGroup::CounterGroup(CounterGroup&& other) noexcept = default;
CounterGroup& CounterGroup::operator=(CounterGroup&& other) noexcept = default;
CounterGroup::~CounterGroup() = default;

CounterGroup CounterGroup::open(const std::vector<std::string>& event_names) {
  auto impl = std::make_unique<Impl>();
  impl->events.reserve(event_names.size());
  for (const std::string& name : event_names) impl->events.push_back(open_event(name));
  impl->refresh_reason();
  return CounterGroup(std::move(impl));
}

bool CounterGroup::available() const { return impl_->unavailable_reason.empty(); }

const std::string& CounterGroup::unavailable_reason() const { return impl_->unavailable_reason; }

void CounterGroup::start() {
#if DEEPFIT_HAVE_LIBPFM
  for (Event& ev : impl_->events) {
    ioctl_or_refuse(ev, PERF_EVENT_IOC_RESET, "PERF_EVENT_IOC_RESET");
    ioctl_or_refuse(ev, PERF_EVENT_IOC_ENABLE, "PERF_EVENT_IOC_ENABLE");
  }
#endif
  impl_->started = true;
  impl_->refresh_reason();
}

void CounterGroup::stop() {
#if DEEPFIT_HAVE_LIBPFM
  for (Event& ev : impl_->events) ioctl_or_refuse(ev, PERF_EVENT_IOC_DISABLE, "PERF_EVENT_IOC_DISABLE");
#endif
  impl_->refresh_reason();
}

std::vector<CounterReading> CounterGroup::read() const {
  DEEPFIT_ASSERT(impl_->started, "CounterGroup::read() called before start()");
  std::vector<CounterReading> out;
  out.reserve(impl_->events.size());
  for (const Event& ev : impl_->events) out.push_back(read_event(ev));
  return out;
}

}  // namespace deepfit::hwdb
