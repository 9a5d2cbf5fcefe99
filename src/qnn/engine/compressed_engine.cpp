// Engine v2 driver: packs the model (table, fitting layers in fp32 and int8), splits the
// centres into blocks of one species, runs the block kernel on the host execution space
// (Kokkos team policy, per-thread scratch) and converts the fixed-point sums to results.
#include "qnn/engine/compressed_engine.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <sstream>

#include <Kokkos_Core.hpp>

#include "qnn/engine/block_kernel.hpp"
#include "qnn/error.hpp"
#include "qnn/int_gemm.hpp"
#include "qnn/quant/layer_exec.hpp"

namespace qnn {

using v2::FitLayer;
using v2::FitNet;
using v2::pad_cols;

struct CompressedEngine::Impl {
  Model model;
  CompressedOptions opt;
  ExecSpace space;
  EmbeddingTable table;
  // packed fitting layers
  struct Layer {
    std::vector<float, AlignedAllocator<float>> w, wt, b, dt, zscale, wscale;
    std::vector<std::int8_t> wq;
    igemm::PackedB pk, pkt;
    bool int8 = false;
    bool fake_quant = false;
  };
  std::vector<std::vector<Layer>> layers;            // [species][hidden layer]
  std::vector<std::vector<FitLayer>> klayers;        // kernel view
  std::vector<std::vector<float, AlignedAllocator<float>>> w_out;
  std::vector<FitNet> nets;
  std::vector<v2::TableZone> zones;
  std::vector<double> inv_std_s, inv_std_r;
  std::vector<int> sel;                // env_mat "deepmd": slots per neighbour species
  std::vector<std::int64_t> pad64;     // env_mat "deepmd": (S*S, m1p) empty-slot term
  v2::ModelArgs margs;
  v2::BlockFn block = nullptr;
  std::string kernel_name;
  std::vector<std::string> layer_labels;  // per species
  // per-call buffers (grow only)
  std::vector<int> order;                          // centres grouped by species
  std::vector<std::pair<int, int>> blocks;         // (start in order, count)
  std::vector<int> block_species;
  std::vector<v2::BlockResult> results;
  std::vector<std::int64_t> fq, vq, eq;
  std::size_t scratch = 0;
};

namespace {

template <class Space>
void run_blocks(CompressedEngine::Impl& I, const v2::GraphArgs& g, const v2::OutArgs& o) {
  const int nb = static_cast<int>(I.blocks.size());
  if (nb == 0) return;
  const std::size_t bytes = I.scratch;
  using Policy = Kokkos::TeamPolicy<Space>;
  using Member = typename Policy::member_type;
  Policy pol(nb, 1);
  pol.set_scratch_size(1, Kokkos::PerTeam(bytes));
  const v2::ModelArgs& m = I.margs;
  const v2::BlockFn fn = I.block;
  const int* order = I.order.data();
  const std::pair<int, int>* blocks = I.blocks.data();
  const int* bsp = I.block_species.data();
  v2::BlockResult* res = I.results.data();
  Kokkos::parallel_for(
      "qnn:v2_block", pol, [&, order, blocks, bsp, res, fn, bytes](const Member& team) {
        const int b = team.league_rank();
        void* scratch = team.team_scratch(1).get_shmem(bytes);
        fn(m, g, o, order + blocks[b].first, blocks[b].second, bsp[b], scratch, res[b]);
      });
  Kokkos::fence();
}

}  // namespace

CompressedEngine::CompressedEngine(const Model& model, const CompressedOptions& opt,
                                   ExecSpace space)
    : impl_(std::make_unique<Impl>()) {
  Impl& I = *impl_;
  ensure_kokkos_initialized();
  I.model = model;
  I.opt = opt;
  I.space = space;
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

  v2::ModelArgs& A = I.margs;
  A.S = S;
  A.m1 = m.m1();
  A.m1p = I.table.m1_padded();
  A.m2 = m.axis_neuron;
  A.k0 = A.m1 * A.m2;
  A.k0_p = pad_cols(A.k0);
  A.rc = m.rcut;
  A.rs = m.rcut_smth;
  A.inv_nc = 1.0 / m.neighbor_norm;
  I.inv_std_s.resize(SS);
  I.inv_std_r.resize(SS);
  double max_inv = 0.0;
  for (std::size_t p = 0; p < SS; ++p) {
    if (!(m.std_s[p] > 0.0) || !(m.std_r[p] > 0.0))
      throw Error("model: std_s and std_r must be positive");
    I.inv_std_s[p] = 1.0 / m.std_s[p];
    I.inv_std_r[p] = 1.0 / m.std_r[p];
    max_inv = std::max({max_inv, I.inv_std_s[p], I.inv_std_r[p]});
  }
  A.mean_s = m.mean_s.data();
  A.inv_std_s = I.inv_std_s.data();
  A.inv_std_r = I.inv_std_r.data();
  I.zones.resize(S);
  for (int a = 0; a < S; ++a) {
    const auto z = I.table.zones(a);
    I.zones[a] = {z.lo, z.inv_h1, z.mid, z.inv_h2, z.n1, z.n2};
  }
  A.zones = I.zones.data();
  A.coef = I.table.coefficients(0, 0);
  A.coef_centre_stride = m.type_one_side ? 0 : static_cast<std::size_t>(I.table.coefficients(S, 0) - A.coef);
  A.s_fast = switched_inverse(opt.table.r_fine, m.rcut_smth, m.rcut);
  // Fixed-point scale of the descriptor terms: every fast-path |G·R̂| stays below 2^27 units
  // (with env_mat "deepmd" R̂₀ = ŝ = (s − mean_s)/std_s).
  double max_mean = 0.0;
  if (m.deepmd_env_mat())
    for (double v : m.mean_s) max_mean = std::max(max_mean, std::abs(v));
  const double bound = 1.05 * I.table.max_abs_value() * max_inv * (A.s_fast + max_mean);
  if (!(bound > 0.0) || !std::isfinite(bound))
    throw Error("model: the descriptor's range is not finite (embedding or statistics)");
  A.t_scale = std::ldexp(1.0, static_cast<int>(std::floor(std::log2(0x1p27 / bound))));
  A.deepmd = m.deepmd_env_mat();
  if (A.deepmd) {
    // The empty-slot term of every (centre, neighbour) pair from the table itself, so that a
    // neighbour leaving the cutoff (ŝ → ŝ₀) and the slot it frees add the same amount.
    if (m.sel.size() != static_cast<std::size_t>(S)) throw Error("model: env_mat 'deepmd' needs sel for every species");
    I.sel = m.sel;
    const int P = A.m1p;
    I.pad64.assign(SS * static_cast<std::size_t>(P), 0);
    std::vector<double> g(static_cast<std::size_t>(P)), dg(static_cast<std::size_t>(P));
    for (int c = 0; c < S; ++c)
      for (int a = 0; a < S; ++a) {
        const std::size_t p = static_cast<std::size_t>(c) * S + a;
        const double s0 = -m.mean_s[p] * I.inv_std_s[p];
        I.table.evaluate(m.embed_index(c, a), s0, g.data(), dg.data());
        for (int k = 0; k < A.m1; ++k) {
          const double v = std::trunc(g[static_cast<std::size_t>(k)] * s0 * A.t_scale);
          if (!(std::abs(v) < 0x1p40)) throw Error("model: the empty-slot term of env_mat 'deepmd' is out of range");
          I.pad64[p * P + static_cast<std::size_t>(k)] = static_cast<std::int64_t>(v);
        }
      }
    A.sel = I.sel.data();
    A.pad64 = I.pad64.data();
  }

  // ---- fitting nets
  I.layers.resize(S);
  I.klayers.resize(S);
  I.w_out.resize(S);
  I.nets.resize(S);
  I.layer_labels.assign(S, "");
  A.max_width_p = A.k0_p;
  A.max_out_p = v2::kColPad;
  A.max_layers = 0;
  for (int c = 0; c < S; ++c) {
    const auto& Ls = m.fit[c].layers;
    const std::string sp = m.species[c];
    if (Ls.empty()) throw Error("model: fitting net " + sp + " has no layers");
    const DenseLayer& last = Ls.back();
    if (last.out != 1 || last.activation != Activation::Linear || last.residual != Residual::None)
      throw Error("model: fitting net " + sp + " must end in a linear layer with one output");
    const int nh = static_cast<int>(Ls.size()) - 1;
    A.max_layers = std::max(A.max_layers, nh);
    I.layers[c].resize(nh);
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
      Impl::Layer& P = I.layers[c][l];
      const int inp = pad_cols(d.in), outp = pad_cols(d.out);
      A.max_width_p = std::max({A.max_width_p, inp, outp});
      A.max_out_p = std::max(A.max_out_p, outp);
      P.w.assign(std::size_t(d.in) * outp, 0.0f);
      P.wt.assign(std::size_t(d.out) * inp, 0.0f);
      for (int k = 0; k < d.in; ++k)
        for (int o = 0; o < d.out; ++o) {
          const float w = static_cast<float>(d.weight[std::size_t(k) * d.out + o]);
          P.w[std::size_t(k) * outp + o] = w;
          P.wt[std::size_t(o) * inp + k] = w;
        }
      P.b.assign(outp, 0.0f);
      for (int o = 0; o < d.out; ++o) P.b[o] = static_cast<float>(d.bias[o]);
      if (d.residual == Residual::Timestep) {
        P.dt.assign(outp, 0.0f);
        for (int o = 0; o < d.out; ++o) P.dt[o] = static_cast<float>(d.dt[o]);
      }
      // int8 execution of this layer?
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
        P.fake_quant = true;
      }
      if (int8) {
        const QuantSpec& q = d.quant;
        if (!(q.act_scale > 0.0f) || !std::isfinite(q.act_scale))
          throw Error("model: " + name + ": activation scale must be positive and finite");
        P.zscale.assign(outp, 0.0f);
        P.wscale.assign(outp, 0.0f);
        P.wq.resize(std::size_t(d.in) * d.out);
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
          P.wq[k] = static_cast<std::int8_t>(v);
        }
        P.pk = igemm::PackedB(P.wq.data(), d.in, d.out, d.out, igemm::BLayout::kKN);
        P.pkt = igemm::PackedB(P.wq.data(), d.out, d.in, d.out, igemm::BLayout::kNK);
        P.int8 = true;
        label = "int8";
      }
      I.layer_labels[c] += (l ? " " : "") + label;
      prev = d.out;
    }
    if (last.in != prev || last.weight.size() != std::size_t(prev) || last.bias.size() != 1)
      throw Error("model: fitting net " + sp + ": output layer has inconsistent shapes");
    I.w_out[c].assign(pad_cols(prev), 0.0f);
    for (int k = 0; k < prev; ++k) I.w_out[c][k] = static_cast<float>(last.weight[k]);
    I.layer_labels[c] += std::string(nh ? " " : "") + "fp64-out";
  }
  // kernel views (after every vector has its final address)
  for (int c = 0; c < S; ++c) {
    const auto& Ls = m.fit[c].layers;
    const int nh = static_cast<int>(I.layers[c].size());
    I.klayers[c].resize(nh);
    for (int l = 0; l < nh; ++l) {
      const DenseLayer& d = Ls[l];
      Impl::Layer& P = I.layers[c][l];
      FitLayer& K = I.klayers[c][l];
      K.in = d.in;
      K.out = d.out;
      K.in_p = pad_cols(d.in);
      K.out_p = pad_cols(d.out);
      K.residual = static_cast<int>(d.residual);
      K.tanh = d.activation == Activation::Tanh ? 1 : 0;
      K.w = P.w.data();
      K.wt = P.wt.data();
      K.b = P.b.data();
      K.dt = P.dt.empty() ? nullptr : P.dt.data();
      if (P.int8 || P.fake_quant) {
        K.act_scale = d.quant.act_scale;
        K.inv_act_scale = 1.0f / d.quant.act_scale;
        K.qmax_a = static_cast<float>((1 << (d.quant.act_bits - 1)) - 1);
        K.fake_quant = P.fake_quant;
      }
      if (P.int8) {
        K.pk = &P.pk;
        K.pkt = &P.pkt;
        K.zscale = P.zscale.data();
        K.wscale = P.wscale.data();
      }
    }
    FitNet& N = I.nets[c];
    N.nlayers = nh;
    N.layers = I.klayers[c].data();
    N.w_out = I.w_out[c].data();
    N.b_out = Ls.back().bias[0] + m.energy_bias[c];
  }
  A.fit = I.nets.data();
  I.scratch = v2::scratch_bytes(A);

  // ---- kernel path, from the same switch as the integer GEMMs ($QNN_ISA)
  const igemm::Isa isa = igemm::active_isa();
  if (isa == igemm::Isa::kAvx512Vnni && v2::avx512_compiled()) {
    I.block = v2::block_avx512;
    I.kernel_name = "avx512";
  } else if (isa != igemm::Isa::kScalar && v2::avx2_compiled() && __builtin_cpu_supports("avx2") &&
             __builtin_cpu_supports("fma")) {
    I.block = v2::block_avx2;
    I.kernel_name = "avx2";
  } else {
    I.block = v2::block_generic;
    I.kernel_name = "generic";
  }
}

