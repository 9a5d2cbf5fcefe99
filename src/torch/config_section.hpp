// Typed, checked reading of the JSON configs of `qnn train` and `qnn qat` (trainer.hpp, qat.hpp):
// every getter takes a default and a range, unknown keys are errors naming the key, and keys
// starting with '_' are comments.
#pragma once
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "qnn/error.hpp"

namespace qnn::libtorch::config {

using nlohmann::json;

// One JSON object of the config: typed getters with defaults and ranges, and a check that
// every key present was read. Keys starting with '_' are comments and ignored.
class Section {
 public:
  Section(const json* j, std::string prefix, std::string where)
      : j_(j), prefix_(std::move(prefix)), where_(std::move(where)) {
    if (j_ != nullptr && !j_->is_object()) fail_at(prefix_.empty() ? "the config" : prefix_.substr(0, prefix_.size() - 1), "must be a JSON object");
  }

  // A nested object (absent: every key takes its default).
  Section section(const std::string& key) { return Section(get(key), prefix_ + key + ".", where_); }

  double number(const std::string& key, double def, double lo, double hi, const std::string& range) {
    const json* v = get(key);
    if (v == nullptr) return def;
    if (!v->is_number()) fail(key, "must be a number", *v);
    double x = v->get<double>();
    if (!(x >= lo && x <= hi)) fail(key, "must be " + range, *v);
    return x;
  }
  long long integer(const std::string& key, long long def, long long lo, long long hi, const std::string& range) {
    const json* v = get(key);
    if (v == nullptr) return def;
    long long x = as_integer(key, *v);
    if (x < lo || x > hi) fail(key, "must be " + range, *v);
    return x;
  }
  bool boolean(const std::string& key, bool def) {
    const json* v = get(key);
    if (v == nullptr) return def;
    if (!v->is_boolean()) fail(key, "must be true or false", *v);
    return v->get<bool>();
  }
  std::string string(const std::string& key, const std::string& def, const std::vector<std::string>& allowed = {}) {
    const json* v = get(key);
    if (v == nullptr) return def;
    if (!v->is_string()) fail(key, "must be a string", *v);
    std::string s = v->get<std::string>();
    if (!allowed.empty() && std::find(allowed.begin(), allowed.end(), s) == allowed.end()) {
      std::string list;
      for (const auto& a : allowed) list += (list.empty() ? "\"" : ", \"") + a + "\"";
      fail(key, "must be one of " + list, *v);
    }
    return s;
  }
  std::vector<int> int_list(const std::string& key, const std::vector<int>& def, bool required, int lo, bool allow_empty) {
    const json* v = get(key);
    if (v == nullptr) {
      if (required) fail_at(prefix_ + key, "is required (a list of integers)");
      return def;
    }
    if (!v->is_array()) fail(key, "must be a list of integers", *v);
    if (v->empty() && !allow_empty) fail(key, "must not be empty", *v);
    std::vector<int> out;
    for (const json& e : *v) {
      long long x = as_integer(key, e);
      if (x < lo || x > std::numeric_limits<int>::max()) fail(key, "entries must be integers >= " + std::to_string(lo), *v);
      out.push_back(static_cast<int>(x));
    }
    return out;
  }
  std::vector<std::string> string_list(const std::string& key, bool required) {
    const json* v = get(key);
    if (v == nullptr) {
      if (required) fail_at(prefix_ + key, "is required (a list of strings)");
      return {};
    }
    if (v->is_string()) return {v->get<std::string>()};
    if (!v->is_array()) fail(key, "must be a list of strings", *v);
    std::vector<std::string> out;
    for (const json& e : *v) {
      if (!e.is_string() || e.get<std::string>().empty()) fail(key, "entries must be non-empty strings", *v);
      out.push_back(e.get<std::string>());
    }
    if (required && out.empty()) fail(key, "must not be empty", *v);
    return out;
  }
  bool has(const std::string& key) const { return j_ != nullptr && j_->contains(key); }

  // Throws on the first key that no getter asked for.
  void finish() const {
    if (j_ == nullptr) return;
    for (auto it = j_->begin(); it != j_->end(); ++it) {
      if (!it.key().empty() && it.key()[0] == '_') continue;
      if (used_.count(it.key()) == 0) {
        std::string known;
        for (const auto& k : used_) known += (known.empty() ? "" : ", ") + k;
        throw Error(where_ + ": unknown key '" + prefix_ + it.key() + "' (known keys here: " + known + ")");
      }
    }
  }

  [[noreturn]] void fail_at(const std::string& name, const std::string& msg) const {
    throw Error(where_ + ": " + name + " " + msg);
  }

 private:
  const json* get(const std::string& key) {
    used_.insert(key);
    if (j_ == nullptr) return nullptr;
    auto it = j_->find(key);
    return it == j_->end() ? nullptr : &*it;
  }
  long long as_integer(const std::string& key, const json& v) const {
    if (v.is_number_integer()) return v.get<long long>();
    if (v.is_number_float()) {
      double d = v.get<double>();
      if (std::isfinite(d) && d == std::floor(d) && std::abs(d) < 9.0e15) return static_cast<long long>(d);
    }
    fail(key, "must be an integer", v);
  }
  [[noreturn]] void fail(const std::string& key, const std::string& msg, const json& v) const {
    throw Error(where_ + ": " + prefix_ + key + " " + msg + " (got " + v.dump() + ")");
  }

  const json* j_;
  std::string prefix_;
  std::string where_;
  std::set<std::string> used_;
};

// Absolute path of `p` relative to `base`.
inline std::string resolve(const std::string& base, const std::string& p) {
  namespace fs = std::filesystem;
  fs::path path(p);
  fs::path full = (path.is_absolute() || base.empty()) ? path.lexically_normal() : (fs::path(base) / path).lexically_normal();
  std::string out = full.string();
  while (out.size() > 1 && out.back() == '/') out.pop_back();
  return out;
}

// `p` relative to `base` (for provenance: no machine paths in a written model); `p` itself when
// base is empty or p has no relative form.
inline std::string relative_to(const std::string& base, const std::string& p) {
  namespace fs = std::filesystem;
  if (base.empty()) return p;
  const fs::path rel = fs::path(p).lexically_normal().lexically_relative(fs::path(base).lexically_normal());
  return rel.empty() ? p : rel.generic_string();
}

}  // namespace qnn::libtorch::config
