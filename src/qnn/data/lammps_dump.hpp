// Reader of LAMMPS text dump files (`dump ID group custom N file id type x y z`), for `qnn
// model-devi --dump`: the frames an exploration run wrote, as a qnn::System. Columns are found
// by name: `id`, `type`, and unwrapped or wrapped Cartesian positions (`xu yu zu` or `x y z`);
// orthogonal and triclinic boxes; atoms sorted by id in every frame. Bad input throws
// qnn::Error naming the file, the frame's timestep and what to fix.
#pragma once
#include <string>
#include <vector>

#include "qnn/data/data.hpp"

namespace qnn {

struct DumpFrames {
  System system;                  // path = the dump file; box, coord, species, types per frame
  std::vector<long long> steps;   // (nframes) the dump's TIMESTEP of each frame
};

// Reads every frame of `path`. `type_elements[t - 1]` is the element of LAMMPS atom type t (as
// in `pair_coeff * * O H`); `species` is the model's species list, into which System::species
// maps. Every frame must have the same atoms (ids and types) and periodic boundaries (pp).
// System::energy and System::force are left empty.
DumpFrames read_lammps_dump(const std::string& path, const std::vector<std::string>& type_elements,
                            const std::vector<std::string>& species);

}  // namespace qnn
