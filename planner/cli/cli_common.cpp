// Shared CLI helpers (see cli_common.h).
#include "cli_common.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <utility>

#include <unistd.h>

#include "hwdb/device_db.h"
#include "commands.h"
#include "kernels/error.h"
#include "planner/host_probe.h"

namespace deepfit::cli {

std::int64_t parse_tokens(const std::string& text, const std::string& flag, std::int64_t lo, std::int64_t hi) {
  std::string digits = text;
  std::int64_t scale = 1;
  if (!digits.empty() && (digits.back() == 'k' || digits.back() == 'K')) {
    scale = 1024;
    digits.pop_back();
  }
  const std::string expect = " (expected a whole number in " + std::to_string(lo) + ".." + std::to_string(hi) +
                             (scale > 1 || flag == "--context" ? ", optionally with a K suffix for x1024)" : ")");
  if (digits.empty() || digits.size() > 12 || digits.find_first_not_of("0123456789") != std::string::npos)
    throw InputError(flag + ": '" + text + "' is not a whole number" + expect);
  const std::int64_t v = std::stoll(digits) * scale;
  if (v < lo || v > hi) throw InputError(flag + ": " + text + " is out of range" + expect);
  return v;
}

std::vector<std::int64_t> parse_int_list(const std::string& text, const std::string& flag, std::int64_t lo, std::int64_t hi) {
  std::vector<std::int64_t> out;
  std::size_t start = 0;
  while (true) {
    std::size_t comma = text.find(',', start);
    std::string item = text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (item.empty()) throw InputError(flag + ": empty item in '" + text + "' (expected a comma-separated list like 1,8,64)");
    out.push_back(parse_tokens(item, flag, lo, hi));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (true) {
    const std::size_t comma = text.find(',', start);
    out.push_back(text.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    if (comma == std::string::npos) return out;
    start = comma + 1;
  }
}

double parse_positive(const std::string& text, const std::string& flag) {
  std::size_t used = 0;
  double v = 0;
  try {
    v = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != text.size() || !std::isfinite(v) || v <= 0)
    throw InputError(flag + ": '" + text + "' is not a positive number");
  return v;
}

void DeviceOptions::add_to(CLI::App& app) {
  app.add_option("--device", device, "device id (see `deepfit devices`)");
  app.add_option("--device-file", device_file, "a device record JSON of your own (same schema as hwdb/devices)");
  app.add_option("--price-per-hour", price_per_hour, "override the device's USD per device-hour for this run");
  app.add_option("--memory-gb", memory_gb, "pick a memory configuration (Apple, CPU) or override memory for this run");
}

std::optional<hwdb::Device> DeviceOptions::resolve(planner::Catalog& cat) const {
  if (!device_file.empty()) {
    hwdb::Device d = hwdb::load_device_file(device_file, false);
    cat.devices.add(d);
  }
  if (device.empty()) {
    if (!price_per_hour.empty() || !memory_gb.empty())
      throw InputError("--price-per-hour/--memory-gb need --device (which device do they override?)");
    return std::nullopt;
  }
  hwdb::Device d = device == "host" && !cat.devices.find("host") ? planner::host_device(false, progress_line)
                                                                : cat.devices.get(device);
  if (!price_per_hour.empty()) hwdb::override_price(d, parse_positive(price_per_hour, "--price-per-hour"));
  if (!memory_gb.empty()) hwdb::select_memory_gb(d, parse_positive(memory_gb, "--memory-gb"));
  return d;
}

void write_file_atomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::FILE* f = std::fopen(tmp.c_str(), "wb");
    if (!f) throw InputError(path + ": cannot write (check the directory exists and is writable)");
    const bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
    if (std::fclose(f) != 0 || !ok) {
      std::remove(tmp.c_str());
      throw InputError(path + ": write failed");
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw InputError(path + ": cannot replace the file");
  }
}

bool stdout_wants_colour() {
  const char* no = std::getenv("NO_COLOR");
  return isatty(fileno(stdout)) && !(no && *no);
}

namespace {
double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
std::string duration_text(double s) {
  char buf[32];
  if (s < 60) std::snprintf(buf, sizeof buf, "%.0f s", s);
  else std::snprintf(buf, sizeof buf, "%dm%02ds", static_cast<int>(s / 60), static_cast<int>(s) % 60);
  return buf;
}
}  // namespace

Progress::Progress(std::string what, std::size_t total)
    : what_(std::move(what)), total_(total), tty_(isatty(fileno(stderr)) != 0), start_s_(now_s()) {}

void Progress::step(std::size_t done, const std::string& label) {
  const double elapsed = now_s() - start_s_;
  std::string left = "";
  if (done > 0 && done < total_) left = ", about " + duration_text(elapsed / static_cast<double>(done) * static_cast<double>(total_ - done)) + " left";
  const std::string line = what_ + ": " + std::to_string(done) + "/" + std::to_string(total_) + " " + label + " (" +
                           duration_text(elapsed) + left + ")";
  if (tty_) std::fprintf(stderr, "\r\033[K%s", line.c_str());
  else std::fprintf(stderr, "%s\n", line.c_str());
  std::fflush(stderr);
}

void Progress::finish() {
  if (tty_) std::fprintf(stderr, "\n");
}

void emit(const std::string& text) {
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::fflush(stdout);
}

}  // namespace deepfit::cli
