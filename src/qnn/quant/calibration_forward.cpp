// See calibration_forward.hpp. Written from docs/model.md; shares no code with the engines.
#include "qnn/quant/calibration_forward.hpp"

#include <cmath>
#include <vector>

#include "qnn/error.hpp"

namespace qnn {
namespace {

// eq. S: s(r) = 1/r below rcut_smth, smoothly switched to 0 at rcut.
double switched(double r, double rs, double rc) {
  if (r >= rc) return 0.0;
  if (r < rs) return 1.0 / r;
  const double u = (r - rs) / (rc - rs);
  return (u * u * u * (-6.0 * u * u + 15.0 * u - 10.0) + 1.0) / r;
}

// One dense layer (eq. G / F): y = residual(x, act(x·W + b)).
void dense(const DenseLayer& L, const std::vector<double>& x, std::vector<double>& y) {
  std::vector<double> z(L.bias);
  for (int k = 0; k < L.in; ++k)
    for (int o = 0; o < L.out; ++o) z[static_cast<std::size_t>(o)] += x[static_cast<std::size_t>(k)] * L.weight[static_cast<std::size_t>(k) * L.out + o];
  if (L.activation == Activation::Tanh)
    for (double& v : z) v = std::tanh(v);
  y.assign(static_cast<std::size_t>(L.out), 0.0);
  for (int o = 0; o < L.out; ++o) {
    const double a = z[static_cast<std::size_t>(o)];
    const double xr = x[static_cast<std::size_t>(o % L.in)];  // identity: o < in; doubling: o mod in
    switch (L.residual) {
      case Residual::None: y[static_cast<std::size_t>(o)] = a; break;
      case Residual::Identity:
      case Residual::Doubling: y[static_cast<std::size_t>(o)] = xr + a; break;
      case Residual::Timestep:
      case Residual::DoublingTimestep: y[static_cast<std::size_t>(o)] = xr + L.dt[static_cast<std::size_t>(o)] * a; break;
    }
  }
}

std::vector<double> net_forward(const Net& net, std::vector<double> x, LayerTap* tap, int family, int id) {
  std::vector<double> y;
  for (std::size_t l = 0; l < net.layers.size(); ++l) {
    if (tap) tap->layer_input(family, id, static_cast<int>(l), x.data(), static_cast<int>(x.size()));
    dense(net.layers[l], x, y);
    x.swap(y);
  }
  return x;
}

}  // namespace

double calibration_forward(const Model& m, const NeighborGraph& g, LayerTap* tap) {
  m.validate("model");
  g.validate(m.nspecies());
  const int S = m.nspecies(), M1 = m.m1(), M2 = m.axis_neuron;
  const bool deepmd = m.deepmd_env_mat();
  const double inv_nc = 1.0 / m.neighbor_norm;
  double energy = 0.0;
  for (int i = 0; i < g.nlocal; ++i) {
    const int c = g.species[static_cast<std::size_t>(i)];
    std::vector<double> T(static_cast<std::size_t>(M1) * 4, 0.0);  // T[m][k]
    std::vector<int> filled(static_cast<std::size_t>(S), 0);
    for (int e = g.offsets[static_cast<std::size_t>(i)]; e < g.offsets[static_cast<std::size_t>(i) + 1]; ++e) {
      const int j = g.neighbors[static_cast<std::size_t>(e)];
      const int a = g.species[static_cast<std::size_t>(j)];
      double d[3];
      for (int k = 0; k < 3; ++k) d[k] = g.positions[3 * static_cast<std::size_t>(j) + k] - g.positions[3 * static_cast<std::size_t>(i) + k];
      const double r = std::sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2]);
      if (!(r < m.rcut)) continue;
      if (!(r > kMinPairDistance)) throw Error(overlap_message(r));
      const std::size_t p = static_cast<std::size_t>(c) * S + a;
      const double s = switched(r, m.rcut_smth, m.rcut);
      const double shat = (s - m.mean_s[p]) / m.std_s[p];
      const double R[4] = {deepmd ? shat : s / m.std_s[p], s * d[0] / (r * m.std_r[p]), s * d[1] / (r * m.std_r[p]),
                           s * d[2] / (r * m.std_r[p])};
      ++filled[static_cast<std::size_t>(a)];
      const int net = m.embed_index(c, a);
      const std::vector<double> G = net_forward(m.embed[static_cast<std::size_t>(net)], {shat}, tap, 0, net);
      if (tap) tap->embed_output(net, G.data(), M1);
      for (int mm = 0; mm < M1; ++mm)
        for (int k = 0; k < 4; ++k) T[static_cast<std::size_t>(mm) * 4 + k] += inv_nc * G[static_cast<std::size_t>(mm)] * R[k];
    }
    if (deepmd)  // empty slots: (sel[a] − n_ia) G_a(ŝ₀) ŝ₀ in column 0
      for (int a = 0; a < S; ++a) {
        const std::size_t p = static_cast<std::size_t>(c) * S + a;
        const double s0 = -m.mean_s[p] / m.std_s[p];
        const std::vector<double> G0 = net_forward(m.embed[static_cast<std::size_t>(m.embed_index(c, a))], {s0}, nullptr, 0, 0);
        const double n_empty = m.sel[static_cast<std::size_t>(a)] - filled[static_cast<std::size_t>(a)];
        for (int mm = 0; mm < M1; ++mm) T[static_cast<std::size_t>(mm) * 4] += inv_nc * n_empty * G0[static_cast<std::size_t>(mm)] * s0;
      }
    std::vector<double> D(static_cast<std::size_t>(M1) * M2);  // eq. D
    for (int mm = 0; mm < M1; ++mm)
      for (int n = 0; n < M2; ++n) {
        double v = 0;
        for (int k = 0; k < 4; ++k) v += T[static_cast<std::size_t>(mm) * 4 + k] * T[static_cast<std::size_t>(n) * 4 + k];
        D[static_cast<std::size_t>(mm) * M2 + n] = v;
      }
    const std::vector<double> out = net_forward(m.fit[static_cast<std::size_t>(c)], D, tap, 1, c);
    energy += out.at(0) + m.energy_bias[static_cast<std::size_t>(c)];
  }
  return energy;
}

}  // namespace qnn
