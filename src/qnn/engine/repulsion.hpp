// The short-range pair repulsion of a model (docs/model.md, "Short-range repulsion";
// Model::repulsion): ZBL on chosen species pairs, switched off between r_inner and r_outer
// with LAMMPS's `pair_style zbl` switching, so that `pair_style qnn` with a repulsion gives
// what `hybrid/overlay qnn ... zbl r_inner r_outer` gives with the same pairs.
#pragma once
#include <cstdint>
#include <vector>

#include "qnn/engine/exact_engine.hpp"
#include "qnn/graph/graph.hpp"
#include "qnn/format/model.hpp"

namespace qnn {

// One species pair: E(r) = φ(r) + S(r) for r < r_outer, 0 beyond, with
// φ(r) = (Z_i Z_j e²/4πε₀ r) Σ_k c_k exp(−d_k r / a), a = 0.46850 Å / (Z_i^0.23 + Z_j^0.23),
// and S the polynomial that brings E, dE/dr and d²E/dr² to 0 at r_outer (constant below
// r_inner). Constants as LAMMPS's pair_zbl_const.h, e²/4πε₀ = 14.399645 eV·Å.
class ZblPair {
 public:
  ZblPair(double zi, double zj, double r_inner, double r_outer);
  // E(r) in eV; *dedr = dE/dr in eV/Å.
  double energy(double r, double* dedr) const;

 private:
  double phi(double r, double* d1, double* d2) const;  // φ, φ', φ''
  double zze_ = 0, da_[4] = {0, 0, 0, 0};
  double r_inner_ = 0, r_outer_ = 0, sw1_ = 0, sw2_ = 0, sw3_ = 0, sw4_ = 0, sw5_ = 0;
};

// The repulsion of one model, its pair coefficients set up once. add() adds it on graph `g`
// to a result computed by an engine with the same options (energy, forces with ghosts,
// virial, per-atom energy and virial). Every pair term is rounded to the engines'
// fixed-point grids (2^-24 eV, 2^-32 eV/Å) and summed in integers, so the result does not
// depend on atom order, threads or MPI decomposition; the scratch is kept between calls (no
// allocation in the steady state). add() throws qnn::Error for a pair closer than
// kMinPairDistance or a term beyond the fixed-point range.
class RepulsionTerm {
 public:
  explicit RepulsionTerm(const Model& m);
  void add(const NeighborGraph& g, EvalResult& out, const EvalOptions& opt);

 private:
  int nspecies_ = 0;
  double r_outer_ = 0;
  std::vector<ZblPair> pair_;
  std::vector<int> which_;  // (S, S) index into pair_, -1: no repulsion
  std::vector<std::int64_t> work_;
};

}  // namespace qnn
