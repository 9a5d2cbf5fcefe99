// The compressed embedding (docs/model.md, "Compressed embedding"): every output of each
// embedding net, a function of the one scalar ŝ, tabulated as fifth-order piecewise
// polynomials whose value, first and second derivative match the exact (fp64) network at the
// knots, so the tabulated G is C² in ŝ and the engine's forces are the exact gradient of the
// tabulated energy.
#pragma once
#include <cstddef>
#include <string>
#include <vector>

#include "qnn/kernels/aligned.hpp"
#include "qnn/format/model.hpp"

namespace qnn {

// Where the table's knots lie, per neighbour species, in the net's input variable ŝ.
// Zone 1 (fine) covers r >= r_fine for every centre species; zone 2 (coarse, stride ×
// coarse_ratio) continues down to r_clamp; beyond it G is held at its last value (dG/dŝ = 0),
// as DeePMD-kit does beyond its extrapolation range. Below the lowest knot (r >= rcut for
// every centre species, never evaluated for an active edge) it is held likewise.
struct TableSpec {
  int fine_intervals = 256;  // intervals of zone 1 per species
  int coarse_ratio = 16;    // stride of zone 2 / stride of zone 1
  double r_fine = 0.7;       // Å: zone 1 reaches down to this distance
  double r_clamp = 0.02;     // Å: zone 2 reaches down to this distance
};

class EmbeddingTable {
 public:
  EmbeddingTable() = default;
  // Tabulates the embedding nets of `m` in double precision: one table per net (per neighbour
  // species, or per (centre, neighbour) pair when !m.type_one_side, index m.embed_index(c, a)).
  // The knots of a table are those of its neighbour species (index % nspecies()).
  EmbeddingTable(const Model& m, const TableSpec& spec = {});

  int nspecies() const { return nspecies_; }
  int ntables() const { return ntables_; }  // S, or S*S for pair nets
  int m1() const { return m1_; }
  int m1_padded() const { return m1p_; }  // row stride of the coefficients (multiple of 16)
  int intervals() const { return n1_ + n2_; }

  // Below, `a` is a table (embedding net) index; for one-side models the neighbour species.
  // Interval and local coordinate t ∈ [0, 1] of ŝ in table a, and whether the
  // point lies outside the table (held: derivative zero). Same arithmetic as the kernels.
  struct Locate {
    int interval;
    double t;
    double inv_h;  // dt/dŝ (0 when held)
  };
  Locate locate(int a, double shat) const;
  // Coefficients of one interval: 6 rows of m1_padded() floats, c0 .. c5 in powers of t.
  const float* coefficients(int a, int interval) const {
    return coef_.data() + (static_cast<std::size_t>(a) * intervals() + interval) * 6 * m1p_;
  }
  // Per-species zone parameters, for the kernels.
  struct Zones {
    double lo, inv_h1, mid, inv_h2;  // zone 1 starts at lo, zone 2 at mid
    int n1, n2;
  };
  Zones zones(int a) const { return zones_[a % nspecies_]; }
  // Largest |G| over all knots (a bound for the fixed-point descriptor grid).
  double max_abs_value() const { return max_abs_; }

  // Value and derivative of the tabulated G at ŝ (double arithmetic on the float coefficients).
  void evaluate(int a, double shat, double* g, double* dg) const;
  // Max |G_table − G_exact| and |dG_table − dG_exact| over `samples` points per species
  // spread over zone 1 (midpoints between knots included), against the fp64 network.
  struct TableError { double value = 0, derivative = 0; };
  TableError measure_error(const Model& m, int samples = 4001) const;
  std::string describe() const;

 private:
  int nspecies_ = 0, ntables_ = 0, m1_ = 0, m1p_ = 0, n1_ = 0, n2_ = 0;
  std::vector<Zones> zones_;
  std::vector<float, AlignedAllocator<float>> coef_;  // (ntables, intervals, 6, m1p)
  double max_abs_ = 0.0;
};

// s(r) of docs/model.md eq. S (value only).
double switched_inverse(double r, double rcut_smth, double rcut);

// The exact embedding net a (index into m.embed: m.embed_index(centre, neighbour)) of `m` at ŝ with its first and second derivatives (fp64,
// forward-mode differentiation of docs/model.md eq. G). Each output array has m.m1() values.
void embedding_exact(const Model& m, int a, double shat, double* g, double* dg, double* d2g);

}  // namespace qnn
