// The shipped potentials and the DFT water frames (data_2) as the engine tests use them
// (test_compressed.cpp, test_cuda.cpp).
#pragma once
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

}  // namespace qnn::test
