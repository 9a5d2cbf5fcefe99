// Reader of DeePMD "npy" system directories: type_map.raw, type.raw and set.*/{box, coord,
// energy, force}.npy (float32 or float64). Malformed or inconsistent data throws qnn::Error
// naming the offending file and what to fix.
#pragma once
#include <string>
#include <vector>

#include "qnn/graph/graph.hpp"

namespace qnn {

// One DeePMD system: a fixed list of atoms (same species order in every frame) and its frames,
// gathered from all of its set.* directories in name order.
struct System {
  std::string path;                     // the system directory
  std::vector<std::string> type_map;    // (ntypes) element names from type_map.raw
  std::vector<int> types;               // (natoms) indices into type_map, from type.raw
  std::vector<int> species;             // (natoms) indices into the requested species list
  int natoms = 0;
  int nframes = 0;
  std::vector<double> box;              // (nframes, 9) rows are the lattice vectors, Å
  std::vector<double> coord;            // (nframes, natoms, 3) Å
  std::vector<double> energy;           // (nframes) eV
  std::vector<double> force;            // (nframes, natoms, 3) eV/Å
  std::vector<std::string> set_names;   // (nsets) e.g. "set.000"
  std::vector<int> frame_set;           // (nframes) index into set_names
  std::vector<int> frame_in_set;        // (nframes) frame index inside its set

  Cell cell(int frame) const;                              // the frame's box
  std::vector<double> positions(int frame) const;          // (natoms, 3)
  std::vector<double> forces(int frame) const;             // (natoms, 3)
  std::string frame_label(int frame) const;                // "<path>/set.000#12"
};

// Reads the element names of a system (type_map.raw, whitespace separated).
std::vector<std::string> read_type_map(const std::string& dir);

// Reads one system. `species` is the model's species list: every type name used by type.raw
// must be in it, and System::species holds the mapped indices. An empty `species` maps each
// type to itself (species = type_map order).
System read_system(const std::string& dir, const std::vector<std::string>& species);

// Reads several systems with one species list.
std::vector<System> read_systems(const std::vector<std::string>& dirs,
                                 const std::vector<std::string>& species);

// The species names of a list of systems in order of first appearance in their type maps
// (only the types that type.raw actually uses).
std::vector<std::string> collect_species(const std::vector<std::string>& dirs);

// A checksum of a data set, for provenance: "crc32:xxxxxxxx", the CRC-32 (zlib) of every
// regular file below `dir` in byte order of their relative paths (each path, a NUL, then the
// file's bytes). Symbolic links are followed. Throws qnn::Error if `dir` is not a directory or
// a file cannot be read.
std::string dataset_checksum(const std::string& dir);

}  // namespace qnn
