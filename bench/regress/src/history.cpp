// SQLite-backed benchmark history (see history.h).
#include "regress/history.h"

#include <sqlite3.h>

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <functional>

#include "hwdb/host_info.h"
#include "kernels/error.h"
#include "regress/stats.h"

namespace deepfit::regress {

struct HistoryDb::Impl {
  sqlite3* db = nullptr;
  std::string path;
  ~Impl() {
    if (db) sqlite3_close(db);
  }
  [[noreturn]] void fail(const std::string& what) const {
    throw InputError(path + ": history database: " + what + ": " + (db ? sqlite3_errmsg(db) : "cannot open"));
  }
  void exec(const char* sql) {
    char* err = nullptr;
    if (sqlite3_exec(db, sql, nullptr, nullptr, &err) != SQLITE_OK) {
      std::string msg = err ? err : "error";
      sqlite3_free(err);
      throw InputError(path + ": history database: " + msg);
    }
  }
};

namespace {

// RAII prepared statement.
class Stmt {
 public:
  Stmt(const HistoryDb::Impl& impl, const char* sql) : impl_(impl) {
    if (sqlite3_prepare_v2(impl.db, sql, -1, &st_, nullptr) != SQLITE_OK) impl.fail("prepare");
  }
  ~Stmt() { sqlite3_finalize(st_); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;
  void text(int i, const std::string& s) { sqlite3_bind_text(st_, i, s.c_str(), -1, SQLITE_TRANSIENT); }
  void integer(int i, std::int64_t v) { sqlite3_bind_int64(st_, i, v); }
  void real(int i, double v) { sqlite3_bind_double(st_, i, v); }
  bool step() {
    int rc = sqlite3_step(st_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    impl_.fail("step");
  }
  void reset() {
    sqlite3_reset(st_);
    sqlite3_clear_bindings(st_);
  }
  std::string col_text(int i) const {
    const unsigned char* t = sqlite3_column_text(st_, i);
    return t ? reinterpret_cast<const char*>(t) : "";
  }
  std::int64_t col_int(int i) const { return sqlite3_column_int64(st_, i); }
  double col_real(int i) const { return sqlite3_column_double(st_, i); }

 private:
  const HistoryDb::Impl& impl_;
  sqlite3_stmt* st_ = nullptr;
};

}  // namespace

HistoryDb::HistoryDb(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HistoryDb::HistoryDb(HistoryDb&&) noexcept = default;
HistoryDb& HistoryDb::operator=(HistoryDb&&) noexcept = default;
HistoryDb::~HistoryDb() = default;

HistoryDb HistoryDb::open(const std::string& path) {
  auto impl = std::make_unique<Impl>();
  impl->path = path;
  if (sqlite3_open_v2(path.c_str(), &impl->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr) != SQLITE_OK)
    impl->fail("cannot open");
  sqlite3_busy_timeout(impl->db, 2000);  // wait briefly for another writer, then report "locked"
  // Touching the schema detects a file that is not a database (SQLITE_NOTADB) before any write.
  impl->exec(
      "PRAGMA foreign_keys = ON;"
      "CREATE TABLE IF NOT EXISTS runs (id INTEGER PRIMARY KEY, added_utc TEXT NOT NULL, commit_sha TEXT NOT NULL,"
      " source TEXT NOT NULL, machine TEXT NOT NULL, context TEXT NOT NULL, content_hash TEXT NOT NULL UNIQUE);"
      "CREATE TABLE IF NOT EXISTS samples (run_id INTEGER NOT NULL REFERENCES runs(id), benchmark TEXT NOT NULL,"
      " repetition INTEGER NOT NULL, real_ns REAL NOT NULL, cpu_ns REAL NOT NULL);"
      "CREATE INDEX IF NOT EXISTS samples_by_benchmark ON samples(benchmark, run_id);");
  return HistoryDb(std::move(impl));
}

std::int64_t HistoryDb::add(const BenchFile& file, const std::string& content, const std::string& commit) {
  if (file.is_records) throw InputError(file.path + ": history stores Google Benchmark runs, not deepfit records");
  const std::string hash = content_hash(content);
  {
    Stmt q(*impl_, "SELECT id FROM runs WHERE content_hash = ?1");
    q.text(1, hash);
    if (q.step()) throw InputError(file.path + ": this run is already stored as run " + std::to_string(q.col_int(0)) + " (same content)");
  }
  std::string machine = "unknown";
  if (file.context.is_object() && file.context.contains("host_name") && file.context.at("host_name").is_string())
    machine = file.context.at("host_name").get<std::string>();
  std::string sha = commit;
  if (sha.empty() && file.context.is_object() && file.context.contains("git_commit") && file.context.at("git_commit").is_string())
    sha = file.context.at("git_commit").get<std::string>();
  impl_->exec("BEGIN IMMEDIATE");
  try {
    Stmt r(*impl_, "INSERT INTO runs(added_utc, commit_sha, source, machine, context, content_hash) VALUES (?1,?2,?3,?4,?5,?6)");
    r.text(1, hwdb::utc_now());
    r.text(2, sha.empty() ? "unknown" : sha);
    r.text(3, file.path);
    r.text(4, machine);
    r.text(5, file.context.dump());
    r.text(6, hash);
    r.step();
    const std::int64_t id = sqlite3_last_insert_rowid(impl_->db);
    Stmt s(*impl_, "INSERT INTO samples(run_id, benchmark, repetition, real_ns, cpu_ns) VALUES (?1,?2,?3,?4,?5)");
    for (const auto& ser : file.series) {
      for (std::size_t i = 0; i < ser.real_ns.size(); ++i) {
        s.integer(1, id);
        s.text(2, ser.name);
        s.integer(3, static_cast<std::int64_t>(i));
        s.real(4, ser.real_ns[i]);
        s.real(5, ser.cpu_ns[i]);
        s.step();
        s.reset();
      }
    }
    impl_->exec("COMMIT");
    return id;
  } catch (...) {
    sqlite3_exec(impl_->db, "ROLLBACK", nullptr, nullptr, nullptr);
    throw;
  }
}

std::vector<std::string> HistoryDb::benchmarks() const {
  Stmt q(*impl_, "SELECT DISTINCT benchmark FROM samples ORDER BY benchmark");
  std::vector<std::string> out;
  while (q.step()) out.push_back(q.col_text(0));
  return out;
}

std::vector<Point> HistoryDb::series(const std::string& benchmark) const {
  Stmt q(*impl_,
         "SELECT r.id, r.added_utc, r.commit_sha, r.source, r.machine, s.real_ns FROM samples s JOIN runs r ON r.id = s.run_id"
         " WHERE s.benchmark = ?1 ORDER BY r.id, s.repetition");
  q.text(1, benchmark);
  std::vector<Point> out;
  while (q.step()) {
    const std::int64_t id = q.col_int(0);
    if (out.empty() || out.back().run.id != id) out.push_back(Point{RunInfo{id, q.col_text(1), q.col_text(2), q.col_text(3), q.col_text(4)}, {}, 0});
    out.back().real_ns.push_back(q.col_real(5));
  }
  for (auto& p : out) p.median_ns = median(p.real_ns);
  return out;
}

std::vector<StepChange> step_changes(const std::vector<Point>& points, double threshold_pct, double alpha) {
  std::vector<StepChange> found;
  std::function<void(std::size_t, std::size_t)> search = [&](std::size_t lo, std::size_t hi) {
    if (hi - lo < 2) return;
    std::optional<StepChange> best;
    for (std::size_t k = lo + 1; k < hi; ++k) {
      std::vector<double> before, after;
      for (std::size_t i = lo; i < k; ++i) before.insert(before.end(), points[i].real_ns.begin(), points[i].real_ns.end());
      for (std::size_t i = k; i < hi; ++i) after.insert(after.end(), points[i].real_ns.begin(), points[i].real_ns.end());
      if (before.size() < 2 || after.size() < 2 || min_p_value(before.size(), after.size()) >= alpha) continue;
      const double change = (median(after) / median(before) - 1) * 100;
      const double p = mann_whitney(before, after).p_value;
      if (p < alpha && std::fabs(change) > threshold_pct && (!best || p < best->p_value)) best = StepChange{k, change, p};
    }
    if (!best) return;
    found.push_back(*best);
    search(lo, best->index);
    search(best->index, hi);
  };
  search(0, points.size());
  std::sort(found.begin(), found.end(), [](const StepChange& a, const StepChange& b) { return a.index < b.index; });
  return found;
}

std::string content_hash(const std::string& bytes) {
  std::uint64_t h = 1469598103934665603ULL;  // FNV-1a offset basis
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 1099511628211ULL;  // FNV prime
  }
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

}  // namespace deepfit::regress
