// Test helper: a slice of the shipped water data written as a small DeePMD system.
#pragma once
#include <cstddef>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <xtensor/xadapt.hpp>
#include <xtensor/xnpy.hpp>

#include "qnn/data/data.hpp"
#include "test_util.hpp"

namespace qnn::test {

// Writes frames [first, first + n) of water `system` (default data_0) as a DeePMD system
// directory (type_map.raw, type.raw, set.000/*.npy in float64) under `dir`.
inline void write_water_subset(const std::filesystem::path& dir, int first, int n,
                               const std::string& system = "data_0") {
  const System w = read_system(water_dir() + "/" + system, {"O", "H"});
  std::filesystem::create_directories(dir / "set.000");
  std::ofstream(dir / "type_map.raw") << "O\nH\n";
  std::ofstream types(dir / "type.raw");
  for (int t : w.types) types << t << "\n";
  const auto N = static_cast<std::size_t>(w.natoms);
  const auto un = static_cast<std::size_t>(n);
  auto slice = [&](const std::vector<double>& v, std::size_t per) {
    return std::vector<double>(v.begin() + static_cast<std::ptrdiff_t>(first * per),
                               v.begin() + static_cast<std::ptrdiff_t>((first + n) * per));
  };
  xt::dump_npy((dir / "set.000/box.npy").string(), xt::adapt(slice(w.box, 9), {un, std::size_t{9}}));
  xt::dump_npy((dir / "set.000/coord.npy").string(), xt::adapt(slice(w.coord, 3 * N), {un, 3 * N}));
  xt::dump_npy((dir / "set.000/energy.npy").string(), xt::adapt(slice(w.energy, 1), {un}));
  xt::dump_npy((dir / "set.000/force.npy").string(), xt::adapt(slice(w.force, 3 * N), {un, 3 * N}));
}

}  // namespace qnn::test
