// Neighbour graph: checks, the reverse index, and a periodic-box builder for tests and tools.
#include "qnn/graph/graph.hpp"

#include <cstdio>

#include <algorithm>
#include <array>
#include <climits>
#include <cmath>
#include <string>

#include "qnn/error.hpp"

namespace qnn {

// Count, exclusive scan, fill: rev_edges lists, per target atom, the edges pointing at it in
// increasing edge order, so a gather over it is deterministic.
void build_reverse_index(const NeighborGraph& g, std::vector<int>& off, std::vector<int>& edges) {
  if (g.ntotal < 0) throw Error("neighbour graph: negative atom count");
  const std::size_t nt = static_cast<std::size_t>(g.ntotal);
  off.assign(nt + 1, 0);
  for (int j : g.neighbors) {
    if (j < 0 || j >= g.ntotal) throw Error("neighbour graph: neighbour index " + std::to_string(j) + " outside [0, " + std::to_string(g.ntotal) + ")");
    ++off[static_cast<std::size_t>(j) + 1];
  }
  for (std::size_t a = 0; a < nt; ++a) off[a + 1] += off[a];
  // Fill with off[a] as the cursor of atom a (it ends at the start of a + 1), then shift back.
  edges.resize(g.neighbors.size());
  for (int e = 0; e < g.nedges(); ++e) edges[static_cast<std::size_t>(off[static_cast<std::size_t>(g.neighbors[static_cast<std::size_t>(e)])]++)] = e;
  for (std::size_t a = nt; a > 0; --a) off[a] = off[a - 1];
  off[0] = 0;
}

void NeighborGraph::build_reverse_index() { qnn::build_reverse_index(*this, rev_offsets, rev_edges); }

void NeighborGraph::validate(int nspecies) const {
  auto fail = [](const std::string& m) { throw Error("neighbour graph: " + m); };
  if (nlocal < 0 || ntotal < nlocal) fail("need 0 <= nlocal <= ntotal");
  if (nlocal == 0 && offsets.empty()) {
    if (nedges() != 0) fail("edges without centre atoms");
  } else {
    if (offsets.size() != static_cast<std::size_t>(nlocal) + 1) fail("offsets must have nlocal + 1 entries");
    if (offsets[0] != 0 || offsets.back() != nedges()) fail("offsets must start at 0 and end at the edge count");
  }
  for (int i = 0; i < nlocal; ++i) {
    if (offsets[static_cast<std::size_t>(i) + 1] < offsets[static_cast<std::size_t>(i)]) fail("offsets must be non-decreasing");
  }
  for (int j : neighbors) {
    if (j < 0 || j >= ntotal) fail("neighbour index " + std::to_string(j) + " outside [0, " + std::to_string(ntotal) + ")");
  }
  if (positions.size() != static_cast<std::size_t>(ntotal) * 3) fail("positions must be (ntotal, 3)");
  if (species.size() != static_cast<std::size_t>(ntotal)) fail("species must have ntotal entries");
  for (std::size_t a = 0; a < species.size(); ++a) {
    const int t = species[a];
    if (t < 0 || t >= nspecies) fail("atom " + std::to_string(a) + " has species index " + std::to_string(t) + ", outside the model's " + std::to_string(nspecies) + " species; map every atom type to one of the model's species");
  }
  for (double x : positions) {
    if (!std::isfinite(x)) fail("positions contain NaN or Inf");
  }
  if (!rev_offsets.empty() && (rev_offsets.size() != static_cast<std::size_t>(ntotal) + 1 || rev_edges.size() != neighbors.size())) {
    fail("reverse index does not match the graph; call build_reverse_index()");
  }
}

namespace {

using Vec3 = std::array<double, 3>;

double dot(const Vec3& a, const Vec3& b) { return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]; }
Vec3 cross(const Vec3& a, const Vec3& b) {
  return {a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]};
}

}  // namespace

