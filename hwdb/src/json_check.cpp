// Strict JSON access helpers (see json_check.h).
#include "hwdb/json_check.h"

#include <cmath>
#include <fstream>
#include <sstream>

#include "kernels/error.h"

namespace deepfit::hwdb {

JsonWhere JsonWhere::operator/(std::string_view key) const {
  return {file, path + "/" + std::string(key)};
}
JsonWhere JsonWhere::operator/(std::size_t index) const {
  return {file, path + "/" + std::to_string(index)};
}
std::string JsonWhere::str() const { return file + ": " + (path.empty() ? "/" : path); }

void json_fail(const JsonWhere& where, const std::string& detail) {
  throw InputError(where.str() + ": " + detail);
}

Json parse_json_text(const std::string& text, const std::string& origin) {
  try {
    return Json::parse(text);
  } catch (const Json::parse_error& e) {
    // nlohmann's message carries line and column; strip its "[json.exception...]" prefix.
    std::string msg = e.what();
    auto pos = msg.find("] ");
    if (pos != std::string::npos) msg = msg.substr(pos + 2);
    throw InputError(origin + ": malformed JSON: " + msg);
  }
}

Json parse_json_file(const std::string& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw InputError(file + ": cannot open file (expected a readable JSON file)");
  std::ostringstream ss;
  ss << in.rdbuf();
  return parse_json_text(ss.str(), file);
}

std::string type_name(const Json& j) {
  if (j.is_number_integer() || j.is_number_unsigned()) return "integer";
  return j.type_name();
}

void require_object(const Json& j, const JsonWhere& where) {
  if (!j.is_object()) json_fail(where, "expected an object, got " + type_name(j));
}

static void check_keys_impl(const Json& obj, const JsonWhere& where, const std::vector<std::string>& allowed) {
  require_object(obj, where);
  for (const auto& [key, value] : obj.items()) {
    bool ok = false;
    for (const auto& a : allowed) ok = ok || a == key;
    if (ok) continue;
    std::string list;
    for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
    json_fail(where / key, "unknown key '" + key + "' (allowed keys: " + list + ")");
  }
}

void check_keys(const Json& obj, const JsonWhere& where, std::initializer_list<std::string_view> allowed) {
  std::vector<std::string> v;
  for (auto a : allowed) v.emplace_back(a);
  check_keys_impl(obj, where, v);
}
void check_keys(const Json& obj, const JsonWhere& where, const std::vector<std::string>& allowed) {
  check_keys_impl(obj, where, allowed);
}

const Json& required(const Json& obj, const JsonWhere& where, std::string_view key) {
  require_object(obj, where);
  auto it = obj.find(std::string(key));
  if (it == obj.end()) json_fail(where / key, "missing required key '" + std::string(key) + "'");
  return *it;
}

static std::string range_text(double lo, double hi, std::string_view unit) {
  std::ostringstream s;
  s << "a number in [" << lo << ", " << hi << "]";
  if (!unit.empty()) s << " " << unit;
  return s.str();
}

static double number_of(const Json& v, const JsonWhere& w, double lo, double hi, std::string_view unit) {
  if (!v.is_number()) json_fail(w, "expected " + range_text(lo, hi, unit) + ", got " + type_name(v) + " " + v.dump());
  double x = v.get<double>();
  if (!std::isfinite(x) || x < lo || x > hi)
    json_fail(w, "value " + v.dump() + " out of range (expected " + range_text(lo, hi, unit) + ")");
  return x;
}

double get_number(const Json& obj, const JsonWhere& where, std::string_view key, double lo, double hi,
                  std::string_view unit) {
  const Json& v = required(obj, where, key);
  if (v.is_null()) json_fail(where / key, "is null (expected " + range_text(lo, hi, unit) + ")");
  return number_of(v, where / key, lo, hi, unit);
}

std::optional<double> get_number_or_null(const Json& obj, const JsonWhere& where, std::string_view key,
                                         double lo, double hi, std::string_view unit) {
  const Json& v = required(obj, where, key);
  if (v.is_null()) return std::nullopt;
  return number_of(v, where / key, lo, hi, unit);
}

static std::int64_t int_of(const Json& v, const JsonWhere& w, std::int64_t lo, std::int64_t hi, std::string_view unit) {
  std::ostringstream expect;
  expect << "an integer in [" << lo << ", " << hi << "]" << (unit.empty() ? "" : " ") << unit;
  if (!(v.is_number_integer() || v.is_number_unsigned()))
    json_fail(w, "expected " + expect.str() + ", got " + type_name(v) + " " + v.dump());
  if (v.is_number_unsigned() && v.get<std::uint64_t>() > static_cast<std::uint64_t>(INT64_MAX))
    json_fail(w, "value " + v.dump() + " out of range (expected " + expect.str() + ")");
  std::int64_t x = v.get<std::int64_t>();
  if (x < lo || x > hi) json_fail(w, "value " + v.dump() + " out of range (expected " + expect.str() + ")");
  return x;
}

std::int64_t get_int(const Json& obj, const JsonWhere& where, std::string_view key, std::int64_t lo,
                     std::int64_t hi, std::string_view unit) {
  return int_of(required(obj, where, key), where / key, lo, hi, unit);
}

std::optional<std::int64_t> get_int_opt(const Json& obj, const JsonWhere& where, std::string_view key,
                                        std::int64_t lo, std::int64_t hi, std::string_view unit) {
  require_object(obj, where);
  auto it = obj.find(std::string(key));
  if (it == obj.end() || it->is_null()) return std::nullopt;
  return int_of(*it, where / key, lo, hi, unit);
}

std::string get_string(const Json& obj, const JsonWhere& where, std::string_view key) {
  const Json& v = required(obj, where, key);
  if (!v.is_string()) json_fail(where / key, "expected a string, got " + type_name(v));
  auto s = v.get<std::string>();
  if (s.empty()) json_fail(where / key, "expected a non-empty string");
  return s;
}

std::optional<std::string> get_string_or_null(const Json& obj, const JsonWhere& where, std::string_view key) {
  const Json& v = required(obj, where, key);
  if (v.is_null()) return std::nullopt;
  return get_string(obj, where, key);
}

bool get_bool(const Json& obj, const JsonWhere& where, std::string_view key) {
  const Json& v = required(obj, where, key);
  if (!v.is_boolean()) json_fail(where / key, "expected true or false, got " + type_name(v));
  return v.get<bool>();
}

}  // namespace deepfit::hwdb
