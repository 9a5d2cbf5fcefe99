// The scalar reference of the integer engine (docs/quantization.md, "Integer network"): one
// edge and one atom at a time, plain integer loops for every product, no threads, no
// batching. The fast engine (qengine.cpp) must reproduce it bit for bit.
#include <sstream>

#include "qnn/error.hpp"
#include "qnn/qengine_ops.hpp"

namespace qnn {

using namespace qdetail;

namespace {

// Forward of one net on one row; t (t_width) keeps every layer's t for the backward pass.
// Returns the output in y (last layer's out).
void net_forward(const QNet& net, const double* x0, double* t, std::vector<double>& y,
                 LayerTap* tap, int family, int netid) {
  std::vector<double> x(x0, x0 + net.layers[0].in);
  std::vector<std::int32_t> xq;
  std::vector<std::int64_t> acc;
  for (std::size_t l = 0; l < net.layers.size(); ++l) {
    const QLayer& L = net.layers[l];
    if (tap) tap->layer_input(family, netid, static_cast<int>(l), x.data(), L.in);
    y.assign(static_cast<std::size_t>(L.out), 0.0);
    double* tl = t + net.t_off[l];
    if (L.exec == LayerExec::Integer) {
      xq.resize(static_cast<std::size_t>(L.in));
      for (int k = 0; k < L.in; ++k) xq[k] = quantize(x[k], L.inv_act_scale, L.qmax_a);
      acc.resize(static_cast<std::size_t>(L.out));
      int_product(L, xq.data(), acc.data());
      int_forward_finish(L, acc.data(), xq.data(), tl, y.data());
    } else {
      float_forward(L, x.data(), tl, y.data());
    }
    x = y;
  }
}

// Backward of one net on one row: gy (last layer's out) -> gx0 (first layer's in).
void net_backward(const QNet& net, const double* t, const double* gy_last, double* gx0) {
  const int nl = static_cast<int>(net.layers.size());
  std::vector<double> gy(gy_last, gy_last + net.layers[nl - 1].out);
  std::vector<double> gz, gx;
  std::vector<std::int32_t> gq;
  std::vector<std::int64_t> acc;
  for (int l = nl - 1; l >= 0; --l) {
    const QLayer& L = net.layers[l];
    gz.assign(static_cast<std::size_t>(L.out), 0.0);
    gx.assign(static_cast<std::size_t>(L.in), 0.0);
    grad_z(L, gy.data(), t + net.t_off[l], gz.data());
    if (L.exec == LayerExec::Integer) {
      gq.resize(static_cast<std::size_t>(L.out));
      const double sg = int_backward_prepare(L, gz.data(), gq.data());
      acc.resize(static_cast<std::size_t>(L.in));
      int_product_t(L, gq.data(), acc.data());
      int_backward_finish(L, acc.data(), sg, gy.data(), gx.data());
    } else {
      float_backward(L, gz.data(), gy.data(), gx.data());
    }
    gy = gx;
  }
  for (int k = 0; k < net.layers[0].in; ++k) gx0[k] = gy[k];
}

}  // namespace

void qengine_reference(const Model& model, bool integer_all, const NeighborGraph& g,
                       EvalResult& out, const EvalOptions& opt, LayerTap* tap) {
  model.validate("model");
  g.validate(model.nspecies());
  const QModel q = prepare(model, integer_all, false);
  // env_mat "deepmd" (docs/model.md): float descriptor only (what `qnn quantize` calibrates on).
  const bool deepmd = model.deepmd_env_mat();
  if (deepmd && q.int_descriptor)
    throw Error("model: the integer descriptor of this reference runs env_mat 'qnn' only (this file uses 'deepmd')");
  const int nl = g.nlocal, nt = g.ntotal, ne = g.nedges();
  const int m1 = q.m1, m2 = q.m2, S = q.S;

  std::vector<int> centre(static_cast<std::size_t>(ne));
  for (int i = 0; i < nl; ++i)
    for (int e = g.offsets[i]; e < g.offsets[i + 1]; ++e) centre[e] = i;

  // geometry
  std::vector<EdgeGeo> geo(static_cast<std::size_t>(ne));
  for (int e = 0; e < ne; ++e) {
    const int i = centre[e], j = g.neighbors[e];
    edge_geometry(q, &g.positions[3 * i], &g.positions[3 * j],
                  g.species[i] * S + g.species[j], geo[e]);
    if (deepmd) geo[e].R[0] = geo[e].active ? geo[e].shat : 0.0;
    if (!(geo[e].r > 1e-4)) {
      std::ostringstream os;
      os << overlap_message(geo[e].r);
      throw Error(os.str());
    }
  }

  // embedding forward
  std::vector<std::vector<double>> et(static_cast<std::size_t>(ne));
  std::vector<std::vector<double>> G(static_cast<std::size_t>(ne));   // as used
  std::vector<std::vector<std::int32_t>> Gq(static_cast<std::size_t>(ne));
  std::vector<double> y;
  for (int e = 0; e < ne; ++e) {
    if (!geo[e].active) continue;
    const int a = model.embed_index(g.species[centre[e]], g.species[g.neighbors[e]]);  // net
    const QNet& net = q.embed[a];
    et[e].assign(static_cast<std::size_t>(net.t_width), 0.0);
    net_forward(net, &geo[e].shat, et[e].data(), y, tap, 0, a);
    if (tap) tap->embed_output(a, y.data(), m1);
    G[e] = y;
    if (q.int_descriptor) {
      const QLayer& last = net.layers.back();
      Gq[e].resize(static_cast<std::size_t>(m1));
      for (int m = 0; m < m1; ++m) {
        Gq[e][m] = quantize(y[m], 1.0 / last.out_scale, 127);
        G[e][m] = static_cast<double>(Gq[e][m]) * last.out_scale;
      }
    }
  }

  // descriptor, fitting forward and backward, descriptor backward: per atom
  std::vector<std::vector<double>> T(static_cast<std::size_t>(nl)), gT(static_cast<std::size_t>(nl));
  std::vector<double> eatom(static_cast<std::size_t>(nl), 0.0);
  for (int i = 0; i < nl; ++i) {
    std::vector<double>& Ti = T[i];
    Ti.assign(static_cast<std::size_t>(4 * m1), 0.0);
    if (q.int_descriptor) {
      std::vector<std::int64_t> acc(static_cast<std::size_t>(S) * 4 * m1, 0);
      for (int e = g.offsets[i]; e < g.offsets[i + 1]; ++e) {
        if (!geo[e].active) continue;
        const int a = g.species[g.neighbors[e]];
        for (int m = 0; m < m1; ++m)
          for (int k = 0; k < 4; ++k)
            acc[(static_cast<std::size_t>(a) * m1 + m) * 4 + k] +=
                static_cast<std::int64_t>(Gq[e][m]) * geo[e].Rfx[k];
      }
      for (int a = 0; a < S; ++a) {
        const double sc = q.embed[model.embed_index(g.species[i], a)].layers.back().out_scale / kRFixed * q.inv_nc;
        for (int p = 0; p < 4 * m1; ++p)
          Ti[p] += static_cast<double>(acc[static_cast<std::size_t>(a) * 4 * m1 + p]) * sc;
      }
    } else {
      for (int e = g.offsets[i]; e < g.offsets[i + 1]; ++e) {
        if (!geo[e].active) continue;
        for (int m = 0; m < m1; ++m)
          for (int k = 0; k < 4; ++k) Ti[4 * m + k] += G[e][m] * geo[e].R[k];
      }
      if (deepmd) {  // empty slots: (sel_a − n_ia) G_a(ŝ₀) ŝ₀ in column 0
        const int c = g.species[i];
        for (int a = 0; a < S; ++a) {
          int n = 0;
          for (int e = g.offsets[i]; e < g.offsets[i + 1]; ++e) n += geo[e].active && g.species[g.neighbors[e]] == a;
          const std::size_t p = static_cast<std::size_t>(c * S + a);
          const double s0 = -model.mean_s[p] / model.std_s[p];
          const int en = model.embed_index(c, a);
          std::vector<double> t0(static_cast<std::size_t>(q.embed[en].t_width));
          net_forward(q.embed[en], &s0, t0.data(), y, tap, 0, en);
          if (tap) tap->embed_output(en, y.data(), m1);
          for (int m = 0; m < m1; ++m) Ti[4 * m] += (model.sel[static_cast<std::size_t>(a)] - n) * y[m] * s0;
        }
      }
      for (double& v : Ti) v *= q.inv_nc;
    }
    std::vector<double> D(static_cast<std::size_t>(m1) * m2);
    descriptor_from_T(m1, m2, Ti.data(), D.data());
    const int c = g.species[i];
    const QNet& fit = q.fit[c];
    std::vector<double> ft(static_cast<std::size_t>(fit.t_width));
    net_forward(fit, D.data(), ft.data(), y, tap, 1, c);
    eatom[i] = on_grid(y[0] + q.energy_bias[c], kEnergyGrid);
    const double one = 1.0;
    std::vector<double> gD(D.size());
    net_backward(fit, ft.data(), &one, gD.data());
    gT[i].assign(static_cast<std::size_t>(4 * m1), 0.0);
    descriptor_backward(m1, m2, Ti.data(), gD.data(), gT[i].data());
  }

  // embedding backward and chain rule: per edge
  std::vector<double> gedge(static_cast<std::size_t>(3) * ne, 0.0);
  std::vector<double> gG(static_cast<std::size_t>(m1));
  for (int e = 0; e < ne; ++e) {
    if (!geo[e].active) continue;
    const int i = centre[e];
    const int a = g.species[g.neighbors[e]];
    const double* gt = gT[i].data();
    double gR[4] = {0, 0, 0, 0};
    for (int m = 0; m < m1; ++m)
      for (int k = 0; k < 4; ++k) gR[k] += gt[4 * m + k] * G[e][m];
    for (int k = 0; k < 4; ++k) gR[k] *= q.inv_nc;
    for (int m = 0; m < m1; ++m)
      gG[m] = q.inv_nc * (gt[4 * m] * geo[e].R[0] + gt[4 * m + 1] * geo[e].R[1] +
                          gt[4 * m + 2] * geo[e].R[2] + gt[4 * m + 3] * geo[e].R[3]);
    double gs = 0.0;
    net_backward(q.embed[model.embed_index(g.species[i], a)], et[e].data(), gG.data(), &gs);
    edge_chain(q, geo[e], g.species[i] * S + a, gs, gR, kForceGrid, &gedge[3 * e]);
  }

  // gather
  out.force.assign(static_cast<std::size_t>(3) * nt, 0.0);
  out.virial.fill(0.0);
  if (opt.atom_virial)
    out.atom_virial.assign(static_cast<std::size_t>(6) * nt, 0.0);
  else
    out.atom_virial.clear();
  std::vector<int> rev_off, rev;
  build_reverse_index(g, rev_off, rev);
  for (int a = 0; a < nt; ++a) {
    double f[3] = {0, 0, 0}, vo[6] = {0, 0, 0, 0, 0, 0}, vr[6] = {0, 0, 0, 0, 0, 0}, v[6];
    if (a < nl) {
      for (int e = g.offsets[a]; e < g.offsets[a + 1]; ++e) {
        for (int d = 0; d < 3; ++d) f[d] += gedge[3 * e + d];
        virial_terms(geo[e].x, &gedge[3 * e], kVirialGrid, v);
        for (int c = 0; c < 6; ++c) vo[c] += v[c];
      }
      for (int c = 0; c < 6; ++c) out.virial[c] += vo[c];
    }
    for (int p = rev_off[a]; p < rev_off[a + 1]; ++p) {
      const int e = rev[p];
      for (int d = 0; d < 3; ++d) f[d] -= gedge[3 * e + d];
      virial_terms(geo[e].x, &gedge[3 * e], kVirialGrid, v);
      for (int c = 0; c < 6; ++c) vr[c] += v[c];
    }
    for (int d = 0; d < 3; ++d) out.force[3 * a + d] = f[d];
    if (opt.atom_virial)
      for (int c = 0; c < 6; ++c) out.atom_virial[6 * a + c] = 0.5 * (vo[c] + vr[c]);
  }
  out.energy = 0.0;
  for (double e : eatom) out.energy += e;
  if (opt.atom_energy)
    out.atom_energy = std::move(eatom);
  else
    out.atom_energy.clear();
}

}  // namespace qnn
