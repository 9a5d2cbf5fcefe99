// The floating-point engine: energy, forces and virial of a model on a neighbour graph,
// computed by Kokkos kernels on the host execution spaces (docs/model.md eq. S..B).
// This header does not include Kokkos: the implementation hides behind a pointer.
#pragma once
#include <array>
#include <cstdint>
#include <memory>
#include <vector>

#include "qnn/graph/graph.hpp"
#include "qnn/format/model.hpp"

namespace qnn {

enum class ExecSpace { Serial, OpenMP };

// Wall time per phase of compute() in seconds, accumulated (for `qnn bench`). Collecting it
// adds a fence after each phase.
struct PhaseTimes {
  double geometry = 0;            // edge geometry, switching function, normalisation
  double embedding = 0;           // embedding nets forward
  double descriptor = 0;          // descriptor forward and backward
  double fitting = 0;             // fitting nets forward and backward
  double embedding_backward = 0;  // embedding nets backward and the chain rule to dE/dx_ij
  double gather = 0;              // forces and virials per atom
  double network() const { return embedding + fitting + embedding_backward; }
  double total() const { return geometry + embedding + descriptor + fitting + embedding_backward + gather; }
};

struct EvalOptions {
  bool atom_energy = true;
  bool atom_virial = false;
  // Edges per processing chunk (bounds scratch memory). 0: automatic, about 256 MiB of
  // scratch. Results do not depend on it.
  int chunk_edges = 0;
  PhaseTimes* times = nullptr;  // when set, phase times are added to it
  // The caller's stamp of the graph's topology (offsets, neighbours, species; not positions):
  // nonzero and equal to the previous call's, the engine reuses what depends on it alone
  // (validation, the grouping of centres into blocks). 0: unknown, nothing is reused.
  // The LAMMPS plugin bumps it whenever it rebuilds the graph.
  std::uint64_t topology = 0;
};

struct EvalResult {
  double energy = 0.0;                 // eV
  std::vector<double> atom_energy;     // (nlocal) eV
  std::vector<double> force;           // (ntotal, 3) eV/Å, ghosts included (not folded)
  std::array<double, 6> virial{};      // eV, xx yy zz xy xz yz
  std::vector<double> atom_virial;     // (ntotal, 6) when requested
};

// Initialises Kokkos once per process if nobody has (threads <= 0: Kokkos' default), and
// finalises it at exit. Safe to call many times.
void ensure_kokkos_initialized(int threads = -1);

// Real type of the engine: float or double. Buffers are kept and reused across calls.
template <class Real>
class Engine {
 public:
  Engine(const Model& model, ExecSpace space = ExecSpace::OpenMP);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Uses the graph's reverse index when it has one (checked; a stale one throws qnn::Error),
  // else builds a private one. Not thread-safe: one compute() at a time per Engine.
  void compute(const NeighborGraph& graph, EvalResult& out, const EvalOptions& opt = {});
  const Model& model() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

extern template class Engine<float>;
extern template class Engine<double>;

}  // namespace qnn
