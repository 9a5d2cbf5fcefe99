// The shipped potentials and the DFT water frames (data_2) as the engine tests use them
// (test_compressed.cpp, test_cuda.cpp).
#pragma once
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "qnn/data/data.hpp"
#include "qnn/format/model.hpp"
#include "qnn/graph/graph.hpp"
#include "test_util.hpp"

namespace qnn::test {

inline std::string potential(const std::string& name) {
  return std::string(QNN_SOURCE_DIR) + "/potentials/" + name;
}

struct Frame {
  Cell cell;
  std::vector<double> pos;
  std::vector<int> species;
};

// Frame `frame` of data_2 with the species order of `m`.
inline Frame water_frame(const Model& m, int frame) {
  const System s = read_system(water_dir() + "/data_2", m.species);
  Frame f;
  f.cell = s.cell(frame);
  f.pos = s.positions(frame);
  f.species = s.species;
  return f;
}

inline NeighborGraph graph_of(const Frame& f, double rcut) {
  return build_periodic_graph(f.cell, f.pos, f.species, rcut);
}

// 24 atoms (O, H, H, ...) at random in a periodic 7 Å box, moved until every pair is at
// least 0.9 Å apart (water-like distances): a small system for finite-difference checks.
inline Frame random_water_box(std::uint64_t seed = 5) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0.0, 7.0);
  Frame f;
  f.cell = {7.0, 0, 0, 0, 7.0, 0, 0, 0, 7.0};
  for (int i = 0; i < 24; ++i) {
    for (int d = 0; d < 3; ++d) f.pos.push_back(u(rng));
    f.species.push_back(i % 3 == 0 ? 0 : 1);
  }
  for (int it = 0; it < 200; ++it) {
    bool moved = false;
    for (int i = 0; i < 24; ++i)
      for (int j = 0; j < i; ++j) {
        double d2 = 0;
        for (int d = 0; d < 3; ++d) {
          double x = f.pos[3 * i + d] - f.pos[3 * j + d];
          x -= 7.0 * std::round(x / 7.0);
          d2 += x * x;
        }
        if (d2 < 0.81) {
          for (int d = 0; d < 3; ++d) f.pos[3 * i + d] = u(rng);
          moved = true;
        }
      }
    if (!moved) break;
  }
  return f;
}

}  // namespace qnn::test
