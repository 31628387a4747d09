// `deepfit history add RESULTS.json | show`: benchmark runs in a SQLite database, with trends and
// step changes per benchmark.
#include <filesystem>
#include <fstream>
#include <memory>
#include <regex>
#include <sstream>

#include "cli_common.h"
#include "hwdb/json_check.h"
#include "commands.h"
#include "kernels/error.h"
#include "regress/history.h"
#include "regress/stats.h"
#include "reports/svg_plot.h"
#include "reports/table.h"

namespace deepfit::cli {

Command add_history_command(CLI::App& root) {
  struct Args {
    std::string file, commit, db = "deepfit-history.sqlite", benchmark = ".*", format = "table", threshold = "5", alpha = "0.05", html;
  };
  auto a = std::make_shared<Args>();
  CLI::App* app = root.add_subcommand("history", "store benchmark runs (SQLite) and show trends and step changes");
  app->require_subcommand(1);
  CLI::App* add = app->add_subcommand("add", "store one Google Benchmark JSON run");
  add->add_option("results", a->file, "Google Benchmark JSON (deepfit bench output or any benchmark binary's)")->required();
  add->add_option("--commit", a->commit, "commit the run belongs to (default: the file's context, else unknown)");
  add->add_option("--db", a->db, "database path (default ./deepfit-history.sqlite)");
  CLI::App* show = app->add_subcommand("show", "trend per benchmark with step changes");
  show->add_option("--benchmark", a->benchmark, "regular expression over benchmark names");
  show->add_option("--db", a->db, "database path (default ./deepfit-history.sqlite)");
  show->add_option("--format", a->format, "table, json, md, csv");
  show->add_option("--threshold", a->threshold, "smallest step that counts, percent (default 5)");
  show->add_option("--alpha", a->alpha, "significance level (default 0.05)");
  show->add_option("--html", a->html, "also write a self-contained HTML page with one trend chart per benchmark");
  return {app, [a, add]() {
            if (add->parsed()) {
              std::ifstream in(a->file, std::ios::binary);
              if (!in) throw InputError(a->file + ": cannot open file");
              std::ostringstream ss;
              ss << in.rdbuf();
              const regress::BenchFile f = regress::parse_bench_json(hwdb::parse_json_text(ss.str(), a->file), a->file);
              regress::HistoryDb db = regress::HistoryDb::open(a->db);
              const std::int64_t id = db.add(f, ss.str(), a->commit);
              emit("stored run " + std::to_string(id) + " (" + std::to_string(f.series.size()) + " benchmarks) in " + a->db + "\n");
              return 0;
            }
            const reports::Format fmt = reports::parse_format(a->format);
            const double threshold = parse_positive(a->threshold, "--threshold");
            const double alpha = parse_positive(a->alpha, "--alpha");
            std::regex re;
            try {
              re = std::regex(a->benchmark);
            } catch (const std::regex_error& e) {
              throw InputError("--benchmark: '" + a->benchmark + "' is not a valid regular expression (" + e.what() + ")");
            }
            std::error_code ec;
            if (!std::filesystem::exists(a->db, ec)) throw InputError(a->db + ": no history database here (hint: deepfit history add RESULTS.json)");
            regress::HistoryDb db = regress::HistoryDb::open(a->db);
            nlohmann::json out = nlohmann::json::array();
            std::vector<reports::HtmlSection> sections;
            reports::Table t;
            t.headers = {"benchmark", "run", "commit", "added (UTC)", "median", "reps", "step"};
            t.right_align = {false, true, false, false, true, true, false};
            for (const auto& name : db.benchmarks()) {
              if (!std::regex_search(name, re)) continue;
              const auto points = db.series(name);
              const auto steps = regress::step_changes(points, threshold, alpha);
              nlohmann::json pts = nlohmann::json::array(), js = nlohmann::json::array();
              for (std::size_t i = 0; i < points.size(); ++i) {
                const auto& p = points[i];
                std::string step;
                for (const auto& s : steps)
                  if (s.index == i)
                    step = std::string("STEP ") + (s.change_pct > 0 ? "+" : "") + reports::fixed(s.change_pct, 1) + "% (p=" +
                           reports::fixed(s.p_value, 4) + ")";
                t.rows.push_back({name, std::to_string(p.run.id), p.run.commit, p.run.added_utc, reports::fixed(p.median_ns, 1) + " ns",
                                  std::to_string(p.real_ns.size()), step});
                pts.push_back({{"run", p.run.id}, {"commit", p.run.commit}, {"added_utc", p.run.added_utc},
                               {"median_ns", p.median_ns}, {"repetitions", p.real_ns.size()}});
              }
              for (const auto& s : steps)
                js.push_back({{"run", points[s.index].run.id}, {"change_pct", s.change_pct}, {"p_value", s.p_value}});
              out.push_back({{"benchmark", name}, {"points", pts}, {"step_changes", js}});
              if (!a->html.empty()) {
                reports::LineChart c;
                c.title = name;
                c.x_label = "run";
                c.y_label = "median time (us)";
                reports::SeriesXY line{"median of repetitions", {}, {}};
                for (const auto& p : points) {
                  line.x.push_back(static_cast<double>(p.run.id));
                  line.y.push_back(p.median_ns / 1e3);
                }
                c.series.push_back(line);
                for (const auto& st : steps) c.markers_x.push_back(static_cast<double>(points[st.index].run.id));
                std::string text = std::to_string(points.size()) + " runs";
                for (const auto& st : steps)
                  text += "; step at run " + std::to_string(points[st.index].run.id) + ": " + reports::fixed(st.change_pct, 1) + "% (p=" +
                          reports::fixed(st.p_value, 4) + ")";
                sections.push_back({name, text, reports::svg_line_chart(c)});
              }
            }
            if (!a->html.empty()) {
              write_file_atomically(a->html, reports::html_page("deepfit benchmark history: " + a->db, sections));
              progress_line("wrote " + a->html);
            }
            if (fmt == reports::Format::kJson) emit(nlohmann::json{{"history", out}}.dump(2) + "\n");
            else emit(reports::render(t, fmt));
            return 0;
          }};
}

}  // namespace deepfit::cli
