// Frames with their DFT labels and neighbour graphs: what calibration, evaluation, the sweep
// and the mixed-precision search run on (docs/quantization.md, "Post-training quantization").
#pragma once
#include <cstddef>
#include <string>
#include <vector>

#include "qnn/format/model.hpp"
#include "qnn/graph/graph.hpp"

namespace qnn {

// Frames with their DFT labels and neighbour graphs (built once).
struct FrameSet {
  std::vector<NeighborGraph> graphs;
  std::vector<int> natoms;
  std::vector<double> energy;               // eV
  std::vector<std::vector<double>> force;   // (natoms, 3) eV/Å
  std::vector<std::string> labels;
  std::size_t size() const { return graphs.size(); }
};
// Up to `max_frames` frames (<= 0: all) from the systems, evenly spaced over all of their
// frames in order (deterministic). Throws qnn::Error when the systems have no frames.
FrameSet load_frames(const std::vector<std::string>& dirs, const Model& m, int max_frames);

}  // namespace qnn
