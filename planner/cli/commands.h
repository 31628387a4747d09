// The `deepfit` subcommands. Each registers its options on the root app and returns the function
// that runs it after parsing; the function returns the exit code (0 ok, 1 ran but failed).
#pragma once

#include <functional>
#include <string>

#include <CLI/CLI.hpp>

#include "reports/html_report.h"

namespace deepfit::cli {

struct Command {
  CLI::App* app = nullptr;
  std::function<int()> run;
};

Command add_fit_command(CLI::App& root);
Command add_models_command(CLI::App& root);
Command add_quants_command(CLI::App& root);
Command add_devices_command(CLI::App& root);
Command add_frameworks_command(CLI::App& root);
Command add_probe_command(CLI::App& root);
Command add_regress_command(CLI::App& root);
Command add_history_command(CLI::App& root);
Command add_validate_command(CLI::App& root);
Command add_predict_command(CLI::App& root);
Command add_compare_command(CLI::App& root);
Command add_bench_command(CLI::App& root);
Command add_report_command(CLI::App& root);

// Writes the HTML report (reports/html_report.h) atomically and says where on stderr.
void write_html(const std::string& path, const reports::ReportInput& in);

// Prints a progress line on stderr.
void progress_line(const std::string& line);

}  // namespace deepfit::cli
