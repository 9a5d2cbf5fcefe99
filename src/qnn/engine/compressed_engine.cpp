// Engine v2 driver: lays the packed model (packed_model.hpp: table, statistics, fitting layers
// in fp32 and int8, checked once for every back end) out for the block kernel, splits the
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
#include "qnn/kernels/int16_gemm.hpp"
#include "qnn/engine/packed_model.hpp"

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
    igemm::PackedB16 pk16, pkt16;
    bool int8 = false, w8a16 = false;
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
  std::uint64_t topology = 0;                      // EvalOptions::topology of the grouping
  int topology_nlocal = -1, topology_ntotal = -1;
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
  // The checks and the numbers are those of packed_model.hpp (shared with the CUDA engine);
  // here they go into labelled Views, padded for the block kernel, with packed int8 panels.
  PackedModel pm = pack_model(I.model, opt);
  const int S = pm.S;
  const std::size_t SS = static_cast<std::size_t>(S) * S;

  v2::ModelArgs& A = I.margs;
  A.S = S;
  A.m1 = pm.m1;
  A.m1p = pm.m1p;
  A.m2 = pm.m2;
  A.k0 = pm.k0;
  A.k0_p = pad_cols(A.k0);
  A.rc = pm.rc;
  A.rs = pm.rs;
  A.inv_nc = pm.inv_nc;
  I.mean_s = make_view<double>("qnn:v2_mean_s", SS);
  I.inv_std_s = make_view<double>("qnn:v2_inv_std_s", SS);
  I.inv_std_r = make_view<double>("qnn:v2_inv_std_r", SS);
  for (std::size_t p = 0; p < SS; ++p) {
    I.mean_s(p) = pm.mean_s[p];
    I.inv_std_s(p) = pm.inv_std_s[p];
    I.inv_std_r(p) = pm.inv_std_r[p];
  }
  A.mean_s = I.mean_s.data();
  A.inv_std_s = I.inv_std_s.data();
  A.inv_std_r = I.inv_std_r.data();
  I.zones = make_view<v2::TableZone>("qnn:v2_table_zones", S);
  for (int a = 0; a < S; ++a) {
    const PackedZone& z = pm.zones[static_cast<std::size_t>(a)];
    I.zones(a) = {z.lo, z.inv_h1, z.mid, z.inv_h2, z.n1, z.n2};
  }
  A.zones = I.zones.data();
  I.coef = make_view<float>("qnn:v2_table_coefficients", pm.ncoef());
  std::memcpy(I.coef.data(), pm.coef(), pm.ncoef() * sizeof(float));
  if (reinterpret_cast<std::uintptr_t>(I.coef.data()) % 64 != 0)
    throw Error("engine: the table's View is not 64-byte aligned");
  A.coef = I.coef.data();
  A.coef_centre_stride = pm.coef_centre_stride;
  A.s_fast = pm.s_fast;
  A.t_scale = pm.t_scale;
  A.deepmd = pm.deepmd;
  if (A.deepmd) {
    I.sel = make_view<int>("qnn:v2_sel", S);
    for (int a = 0; a < S; ++a) I.sel(a) = pm.sel[static_cast<std::size_t>(a)];
    I.pad64 = make_view<std::int64_t>("qnn:v2_empty_slot_terms", pm.pad64.size());
    std::memcpy(I.pad64.data(), pm.pad64.data(), pm.pad64.size() * sizeof(std::int64_t));
    A.sel = I.sel.data();
    A.pad64 = I.pad64.data();
  }

  // ---- fitting nets: padded (kColPad) fp32 panels, packed int8 B panels
  I.layers.resize(S);
  I.klayers.resize(S);
  I.w_out.resize(S);
  I.nets = make_view<FitNet>("qnn:v2_fit_nets", S);
  I.layer_labels.assign(S, "");
  A.max_width_p = A.k0_p;
  A.max_out_p = v2::kColPad;
  A.max_layers = 0;
  for (int c = 0; c < S; ++c) {
    const PackedNet& pn = pm.nets[static_cast<std::size_t>(c)];
    const int nh = static_cast<int>(pn.layers.size());
    A.max_layers = std::max(A.max_layers, nh);
    I.layers[c].resize(nh);
    for (int l = 0; l < nh; ++l) {
      const PackedLayer& d = pn.layers[static_cast<std::size_t>(l)];
      Impl::Layer& P = I.layers[c][l];
      const int inp = pad_cols(d.in), outp = pad_cols(d.out);
      A.max_width_p = std::max({A.max_width_p, inp, outp});
      A.max_out_p = std::max(A.max_out_p, outp);
      P.w = make_view<float>("qnn:v2_fit_w", std::size_t(d.in) * outp);
      P.wt = make_view<float>("qnn:v2_fit_wt", std::size_t(d.out) * inp);
      for (int k = 0; k < d.in; ++k)
        for (int o = 0; o < d.out; ++o) {
          P.w(v2::packed_panel_index(d.in, k, o)) = d.w[std::size_t(k) * d.out + o];
          P.wt(v2::packed_panel_index(d.out, o, k)) = d.wt[std::size_t(o) * d.in + k];
        }
      P.b = make_view<float>("qnn:v2_fit_b", outp);
      for (int o = 0; o < d.out; ++o) P.b(o) = d.b[std::size_t(o)];
      if (!d.dt.empty()) {
        P.dt = make_view<float>("qnn:v2_fit_dt", outp);
        for (int o = 0; o < d.out; ++o) P.dt(o) = d.dt[std::size_t(o)];
      }
      P.fake_quant = d.kind == PackedLayer::FakeQuant;
      if (d.kind == PackedLayer::Int8 || d.kind == PackedLayer::W8A16) {
        P.zscale = make_view<float>("qnn:v2_fit_zscale", outp);
        P.wscale = make_view<float>("qnn:v2_fit_wscale", outp);
        for (int o = 0; o < d.out; ++o) {
          P.zscale(o) = d.zscale[std::size_t(o)];
          P.wscale(o) = d.wscale[std::size_t(o)];
        }
        P.wq = make_view<std::int8_t>("qnn:v2_fit_wq", d.wq.size());
        std::memcpy(P.wq.data(), d.wq.data(), d.wq.size());
        if (d.kind == PackedLayer::Int8) {
          P.pk = igemm::PackedB(P.wq.data(), d.in, d.out, d.out, igemm::BLayout::kKN);
          P.pkt = igemm::PackedB(P.wq.data(), d.out, d.in, d.out, igemm::BLayout::kNK);
          P.int8 = true;
        } else {
          P.pk16 = igemm::PackedB16(P.wq.data(), d.in, d.out, d.out, igemm::BLayout::kKN);
          P.pkt16 = igemm::PackedB16(P.wq.data(), d.out, d.in, d.out, igemm::BLayout::kNK);
          P.w8a16 = true;
        }
      }
    }
    I.w_out[c] = make_view<float>("qnn:v2_fit_w_out", pad_cols(static_cast<int>(pn.w_out.size())));
    for (std::size_t k = 0; k < pn.w_out.size(); ++k) I.w_out[c](k) = pn.w_out[k];
    I.layer_labels[c] = pn.label;
  }
  // kernel views (after every vector has its final address)
  for (int c = 0; c < S; ++c) {
    const PackedNet& pn = pm.nets[static_cast<std::size_t>(c)];
    const int nh = static_cast<int>(I.layers[c].size());
    I.klayers[c] = make_view<FitLayer>("qnn:v2_fit_layers", nh);
    for (int l = 0; l < nh; ++l) {
      const PackedLayer& d = pn.layers[static_cast<std::size_t>(l)];
      Impl::Layer& P = I.layers[c][l];
      FitLayer& K = I.klayers[c](l);
      K.in = d.in;
      K.out = d.out;
      K.in_p = pad_cols(d.in);
      K.out_p = pad_cols(d.out);
      K.residual = d.residual;
      K.tanh = d.tanh;
      K.w = P.w.data();
      K.wt = P.wt.data();
      K.b = P.b.data();
      K.dt = P.dt.extent(0) == 0 ? nullptr : P.dt.data();
      if (d.kind != PackedLayer::Float) {
        K.act_scale = d.act_scale;
        K.inv_act_scale = d.inv_act_scale;
        K.qmax_a = d.qmax_a;
        K.fake_quant = P.fake_quant;
      }
      if (P.int8) {
        K.pk = &P.pk;
        K.pkt = &P.pkt;
      }
      if (P.w8a16) {
        K.pk16 = &P.pk16;
        K.pkt16 = &P.pkt16;
        K.qmax_g = d.qmax_g;
      }
      if (P.int8 || P.w8a16) {
        K.zscale = P.zscale.data();
        K.wscale = P.wscale.data();
      }
    }
    FitNet& N = I.nets(c);
    N.nlayers = nh;
    N.layers = I.klayers[c].data();
    N.w_out = I.w_out[c].data();
    N.b_out = pn.b_out;
  }
  A.fit = I.nets.data();
  I.scratch = v2::scratch_bytes(A);
  I.table = std::move(pm.table);

  // ---- kernel paths: the options, else the same switch as the integer GEMMs ($QNN_ISA)
  const igemm::Isa isa = opt.gemm_isa ? *opt.gemm_isa : igemm::active_isa();
  if (!igemm::isa_available(isa))
    throw Error(std::string("engine: the integer GEMM path ") + igemm::isa_name(isa) +
                " is not available on this CPU or build");
  A.gemm_isa = isa;
  const bool has_avx2 = v2::avx2_compiled() && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  const bool has_avx512 = v2::avx512_compiled() && igemm::isa_available(igemm::Isa::kAvx512Vnni);
  std::string kernel = opt.float_kernel;
  if (kernel.empty())
    kernel = isa == igemm::Isa::kAvx512Vnni && has_avx512 ? "avx512"
             : isa != igemm::Isa::kScalar && has_avx2     ? "avx2"
                                                          : "generic";
  if (kernel == "avx512" && has_avx512) {
    I.block = v2::block_avx512;
  } else if (kernel == "avx2" && has_avx2) {
    I.block = v2::block_avx2;
  } else if (kernel == "generic") {
    I.block = v2::block_generic;
  } else {
    throw Error("engine: float kernel path '" + kernel + "' is " +
                (kernel == "avx512" || kernel == "avx2" ? "not available on this CPU or build"
                                                        : "unknown (avx512, avx2, generic)"));
  }
  I.kernel_name = kernel;
}

