// The neighbour graph the engine consumes (docs/model.md, "Notation"): CSR over local atoms,
// neighbour indices into local + ghost atoms, plus a reverse index for deterministic force
// gathering.
#pragma once
#include <array>
#include <string>
#include <vector>

namespace qnn {

// One overlap limit for every engine and mode (docs/format.md, "Bounds"): a pair of atoms
// at most this far apart (Å) is refused as overlapping input.
inline constexpr double kMinPairDistance = 1e-4;
// "two atoms are 5.000e-05 Å apart (0.00005 nm); qnn refuses pairs at or below 1e-04 Å
// (overlapping atoms in the input coordinates)": the message every engine throws.
std::string overlap_message(double distance);

struct NeighborGraph {
  int nlocal = 0;                 // atoms 0..nlocal-1 are centres
  int ntotal = 0;                 // local + ghost
  std::vector<int> offsets;       // (nlocal + 1) CSR offsets into `neighbors`
  std::vector<int> neighbors;     // (nedges) indices in [0, ntotal)
  std::vector<double> positions;  // (ntotal, 3) Å
  std::vector<int> species;       // (ntotal) model species index
  // Reverse index: for atom a, rev_edges[rev_offsets[a] .. rev_offsets[a+1]) are the edges
  // e with neighbors[e] == a, in increasing e. Built by build_reverse_index().
  std::vector<int> rev_offsets;   // (ntotal + 1)
  std::vector<int> rev_edges;     // (nedges)
  // For graphs built from a periodic box: the local atom each ghost is an image of.
  std::vector<int> ghost_owner;   // (ntotal - nlocal), empty otherwise

  int nedges() const { return static_cast<int>(neighbors.size()); }
  // Count/scan/fill of the reverse index; checks indices and sizes, throws qnn::Error.
  void build_reverse_index();
  // Checks sizes and index ranges; throws qnn::Error.
  void validate(int nspecies) const;
};

// The reverse index of `g` (the contract of NeighborGraph::build_reverse_index) written into
// the given vectors, reusing their capacity (no other allocation). Throws qnn::Error on a
// neighbour index outside [0, ntotal).
void build_reverse_index(const NeighborGraph& g, std::vector<int>& rev_offsets,
                         std::vector<int>& rev_edges);

// A periodic cell: rows are the lattice vectors a, b, c (Å), as in DeePMD's box.npy.
using Cell = std::array<double, 9>;

// Builds the graph of `nlocal` atoms in a periodic cell (general triclinic), with every
// periodic image within `rcut` as a ghost. Correct for cells narrower than 2·rcut (several
// images of one atom). Uses a cell list, O(N). Throws qnn::Error on a degenerate cell.
NeighborGraph build_periodic_graph(const Cell& cell, const std::vector<double>& positions,
                                   const std::vector<int>& species, double rcut);

// Folds forces on ghosts onto their owners: returns (nlocal, 3).
std::vector<double> fold_ghost_forces(const NeighborGraph& g, const std::vector<double>& force);

}  // namespace qnn
