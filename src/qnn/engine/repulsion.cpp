// ZBL short-range repulsion (see repulsion.hpp; docs/model.md, "Short-range repulsion").
#include "qnn/engine/repulsion.hpp"

#include <algorithm>
#include <cmath>

#include "qnn/error.hpp"

namespace qnn {

namespace {
// LAMMPS src/pair_zbl_const.h and the metal-units Coulomb constant (src/update.cpp).
constexpr double kPzbl = 0.23, kA0 = 0.46850;
constexpr double kC[4] = {0.02817, 0.28022, 0.50986, 0.18175};
constexpr double kD[4] = {0.20162, 0.40290, 0.94229, 3.19980};
constexpr double kQqr2e = 14.399645;
constexpr double kEnergyGrid = 0x1p24, kForceGrid = 0x1p32, kMaxGridValue = 0x1p61;

std::int64_t to_grid(double v, double grid) {
  const double q = std::nearbyint(v * grid);
  if (!(std::abs(q) < kMaxGridValue))
    throw Error("repulsion: a pair term is not finite or beyond the fixed-point range (atoms far too close)");
  return static_cast<std::int64_t>(q);
}
}  // namespace

ZblPair::ZblPair(double zi, double zj, double r_inner, double r_outer)
    : r_inner_(r_inner), r_outer_(r_outer) {
  const double ainv = (std::pow(zi, kPzbl) + std::pow(zj, kPzbl)) / kA0;
  for (int k = 0; k < 4; ++k) da_[k] = kD[k] * ainv;
  zze_ = zi * zj * kQqr2e;
  double fcp = 0, fcpp = 0;
  const double fc = phi(r_outer, &fcp, &fcpp);
  const double tc = r_outer - r_inner;
  sw1_ = (-3.0 * fcp + tc * fcpp) / (tc * tc);
  sw2_ = (2.0 * fcp - tc * fcpp) / (tc * tc * tc);
  sw3_ = sw1_ / 3.0;
  sw4_ = sw2_ / 4.0;
  sw5_ = -fc + (tc / 2.0) * fcp - (tc * tc / 12.0) * fcpp;
}

double ZblPair::phi(double r, double* d1, double* d2) const {
  const double rinv = 1.0 / r;
  double sum = 0, sum_p = 0, sum_pp = 0;
  for (int k = 0; k < 4; ++k) {
    const double e = kC[k] * std::exp(-da_[k] * r);
    sum += e;
    sum_p -= da_[k] * e;
    sum_pp += da_[k] * da_[k] * e;
  }
  // φ = zze·sum/r; φ' = zze (sum' − sum/r)/r; φ'' = zze (sum'' − 2 sum'/r + 2 sum/r²)/r
  if (d1) *d1 = zze_ * (sum_p - sum * rinv) * rinv;
  if (d2) *d2 = zze_ * (sum_pp - 2.0 * sum_p * rinv + 2.0 * sum * rinv * rinv) * rinv;
  return zze_ * sum * rinv;
}

double ZblPair::energy(double r, double* dedr) const {
  if (!(r < r_outer_)) {
    *dedr = 0.0;
    return 0.0;
  }
  double d1 = 0;
  double e = phi(r, &d1, nullptr) + sw5_;
  if (r > r_inner_) {
    const double t = r - r_inner_;
    e += t * t * t * (sw3_ + sw4_ * t);
    d1 += t * t * (sw1_ + sw2_ * t);
  }
  *dedr = d1;
  return e;
}

RepulsionTerm::RepulsionTerm(const Model& m)
    : nspecies_(m.nspecies()), r_outer_(m.repulsion.r_outer),
      which_(static_cast<std::size_t>(m.nspecies()) * m.nspecies(), -1) {
  const Repulsion& R = m.repulsion;
  for (int a = 0; a < nspecies_; ++a)
    for (int b = 0; b < nspecies_; ++b)
      if (R.acts_on(a, b)) {
        which_[static_cast<std::size_t>(a) * nspecies_ + b] = static_cast<int>(pair_.size());
        pair_.emplace_back(R.z[static_cast<std::size_t>(a)], R.z[static_cast<std::size_t>(b)], R.r_inner, R.r_outer);
      }
}

void RepulsionTerm::add(const NeighborGraph& g, EvalResult& out, const EvalOptions& opt) {
  if (pair_.empty()) return;
  const int S = nspecies_, nl = g.nlocal, nt = g.ntotal;
  const std::vector<ZblPair>& pair = pair_;
  const std::vector<int>& which = which_;
  std::vector<std::int64_t>& work = work_;
  // work: energy per local atom (nl), forces (3 nt), virial (6), per-atom virial (6 nt)
  const bool vatom = opt.atom_virial;
  const std::size_t oe = 0, of = static_cast<std::size_t>(nl), ov = of + 3 * static_cast<std::size_t>(nt),
                    ova = ov + 6;
  work.assign(ova + (vatom ? 6 * static_cast<std::size_t>(nt) : 0), 0);
  const double ro2 = r_outer_ * r_outer_;
  double rmin = 1e300;
  for (int i = 0; i < nl; ++i) {
    const int si = g.species[static_cast<std::size_t>(i)];
    // a centre species with no repulsive partner skips its edges (water's H centres)
    if (std::all_of(which.begin() + static_cast<std::ptrdiff_t>(si) * S,
                    which.begin() + static_cast<std::ptrdiff_t>(si + 1) * S, [](int p) { return p < 0; }))
      continue;
    for (int e = g.offsets[static_cast<std::size_t>(i)]; e < g.offsets[static_cast<std::size_t>(i) + 1]; ++e) {
      const int j = g.neighbors[static_cast<std::size_t>(e)];
      const int p = which[static_cast<std::size_t>(si) * S + g.species[static_cast<std::size_t>(j)]];
      if (p < 0) continue;
      const double dx = g.positions[3 * static_cast<std::size_t>(j)] - g.positions[3 * static_cast<std::size_t>(i)];
      const double dy = g.positions[3 * static_cast<std::size_t>(j) + 1] - g.positions[3 * static_cast<std::size_t>(i) + 1];
      const double dz = g.positions[3 * static_cast<std::size_t>(j) + 2] - g.positions[3 * static_cast<std::size_t>(i) + 2];
      const double r2 = dx * dx + dy * dy + dz * dz;
      if (!(r2 < ro2)) continue;
      const double r = std::sqrt(r2);
      rmin = std::min(rmin, r);
      if (!(r > kMinPairDistance)) continue;
      double dedr = 0;
      // each ordered pair (i, j) carries half of the pair's energy
      const double en = 0.5 * pair[static_cast<std::size_t>(p)].energy(r, &dedr);
      const double c = 0.5 * dedr / r;
      const std::int64_t q[3] = {to_grid(c * dx, kForceGrid), to_grid(c * dy, kForceGrid), to_grid(c * dz, kForceGrid)};
      work[oe + static_cast<std::size_t>(i)] += to_grid(en, kEnergyGrid);
      for (int d = 0; d < 3; ++d) {
        work[of + 3 * static_cast<std::size_t>(i) + d] += q[d];
        work[of + 3 * static_cast<std::size_t>(j) + d] -= q[d];
      }
      const double gx = c * dx, gy = c * dy, gz = c * dz;
      const std::int64_t v[6] = {to_grid(-dx * gx, kForceGrid), to_grid(-dy * gy, kForceGrid), to_grid(-dz * gz, kForceGrid),
                                 to_grid(-dx * gy, kForceGrid), to_grid(-dx * gz, kForceGrid), to_grid(-dy * gz, kForceGrid)};
      for (int k = 0; k < 6; ++k) {
        work[ov + static_cast<std::size_t>(k)] += v[k];
        if (vatom) {
          const std::int64_t half = v[k] / 2;
          work[ova + 6 * static_cast<std::size_t>(i) + k] += half;
          work[ova + 6 * static_cast<std::size_t>(j) + k] += v[k] - half;
        }
      }
    }
  }
  if (!(rmin > kMinPairDistance)) throw Error(overlap_message(rmin));
  std::int64_t etot = 0;
  for (int i = 0; i < nl; ++i) etot += work[oe + static_cast<std::size_t>(i)];
  out.energy += static_cast<double>(etot) / kEnergyGrid;
  if (out.atom_energy.size() == static_cast<std::size_t>(nl))
    for (int i = 0; i < nl; ++i) out.atom_energy[static_cast<std::size_t>(i)] += static_cast<double>(work[oe + static_cast<std::size_t>(i)]) / kEnergyGrid;
  if (out.force.size() != 3 * static_cast<std::size_t>(nt)) throw Error("add_repulsion: the result's forces do not match the graph");
  for (std::size_t k = 0; k < 3 * static_cast<std::size_t>(nt); ++k) out.force[k] += static_cast<double>(work[of + k]) / kForceGrid;
  for (int k = 0; k < 6; ++k) out.virial[static_cast<std::size_t>(k)] += static_cast<double>(work[ov + static_cast<std::size_t>(k)]) / kForceGrid;
  if (vatom && out.atom_virial.size() == 6 * static_cast<std::size_t>(nt))
    for (std::size_t k = 0; k < 6 * static_cast<std::size_t>(nt); ++k) out.atom_virial[k] += static_cast<double>(work[ova + k]) / kForceGrid;
}

}  // namespace qnn
