// Helpers shared by the tests: temporary files and small random models.
#pragma once
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include <unistd.h>

#include "qnn/format/model.hpp"

namespace qnn::test {

// A unique path under $TMPDIR (or /tmp), removed by the destructor.
class TempPath {
 public:
  explicit TempPath(const std::string& suffix) {
    const char* t = std::getenv("TMPDIR");
    static int counter = 0;
    path_ = std::string(t ? t : "/tmp") + "/qnn_test_" + std::to_string(getpid()) + "_" +
            std::to_string(counter++) + suffix;
  }
  ~TempPath() { std::remove(path_.c_str()); }
  const std::string& str() const { return path_; }

 private:
  std::string path_;
};

// A temporary directory under $TMPDIR (or /tmp), removed with its contents by the destructor.
class TempDir {
 public:
  explicit TempDir(const std::string& tag) {
    static int counter = 0;
    const char* t = std::getenv("TMPDIR");
    path_ = std::filesystem::path(t ? t : "/tmp") /
            ("qnn_test_" + tag + "_" + std::to_string(getpid()) + "_" + std::to_string(counter++));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

inline std::vector<char> read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

inline void write_bytes(const std::string& path, const std::vector<char>& b) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(b.data(), static_cast<std::streamsize>(b.size()));
}

#ifdef QNN_WATER_DATA_DIR
// The DFT water data shipped with the project (DeePMD systems data_0, data_1, data_2).
inline std::string water_dir() { return QNN_WATER_DATA_DIR; }
#endif

// A small two-species (O, H) model with random weights and non-trivial statistics.
inline Model small_water_model(std::uint64_t seed = 7, double rcut = 4.0) {
  Model m = Model::make_random({"O", "H"}, rcut, 0.5, {12, 24}, {4, 8}, 4, {12, 12}, true, seed);
  std::mt19937_64 rng(seed + 1);
  std::uniform_real_distribution<double> u(0.5, 1.5);
  for (std::size_t k = 0; k < m.mean_s.size(); ++k) {
    m.mean_s[k] = u(rng) - 1.0;
    m.std_s[k] = u(rng);
    m.std_r[k] = u(rng);
  }
  m.energy_bias = {-93.5, -187.0};
  return m;
}

// The same with one embedding net per (centre, neighbour) pair (type_one_side false) and
// env_mat "deepmd", as imported DeePMD-kit models have.
inline Model small_pair_model(std::uint64_t seed = 7, double rcut = 4.0, std::vector<int> sel = {20, 40}) {
  Model m = Model::make_random({"O", "H"}, rcut, 0.5, sel, {4, 8}, 4, {12, 12}, true, seed, false);
  std::mt19937_64 rng(seed + 1);
  std::uniform_real_distribution<double> u(0.5, 1.5);
  for (std::size_t k = 0; k < m.mean_s.size(); ++k) {
    m.mean_s[k] = u(rng) - 1.0;
    m.std_s[k] = u(rng);
    m.std_r[k] = u(rng);
  }
  m.energy_bias = {-93.5, -187.0};
  m.env_mat = "deepmd";
  m.validate("pair test model");
  return m;
}

}  // namespace qnn::test
