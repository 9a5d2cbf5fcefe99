// See metrics.hpp.
#include "qnn/quant/metrics.hpp"

#include <algorithm>
#include <cmath>
#include <memory>

#include "qnn/engine/exact_engine.hpp"
#include "qnn/error.hpp"
#include "qnn/quant/common.hpp"

namespace qnn {

Prediction predict(Evaluator& ev, const FrameSet& frames) {
  Prediction p;
  EvalOptions opt;
  opt.atom_energy = false;
  EvalResult res;
  for (const NeighborGraph& g : frames.graphs) {
    ev.compute(g, res, opt);
    p.energy.push_back(res.energy);
    p.force.push_back(fold_ghost_forces(g, res.force));
  }
  return p;
}

Prediction predict_reference(const Model& fp32, const FrameSet& frames) {
  ensure_kokkos_initialized();
  return predict(*make_evaluator(fp32, Mode::FP64), frames);
}

Prediction predict_default(const Model& m, const FrameSet& frames, std::string* engine) {
  ensure_kokkos_initialized();
  std::unique_ptr<Evaluator> ev = make_evaluator(m, default_mode(m));
  if (engine) *engine = ev->describe();
  return predict(*ev, frames);
}

double correct_energy_offset(Model& q, const Model& fp32, const FrameSet& frames) {
  if (frames.size() == 0) throw Error("the energy offset correction needs at least one frame");
  const Prediction ref = predict_reference(fp32, frames);
  const Prediction got = predict_default(q, frames);
  double sum = 0;
  for (std::size_t k = 0; k < frames.size(); ++k)
    sum += (ref.energy[k] - got.energy[k]) / frames.natoms[k];
  const double shift = sum / static_cast<double>(frames.size());
  if (!std::isfinite(shift))
    throw Error("the energy offset correction is not finite; the quantized model overflows on "
                "the calibration frames");
  for (double& b : q.energy_bias) b += shift;
  q.provenance["quantization"]["energy_offset_eV_per_atom"] = shift;
  return shift;
}

Errors compare(const Prediction& p, const Prediction& ref, const FrameSet& fr) {
  if (p.energy.size() != fr.size() || ref.energy.size() != fr.size())
    throw Error("compare: predictions do not match the frames");
  RmsError e_d, e_r, f_d, f_r;
  for (std::size_t k = 0; k < fr.size(); ++k) {
    const double na = fr.natoms[k];
    e_d.add((p.energy[k] - fr.energy[k]) / na);
    e_r.add((p.energy[k] - ref.energy[k]) / na);
    for (std::size_t c = 0; c < fr.force[k].size(); ++c) {
      f_d.add(p.force[k][c] - fr.force[k][c]);
      f_r.add(p.force[k][c] - ref.force[k][c]);
    }
  }
  Errors e;
  e.e_dft = e_d.rms(1000);
  e.e_ref = e_r.rms(1000);
  e.f_dft = f_d.rms(1000);
  e.f_ref = f_r.rms(1000);
  return e;
}

std::size_t parameter_bytes(const Model& m, const QuantPlan& p) {
  const std::vector<LayerRef> layers = list_layers(m);
  if (p.layers.size() != layers.size()) throw Error("plan does not match the model's layers");
  std::size_t bytes = 0;
  for (std::size_t i = 0; i < layers.size(); ++i) {
    const DenseLayer& L = layer_of(m, layers[i]);
    const int wb = p.layers[i].weight_bits;
    const std::size_t n = static_cast<std::size_t>(L.in) * static_cast<std::size_t>(L.out);
    bytes += n * (wb == 0 ? 4 : wb <= 8 ? 1 : 2);
    if (wb) bytes += 4 * static_cast<std::size_t>(L.out);  // per-channel scales
    bytes += 4 * (L.bias.size() + L.dt.size());
  }
  return bytes;
}

std::vector<double> layer_macs(const Model& m, const FrameSet& frames) {
  const std::vector<LayerRef> layers = list_layers(m);
  const int S = m.nspecies();
  std::vector<double> edges(static_cast<std::size_t>(m.n_embed_nets()), 0.0), atoms(static_cast<std::size_t>(S), 0.0);
  for (const NeighborGraph& g : frames.graphs) {
    for (int i = 0; i < g.nlocal; ++i) {
      atoms[static_cast<std::size_t>(g.species[static_cast<std::size_t>(i)])] += 1;
      for (int e = g.offsets[static_cast<std::size_t>(i)]; e < g.offsets[static_cast<std::size_t>(i) + 1]; ++e)
        edges[static_cast<std::size_t>(m.embed_index(g.species[static_cast<std::size_t>(i)], g.species[static_cast<std::size_t>(g.neighbors[static_cast<std::size_t>(e)])]))] += 1;
    }
  }
  const double nf = std::max<double>(1.0, static_cast<double>(frames.size()));
  std::vector<double> macs;
  for (const LayerRef& r : layers) {
    const DenseLayer& L = layer_of(m, r);
    const double rows = (r.family == 0 ? edges : atoms)[static_cast<std::size_t>(r.net)] / nf;
    macs.push_back(rows * L.in * L.out);
  }
  return macs;
}

namespace {
double mac_cost(const LayerBits& b) {
  if (b.act_bits == 0) return 4.0;  // float arithmetic (fp32 and weight-only)
  return (b.weight_bits <= 8 && b.act_bits <= 8) ? 1.0 : 2.0;
}
}  // namespace

double estimated_cost(const Model& m, const QuantPlan& p, const std::vector<double>& macs) {
  if (p.layers.size() != macs.size()) throw Error("plan does not match the model's layers");
  (void)m;
  double c = 0, c0 = 0;
  for (std::size_t i = 0; i < macs.size(); ++i) {
    c += macs[i] * mac_cost(p.layers[i]);
    c0 += macs[i] * 4.0;
  }
  return c0 > 0 ? c / c0 : 0.0;
}

}  // namespace qnn
