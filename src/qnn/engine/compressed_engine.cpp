// Engine v2 driver: packs the model (table, fitting layers in fp32 and int8), splits the
// centres into blocks of one species, runs the block kernel on the host execution space
// (Kokkos team policy, per-thread scratch) and converts the fixed-point sums to results.
//
// Data: everything the block kernel reads (table coefficients, statistics, fitting weights in
// fp32 and int8, scales) and every per-call buffer (centre order, blocks, fixed-point sums) lives
// in Kokkos Views in the memory space `Mem`, each with a label; the kernels get raw pointers
// into them through the plain-data structs of kernels/block_kernel.hpp. The kernels are labelled
// ("qnn:v2_block", "qnn:v2_unpack_*"). Only the API subset that Kokkos 3.4 and 4.x share is used,
// so a device memory space can take over by changing `Mem` and the execution space.
#include "qnn/engine/compressed_engine.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <sstream>

#include <Kokkos_Core.hpp>

#include "qnn/kernels/block_kernel.hpp"
#include "qnn/error.hpp"
#include "qnn/kernels/int_gemm.hpp"
#include "qnn/quant/layer_exec.hpp"

namespace qnn {

using v2::FitLayer;
using v2::FitNet;
using v2::pad_cols;

namespace {
using Mem = Kokkos::HostSpace;
template <class T>
using View1 = Kokkos::View<T*, Mem>;

// A zero-initialised View of n elements.
template <class T>
View1<T> make_view(const char* label, std::size_t n) {
  return View1<T>(std::string(label), n);
}
// Grows v to at least n elements (contents not kept), then zeroes the first n.
template <class T>
void ensure_zeroed(View1<T>& v, const char* label, std::size_t n) {
  if (v.extent(0) < n) v = View1<T>(Kokkos::view_alloc(std::string(label), Kokkos::WithoutInitializing), n);
  if (n > 0) Kokkos::deep_copy(Kokkos::subview(v, std::make_pair(std::size_t(0), n)), T(0));
}
template <class T>
void ensure_size(View1<T>& v, const char* label, std::size_t n) {
  if (v.extent(0) < n) v = View1<T>(Kokkos::view_alloc(std::string(label), Kokkos::WithoutInitializing), n);
}
}  // namespace

struct CompressedEngine::Impl {
  Model model;
  CompressedOptions opt;
  ExecSpace space;
  EmbeddingTable table;
  // packed fitting layers
  struct Layer {
    View1<float> w, wt, b, dt, zscale, wscale;
    View1<std::int8_t> wq;
    igemm::PackedB pk, pkt;
    bool int8 = false;
    bool fake_quant = false;
  };
  std::vector<std::vector<Layer>> layers;            // [species][hidden layer]
  std::vector<View1<FitLayer>> klayers;  // [species]: what the kernel reads per layer
  std::vector<View1<float>> w_out;        // [species]
  View1<FitNet> nets;                     // (S)
  View1<float> coef;                      // the table's coefficients (EmbeddingTable layout)
  View1<v2::TableZone> zones;             // (S)
  View1<double> mean_s, inv_std_s, inv_std_r;  // (S*S)
  View1<int> sel;                   // env_mat "deepmd": slots per neighbour species
  View1<std::int64_t> pad64;        // env_mat "deepmd": (S*S, m1p) empty-slot term
  v2::ModelArgs margs;
  v2::BlockFn block = nullptr;
  std::string kernel_name;
  std::vector<std::string> layer_labels;  // per species
  // per-call buffers (grow only)
  View1<int> order;                                // centres grouped by species
  View1<int> block_start, block_count, block_species;
  int nblocks = 0;
  View1<v2::BlockResult> results;
  View1<std::int64_t> fq, vq, eq;
  std::size_t scratch = 0;
};

namespace {

template <class Space>
void run_blocks(CompressedEngine::Impl& I, const v2::GraphArgs& g, const v2::OutArgs& o) {
  const int nb = I.nblocks;
  if (nb == 0) return;
  const std::size_t bytes = I.scratch;
  using Policy = Kokkos::TeamPolicy<Space>;
  using Member = typename Policy::member_type;
  Policy pol(nb, 1);
  pol.set_scratch_size(1, Kokkos::PerTeam(bytes));
  const v2::ModelArgs& m = I.margs;
  const v2::BlockFn fn = I.block;
  const int* order = I.order.data();
  const int* bstart = I.block_start.data();
  const int* bcount = I.block_count.data();
  const int* bsp = I.block_species.data();
  v2::BlockResult* res = I.results.data();
  Kokkos::parallel_for(
      "qnn:v2_block", pol, [&, order, bstart, bcount, bsp, res, fn, bytes](const Member& team) {
        const int b = team.league_rank();
        void* scratch = team.team_scratch(1).get_shmem(bytes);
        fn(m, g, o, order + bstart[b], bcount[b], bsp[b], scratch, res[b]);
      });
  Kokkos::fence();
}

// Fixed-point sums to doubles (element-wise, so the result does not depend on the threads).
template <class Space>
void unpack(const View1<std::int64_t>& q, std::size_t n, double grid, double* out, const char* label) {
  const std::int64_t* src = q.data();
  Kokkos::parallel_for(label, Kokkos::RangePolicy<Space>(0, n),
                       [=](const std::size_t k) { out[k] = static_cast<double>(src[k]) * grid; });
}

template <class Space>
std::int64_t sum_energy(const View1<std::int64_t>& eq, int n) {
  std::int64_t esum = 0;  // integer sum: associative, so any reduction order gives the same
  const std::int64_t* e = eq.data();
  Kokkos::parallel_reduce(
      "qnn:v2_energy_sum", Kokkos::RangePolicy<Space>(0, n),
      [=](const int i, std::int64_t& acc) { acc += e[i]; }, esum);
  return esum;
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
  I.mean_s = make_view<double>("qnn:v2_mean_s", SS);
  I.inv_std_s = make_view<double>("qnn:v2_inv_std_s", SS);
  I.inv_std_r = make_view<double>("qnn:v2_inv_std_r", SS);
  double max_inv = 0.0;
  for (std::size_t p = 0; p < SS; ++p) {
    if (!(m.std_s[p] > 0.0) || !(m.std_r[p] > 0.0))
      throw Error("model: std_s and std_r must be positive");
    I.mean_s(p) = m.mean_s[p];
    I.inv_std_s(p) = 1.0 / m.std_s[p];
    I.inv_std_r(p) = 1.0 / m.std_r[p];
    max_inv = std::max({max_inv, I.inv_std_s(p), I.inv_std_r(p)});
  }
  A.mean_s = I.mean_s.data();
  A.inv_std_s = I.inv_std_s.data();
  A.inv_std_r = I.inv_std_r.data();
  I.zones = make_view<v2::TableZone>("qnn:v2_table_zones", S);
  for (int a = 0; a < S; ++a) {
    const auto z = I.table.zones(a);
    I.zones(a) = {z.lo, z.inv_h1, z.mid, z.inv_h2, z.n1, z.n2};
  }
  A.zones = I.zones.data();
  {
    const std::size_t ncoef = static_cast<std::size_t>(I.table.ntables()) * I.table.intervals() * 6 * A.m1p;
    I.coef = make_view<float>("qnn:v2_table_coefficients", ncoef);
    std::memcpy(I.coef.data(), I.table.coefficients(0, 0), ncoef * sizeof(float));
    if (reinterpret_cast<std::uintptr_t>(I.coef.data()) % 64 != 0)
      throw Error("engine: the table's View is not 64-byte aligned");
  }
  A.coef = I.coef.data();
  A.coef_centre_stride = m.type_one_side ? 0 : static_cast<std::size_t>(I.table.coefficients(S, 0) - I.table.coefficients(0, 0));
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
    I.sel = make_view<int>("qnn:v2_sel", S);
    for (int a = 0; a < S; ++a) I.sel(a) = m.sel[a];
    const int P = A.m1p;
    I.pad64 = make_view<std::int64_t>("qnn:v2_empty_slot_terms", SS * static_cast<std::size_t>(P));
    std::vector<double> g(static_cast<std::size_t>(P)), dg(static_cast<std::size_t>(P));
    for (int c = 0; c < S; ++c)
      for (int a = 0; a < S; ++a) {
        const std::size_t p = static_cast<std::size_t>(c) * S + a;
        const double s0 = -m.mean_s[p] * I.inv_std_s(p);
        I.table.evaluate(m.embed_index(c, a), s0, g.data(), dg.data());
        for (int k = 0; k < A.m1; ++k) {
          const double v = std::trunc(g[static_cast<std::size_t>(k)] * s0 * A.t_scale);
          if (!(std::abs(v) < 0x1p40)) throw Error("model: the empty-slot term of env_mat 'deepmd' is out of range");
          I.pad64(p * P + static_cast<std::size_t>(k)) = static_cast<std::int64_t>(v);
        }
      }
    A.sel = I.sel.data();
    A.pad64 = I.pad64.data();
  }