NeighborGraph build_periodic_graph(const Cell& cell, const std::vector<double>& positions,
                                   const std::vector<int>& species, double rcut) {
  if (positions.size() % 3 != 0) throw Error("build_periodic_graph: positions must be (N, 3)");
  const int n = static_cast<int>(positions.size() / 3);
  if (species.size() != static_cast<std::size_t>(n)) throw Error("build_periodic_graph: species must have one entry per atom");
  if (!(rcut > 0)) throw Error("build_periodic_graph: rcut must be positive");
  const Vec3 A{cell[0], cell[1], cell[2]}, B{cell[3], cell[4], cell[5]}, C{cell[6], cell[7], cell[8]};
  const double vol = dot(A, cross(B, C));
  if (!(std::abs(vol) > 1e-9) || !std::isfinite(vol)) throw Error("build_periodic_graph: the cell is degenerate (zero volume)");
  // Reciprocal rows: f_k = r · recip_k.
  const Vec3 ra = cross(B, C), rb = cross(C, A), rc = cross(A, B);
  const std::array<Vec3, 3> recip{Vec3{ra[0] / vol, ra[1] / vol, ra[2] / vol}, Vec3{rb[0] / vol, rb[1] / vol, rb[2] / vol},
                                  Vec3{rc[0] / vol, rc[1] / vol, rc[2] / vol}};
  // Perpendicular widths of the cell and the halo in fractional units.
  std::array<double, 3> halo{};
  std::array<int, 3> nimg{};
  for (int k = 0; k < 3; ++k) {
    const double width = 1.0 / std::sqrt(dot(recip[static_cast<std::size_t>(k)], recip[static_cast<std::size_t>(k)]));
    halo[static_cast<std::size_t>(k)] = rcut / width;
    nimg[static_cast<std::size_t>(k)] = static_cast<int>(std::ceil(rcut / width)) + 1;
  }

  NeighborGraph g;
  g.nlocal = n;
  // Local atoms wrapped into the cell: energies and forces do not depend on the image chosen.
  std::vector<Vec3> frac(static_cast<std::size_t>(n));
  g.positions.reserve(positions.size() * 3);
  for (int i = 0; i < n; ++i) {
    const Vec3 r{positions[3 * static_cast<std::size_t>(i)], positions[3 * static_cast<std::size_t>(i) + 1], positions[3 * static_cast<std::size_t>(i) + 2]};
    if (!std::isfinite(r[0]) || !std::isfinite(r[1]) || !std::isfinite(r[2])) throw Error("build_periodic_graph: atom " + std::to_string(i) + " has a NaN/Inf coordinate");
    Vec3 f{dot(r, recip[0]), dot(r, recip[1]), dot(r, recip[2])};
    for (auto& x : f) {
      x -= std::floor(x);
      if (x >= 1.0) x = 0.0;
    }
    frac[static_cast<std::size_t>(i)] = f;
    for (int d = 0; d < 3; ++d) g.positions.push_back(f[0] * A[static_cast<std::size_t>(d)] + f[1] * B[static_cast<std::size_t>(d)] + f[2] * C[static_cast<std::size_t>(d)]);
  }
  g.species = species;
  // Ghosts: every periodic image whose fractional coordinates lie within the halo.
  for (int a = -nimg[0]; a <= nimg[0]; ++a) {
    for (int b = -nimg[1]; b <= nimg[1]; ++b) {
      for (int c = -nimg[2]; c <= nimg[2]; ++c) {
        if (a == 0 && b == 0 && c == 0) continue;
        for (int j = 0; j < n; ++j) {
          const Vec3& f = frac[static_cast<std::size_t>(j)];
          const double ga = f[0] + a, gb = f[1] + b, gc = f[2] + c;
          if (ga < -halo[0] || ga > 1 + halo[0] || gb < -halo[1] || gb > 1 + halo[1] || gc < -halo[2] || gc > 1 + halo[2]) continue;
          for (int d = 0; d < 3; ++d) g.positions.push_back(ga * A[static_cast<std::size_t>(d)] + gb * B[static_cast<std::size_t>(d)] + gc * C[static_cast<std::size_t>(d)]);
          g.species.push_back(species[static_cast<std::size_t>(j)]);
          g.ghost_owner.push_back(j);
          if (g.ghost_owner.size() > static_cast<std::size_t>(INT_MAX / 4)) throw Error("build_periodic_graph: too many ghost atoms");
        }
      }
    }
  }
  g.ntotal = static_cast<int>(g.species.size());

  // Cell list over all atoms (bins of edge >= rcut), then count/scan/fill per local atom.
  Vec3 lo{1e300, 1e300, 1e300}, hi{-1e300, -1e300, -1e300};
  for (int a = 0; a < g.ntotal; ++a) {
    for (int d = 0; d < 3; ++d) {
      lo[static_cast<std::size_t>(d)] = std::min(lo[static_cast<std::size_t>(d)], g.positions[3 * static_cast<std::size_t>(a) + static_cast<std::size_t>(d)]);
      hi[static_cast<std::size_t>(d)] = std::max(hi[static_cast<std::size_t>(d)], g.positions[3 * static_cast<std::size_t>(a) + static_cast<std::size_t>(d)]);
    }
  }
  std::array<int, 3> nb{};
  std::array<double, 3> bw{};
  for (int d = 0; d < 3; ++d) {
    const double ext = hi[static_cast<std::size_t>(d)] - lo[static_cast<std::size_t>(d)];
    nb[static_cast<std::size_t>(d)] = std::max(1, std::min(1024, static_cast<int>(ext / rcut)));
    bw[static_cast<std::size_t>(d)] = std::max(ext / nb[static_cast<std::size_t>(d)], 1e-12);
  }
  auto bin_of = [&](int a, int d) {
    const int b = static_cast<int>((g.positions[3 * static_cast<std::size_t>(a) + static_cast<std::size_t>(d)] - lo[static_cast<std::size_t>(d)]) / bw[static_cast<std::size_t>(d)]);
    return std::min(std::max(b, 0), nb[static_cast<std::size_t>(d)] - 1);
  };
  const std::size_t nbins = static_cast<std::size_t>(nb[0]) * nb[1] * nb[2];
  std::vector<int> bin_start(nbins + 1, 0), bin_atoms(static_cast<std::size_t>(g.ntotal)), atom_bin(static_cast<std::size_t>(g.ntotal));
  for (int a = 0; a < g.ntotal; ++a) {
    const int id = (bin_of(a, 0) * nb[1] + bin_of(a, 1)) * nb[2] + bin_of(a, 2);
    atom_bin[static_cast<std::size_t>(a)] = id;
    ++bin_start[static_cast<std::size_t>(id) + 1];
  }
  for (std::size_t k = 0; k < nbins; ++k) bin_start[k + 1] += bin_start[k];
  {
    std::vector<int> cur(bin_start.begin(), bin_start.end() - 1);
    for (int a = 0; a < g.ntotal; ++a) bin_atoms[static_cast<std::size_t>(cur[static_cast<std::size_t>(atom_bin[static_cast<std::size_t>(a)])]++)] = a;
  }
  const double rc2 = rcut * rcut;
  g.offsets.assign(static_cast<std::size_t>(n) + 1, 0);
  std::vector<int> nbrs;
  for (int i = 0; i < n; ++i) {
    nbrs.clear();
    const int bi[3] = {bin_of(i, 0), bin_of(i, 1), bin_of(i, 2)};
    const double* pi = &g.positions[3 * static_cast<std::size_t>(i)];
    for (int x = std::max(0, bi[0] - 1); x <= std::min(nb[0] - 1, bi[0] + 1); ++x) {
      for (int y = std::max(0, bi[1] - 1); y <= std::min(nb[1] - 1, bi[1] + 1); ++y) {
        for (int z = std::max(0, bi[2] - 1); z <= std::min(nb[2] - 1, bi[2] + 1); ++z) {
          const std::size_t id = (static_cast<std::size_t>(x) * nb[1] + y) * nb[2] + z;
          for (int k = bin_start[id]; k < bin_start[id + 1]; ++k) {
            const int j = bin_atoms[static_cast<std::size_t>(k)];
            if (j == i) continue;
            const double* pj = &g.positions[3 * static_cast<std::size_t>(j)];
            const double dx = pj[0] - pi[0], dy = pj[1] - pi[1], dz = pj[2] - pi[2];
            if (dx * dx + dy * dy + dz * dz < rc2) nbrs.push_back(j);
          }
        }
      }
    }
    std::sort(nbrs.begin(), nbrs.end());
    if (g.neighbors.size() + nbrs.size() > static_cast<std::size_t>(INT_MAX)) throw Error("build_periodic_graph: more than 2^31 edges");
    g.neighbors.insert(g.neighbors.end(), nbrs.begin(), nbrs.end());
    g.offsets[static_cast<std::size_t>(i) + 1] = static_cast<int>(g.neighbors.size());
  }
  g.build_reverse_index();
  return g;
}

