// See frames.hpp.
#include "qnn/quant/frames.hpp"

#include <algorithm>
#include <utility>

#include "qnn/data/data.hpp"
#include "qnn/error.hpp"

namespace qnn {

FrameSet load_frames(const std::vector<std::string>& dirs, const Model& m, int max_frames) {
  const std::vector<System> systems = read_systems(dirs, m.species);
  std::vector<std::pair<std::size_t, int>> all;
  for (std::size_t s = 0; s < systems.size(); ++s)
    for (int f = 0; f < systems[s].nframes; ++f) all.emplace_back(s, f);
  if (all.empty()) throw Error("the data directories hold no frames");
  std::vector<std::size_t> pick;
  const std::size_t n = max_frames <= 0 ? all.size() : std::min(all.size(), static_cast<std::size_t>(max_frames));
  for (std::size_t k = 0; k < n; ++k) pick.push_back(k * all.size() / n);
  FrameSet fs;
  for (std::size_t k : pick) {
    const System& sys = systems[all[k].first];
    const int f = all[k].second;
    fs.graphs.push_back(build_periodic_graph(sys.cell(f), sys.positions(f), sys.species, m.rcut));
    fs.graphs.back().build_reverse_index();
    fs.natoms.push_back(sys.natoms);
    fs.energy.push_back(sys.energy[static_cast<std::size_t>(f)]);
    fs.force.push_back(sys.forces(f));
    fs.labels.push_back(sys.frame_label(f));
  }
  return fs;
}

}  // namespace qnn