  // ---- fitting nets
  I.layers.resize(S);
  I.klayers.resize(S);
  I.w_out.resize(S);
  I.nets = make_view<FitNet>("qnn:v2_fit_nets", S);
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
      P.w = make_view<float>("qnn:v2_fit_w", std::size_t(d.in) * outp);
      P.wt = make_view<float>("qnn:v2_fit_wt", std::size_t(d.out) * inp);
      for (int k = 0; k < d.in; ++k)
        for (int o = 0; o < d.out; ++o) {
          const float w = static_cast<float>(d.weight[std::size_t(k) * d.out + o]);
          P.w(std::size_t(k) * outp + o) = w;
          P.wt(std::size_t(o) * inp + k) = w;
        }
      P.b = make_view<float>("qnn:v2_fit_b", outp);
      for (int o = 0; o < d.out; ++o) P.b(o) = static_cast<float>(d.bias[o]);
      if (d.residual == Residual::Timestep) {
        P.dt = make_view<float>("qnn:v2_fit_dt", outp);
        for (int o = 0; o < d.out; ++o) P.dt(o) = static_cast<float>(d.dt[o]);
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
        P.zscale = make_view<float>("qnn:v2_fit_zscale", outp);
        P.wscale = make_view<float>("qnn:v2_fit_wscale", outp);
        P.wq = make_view<std::int8_t>("qnn:v2_fit_wq", std::size_t(d.in) * d.out);
        for (int o = 0; o < d.out; ++o) {
          const double sw = q.weight_scale.size() == 1 ? q.weight_scale[0] : q.weight_scale.at(o);
          if (!(sw > 0.0) || !std::isfinite(sw))
            throw Error("model: " + name + ": weight scales must be positive and finite");
          P.wscale(o) = static_cast<float>(sw);
          P.zscale(o) = static_cast<float>(static_cast<double>(q.act_scale) * sw);
        }
        for (std::size_t k = 0; k < d.weight.size(); ++k) {
          const double sw = P.wscale(k % d.out);
          const double v = std::round(d.weight[k] / sw);
          if (std::abs(v) > 127.0 || std::abs(d.weight[k] - v * sw) > 1e-6 * sw)
            throw Error("model: " + name + ": weights are not 8-bit multiples of their scales");
          P.wq(k) = static_cast<std::int8_t>(v);
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
    I.w_out[c] = make_view<float>("qnn:v2_fit_w_out", pad_cols(prev));
    for (int k = 0; k < prev; ++k) I.w_out[c](k) = static_cast<float>(last.weight[k]);
    I.layer_labels[c] += std::string(nh ? " " : "") + "fp64-out";
  }
  // kernel views (after every vector has its final address)
  for (int c = 0; c < S; ++c) {
    const auto& Ls = m.fit[c].layers;
    const int nh = static_cast<int>(I.layers[c].size());
    I.klayers[c] = make_view<FitLayer>("qnn:v2_fit_layers", nh);
    for (int l = 0; l < nh; ++l) {
      const DenseLayer& d = Ls[l];
      Impl::Layer& P = I.layers[c][l];
      FitLayer& K = I.klayers[c](l);
      K.in = d.in;
      K.out = d.out;
      K.in_p = pad_cols(d.in);
      K.out_p = pad_cols(d.out);
      K.residual = static_cast<int>(d.residual);
      K.tanh = d.activation == Activation::Tanh ? 1 : 0;
      K.w = P.w.data();
      K.wt = P.wt.data();
      K.b = P.b.data();
      K.dt = P.dt.extent(0) == 0 ? nullptr : P.dt.data();
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
    FitNet& N = I.nets(c);
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
  // (a serial scan on the host: it is a small part of the call)
  ensure_size(I.order, "qnn:v2_order", std::size_t(nlocal));
  const std::size_t max_blocks = std::size_t(nlocal) / v2::kBlockAtoms + S;
  ensure_size(I.block_start, "qnn:v2_block_start", max_blocks);
  ensure_size(I.block_count, "qnn:v2_block_count", max_blocks);
  ensure_size(I.block_species, "qnn:v2_block_species", max_blocks);
  int pos = 0, nb = 0;
  for (int c = 0; c < S; ++c) {
    const int start = pos;
    for (int i = 0; i < nlocal; ++i)
      if (g.species[i] == c) I.order(pos++) = i;
    for (int b = start; b < pos; b += v2::kBlockAtoms) {
      I.block_start(nb) = b;
      I.block_count(nb) = std::min(v2::kBlockAtoms, pos - b);
      I.block_species(nb) = c;
      ++nb;
    }
  }
  I.nblocks = nb;
  ensure_size(I.results, "qnn:v2_block_results", std::size_t(nb));
  for (int b = 0; b < nb; ++b) I.results(b) = v2::BlockResult{};
  ensure_zeroed(I.fq, "qnn:v2_force_fixed", 3 * std::size_t(ntotal));
  ensure_zeroed(I.eq, "qnn:v2_energy_fixed", std::size_t(nlocal));
  if (opt.atom_virial) ensure_zeroed(I.vq, "qnn:v2_virial_fixed", 6 * std::size_t(ntotal));

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
  for (int b = 0; b < nb; ++b) {
    const v2::BlockResult& r = I.results(b);
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
  if (opt.atom_energy) out.atom_energy.resize(nlocal); else out.atom_energy.clear();
  if (opt.atom_virial) out.atom_virial.resize(6 * std::size_t(ntotal)); else out.atom_virial.clear();
  std::int64_t esum = 0;
  auto finish = [&](auto space_tag) {
    using Space = decltype(space_tag);
    unpack<Space>(I.fq, out.force.size(), kV2ForceGrid, out.force.data(), "qnn:v2_unpack_forces");
    if (opt.atom_energy)
      unpack<Space>(I.eq, std::size_t(nlocal), kV2EnergyGrid, out.atom_energy.data(), "qnn:v2_unpack_energies");
    if (opt.atom_virial)
      unpack<Space>(I.vq, out.atom_virial.size(), kV2VirialGrid, out.atom_virial.data(), "qnn:v2_unpack_virials");
    esum = sum_energy<Space>(I.eq, nlocal);
    Kokkos::fence();
  };
#if defined(KOKKOS_ENABLE_OPENMP)
  if (!serial) finish(Kokkos::OpenMP());
#endif
#if defined(KOKKOS_ENABLE_SERIAL)
  if (serial) finish(Kokkos::Serial());
#endif
  out.energy = static_cast<double>(esum) * kV2EnergyGrid;
  for (int q = 0; q < 6; ++q) out.virial[q] = static_cast<double>(vir[q]) * kV2VirialGrid;
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
