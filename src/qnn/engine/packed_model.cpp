// The model checks and the packing of engine v2, shared by CompressedEngine and the CUDA engine
// (packed_model.hpp).
#include "qnn/engine/packed_model.hpp"

#include <algorithm>
#include <cmath>

#include "qnn/error.hpp"
#include "qnn/kernels/int16_gemm.hpp"
#include "qnn/quant/layer_exec.hpp"

namespace qnn {

namespace {

void check_model(const Model& m) {
  const int S = m.nspecies();
  if (S <= 0) throw Error("model: no species");
  if (m.m1() <= 0 || m.axis_neuron <= 0 || m.axis_neuron > m.m1())
    throw Error("model: needs 0 < axis_neuron <= last embedding width");
  if (!(m.rcut_smth >= 0.0 && m.rcut_smth < m.rcut)) throw Error("model: needs 0 <= rcut_smth < rcut");
  if (!(m.neighbor_norm > 0.0)) throw Error("model: neighbor_norm must be positive");
  const std::size_t SS = static_cast<std::size_t>(S) * S;
  if (m.embed.size() != static_cast<std::size_t>(m.n_embed_nets()) || m.fit.size() != static_cast<std::size_t>(S) ||
      m.mean_s.size() != SS || m.std_s.size() != SS || m.std_r.size() != SS ||
      m.energy_bias.size() != static_cast<std::size_t>(S))
    throw Error("model: needs one embedding and fitting net and statistics per species");
}

// Statistics, table zones, fixed-point scale and the empty-slot terms of env_mat "deepmd".
void pack_descriptor(const Model& m, const CompressedOptions& opt, PackedModel& A) {
  const int S = A.S;
  const EmbeddingTable& table = A.table;
  const std::size_t SS = static_cast<std::size_t>(S) * S;
  A.mean_s = m.mean_s;
  A.inv_std_s.resize(SS);
  A.inv_std_r.resize(SS);
  double max_inv = 0.0;
  for (std::size_t p = 0; p < SS; ++p) {
    if (!(m.std_s[p] > 0.0) || !(m.std_r[p] > 0.0)) throw Error("model: std_s and std_r must be positive");
    A.inv_std_s[p] = 1.0 / m.std_s[p];
    A.inv_std_r[p] = 1.0 / m.std_r[p];
    max_inv = std::max({max_inv, A.inv_std_s[p], A.inv_std_r[p]});
  }
  A.zones.resize(static_cast<std::size_t>(S));
  for (int a = 0; a < S; ++a) {
    const auto z = table.zones(a);
    A.zones[static_cast<std::size_t>(a)] = {z.lo, z.inv_h1, z.mid, z.inv_h2, z.n1, z.n2};
  }
  A.coef_centre_stride =
      m.type_one_side ? 0 : static_cast<std::size_t>(table.coefficients(S, 0) - table.coefficients(0, 0));
  A.s_fast = switched_inverse(opt.table.r_fine, m.rcut_smth, m.rcut);
  // Fixed-point scale of the descriptor terms: every fast-path |G·R̂|·t_scale stays below 2^27
  // units, so that 15 of them sum exactly in int32 (docs/model.md, "Determinism"),
  // with env_mat "deepmd" R̂₀ = ŝ = (s − mean_s)/std_s. |G| is bounded on every fine-zone
  // interval by Σ_i |c_i| (t ∈ [0, 1]), a bound of the tabulated polynomial itself.
  double max_mean = 0.0;
  if (m.deepmd_env_mat())
    for (double v : m.mean_s) max_mean = std::max(max_mean, std::abs(v));
  double max_g = table.max_abs_value();
  const int P = A.m1p;
  for (int t = 0; t < table.ntables(); ++t)
    for (int k = 0; k < table.zones(t).n1; ++k) {
      const float* cf = table.coefficients(t, k);
      for (int o = 0; o < A.m1; ++o) {
        double sum = 0.0;
        for (int q = 0; q < 6; ++q) sum += std::abs(static_cast<double>(cf[q * P + o]));
        max_g = std::max(max_g, sum);
      }
    }
  const double bound = 1.05 * max_g * max_inv * (A.s_fast + max_mean);
  if (!(bound > 0.0) || !std::isfinite(bound))
    throw Error("model: the descriptor's range is not finite (embedding or statistics)");
  A.t_scale = std::ldexp(1.0, static_cast<int>(std::floor(std::log2(0x1p27 / bound))));
  A.deepmd = m.deepmd_env_mat();
  if (!A.deepmd) return;
  // The empty-slot term of every (centre, neighbour) pair from the table itself, so that a
  // neighbour leaving the cutoff (ŝ → ŝ₀) and the slot it frees add the same amount.
  if (m.sel.size() != static_cast<std::size_t>(S)) throw Error("model: env_mat 'deepmd' needs sel for every species");
  A.sel = m.sel;
  A.pad64.assign(SS * static_cast<std::size_t>(P), 0);
  std::vector<double> g(static_cast<std::size_t>(P)), dg(static_cast<std::size_t>(P));
  for (int c = 0; c < S; ++c)
    for (int a = 0; a < S; ++a) {
      const std::size_t p = static_cast<std::size_t>(c) * S + a;
      const double s0 = -m.mean_s[p] * A.inv_std_s[p];
      table.evaluate(m.embed_index(c, a), s0, g.data(), dg.data());
      for (int k = 0; k < A.m1; ++k) {
        const double v = std::nearbyint(g[static_cast<std::size_t>(k)] * s0 * A.t_scale);
        if (!(std::abs(v) < 0x1p40)) throw Error("model: the empty-slot term of env_mat 'deepmd' is out of range");
        A.pad64[p * P + static_cast<std::size_t>(k)] = static_cast<std::int64_t>(v);
      }
    }
}

// One hidden fitting layer `d` (input width `prev`); returns its label ("fp32", "int8", ...).
std::string pack_layer(const DenseLayer& d, int prev, const CompressedOptions& opt, const std::string& name,
                       PackedLayer& P) {
  if (d.in != prev || d.out <= 0 || d.weight.size() != std::size_t(d.in) * d.out ||
      d.bias.size() != std::size_t(d.out))
    throw Error("model: " + name + " has inconsistent shapes");
  const bool res_ok = d.residual == Residual::None ||
                      (d.residual == Residual::Identity && d.out == d.in) ||
                      (d.residual == Residual::Doubling && d.out == 2 * d.in) ||
                      (d.residual == Residual::Timestep && d.out == d.in &&
                       d.dt.size() == std::size_t(d.out));
  if (!res_ok) throw Error("model: " + name + ": residual does not fit its shape");
  P.in = d.in;
  P.out = d.out;
  P.residual = static_cast<int>(d.residual);
  P.tanh = d.activation == Activation::Tanh ? 1 : 0;
  P.w.assign(std::size_t(d.in) * d.out, 0.0f);
  P.wt.assign(std::size_t(d.out) * d.in, 0.0f);
  for (int k = 0; k < d.in; ++k)
    for (int o = 0; o < d.out; ++o) {
      const float w = static_cast<float>(d.weight[std::size_t(k) * d.out + o]);
      P.w[std::size_t(k) * d.out + o] = w;
      P.wt[std::size_t(o) * d.in + k] = w;
    }
  P.b.resize(std::size_t(d.out));
  for (int o = 0; o < d.out; ++o) P.b[std::size_t(o)] = static_cast<float>(d.bias[std::size_t(o)]);
  if (d.residual == Residual::Timestep) {
    P.dt.resize(std::size_t(d.out));
    for (int o = 0; o < d.out; ++o) P.dt[std::size_t(o)] = static_cast<float>(d.dt[std::size_t(o)]);
  }
  // int8 execution of this layer (w8a8, or with int16 activations in mode w8a16)?
  bool int8 = false, integer = false;
  const bool w8a16 = opt.fit == FitPrecision::W8A16;
  if (opt.fit != FitPrecision::Float) {
    const LayerExec ex = layer_exec(d, opt.fit != FitPrecision::Mixed, name);
    integer = ex == LayerExec::Integer;
    int8 = integer && d.quant.weight_bits <= 8 && d.quant.act_bits <= 8;
  }
  std::string label = "fp32";
  if (d.quant.weight_bits != 0 && !int8) label = "w" + std::to_string(d.quant.weight_bits) + "-fp32";
  if (integer && !int8) {
    label = "w" + std::to_string(d.quant.weight_bits) + "a" + std::to_string(d.quant.act_bits) + "-fp32";
    if (!(d.quant.act_scale > 0.0f) || !std::isfinite(d.quant.act_scale) || d.quant.act_bits > 24)
      throw Error("model: " + name + ": activation scale must be positive and finite, at most 24 bits");
    P.kind = PackedLayer::FakeQuant;
  }
  if (int8) {
    const QuantSpec& q = d.quant;
    if (!(q.act_scale > 0.0f) || !std::isfinite(q.act_scale))
      throw Error("model: " + name + ": activation scale must be positive and finite");
    P.zscale.resize(std::size_t(d.out));
    P.wscale.resize(std::size_t(d.out));
    P.wq.resize(std::size_t(d.in) * d.out);
    for (int o = 0; o < d.out; ++o) {
      const double sw = q.weight_scale.size() == 1 ? q.weight_scale[0] : q.weight_scale.at(std::size_t(o));
      if (!(sw > 0.0) || !std::isfinite(sw))
        throw Error("model: " + name + ": weight scales must be positive and finite");
      P.wscale[std::size_t(o)] = static_cast<float>(sw);
      P.zscale[std::size_t(o)] = static_cast<float>(static_cast<double>(q.act_scale) * sw);
    }
    for (std::size_t k = 0; k < d.weight.size(); ++k) {
      const double sw = P.wscale[k % std::size_t(d.out)];
      const double v = std::round(d.weight[k] / sw);
      if (std::abs(v) > 127.0 || std::abs(d.weight[k] - v * sw) > 1e-6 * sw)
        throw Error("model: " + name + ": weights are not 8-bit multiples of their scales");
      P.wq[k] = static_cast<std::int8_t>(v);
    }
    P.kind = w8a16 ? PackedLayer::W8A16 : PackedLayer::Int8;
    label = w8a16 ? "w8a16" : "int8";
  }
  if (P.kind == PackedLayer::W8A16) {
    // activations on int16 with a per-row dynamic scale (block kernel), the finest grid whose
    // int32 sums are exact (igemm::max_abs_a16); no static scale is used
    P.qmax_a = static_cast<float>(igemm::max_abs_a16(d.in));
    P.qmax_g = static_cast<float>(igemm::max_abs_a16(d.out));
  } else if (P.kind != PackedLayer::Float) {
    P.act_scale = d.quant.act_scale;
    P.inv_act_scale = 1.0f / d.quant.act_scale;
    P.qmax_a = static_cast<float>((1 << (d.quant.act_bits - 1)) - 1);
  }
  return label;
}

void pack_net(const Model& m, int c, int k0, const CompressedOptions& opt, PackedNet& N) {
  const auto& Ls = m.fit[static_cast<std::size_t>(c)].layers;
  const std::string sp = m.species[static_cast<std::size_t>(c)];
  if (Ls.empty()) throw Error("model: fitting net " + sp + " has no layers");
  const DenseLayer& last = Ls.back();
  if (last.out != 1 || last.activation != Activation::Linear || last.residual != Residual::None)
    throw Error("model: fitting net " + sp + " must end in a linear layer with one output");
  const int nh = static_cast<int>(Ls.size()) - 1;
  N.layers.resize(static_cast<std::size_t>(nh));
  N.label.clear();
  int prev = k0;
  for (int l = 0; l < nh; ++l) {
    const DenseLayer& d = Ls[static_cast<std::size_t>(l)];
    const std::string name = "fitting net " + sp + " layer " + std::to_string(l);
    N.label += (l ? " " : "") + pack_layer(d, prev, opt, name, N.layers[static_cast<std::size_t>(l)]);
    prev = d.out;
  }
  if (last.in != prev || last.weight.size() != std::size_t(prev) || last.bias.size() != 1)
    throw Error("model: fitting net " + sp + ": output layer has inconsistent shapes");
  N.w_out.resize(static_cast<std::size_t>(prev));
  for (int k = 0; k < prev; ++k) N.w_out[static_cast<std::size_t>(k)] = static_cast<float>(last.weight[static_cast<std::size_t>(k)]);
  N.b_out = last.bias[0] + m.energy_bias[static_cast<std::size_t>(c)];
  N.label += std::string(nh ? " " : "") + "fp64-out";
}

}  // namespace

PackedModel pack_model(const Model& m, const CompressedOptions& opt) {
  check_model(m);
  PackedModel A;
  A.table = EmbeddingTable(m, opt.table);
  A.S = m.nspecies();
  A.m1 = m.m1();
  A.m1p = A.table.m1_padded();
  A.m2 = m.axis_neuron;
  A.k0 = A.m1 * A.m2;
  A.rc = m.rcut;
  A.rs = m.rcut_smth;
  A.inv_nc = 1.0 / m.neighbor_norm;
  pack_descriptor(m, opt, A);
  A.nets.resize(static_cast<std::size_t>(A.S));
  for (int c = 0; c < A.S; ++c) pack_net(m, c, A.k0, opt, A.nets[static_cast<std::size_t>(c)]);
  return A;
}

}  // namespace qnn
