// deepfit: the only place errors become exit codes (0 ok, 1 ran but failed, 2 bad input/usage).
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "commands.h"
#include "kernels/error.h"

int main(int argc, char** argv) {
  using namespace deepfit::cli;
  CLI::App app{"deepfit: will an LLM fit, how fast, at what cost - and did it get slower"};
  app.set_version_flag("--version", "deepfit 0.1.0");
  app.require_subcommand(1);
  std::vector<Command> commands = {add_fit_command(app), add_models_command(app), add_quants_command(app),
                                   add_devices_command(app), add_frameworks_command(app), add_probe_command(app),
                                   add_regress_command(app),  add_history_command(app), add_validate_command(app),
                                   add_predict_command(app), add_compare_command(app), add_bench_command(app), add_report_command(app)};
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    std::fprintf(stderr, "error: %s (hint: deepfit --help)\n", e.what());
    return 2;  // CLI11's own codes (100 and up) are usage errors
  }
  try {
    for (auto& c : commands)
      if (c.app->parsed()) return c.run();
  } catch (const deepfit::InputError& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: internal: %s\n", e.what());
    return 1;
  }
  return 2;
}
