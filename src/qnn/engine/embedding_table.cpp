// Quintic Hermite tabulation of the embedding nets (docs/model.md, "Compressed embedding").
#include "qnn/engine/embedding_table.hpp"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "qnn/error.hpp"

namespace qnn {
double switched_inverse(double r, double rs, double rc) {
  if (r >= rc) return 0.0;
  if (r < rs) return 1.0 / r;
  const double u = (r - rs) / (rc - rs);
  return (u * u * u * (-6.0 * u * u + 15.0 * u - 10.0) + 1.0) / r;
}

void embedding_exact(const Model& m, int a, double shat, double* g, double* dg, double* d2g) {
  // Forward-mode: value, first and second derivative of every activation w.r.t. ŝ.
  std::vector<double> x{shat}, dx{1.0}, ddx{0.0};
  std::vector<double> y, dy, ddy;
  for (const DenseLayer& L : m.embed.at(a).layers) {
    y.assign(L.out, 0.0);
    dy.assign(L.out, 0.0);
    ddy.assign(L.out, 0.0);
    std::vector<double> z(L.bias), dz(L.out, 0.0), ddz(L.out, 0.0);
    for (int k = 0; k < L.in; ++k)
      for (int o = 0; o < L.out; ++o) {
        const double w = L.weight[static_cast<std::size_t>(k) * L.out + o];
        z[o] += x[k] * w;
        dz[o] += dx[k] * w;
        ddz[o] += ddx[k] * w;
      }
    for (int o = 0; o < L.out; ++o) {
      double t = z[o], dt = dz[o], ddt = ddz[o];
      if (L.activation == Activation::Tanh) {
        const double th = std::tanh(z[o]);
        const double d1 = 1.0 - th * th;
        t = th;
        dt = d1 * dz[o];
        ddt = -2.0 * th * d1 * dz[o] * dz[o] + d1 * ddz[o];
      }
      y[o] = t;
      dy[o] = dt;
      ddy[o] = ddt;
    }
    switch (L.residual) {
      case Residual::None: break;
      case Residual::Identity:
        for (int o = 0; o < L.out; ++o) { y[o] += x[o]; dy[o] += dx[o]; ddy[o] += ddx[o]; }
        break;
      case Residual::Doubling:
        for (int o = 0; o < L.out; ++o) {
          const int k = o % L.in;
          y[o] += x[k]; dy[o] += dx[k]; ddy[o] += ddx[k];
        }
        break;
      case Residual::Timestep:
        for (int o = 0; o < L.out; ++o) {
          y[o] = x[o] + L.dt[o] * y[o];
          dy[o] = dx[o] + L.dt[o] * dy[o];
          ddy[o] = ddx[o] + L.dt[o] * ddy[o];
        }
        break;
      case Residual::DoublingTimestep:
        for (int o = 0; o < L.out; ++o) {
          const int k = o % L.in;
          y[o] = x[k] + L.dt[o] * y[o];
          dy[o] = dx[k] + L.dt[o] * dy[o];
          ddy[o] = ddx[k] + L.dt[o] * ddy[o];
        }
        break;
    }
    x.swap(y);
    dx.swap(dy);
    ddx.swap(ddy);
  }
  for (std::size_t o = 0; o < x.size(); ++o) {
    g[o] = x[o];
    if (dg) dg[o] = dx[o];
    if (d2g) d2g[o] = ddx[o];
  }
}

EmbeddingTable::EmbeddingTable(const Model& m, const TableSpec& spec) {
  const int S = m.nspecies();
  nspecies_ = S;
  m1_ = m.m1();
  m1p_ = (m1_ + 15) / 16 * 16;
  if (S <= 0 || m1_ <= 0) throw Error("model: no species or no embedding outputs to tabulate");
  if (spec.fine_intervals < 1 || spec.coarse_ratio < 1 || !(spec.r_clamp > 0.0) ||
      !(spec.r_fine > spec.r_clamp) || !(spec.r_fine < m.rcut))
    throw Error("embedding table: invalid table specification");
  const double s_fine = switched_inverse(spec.r_fine, m.rcut_smth, m.rcut);
  const double s_clamp = switched_inverse(spec.r_clamp, m.rcut_smth, m.rcut);
  n1_ = spec.fine_intervals;
  // One interval count for every species: the largest zone 2 any species needs.
  zones_.resize(S);
  n2_ = 1;
  for (int a = 0; a < S; ++a) {
    double lo = HUGE_VAL, mid = -HUGE_VAL, hi = -HUGE_VAL;
    for (int c = 0; c < S; ++c) {
      const double mean = m.mean_s[c * S + a], sd = m.std_s[c * S + a];
      if (!(sd > 0.0) || !std::isfinite(mean))
        throw Error("model: std_s must be positive and mean_s finite to tabulate the embedding");
      lo = std::min(lo, (0.0 - mean) / sd);
      mid = std::max(mid, (s_fine - mean) / sd);
      hi = std::max(hi, (s_clamp - mean) / sd);
    }
    Zones& z = zones_[a];
    z.lo = lo;
    z.mid = mid;
    const double h1 = (mid - lo) / n1_;
    const double h2 = h1 * spec.coarse_ratio;
    if (!(h1 > 0.0) || !std::isfinite(h1)) throw Error("embedding table: empty input range");
    z.inv_h1 = 1.0 / h1;
    z.inv_h2 = 1.0 / h2;
    z.n1 = n1_;
    n2_ = std::max(n2_, static_cast<int>(std::ceil((hi - mid) / h2)));
  }
  for (auto& z : zones_) z.n2 = n2_;

  const int N = n1_ + n2_;
  ntables_ = m.n_embed_nets();
  if (m.embed.size() != static_cast<std::size_t>(ntables_)) throw Error("model: wrong number of embedding nets to tabulate");
  coef_.assign(static_cast<std::size_t>(ntables_) * N * 6 * m1p_, 0.0f);
  std::vector<double> g0(m1_), d0(m1_), dd0(m1_), g1(m1_), d1(m1_), dd1(m1_);
  max_abs_ = 0.0;
  for (int a = 0; a < ntables_; ++a) {  // a: embedding net; its zones are its neighbour species'
    const Zones& z = zones_[a % S];
    auto knot = [&](int i) {  // ŝ of knot i (i = 0 .. N)
      return i <= n1_ ? z.lo + i / z.inv_h1 : z.mid + (i - n1_) / z.inv_h2;
    };
    embedding_exact(m, a, knot(0), g0.data(), d0.data(), dd0.data());
    for (int i = 0; i < N; ++i) {
      const double x0 = knot(i), x1 = knot(i + 1);
      const double h = x1 - x0;
      embedding_exact(m, a, x1, g1.data(), d1.data(), dd1.data());
      float* c = coef_.data() + (static_cast<std::size_t>(a) * N + i) * 6 * m1p_;
      for (int o = 0; o < m1_; ++o) {
        const double f0 = g0[o], f1 = g1[o];
        const double p0 = h * d0[o], p1 = h * d1[o];
        const double q0 = h * h * dd0[o], q1 = h * h * dd1[o];
        const double df = f1 - f0;
        c[0 * m1p_ + o] = static_cast<float>(f0);
        c[1 * m1p_ + o] = static_cast<float>(p0);
        c[2 * m1p_ + o] = static_cast<float>(0.5 * q0);
        c[3 * m1p_ + o] = static_cast<float>(10.0 * df - 6.0 * p0 - 4.0 * p1 - 1.5 * q0 + 0.5 * q1);
        c[4 * m1p_ + o] = static_cast<float>(-15.0 * df + 8.0 * p0 + 7.0 * p1 + 1.5 * q0 - q1);
        c[5 * m1p_ + o] = static_cast<float>(6.0 * df - 3.0 * p0 - 3.0 * p1 - 0.5 * q0 + 0.5 * q1);
        if (!std::isfinite(f1) || !std::isfinite(p1) || !std::isfinite(q1))
          throw Error("embedding table: the embedding net is not finite at ŝ = " +
                      std::to_string(x1));
        max_abs_ = std::max({max_abs_, std::abs(f0), std::abs(f1)});
      }
      g0.swap(g1);
      d0.swap(d1);
      dd0.swap(dd1);
    }
  }
}

EmbeddingTable::Locate EmbeddingTable::locate(int a, double shat) const {
  const Zones& z = zones_[a % nspecies_];
  const double x = (shat - z.lo) * z.inv_h1;
  if (!(x >= 0.0)) return {0, 0.0, 0.0};
  if (x < z.n1) {
    const int k = static_cast<int>(x);
    return {k, x - k, z.inv_h1};
  }
  const double x2 = (shat - z.mid) * z.inv_h2;
  if (x2 < z.n2) {
    const int k = static_cast<int>(x2);
    return {z.n1 + k, x2 - k, z.inv_h2};
  }
  return {z.n1 + z.n2 - 1, 1.0, 0.0};
}

void EmbeddingTable::evaluate(int a, double shat, double* g, double* dg) const {
  const Locate L = locate(a, shat);
  const float* c = coefficients(a, L.interval);
  const double t = L.t;
  for (int o = 0; o < m1_; ++o) {
    const double c0 = c[o], c1 = c[m1p_ + o], c2 = c[2 * m1p_ + o], c3 = c[3 * m1p_ + o],
                 c4 = c[4 * m1p_ + o], c5 = c[5 * m1p_ + o];
    g[o] = c0 + t * (c1 + t * (c2 + t * (c3 + t * (c4 + t * c5))));
    if (dg) dg[o] = (c1 + t * (2 * c2 + t * (3 * c3 + t * (4 * c4 + t * 5 * c5)))) * L.inv_h;
  }
}

EmbeddingTable::TableError EmbeddingTable::measure_error(const Model& m, int samples) const {
  TableError e;
  std::vector<double> gt(m1_), dgt(m1_), ge(m1_), dge(m1_);
  for (int a = 0; a < ntables_; ++a) {
    const Zones& z = zones_[a % nspecies_];
    for (int i = 0; i < samples; ++i) {
      const double shat = z.lo + (z.mid - z.lo) * (i + 0.5) / samples;
      evaluate(a, shat, gt.data(), dgt.data());
      embedding_exact(m, a, shat, ge.data(), dge.data(), nullptr);
      for (int o = 0; o < m1_; ++o) {
        e.value = std::max(e.value, std::abs(gt[o] - ge[o]));
        e.derivative = std::max(e.derivative, std::abs(dgt[o] - dge[o]));
      }
    }
  }
  return e;
}

std::string EmbeddingTable::describe() const {
  std::ostringstream os;
 os << "tabulated embedding: " << ntables_ << (ntables_ == nspecies_ ? " species x " : " species pairs x ") << n1_ << " + " << n2_
     << " quintic intervals x " << m1_ << " outputs ("
     << coef_.size() * sizeof(float) / 1024 << " KiB)";
  return os.str();
}

}  // namespace qnn
