// Host side of the CUDA engine: packs the model with qnn::pack_model (packed_model.hpp: the
// checks, table, fixed-point scale, empty-slot terms, fp32 and int8 fitting weights that
// CompressedEngine runs), lays it out for the device code, groups the centres by species and
// converts the device's fixed-point sums to results exactly as CompressedEngine::compute does. The device work is in
// pipeline.cu and fitting.cu.
#include "qnn/cuda/cuda_engine.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <sstream>
#include <utility>

#include "qnn/cuda/pipeline.cuh"
#include "qnn/engine/embedding_table.hpp"
#include "qnn/engine/packed_model.hpp"
#include "qnn/error.hpp"

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

// The packed model (qnn/engine/packed_model.hpp: the checks and numbers CompressedEngine runs)
// in the layout of the device code (pipeline.cuh): the same values, moved; the int8 weights
// also as the mma's B operand, column by column (k contiguous), zero padded.
ModelData device_layout(PackedModel& pm) {
  static_assert(int(PackedLayer::Float) == detail::kLayerFloat &&
                    int(PackedLayer::FakeQuant) == detail::kLayerFakeQuant &&
                    int(PackedLayer::Int8) == detail::kLayerInt8,
                "PackedLayer::Kind and detail::LayerMode must agree");
  ModelData A;
  A.S = pm.S;
  A.m1 = pm.m1;
  A.m1p = pm.m1p;
  A.m2 = pm.m2;
  A.k0 = pm.k0;
  A.rc = pm.rc;
  A.rs = pm.rs;
  A.inv_nc = pm.inv_nc;
  A.s_fast = pm.s_fast;
  A.t_scale = pm.t_scale;
  A.deepmd = pm.deepmd;
  A.mean_s = std::move(pm.mean_s);
  A.inv_std_s = std::move(pm.inv_std_s);
  A.inv_std_r = std::move(pm.inv_std_r);
  A.zones.reserve(pm.zones.size());
  for (const PackedZone& z : pm.zones) A.zones.push_back({z.lo, z.inv_h1, z.mid, z.inv_h2, z.n1, z.n2});
  A.coef.assign(pm.coef(), pm.coef() + pm.ncoef());
  A.coef_centre_stride = pm.coef_centre_stride;
  A.sel = std::move(pm.sel);
  A.pad64 = std::move(pm.pad64);
  A.nets.resize(pm.nets.size());
  for (std::size_t c = 0; c < pm.nets.size(); ++c) {
    PackedNet& pn = pm.nets[c];
    NetData& N = A.nets[c];
    N.layers.resize(pn.layers.size());
    for (std::size_t l = 0; l < pn.layers.size(); ++l) {
      PackedLayer& d = pn.layers[l];
      if (d.kind == PackedLayer::W8A16)
        throw Error("device cuda: mode w8a16 (int16 activations) has no CUDA kernels yet; run "
                    "it with device cpu, or use mode int8 or fp32 on the GPU");
      LayerData& P = N.layers[l];
      P.in = d.in;
      P.out = d.out;
      P.residual = d.residual;
      P.tanh = d.tanh;
      P.mode = static_cast<int>(d.kind);
      P.act_scale = d.act_scale;
      P.inv_act_scale = d.inv_act_scale;
      P.qmax_a = d.qmax_a;
      P.w = std::move(d.w);
      P.wt = std::move(d.wt);
      P.b = std::move(d.b);
      P.dt = std::move(d.dt);
      P.zscale = std::move(d.zscale);
      P.wscale = std::move(d.wscale);
      if (d.kind == PackedLayer::Int8) {
        const int kin = detail::pad32(d.in), kout = detail::pad32(d.out);
        P.wq_fwd.assign(std::size_t(detail::pad8(d.out)) * kin, 0);
        P.wq_bwd.assign(std::size_t(detail::pad8(d.in)) * kout, 0);
        for (int k = 0; k < d.in; ++k)
          for (int o = 0; o < d.out; ++o) {
            const std::int8_t v = d.wq[std::size_t(k) * d.out + o];
            P.wq_fwd[std::size_t(o) * kin + k] = v;
            P.wq_bwd[std::size_t(k) * kout + o] = v;
          }
      }
    }
    N.w_out = std::move(pn.w_out);
    N.b_out = pn.b_out;
  }
  return A;
}

}  // namespace

CudaEngine::CudaEngine(const Model& model, const CompressedOptions& opt, int device)
    : impl_(std::make_unique<Impl>()) {
  Impl& I = *impl_;
  I.model = model;
  I.opt = opt;
  PackedModel pm = pack_model(I.model, opt);
  I.layer_labels.reserve(pm.nets.size());
  for (const PackedNet& n : pm.nets) I.layer_labels.push_back(n.label);
  const ModelData md = device_layout(pm);
  I.table = std::move(pm.table);
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

std::unique_ptr<Evaluator> make_cuda_evaluator(const Model& m, Mode mode, int device) {
  const std::string why = mode_unsupported_reason(m, mode);
  if (!why.empty()) throw Error(why);
  if (mode == Mode::FP64)
    throw Error("mode fp64 runs only on the CPU (the float engine); use device cpu, or mode fp32, "
                "weight-only, int8 or mixed on device cuda");
  return with_repulsion(std::make_unique<EngineEvaluator<CudaEngine>>("cuda engine", mode, m,
                                                                    compressed_options(mode), device));
}

}  // namespace qnn::cuda