CompressedEngine::~CompressedEngine() = default;

const Model& CompressedEngine::model() const { return impl_->model; }
const std::string& CompressedEngine::kernel_name() const { return impl_->kernel_name; }
double CompressedEngine::kernel_fma_peak() const {
  const Impl& I = *impl_;
  if (I.block == v2::block_avx512) return v2::fma_peak_avx512();
  if (I.block == v2::block_avx2) return v2::fma_peak_avx2();
  return v2::fma_peak_generic();
}
const EmbeddingTable& CompressedEngine::table() const { return impl_->table; }

std::string CompressedEngine::describe() const {
  const Impl& I = *impl_;
  std::ostringstream os;
  os << I.table.describe() << "; fitting";
  for (int c = 0; c < I.model.nspecies(); ++c)
    os << " " << I.model.species[c] << " [" << I.layer_labels[c] << "]";
  os << "; float kernels " << I.kernel_name << ", integer GEMMs "
     << igemm::isa_name(I.margs.gemm_isa) << "; fixed-point sums";
  return os.str();
}

void CompressedEngine::compute(const NeighborGraph& g, EvalResult& out, const EvalOptions& opt) {
  Impl& I = *impl_;
  const auto t0 = std::chrono::steady_clock::now();
  const bool same_topology = opt.topology != 0 && opt.topology == I.topology &&
                             g.nlocal == I.topology_nlocal && g.ntotal == I.topology_ntotal;
  if (!same_topology) g.validate(I.model.nspecies());
  const int nlocal = g.nlocal, ntotal = g.ntotal;
  const int S = I.model.nspecies();
  // centres grouped by species, in graph order within a species; blocks of kBlockAtoms
  // (a serial scan on the host: it is a small part of the call); kept while the caller's
  // topology stamp is unchanged (EvalOptions::topology)
  int nb = I.nblocks;
  if (!same_topology) {
    ensure_size(I.order, "qnn:v2_order", std::size_t(nlocal));
    const std::size_t max_blocks = std::size_t(nlocal) / v2::kBlockAtoms + S;
    ensure_size(I.block_start, "qnn:v2_block_start", max_blocks);
    ensure_size(I.block_count, "qnn:v2_block_count", max_blocks);
    ensure_size(I.block_species, "qnn:v2_block_species", max_blocks);
    int pos = 0;
    nb = 0;
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
    I.topology = opt.topology;
    I.topology_nlocal = nlocal;
    I.topology_ntotal = ntotal;
  }
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
