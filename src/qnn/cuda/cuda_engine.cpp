// Host side of the CUDA engine: packs the model as CompressedEngine's constructor does (the
// same checks, the same table, fixed-point scale, empty-slot terms, fp32 and int8 fitting
// weights; compressed_engine.cpp), groups the centres by species and converts the device's
// fixed-point sums to results exactly as CompressedEngine::compute does. The device work is in
// pipeline.cu and fitting.cu.
#include "qnn/cuda/cuda_engine.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <sstream>

#include "qnn/cuda/pipeline.cuh"
#include "qnn/engine/embedding_table.hpp"
#include "qnn/error.hpp"
#include "qnn/quant/layer_exec.hpp"

namespace qnn::cuda {

using detail::LayerData;
using detail::ModelData;
using detail::NetData;

int device_count() { return detail::device_count(); }
bool device_available(std::string* why) { return detail::device_available(why); }

struct CudaEngine::Impl {
  Model model;
  CompressedOptions opt;
  EmbeddingTable table;
  std::vector<std::string> layer_labels;
  std::unique_ptr<detail::Pipeline> pipe;
  // per-call host buffers (grow only)
  std::vector<int> order, row_start;
  detail::Results res;
};

namespace {

// The model checks and packing of CompressedEngine::CompressedEngine (compressed_engine.cpp),
// minus the CPU-only parts (padded GEMM panels, packed int8 B): kept in step with it.
ModelData pack(const Model& m, const CompressedOptions& opt, const EmbeddingTable& table,
               std::vector<std::string>& labels) {
  ModelData A;
  const int S = m.nspecies();
  A.S = S;
  A.m1 = m.m1();
  A.m1p = table.m1_padded();
  A.m2 = m.axis_neuron;
  A.k0 = A.m1 * A.m2;
  A.rc = m.rcut;
  A.rs = m.rcut_smth;
  A.inv_nc = 1.0 / m.neighbor_norm;
  const std::size_t SS = static_cast<std::size_t>(S) * S;
  A.inv_std_s.resize(SS);
  A.inv_std_r.resize(SS);
  double max_inv = 0.0;
  for (std::size_t p = 0; p < SS; ++p) {
    if (!(m.std_s[p] > 0.0) || !(m.std_r[p] > 0.0)) throw Error("model: std_s and std_r must be positive");
    A.inv_std_s[p] = 1.0 / m.std_s[p];
    A.inv_std_r[p] = 1.0 / m.std_r[p];
    max_inv = std::max({max_inv, A.inv_std_s[p], A.inv_std_r[p]});
  }
  A.mean_s = m.mean_s;
  A.zones.resize(S);
  for (int a = 0; a < S; ++a) {
    const auto z = table.zones(a);
    A.zones[a] = {z.lo, z.inv_h1, z.mid, z.inv_h2, z.n1, z.n2};
  }
  const float* c0 = table.coefficients(0, 0);
  A.coef.assign(c0, c0 + static_cast<std::size_t>(table.ntables()) * table.intervals() * 6 * A.m1p);
  A.coef_centre_stride = m.type_one_side ? 0 : static_cast<std::size_t>(table.coefficients(S, 0) - c0);
  A.s_fast = switched_inverse(opt.table.r_fine, m.rcut_smth, m.rcut);
  double max_mean = 0.0;
  if (m.deepmd_env_mat())
    for (double v : m.mean_s) max_mean = std::max(max_mean, std::abs(v));
  const double bound = 1.05 * table.max_abs_value() * max_inv * (A.s_fast + max_mean);
  if (!(bound > 0.0) || !std::isfinite(bound))
    throw Error("model: the descriptor's range is not finite (embedding or statistics)");
  A.t_scale = std::ldexp(1.0, static_cast<int>(std::floor(std::log2(0x1p27 / bound))));
  A.deepmd = m.deepmd_env_mat();
  if (A.deepmd) {
    if (m.sel.size() != static_cast<std::size_t>(S)) throw Error("model: env_mat 'deepmd' needs sel for every species");
    A.sel = m.sel;
    const int P = A.m1p;
    A.pad64.assign(SS * static_cast<std::size_t>(P), 0);
    std::vector<double> g(static_cast<std::size_t>(P)), dg(static_cast<std::size_t>(P));
    for (int c = 0; c < S; ++c)
      for (int a = 0; a < S; ++a) {
        const std::size_t p = static_cast<std::size_t>(c) * S + a;
        const double s0 = -m.mean_s[p] * A.inv_std_s[p];
        table.evaluate(m.embed_index(c, a), s0, g.data(), dg.data());
        for (int k = 0; k < A.m1; ++k) {
          const double v = std::trunc(g[static_cast<std::size_t>(k)] * s0 * A.t_scale);
          if (!(std::abs(v) < 0x1p40)) throw Error("model: the empty-slot term of env_mat 'deepmd' is out of range");
          A.pad64[p * P + static_cast<std::size_t>(k)] = static_cast<std::int64_t>(v);
        }
      }
  }

  // ---- fitting nets
  A.nets.resize(S);
  labels.assign(S, "");
  for (int c = 0; c < S; ++c) {
    const auto& Ls = m.fit[c].layers;
    const std::string sp = m.species[c];
    if (Ls.empty()) throw Error("model: fitting net " + sp + " has no layers");
    const DenseLayer& last = Ls.back();
    if (last.out != 1 || last.activation != Activation::Linear || last.residual != Residual::None)
      throw Error("model: fitting net " + sp + " must end in a linear layer with one output");
    const int nh = static_cast<int>(Ls.size()) - 1;
    NetData& N = A.nets[c];
    N.layers.resize(nh);
    int prev = A.k0;
    for (int l = 0; l < nh; ++l) {
      const DenseLayer& d = Ls[l];
      const std::string name = "fitting net " + sp + " layer " + std::to_string(l);
      if (d.in != prev || d.out <= 0 || d.weight.size() != std::size_t(d.in) * d.out ||
          d.bias.size() != std::size_t(d.out))
        throw Error("model: " + name + " has inconsistent shapes");
      const bool res_ok = d.residual == Residual::None ||
                          (d.residual == Residual::Identity && d.out == d.in) ||
                          (d.residual == Residual::Doubling && d.out == 2 * d.in) ||
                          (d.residual == Residual::Timestep && d.out == d.in &&
                           d.dt.size() == std::size_t(d.out));
      if (!res_ok) throw Error("model: " + name + ": residual does not fit its shape");
      LayerData& P = N.layers[l];
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
      P.b.resize(d.out);
      for (int o = 0; o < d.out; ++o) P.b[o] = static_cast<float>(d.bias[o]);
      if (d.residual == Residual::Timestep) {
        P.dt.resize(d.out);
        for (int o = 0; o < d.out; ++o) P.dt[o] = static_cast<float>(d.dt[o]);
      }
      bool int8 = false, integer = false;
      if (opt.fit != FitPrecision::Float) {
        const LayerExec ex = layer_exec(d, opt.fit == FitPrecision::Int8, name);
        integer = ex == LayerExec::Integer;
        int8 = integer && d.quant.weight_bits <= 8 && d.quant.act_bits <= 8;
      }
      std::string label = "fp32";
      if (d.quant.weight_bits != 0 && !int8) label = "w" + std::to_string(d.quant.weight_bits) + "-fp32";
      if (integer && !int8) {
        label = "w" + std::to_string(d.quant.weight_bits) + "a" + std::to_string(d.quant.act_bits) + "-fp32";
        if (!(d.quant.act_scale > 0.0f) || !std::isfinite(d.quant.act_scale) || d.quant.act_bits > 24)
          throw Error("model: " + name + ": activation scale must be positive and finite, at most 24 bits");
        P.mode = detail::kLayerFakeQuant;
      }
      if (int8) {
        const QuantSpec& q = d.quant;
        if (!(q.act_scale > 0.0f) || !std::isfinite(q.act_scale))
          throw Error("model: " + name + ": activation scale must be positive and finite");
        P.zscale.resize(d.out);
        P.wscale.resize(d.out);
        std::vector<std::int8_t> wq(std::size_t(d.in) * d.out);
        for (int o = 0; o < d.out; ++o) {
          const double sw = q.weight_scale.size() == 1 ? q.weight_scale[0] : q.weight_scale.at(o);
          if (!(sw > 0.0) || !std::isfinite(sw))
            throw Error("model: " + name + ": weight scales must be positive and finite");
          P.wscale[o] = static_cast<float>(sw);
          P.zscale[o] = static_cast<float>(static_cast<double>(q.act_scale) * sw);
        }
        for (std::size_t k = 0; k < d.weight.size(); ++k) {
          const double sw = P.wscale[k % d.out];
          const double v = std::round(d.weight[k] / sw);
          if (std::abs(v) > 127.0 || std::abs(d.weight[k] - v * sw) > 1e-6 * sw)
            throw Error("model: " + name + ": weights are not 8-bit multiples of their scales");
          wq[k] = static_cast<std::int8_t>(v);
        }
        // the mma's B operand, column by column (k contiguous), zero padded
        const int kin = detail::pad32(d.in), kout = detail::pad32(d.out);
        P.wq_fwd.assign(std::size_t(detail::pad8(d.out)) * kin, 0);
        P.wq_bwd.assign(std::size_t(detail::pad8(d.in)) * kout, 0);
        for (int k = 0; k < d.in; ++k)
          for (int o = 0; o < d.out; ++o) {
            const std::int8_t v = wq[std::size_t(k) * d.out + o];
            P.wq_fwd[std::size_t(o) * kin + k] = v;
            P.wq_bwd[std::size_t(k) * kout + o] = v;
          }
        P.mode = detail::kLayerInt8;
        label = "int8";
      }
      if (P.mode != detail::kLayerFloat) {
        P.act_scale = d.quant.act_scale;
        P.inv_act_scale = 1.0f / d.quant.act_scale;
        P.qmax_a = static_cast<float>((1 << (d.quant.act_bits - 1)) - 1);
      }
      labels[c] += (l ? " " : "") + label;
      prev = d.out;
    }
    if (last.in != prev || last.weight.size() != std::size_t(prev) || last.bias.size() != 1)
      throw Error("model: fitting net " + sp + ": output layer has inconsistent shapes");
    N.w_out.resize(prev);
    for (int k = 0; k < prev; ++k) N.w_out[k] = static_cast<float>(last.weight[k]);
    N.b_out = Ls.back().bias[0] + m.energy_bias[c];
    labels[c] += std::string(nh ? " " : "") + "fp64-out";
  }
  return A;
}

}  // namespace

CudaEngine::CudaEngine(const Model& model, const CompressedOptions& opt, int device)
    : impl_(std::make_unique<Impl>()) {
  Impl& I = *impl_;
  I.model = model;
  I.opt = opt;
  const Model& m = I.model;
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
  I.table = EmbeddingTable(m, opt.table);
  const ModelData md = pack(m, opt, I.table, I.layer_labels);
  I.pipe = std::make_unique<detail::Pipeline>(md, device);
}

CudaEngine::~CudaEngine() = default;

const Model& CudaEngine::model() const { return impl_->model; }

std::string CudaEngine::describe() const {
  const Impl& I = *impl_;
  std::ostringstream os;
  os << I.table.describe() << "; fitting";
  for (int c = 0; c < I.model.nspecies(); ++c)
    os << " " << I.model.species[c] << " [" << I.layer_labels[c] << "]";
  os << "; " << I.pipe->describe() << "; fixed-point sums";
  return os.str();
}

void CudaEngine::compute(const NeighborGraph& g, EvalResult& out, const EvalOptions& opt) {
  Impl& I = *impl_;
  const auto t0 = std::chrono::steady_clock::now();
  g.validate(I.model.nspecies());
  const int nlocal = g.nlocal, ntotal = g.ntotal;
  const int S = I.model.nspecies();
  // centres grouped by species, in graph order within a species (CompressedEngine's order)
  I.order.resize(nlocal);
  I.row_start.assign(S + 1, 0);
  int pos = 0;
  for (int c = 0; c < S; ++c) {
    I.row_start[c] = pos;
    for (int i = 0; i < nlocal; ++i)
      if (g.species[i] == c) I.order[pos++] = i;
  }
  I.row_start[S] = pos;

  detail::GraphView v;
  v.nlocal = nlocal;
  v.ntotal = ntotal;
  v.nedges = g.nedges();
  v.offsets = g.offsets.data();
  v.neighbors = g.neighbors.data();
  v.pos = g.positions.data();
  v.species = g.species.data();
  v.order = I.order.data();
  v.row_start = I.row_start.data();
  detail::Results& r = I.res;
  I.pipe->run(v, opt.atom_virial, opt.times != nullptr, r);

  if (!(r.min_distance > kMinPairDistance)) throw Error(overlap_message(r.min_distance));
  if (r.bad)
    throw Error("engine: a force, energy or virial term is not finite or beyond the fixed-point "
                "range (atoms far too close, or a corrupt model)");
  out.force.resize(3 * std::size_t(ntotal));
  for (std::size_t q = 0; q < out.force.size(); ++q)
    out.force[q] = static_cast<double>(r.force[q]) * kV2ForceGrid;
  std::int64_t esum = 0;
  for (int i = 0; i < nlocal; ++i) esum += r.eatom[i];
  out.energy = static_cast<double>(esum) * kV2EnergyGrid;
  if (opt.atom_energy) {
    out.atom_energy.resize(nlocal);
    for (int i = 0; i < nlocal; ++i) out.atom_energy[i] = static_cast<double>(r.eatom[i]) * kV2EnergyGrid;
  } else {
    out.atom_energy.clear();
  }
  for (int q = 0; q < 6; ++q) out.virial[q] = static_cast<double>(r.virial[q]) * kV2VirialGrid;
  if (opt.atom_virial) {
    out.atom_virial.resize(6 * std::size_t(ntotal));
    for (std::size_t q = 0; q < out.atom_virial.size(); ++q)
      out.atom_virial[q] = static_cast<double>(r.vatom[q]) * kV2VirialGrid;
  } else {
    out.atom_virial.clear();
  }
  if (opt.times) {
    // As CompressedEngine reports its fused phases: descriptor forward as `embedding`, the
    // fitting net as `fitting`, descriptor backward and scatter as `embedding_backward` (device
    // time from CUDA events), the rest of the call (grouping, copies, conversion) as `gather`.
    opt.times->embedding += r.phase_s[0];
    opt.times->fitting += r.phase_s[1];
    opt.times->embedding_backward += r.phase_s[2];
    const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    opt.times->gather += std::max(0.0, total - r.phase_s[0] - r.phase_s[1] - r.phase_s[2]);
  }
}

}  // namespace qnn::cuda
