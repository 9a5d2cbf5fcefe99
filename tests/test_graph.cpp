// The periodic graph builder against a brute-force image search, and the reverse index.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <random>

#include "qnn/error.hpp"
#include "qnn/graph/graph.hpp"

namespace {

using Disp = std::array<double, 4>;  // (x, y, z, |x|), sorted on x rounded to 1e-6 Å

// Sorts on coordinates rounded to 1e-6 Å, so that round-off cannot reorder equal vectors.
void sort_disps(std::vector<Disp>& v) {
  auto key = [](const Disp& d) {
    return std::array<long long, 3>{std::llround(d[0] * 1e6), std::llround(d[1] * 1e6), std::llround(d[2] * 1e6)};
  };
  std::sort(v.begin(), v.end(), [&](const Disp& a, const Disp& b) { return key(a) < key(b); });
}

// All displacement vectors x = r_j + n·cell − r_i with 0 < |x| < rcut, by scanning a
// generous block of images directly (no halo logic), per local atom, sorted.
std::vector<std::vector<Disp>> brute_force(const qnn::Cell& c, const std::vector<double>& pos, double rcut, int nimg) {
  const int n = static_cast<int>(pos.size() / 3);
  std::vector<std::vector<Disp>> out(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < n; ++j) {
      for (int a = -nimg; a <= nimg; ++a)
        for (int b = -nimg; b <= nimg; ++b)
          for (int k = -nimg; k <= nimg; ++k) {
            if (i == j && a == 0 && b == 0 && k == 0) continue;
            double x[3];
            for (int d = 0; d < 3; ++d) x[d] = pos[3 * j + d] + a * c[d] + b * c[3 + d] + k * c[6 + d] - pos[3 * i + d];
            const double r = std::sqrt(x[0] * x[0] + x[1] * x[1] + x[2] * x[2]);
            if (r < rcut) out[static_cast<std::size_t>(i)].push_back({x[0], x[1], x[2], r});
          }
    }
    sort_disps(out[static_cast<std::size_t>(i)]);
  }
  return out;
}

std::vector<std::vector<Disp>> from_graph(const qnn::NeighborGraph& g) {
  std::vector<std::vector<Disp>> out(static_cast<std::size_t>(g.nlocal));
  for (int i = 0; i < g.nlocal; ++i) {
    for (int e = g.offsets[i]; e < g.offsets[i + 1]; ++e) {
      const int j = g.neighbors[e];
      double x[3];
      for (int d = 0; d < 3; ++d) x[d] = g.positions[3 * j + d] - g.positions[3 * i + d];
      out[static_cast<std::size_t>(i)].push_back({x[0], x[1], x[2], std::sqrt(x[0] * x[0] + x[1] * x[1] + x[2] * x[2])});
    }
    sort_disps(out[static_cast<std::size_t>(i)]);
  }
  return out;
}

void compare(const qnn::Cell& cell, int natoms, double rcut, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> u(-0.3, 1.3);  // some atoms outside the cell
  std::vector<double> pos;
  std::vector<int> species;
  for (int i = 0; i < natoms; ++i) {
    const double f[3] = {u(rng), u(rng), u(rng)};
    for (int d = 0; d < 3; ++d) pos.push_back(f[0] * cell[d] + f[1] * cell[3 + d] + f[2] * cell[6 + d]);
    species.push_back(i % 2);
  }
  const qnn::NeighborGraph g = qnn::build_periodic_graph(cell, pos, species, rcut);
  g.validate(2);
  const auto want = brute_force(cell, pos, rcut, 6);
  const auto got = from_graph(g);
  std::size_t total = 0;
  for (int i = 0; i < natoms; ++i) {
    ASSERT_EQ(got[i].size(), want[i].size()) << "atom " << i;
    total += want[i].size();
    for (std::size_t k = 0; k < want[i].size(); ++k)
      for (int d = 0; d < 4; ++d) EXPECT_NEAR(got[i][k][d], want[i][k][d], 1e-9);
  }
  EXPECT_GT(total, 0u);
  // Ghost species follow their owners; reverse index lists every edge once.
  for (int k = 0; k < g.ntotal - g.nlocal; ++k) EXPECT_EQ(g.species[g.nlocal + k], species[g.ghost_owner[k]]);
  std::vector<int> seen(g.neighbors.size(), 0);
  for (int a = 0; a < g.ntotal; ++a)
    for (int p = g.rev_offsets[a]; p < g.rev_offsets[a + 1]; ++p) {
      EXPECT_EQ(g.neighbors[g.rev_edges[p]], a);
      ++seen[g.rev_edges[p]];
    }
  for (int s : seen) EXPECT_EQ(s, 1);
}

}  // namespace

TEST(Graph, OrthorhombicMatchesBruteForce) { compare({9.0, 0, 0, 0, 10.0, 0, 0, 0, 11.0}, 40, 4.0, 1); }

TEST(Graph, SmallBoxSeveralImages) {
  // Edges shorter than rcut and 2·rcut: an atom sees several images of itself.
  compare({3.1, 0, 0, 0, 3.3, 0, 0, 0, 7.5}, 5, 4.0, 2);
}

TEST(Graph, TriclinicMatchesBruteForce) { compare({7.0, 0, 0, 2.5, 6.5, 0, -1.5, 2.0, 6.0}, 20, 4.5, 3); }

TEST(Graph, EmptyAndSingleAtom) {
  const qnn::NeighborGraph g0 = qnn::build_periodic_graph({5, 0, 0, 0, 5, 0, 0, 0, 5}, {}, {}, 3.0);
  EXPECT_EQ(g0.nlocal, 0);
  EXPECT_EQ(g0.nedges(), 0);
  // One atom in a 5 Å cube with rcut 6: its 6 face images (5 Å) and 12 edge images (7.07 Å > 6, out).
  const qnn::NeighborGraph g1 = qnn::build_periodic_graph({5, 0, 0, 0, 5, 0, 0, 0, 5}, {1, 1, 1}, {0}, 6.0);
  EXPECT_EQ(g1.nedges(), 6);
}

TEST(Graph, RejectsBadInput) {
  EXPECT_THROW(qnn::build_periodic_graph({1, 0, 0, 2, 0, 0, 0, 0, 1}, {0, 0, 0}, {0}, 3.0), qnn::Error);  // degenerate
  EXPECT_THROW(qnn::build_periodic_graph({5, 0, 0, 0, 5, 0, 0, 0, 5}, {0, 0}, {0}, 3.0), qnn::Error);     // not (N,3)
  EXPECT_THROW(qnn::build_periodic_graph({5, 0, 0, 0, 5, 0, 0, 0, 5}, {0, std::nan(""), 0}, {0}, 3.0), qnn::Error);
  qnn::NeighborGraph g;
  g.nlocal = 1;
  g.ntotal = 2;
  g.offsets = {0, 1};
  g.neighbors = {5};
  g.positions.assign(6, 0.0);
  g.species = {0, 0};
  EXPECT_THROW(g.validate(1), qnn::Error);
  EXPECT_THROW(g.build_reverse_index(), qnn::Error);
  g.neighbors = {1};
  g.species = {0, 3};
  EXPECT_THROW(g.validate(2), qnn::Error);
}
