// Strict JSON field access for deepfit's data files: every read names the file and JSON path,
// rejects unknown keys, wrong types and out-of-range numbers with one InputError line.
// Holds no knowledge of any particular schema.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace deepfit::hwdb {

using Json = nlohmann::json;

// A location inside a JSON document: "file.json: /peak_tflops/bf16".
struct JsonWhere {
  std::string file;
  std::string path;  // JSON pointer, "" for the root
  JsonWhere operator/(std::string_view key) const;
  JsonWhere operator/(std::size_t index) const;
  std::string str() const;
};

// Parses a whole file; a syntax error names file, line and column. Throws InputError.
Json parse_json_file(const std::string& file);
Json parse_json_text(const std::string& text, const std::string& origin);

[[noreturn]] void json_fail(const JsonWhere& where, const std::string& detail);

// Rejects any key of `obj` not in `allowed`, listing the allowed keys.
void require_object(const Json& j, const JsonWhere& where);
void check_keys(const Json& obj, const JsonWhere& where, std::initializer_list<std::string_view> allowed);
void check_keys(const Json& obj, const JsonWhere& where, const std::vector<std::string>& allowed);

const Json& required(const Json& obj, const JsonWhere& where, std::string_view key);

// Numbers: the key must be present; `lo`/`hi` inclusive; `unit` goes into the message.
double get_number(const Json& obj, const JsonWhere& where, std::string_view key, double lo, double hi,
                  std::string_view unit);
std::optional<double> get_number_or_null(const Json& obj, const JsonWhere& where, std::string_view key,
                                         double lo, double hi, std::string_view unit);
std::int64_t get_int(const Json& obj, const JsonWhere& where, std::string_view key, std::int64_t lo,
                     std::int64_t hi, std::string_view unit);
std::optional<std::int64_t> get_int_opt(const Json& obj, const JsonWhere& where, std::string_view key,
                                        std::int64_t lo, std::int64_t hi, std::string_view unit);
std::string get_string(const Json& obj, const JsonWhere& where, std::string_view key);
std::optional<std::string> get_string_or_null(const Json& obj, const JsonWhere& where, std::string_view key);
bool get_bool(const Json& obj, const JsonWhere& where, std::string_view key);
std::string type_name(const Json& j);

}  // namespace deepfit::hwdb
