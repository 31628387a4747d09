// Shared pieces of the `deepfit` subcommands: strict number parsing, device selection with its
// one-run overrides, and output that is written whole or not at all.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "hwdb/device.h"
#include "planner/catalog.h"

namespace deepfit::cli {

// Whole-token integers with an optional k/K (x1024) suffix: "8192", "8k", "128K".
std::int64_t parse_tokens(const std::string& text, const std::string& flag, std::int64_t lo, std::int64_t hi);
std::vector<std::int64_t> parse_int_list(const std::string& text, const std::string& flag, std::int64_t lo, std::int64_t hi);
double parse_positive(const std::string& text, const std::string& flag);
// "a,b,c" -> {"a", "b", "c"} (empty items kept, so the consumer rejects them by name).
std::vector<std::string> split_list(const std::string& text);

struct DeviceOptions {
  std::string device;
  std::string device_file;
  std::string price_per_hour;
  std::string memory_gb;
  void add_to(CLI::App& app);
  // The selected device with overrides applied (also adds --device-file's record to the catalog),
  // or nullopt when no --device was given.
  std::optional<hwdb::Device> resolve(planner::Catalog& cat) const;
};

// Writes a whole file (temporary file, then rename): a failure never leaves half a file.
void write_file_atomically(const std::string& path, const std::string& text);

// Colour only on a terminal, and never with NO_COLOR set (https://no-color.org convention).
bool stdout_wants_colour();

// Progress of long work on stderr (issue #6): on a terminal one line rewritten in place with what
// runs, how far and the time left (from the mean time per finished step); otherwise one plain line
// per step, so logs stay readable.
class Progress {
 public:
  Progress(std::string what, std::size_t total);
  // Step `done` (1-based) of `total` finished; `label` names what finished (or runs next).
  void step(std::size_t done, const std::string& label);
  void finish();  // ends the in-place line on a terminal

 private:
  std::string what_;
  std::size_t total_;
  bool tty_;
  double start_s_;
};

// Writes `text` to stdout in one piece (so a failure never leaves half a document).
void emit(const std::string& text);

}  // namespace deepfit::cli