std::vector<double> fold_ghost_forces(const NeighborGraph& g, const std::vector<double>& force) {
  if (force.size() != static_cast<std::size_t>(g.ntotal) * 3) throw Error("fold_ghost_forces: force must be (ntotal, 3)");
  if (g.ghost_owner.size() != static_cast<std::size_t>(g.ntotal - g.nlocal)) throw Error("fold_ghost_forces: the graph has no ghost owners (not built from a periodic box)");
  std::vector<double> out(force.begin(), force.begin() + 3 * static_cast<std::ptrdiff_t>(g.nlocal));
  for (std::size_t k = 0; k < g.ghost_owner.size(); ++k) {
    const std::size_t o = static_cast<std::size_t>(g.ghost_owner[k]);
    for (int d = 0; d < 3; ++d) out[3 * o + static_cast<std::size_t>(d)] += force[3 * (static_cast<std::size_t>(g.nlocal) + k) + static_cast<std::size_t>(d)];
  }
  return out;
}

std::string overlap_message(double distance) {
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "two atoms are %.3e A apart (%.3e pm); qnn refuses pairs at or below %.0e A: "
                "overlapping atoms in the input coordinates (check the data file, units and "
                "replication)",
                distance, distance * 100.0, kMinPairDistance);
  return buf;
}

}  // namespace qnn