CompressedEngine::~CompressedEngine() = default;

const Model& CompressedEngine::model() const { return impl_->model; }
const EmbeddingTable& CompressedEngine::table() const { return impl_->table; }

std::string CompressedEngine::describe() const {
  const Impl& I = *impl_;
  std::ostringstream os;
  os << I.table.describe() << "; fitting";
  for (int c = 0; c < I.model.nspecies(); ++c)
    os << " " << I.model.species[c] << " [" << I.layer_labels[c] << "]";
  os << "; float kernels " << I.kernel_name << ", int8 GEMM "
     << igemm::isa_name(igemm::active_isa()) << "; fixed-point sums";
  return os.str();
}

void CompressedEngine::compute(const NeighborGraph& g, EvalResult& out, const EvalOptions& opt) {
  Impl& I = *impl_;
  const auto t0 = std::chrono::steady_clock::now();
  g.validate(I.model.nspecies());
  const int nlocal = g.nlocal, ntotal = g.ntotal;
  const int S = I.model.nspecies();
  // centres grouped by species, in graph order within a species; blocks of kBlockAtoms
  I.order.resize(nlocal);
  I.blocks.clear();
  I.block_species.clear();
  int pos = 0;
  for (int c = 0; c < S; ++c) {
    const int start = pos;
    for (int i = 0; i < nlocal; ++i)
      if (g.species[i] == c) I.order[pos++] = i;
    for (int b = start; b < pos; b += v2::kBlockAtoms) {
      I.blocks.emplace_back(b, std::min(v2::kBlockAtoms, pos - b));
      I.block_species.push_back(c);
    }
  }
  I.results.assign(I.blocks.size(), v2::BlockResult{});
  I.fq.assign(3 * std::size_t(ntotal), 0);
  I.eq.assign(std::size_t(nlocal), 0);
  if (opt.atom_virial) I.vq.assign(6 * std::size_t(ntotal), 0);

  v2::GraphArgs ga;
  ga.nlocal = nlocal;
  ga.ntotal = ntotal;
  ga.offsets = g.offsets.data();
  ga.neighbors = g.neighbors.data();
  ga.pos = g.positions.data();
  ga.species = g.species.data();
  v2::OutArgs oa;
  oa.force = I.fq.data();
  oa.vatom = opt.atom_virial ? I.vq.data() : nullptr;
  oa.eatom = I.eq.data();
  oa.timing = opt.times != nullptr;
  bool serial = I.space == ExecSpace::Serial;
#if defined(KOKKOS_ENABLE_OPENMP)
  if (!serial) {
    oa.atomic = Kokkos::OpenMP::concurrency() > 1;
    run_blocks<Kokkos::OpenMP>(I, ga, oa);
  }
#else
  serial = true;
#endif
  if (serial) {
#if defined(KOKKOS_ENABLE_SERIAL)
    oa.atomic = false;
    run_blocks<Kokkos::Serial>(I, ga, oa);
#else
    throw Error("engine: Kokkos was built without the Serial execution space");
#endif
  }

  double rmin = 1e300;
  int bad = 0;
  std::int64_t vir[6] = {0, 0, 0, 0, 0, 0};
  double phase[3] = {0, 0, 0};
  for (const auto& r : I.results) {
    for (int q = 0; q < 3; ++q) phase[q] += r.phase_s[q];
    rmin = std::min(rmin, r.min_distance);
    bad |= r.bad;
    for (int q = 0; q < 6; ++q) vir[q] += r.virial[q];
  }
  if (!(rmin > kMinPairDistance)) throw Error(overlap_message(rmin));
  if (bad)
    throw Error("engine: a force, energy or virial term is not finite or beyond the fixed-point "
                "range (atoms far too close, or a corrupt model)");
  out.force.resize(3 * std::size_t(ntotal));
  for (std::size_t q = 0; q < out.force.size(); ++q)
    out.force[q] = static_cast<double>(I.fq[q]) * kV2ForceGrid;
  std::int64_t esum = 0;
  for (int i = 0; i < nlocal; ++i) esum += I.eq[i];
  out.energy = static_cast<double>(esum) * kV2EnergyGrid;
  if (opt.atom_energy) {
    out.atom_energy.resize(nlocal);
    for (int i = 0; i < nlocal; ++i) out.atom_energy[i] = static_cast<double>(I.eq[i]) * kV2EnergyGrid;
  } else {
    out.atom_energy.clear();
  }
  for (int q = 0; q < 6; ++q) out.virial[q] = static_cast<double>(vir[q]) * kV2VirialGrid;
  if (opt.atom_virial) {
    out.atom_virial.resize(6 * std::size_t(ntotal));
    for (std::size_t q = 0; q < out.atom_virial.size(); ++q)
      out.atom_virial[q] = static_cast<double>(I.vq[q]) * kV2VirialGrid;
  } else {
    out.atom_virial.clear();
  }
  if (opt.times) {
    // The block kernel fuses the old phases (docs/model.md, "Compressed embedding"): its
    // descriptor forward (geometry, table, T, D) is reported as `embedding`, the fitting net
    // forward and backward as `fitting`, its descriptor backward (table derivative, chain rule,
    // force and virial scatter) as `embedding_backward`, and the rest of the call (grouping,
    // fixed-point to double) as `gather`. Per-block times are summed: with several threads
    // they are CPU seconds, not wall.
    const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    opt.times->embedding += phase[0];
    opt.times->fitting += phase[1];
    opt.times->embedding_backward += phase[2];
    opt.times->gather += std::max(0.0, total - phase[0] - phase[1] - phase[2]);
  }
}

}  // namespace qnn
