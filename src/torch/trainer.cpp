// LibTorch trainer of the se_e2_a model (see trainer.hpp for the config and the loss).
#include "torch/trainer.hpp"

#include <unistd.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <limits>
#include <optional>
#include <random>
#include <set>
#include <sstream>

#include "qnn/data/data.hpp"
#include "qnn/error.hpp"
#include "qnn/quant/common.hpp"
#include "qnn/util/plot.hpp"
#include "torch/config_section.hpp"
#include "torch/jet_kernels.hpp"
#include "torch/se2a_module.hpp"
#include "torch/train_loop.hpp"

#ifndef QNN_VERSION
#define QNN_VERSION "unknown"
#endif

namespace fs = std::filesystem;
using nlohmann::json;

namespace qnn::libtorch {

using config::resolve;
using config::Section;

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// ------------------------------------------------------------------------------ data

// Descriptor statistics per (centre, neighbour) species over `frames`: mean and std of s, and
// the root mean square of s·x_k/r (docs/model.md eq. R). Pairs without edges keep 0 / 1 / 1;
// standard deviations below 1e-2 are raised to 1e-2 (as DeePMD protects them).
void descriptor_statistics(const std::vector<FrameData>& frames, const std::vector<int>& which, const Model& m,
                           std::vector<double>& mean_s, std::vector<double>& std_s, std::vector<double>& std_r,
                           std::vector<int>& max_neighbors) {
  const int S = m.nspecies();
  const auto SS = static_cast<std::size_t>(S * S);
  std::vector<double> n(SS, 0), sum_s(SS, 0), sum_s2(SS, 0), sum_r2(SS, 0), sum_a(SS, 0);
  std::vector<std::int64_t> centres(static_cast<std::size_t>(S), 0);  // centre atoms per species
  max_neighbors.assign(static_cast<std::size_t>(S), 0);
  const double rc = m.rcut, rs = m.rcut_smth;
  for (int fi : which) {
    const EdgeBatch& b = frames[static_cast<std::size_t>(fi)].edges;
    torch::Tensor pos = b.positions.to(torch::kFloat64).contiguous();
    torch::Tensor sh = b.edge_shift.to(torch::kFloat64).contiguous();
    const double* p = pos.data_ptr<double>();
    const double* shift = sh.data_ptr<double>();
    const std::int64_t* ei = b.edge_i.data_ptr<std::int64_t>();
    const std::int64_t* ej = b.edge_j.data_ptr<std::int64_t>();
    const std::int64_t* sp = b.species.data_ptr<std::int64_t>();
    const std::int64_t N = b.natoms();
    for (std::int64_t i = 0; i < N; ++i) ++centres[static_cast<std::size_t>(sp[i])];
    std::vector<int> count(static_cast<std::size_t>(N * S), 0);  // (N, S) neighbours per species
    for (std::int64_t e = 0; e < b.nedges(); ++e) {
      double x[3];
      for (int k = 0; k < 3; ++k) x[k] = p[3 * ej[e] + k] + shift[3 * e + k] - p[3 * ei[e] + k];
      const double r = std::sqrt(x[0] * x[0] + x[1] * x[1] + x[2] * x[2]);
      double s = 0;
      if (r < rs) {
        s = 1.0 / r;
      } else if (r < rc) {
        const double u = (r - rs) / (rc - rs);
        s = (u * u * u * (-6.0 * u * u + 15.0 * u - 10.0) + 1.0) / r;
      }
      const auto pair = static_cast<std::size_t>(sp[ei[e]] * S + sp[ej[e]]);
      n[pair] += 1;
      sum_s[pair] += s;
      sum_s2[pair] += s * s;
      for (int k = 0; k < 3; ++k) sum_r2[pair] += (s * x[k] / r) * (s * x[k] / r);
      for (int k = 0; k < 3; ++k) sum_a[pair] += s * x[k] / r;
      ++count[static_cast<std::size_t>(ei[e] * S + sp[ej[e]])];
    }
    for (std::size_t k = 0; k < count.size(); ++k) {
      auto a = k % static_cast<std::size_t>(S);
      max_neighbors[a] = std::max(max_neighbors[a], count[k]);
    }
  }
  mean_s.assign(SS, 0.0);
  std_s.assign(SS, 1.0);
  std_r.assign(SS, 1.0);
  constexpr double kProtect = 1e-2;
  if (m.deepmd_env_mat()) {
    // DeePMD-kit's statistics (deepmd/tf/descriptor/se_a.py, _compute_dstats_sys_smth): per
    // centre species over all sum(sel) slots of every centre, empty slots counting as zeros;
    // one mean and std of s and one std of the three s·x_k/r columns, shared by all neighbour
    // species.
    std::int64_t nsel = 0;
    for (int v : m.sel) nsel += v;
    for (int c = 0; c < S; ++c) {
      double slots = 0, sr = 0, sr2 = 0, sa = 0, sa2 = 0;
      for (int a = 0; a < S; ++a) {
        const auto k = static_cast<std::size_t>(c * S + a);
        sr += sum_s[k];
        sr2 += sum_s2[k];
        sa += sum_a[k] / 3;
        sa2 += sum_r2[k] / 3;
      }
      slots = static_cast<double>(centres[static_cast<std::size_t>(c)]) * static_cast<double>(nsel);
      if (slots == 0) continue;
      const double mean = sr / slots;
      const double sd_s = std::sqrt(std::max(0.0, sr2 / slots - mean * mean));
      const double sd_a = std::sqrt(std::max(0.0, sa2 / slots - (sa / slots) * (sa / slots)));
      for (int a = 0; a < S; ++a) {
        const auto k = static_cast<std::size_t>(c * S + a);
        mean_s[k] = mean;
        std_s[k] = sd_s < kProtect ? kProtect : sd_s;
        std_r[k] = sd_a < kProtect ? kProtect : sd_a;
      }
    }
    return;
  }
  for (std::size_t k = 0; k < SS; ++k) {
    if (n[k] == 0) continue;
    mean_s[k] = sum_s[k] / n[k];
    std_s[k] = std::max(kProtect, std::sqrt(std::max(0.0, sum_s2[k] / n[k] - mean_s[k] * mean_s[k])));
    std_r[k] = std::max(kProtect, std::sqrt(sum_r2[k] / (3 * n[k])));
  }
}

// The minimum-norm least-squares solution b of counts · b ≈ y over frames[which] (y: one value
// per frame, eV): unique only when the frames' compositions span the species.
std::vector<double> per_species_lstsq(const std::vector<FrameData>& frames, const std::vector<int>& which,
                                      const std::vector<double>& y_in, int S) {
  const auto F = static_cast<std::int64_t>(which.size());
  torch::Tensor A = torch::zeros({F, S}, torch::kFloat64);  // (F, S) atom counts
  torch::Tensor y = torch::zeros({F}, torch::kFloat64);     // (F)
  auto pa = A.accessor<double, 2>();
  auto py = y.accessor<double, 1>();
  for (std::int64_t f = 0; f < F; ++f) {
    const FrameData& fr = frames[static_cast<std::size_t>(which[static_cast<std::size_t>(f)])];
    for (int s = 0; s < S; ++s) pa[f][s] = fr.counts[static_cast<std::size_t>(s)];
    py[f] = y_in[static_cast<std::size_t>(f)];
  }
  torch::Tensor b = torch::matmul(torch::linalg_pinv(A), y).contiguous();  // (S)
  return {b.data_ptr<double>(), b.data_ptr<double>() + S};
}

// Per-species energy bias over the training frames: counts · bias ≈ E_ref.
std::vector<double> energy_bias_lstsq(const std::vector<FrameData>& frames, const std::vector<int>& which, int S) {
  std::vector<double> e;
  for (int f : which) e.push_back(frames[static_cast<std::size_t>(f)].energy_ref);
  return per_species_lstsq(frames, which, e, S);
}

// "1h02m03s" style duration.
std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "--";
  auto s = static_cast<long long>(seconds + 0.5);
  char buf[64];
  if (s >= 3600) {
    std::snprintf(buf, sizeof buf, "%lldh%02lldm%02llds", s / 3600, (s / 60) % 60, s % 60);
  } else if (s >= 60) {
    std::snprintf(buf, sizeof buf, "%lldm%02llds", s / 60, s % 60);
  } else {
    std::snprintf(buf, sizeof buf, "%llds", s);
  }
  return buf;
}

// Fixed-precision number, "nan" for NaN.
std::string fmt(double v, int prec = 2) {
  if (std::isnan(v)) return "nan";
  std::ostringstream os;
  os << std::fixed << std::setprecision(prec) << v;
  return os.str();
}
std::string sci(double v) {
  std::ostringstream os;
  os << std::scientific << std::setprecision(3) << v;
  return os.str();
}

// The learning curve as CSV.
void write_curve_csv(const std::string& path, const std::vector<CurvePoint>& curve) {
  std::ostringstream out;
  out << "step,lr,pref_e,pref_f,loss,train_e_rmse_meV_atom,train_f_rmse_meV_A,val_e_rmse_meV_atom,val_f_rmse_meV_A,wall_s,val_e_rmse_refit_meV_atom\n";
  out << std::setprecision(9);
  for (const CurvePoint& c : curve) {
    out << c.step << ',' << c.lr << ',' << c.pref_e << ',' << c.pref_f << ',' << c.loss << ',' << c.train_e_rmse
        << ',' << c.train_f_rmse << ',' << c.val_e_rmse << ',' << c.val_f_rmse << ',' << c.wall_s << ','
        << c.val_e_rmse_refit << '\n';
  }
  const std::string text = out.str();
  write_file_atomic(path, std::vector<char>(text.begin(), text.end()));
}

// Checkpoint contents besides the module and optimizer.
struct TrainState {
  int step = 0;
  std::mt19937_64 rng;
  std::vector<int> order;   // current epoch's frame order
  std::size_t cursor = 0;   // next position in `order`
  std::vector<CurvePoint> curve;
  double wall_s = 0;
};

json curve_to_json(const std::vector<CurvePoint>& curve) {
  json a = json::array();
  auto num = [](double v) { return std::isnan(v) ? json(nullptr) : json(v); };
  for (const CurvePoint& c : curve) {
    a.push_back({c.step, c.lr, c.pref_e, c.pref_f, num(c.loss), num(c.train_e_rmse), num(c.train_f_rmse),
                 num(c.val_e_rmse), num(c.val_f_rmse), c.wall_s, num(c.val_e_rmse_refit)});
  }
  return a;
}

std::vector<CurvePoint> curve_from_json(const json& a) {
  std::vector<CurvePoint> out;
  auto num = [](const json& v) { return v.is_null() ? kNaN : v.get<double>(); };
  for (const json& r : a) {
    CurvePoint c;
    c.step = r[0].get<int>();
    c.lr = r[1].get<double>();
    c.pref_e = r[2].get<double>();
    c.pref_f = r[3].get<double>();
    c.loss = num(r[4]);
    c.train_e_rmse = num(r[5]);
    c.train_f_rmse = num(r[6]);
    c.val_e_rmse = num(r[7]);
    c.val_f_rmse = num(r[8]);
    c.wall_s = r[9].get<double>();
    c.val_e_rmse_refit = r.size() > 10 ? num(r[10]) : kNaN;  // absent in checkpoints written before the refit
    out.push_back(c);
  }
  return out;
}

// torch::save of module, optimizer and TrainState, written atomically.
void save_checkpoint(const std::string& path, Se2aModule& module, torch::optim::Adam& optimizer,
                     const TrainState& st, const json& signature) {
  torch::serialize::OutputArchive ar;
  module->save(ar);
  torch::serialize::OutputArchive opt_ar;
  optimizer.save(opt_ar);
  ar.write("optimizer", opt_ar);
  std::ostringstream rng;
  rng << st.rng;
  json meta = {{"step", st.step},         {"rng", rng.str()},       {"order", st.order},
               {"cursor", st.cursor},     {"wall_s", st.wall_s},    {"curve", curve_to_json(st.curve)},
               {"signature", signature}};
  ar.write("qnn_train_state", c10::IValue(meta.dump()));
  std::ostringstream bytes;
  ar.save_to(bytes);
  const std::string b = bytes.str();
  write_file_atomic(path, std::vector<char>(b.begin(), b.end()));
}

// Restores what save_checkpoint wrote; the config must match the checkpoint's.
void load_checkpoint(const std::string& path, Se2aModule& module, torch::optim::Adam& optimizer, TrainState& st,
                     const json& signature) {
  if (!fs::exists(path)) throw Error(path + ": no checkpoint to resume from");
  torch::serialize::InputArchive ar;
  try {
    ar.load_from(path);
  } catch (const std::exception& e) {
    throw Error(path + ": cannot read the checkpoint (" + std::string(e.what()).substr(0, 200) + ")");
  }
  c10::IValue meta_v;
  if (!ar.try_read("qnn_train_state", meta_v) || !meta_v.isString()) throw Error(path + ": not a qnn training checkpoint");
  json meta = json::parse(meta_v.toStringRef());
  if (meta["signature"] != signature) {
    throw Error(path + ": the checkpoint was written with a different config (only training.steps, disp_freq, "
                "checkpoint_freq and output may change on resume)");
  }
  module->load(ar);
  torch::serialize::InputArchive opt_ar;
  ar.read("optimizer", opt_ar);
  optimizer.load(opt_ar);
  st.step = meta["step"].get<int>();
  std::istringstream rng(meta["rng"].get<std::string>());
  rng >> st.rng;
  st.order = meta["order"].get<std::vector<int>>();
  st.cursor = meta["cursor"].get<std::size_t>();
  st.wall_s = meta["wall_s"].get<double>();
  st.curve = curve_from_json(meta["curve"]);
}

// Fisher-Yates shuffle driven by the raw engine output (portable across standard libraries).
void shuffle(std::vector<int>& v, std::mt19937_64& rng) {
  for (std::size_t i = v.size(); i > 1; --i) {
    std::size_t j = static_cast<std::size_t>(rng() % i);
    std::swap(v[i - 1], v[j]);
  }
}

// Evenly spaced subset of `n` entries of `v` (all of them when n == 0 or n >= size).
std::vector<int> spaced_subset(const std::vector<int>& v, int n) {
  if (n <= 0 || static_cast<std::size_t>(n) >= v.size()) return v;
  std::vector<int> out;
  for (int k = 0; k < n; ++k) out.push_back(v[static_cast<std::size_t>(k) * v.size() / static_cast<std::size_t>(n)]);
  return out;
}

}  // namespace

// ------------------------------------------------------------------------------ shared pieces

// The parts of the config a checkpoint must agree with to be resumed.
json resume_signature(const TrainConfig& c) {
  json j = c.to_json();
  j["training"].erase("steps");
  j["training"].erase("disp_freq");
  j["training"].erase("checkpoint_freq");
  j["training"].erase("refit_energy_bias");  // changes only the written model, not the optimisation
  j.erase("output");
  return j;
}

double learning_rate(const TrainConfig& c, int k) {
  const double rate = std::exp(std::log(c.stop_lr / c.start_lr) /
                               (static_cast<double>(std::max(c.steps, 1)) / c.decay_steps));
  return c.start_lr * std::pow(rate, static_cast<double>(k / c.decay_steps));
}

// Energy and force errors over frames[which]: energy residuals E_model − E_ref per frame (eV)
// and the force RMSE (meV/Å, components).
FrameErrors evaluate_errors(Se2aModule& module, const std::vector<FrameData>& frames, const std::vector<int>& which,
                            bool with_forces) {
  FrameErrors out;
  out.which = which;
  RmsError f_err;
  constexpr std::size_t kChunk = 4;
  for (std::size_t start = 0; start < which.size(); start += kChunk) {
    std::vector<const EdgeBatch*> parts;
    std::vector<torch::Tensor> fref;
    std::vector<double> eref;
    for (std::size_t k = start; k < std::min(which.size(), start + kChunk); ++k) {
      const FrameData& f = frames[static_cast<std::size_t>(which[k])];
      parts.push_back(&f.edges);
      fref.push_back(f.force_ref);
      eref.push_back(f.energy_ref);
    }
    const EdgeBatch batch = concat(parts);
    torch::Tensor e;
    if (with_forces) {
      EnergyForces ef = energy_and_forces(module, batch, false);
      e = ef.frame_energy.to(torch::kFloat64);
      torch::Tensor df = ef.forces.to(torch::kFloat64) - torch::cat(fref).to(torch::kFloat64);
      f_err.add_squares((df * df).sum().item<double>(), df.numel());
    } else {
      e = frame_energies(module, batch).to(torch::kFloat64);
    }
    for (std::size_t k = 0; k < eref.size(); ++k) out.residual.push_back(e[static_cast<std::int64_t>(k)].item<double>() - eref[k]);
  }
  out.f_rmse = with_forces ? f_err.rms(1000.0) : kNaN;
  return out;
}

// Energy RMSE (meV/atom) of the residuals with the per-species shift `delta` (eV, empty: none)
// subtracted from the model's energies.
double FrameErrors::e_rmse(const std::vector<FrameData>& frames, const std::vector<double>& delta) const {
  if (which.empty()) return kNaN;
  RmsError e_err;
  for (std::size_t k = 0; k < which.size(); ++k) {
    const FrameData& f = frames[static_cast<std::size_t>(which[k])];
    double r = residual[k];
    for (std::size_t s = 0; s < delta.size(); ++s) r -= f.counts[s] * delta[s];
    e_err.add(r / f.natoms);
  }
  return e_err.rms(1000.0);
}

// The energy-bias shift that refits the model on frames[which]: counts · δ ≈ residual.
std::vector<double> FrameErrors::bias_shift(const std::vector<FrameData>& frames, int S) const {
  if (which.empty()) return {};
  return per_species_lstsq(frames, which, residual, S);
}

std::pair<double, double> evaluate_rmse(Se2aModule& module, const std::vector<FrameData>& frames,
                                        const std::vector<int>& which) {
  const FrameErrors e = evaluate_errors(module, frames, which);
  return {e.e_rmse(frames, {}), e.f_rmse};
}


// ------------------------------------------------------------------------------ config

// The data, learning_rate, loss, training and output sections (shared with `qnn qat`).
void parse_training_sections(Section& root, TrainConfig& c, const std::string& base_dir) {
  constexpr double kInf = std::numeric_limits<double>::infinity();
  constexpr long long kIntMax = std::numeric_limits<int>::max();
  Section d = root.section("data");
  for (const auto& s : d.string_list("systems", true)) c.systems.push_back(resolve(base_dir, s));
  for (const auto& s : d.string_list("validation_systems", false)) c.validation_systems.push_back(resolve(base_dir, s));
  c.validation_fraction = d.number("validation_fraction", c.validation_systems.empty() ? c.validation_fraction : 0.0,
                                   0.0, 0.9, "in [0, 0.9]");
  if (!c.validation_systems.empty() && c.validation_fraction > 0) {
    d.fail_at("data.validation_fraction", "cannot be combined with data.validation_systems");
  }
  c.stat_frames = static_cast<int>(d.integer("stat_frames", c.stat_frames, 1, kIntMax, ">= 1"));
  d.finish();

  Section l = root.section("learning_rate");
  c.start_lr = l.number("start_lr", c.start_lr, 1e-12, 10.0, "in (0, 10]");
  c.stop_lr = l.number("stop_lr", c.stop_lr, 1e-14, 10.0, "in (0, 10]");
  if (c.stop_lr > c.start_lr) l.fail_at("learning_rate.stop_lr", "must not exceed start_lr");
  c.decay_steps = static_cast<int>(l.integer("decay_steps", c.decay_steps, 1, kIntMax, ">= 1"));
  l.finish();

  Section s = root.section("loss");
  c.start_pref_e = s.number("start_pref_e", c.start_pref_e, 0.0, kInf, ">= 0");
  c.limit_pref_e = s.number("limit_pref_e", c.limit_pref_e, 0.0, kInf, ">= 0");
  c.start_pref_f = s.number("start_pref_f", c.start_pref_f, 0.0, kInf, ">= 0");
  c.limit_pref_f = s.number("limit_pref_f", c.limit_pref_f, 0.0, kInf, ">= 0");
  if (c.start_pref_e + c.limit_pref_e + c.start_pref_f + c.limit_pref_f == 0) {
    s.fail_at("loss", "prefactors are all zero");
  }
  s.finish();

  Section t = root.section("training");
  c.steps = static_cast<int>(t.integer("steps", c.steps, 0, kIntMax, ">= 0"));
  c.batch_size = static_cast<int>(t.integer("batch_size", c.batch_size, 1, 4096, "in [1, 4096]"));
  c.seed = static_cast<std::uint64_t>(t.integer("seed", static_cast<long long>(c.seed), 0, std::numeric_limits<long long>::max(), ">= 0"));
  c.threads = static_cast<int>(t.integer("threads", c.threads, 1, 1024, "in [1, 1024]"));
  c.disp_freq = static_cast<int>(t.integer("disp_freq", c.disp_freq, 1, kIntMax, ">= 1"));
  c.checkpoint_freq = static_cast<int>(t.integer("checkpoint_freq", c.checkpoint_freq, 1, kIntMax, ">= 1"));
  c.val_frames = static_cast<int>(t.integer("val_frames", c.val_frames, 0, kIntMax, ">= 0 (0: all)"));
  c.train_eval_frames = static_cast<int>(t.integer("train_eval_frames", c.train_eval_frames, 0, kIntMax, ">= 0 (0: all)"));
  c.refit_energy_bias = t.boolean("refit_energy_bias", c.refit_energy_bias);
  t.finish();

  Section o = root.section("output");
  c.output_dir = resolve(base_dir, o.string("dir", c.output_dir));
  c.model_file = o.string("model", c.model_file);
  c.checkpoint_file = o.string("checkpoint", c.checkpoint_file);
  c.lcurve_file = o.string("lcurve", c.lcurve_file);
  c.plot_file = o.string("plot", c.plot_file);
  c.storage_dtype = o.string("storage_dtype", c.storage_dtype, {"auto", "f32", "f64"});
  for (const auto& [key, value] : {std::pair<std::string, std::string>{"model", c.model_file},
                                   {"checkpoint", c.checkpoint_file}, {"lcurve", c.lcurve_file}}) {
    if (value.empty()) o.fail_at("output." + key, "must not be empty");
  }
  o.finish();
}

TrainConfig TrainConfig::from_json(const json& j, const std::string& base_dir, const std::string& where) {
  TrainConfig c;
  c.base_dir = base_dir;
  constexpr double kInf = std::numeric_limits<double>::infinity();
  constexpr long long kIntMax = std::numeric_limits<int>::max();
  Section root(&j, "", where);

  Section m = root.section("model");
  c.species = m.string_list("species", false);
  c.rcut = m.number("rcut", c.rcut, 1e-3, 1e3, "in (0, 1000] Å");
  c.rcut_smth = m.number("rcut_smth", c.rcut_smth, 0.0, kInf, ">= 0 Å");
  if (!(c.rcut_smth < c.rcut)) m.fail_at("model.rcut_smth", "must be smaller than model.rcut");
  c.sel = m.int_list("sel", {}, true, 1, false);
  c.neighbor_norm = m.number("neighbor_norm", c.neighbor_norm, 0.0, kInf, ">= 0 (0: sum of sel)");
  c.embed_widths = m.int_list("embed_widths", c.embed_widths, false, 1, false);
  c.axis_neuron = static_cast<int>(m.integer("axis_neuron", c.axis_neuron, 1, kIntMax, ">= 1"));
  if (c.axis_neuron > c.embed_widths.back()) {
    m.fail_at("model.axis_neuron", "must not exceed the last embedding width (" + std::to_string(c.embed_widths.back()) + ")");
  }
  c.fit_widths = m.int_list("fit_widths", c.fit_widths, false, 1, false);
  c.resnet_dt = m.boolean("resnet_dt", c.resnet_dt);
  c.env_mat = m.string("env_mat", c.env_mat, {"qnn", "deepmd"});
  c.precision = m.string("precision", c.precision, {"float", "double"});
  if (!c.species.empty() && c.species.size() != c.sel.size()) {
    m.fail_at("model.sel", "has " + std::to_string(c.sel.size()) + " entries for " + std::to_string(c.species.size()) + " species");
  }
  m.finish();

  parse_training_sections(root, c, base_dir);

  root.finish();
  return c;
}

// Every key with its value; the inverse of from_json (paths absolute).
json TrainConfig::to_json() const {
  return {
      {"model",
       {{"species", species},
        {"rcut", rcut},
        {"rcut_smth", rcut_smth},
        {"sel", sel},
        {"neighbor_norm", neighbor_norm},
        {"embed_widths", embed_widths},
        {"axis_neuron", axis_neuron},
        {"fit_widths", fit_widths},
        {"resnet_dt", resnet_dt},
        {"env_mat", env_mat},
        {"precision", precision}}},
      {"data",
       {{"systems", systems},
        {"validation_systems", validation_systems},
        {"validation_fraction", validation_fraction},
        {"stat_frames", stat_frames}}},
      {"learning_rate", {{"start_lr", start_lr}, {"stop_lr", stop_lr}, {"decay_steps", decay_steps}}},
      {"loss",
       {{"start_pref_e", start_pref_e},
        {"limit_pref_e", limit_pref_e},
        {"start_pref_f", start_pref_f},
        {"limit_pref_f", limit_pref_f}}},
      {"training",
       {{"steps", steps},
        {"batch_size", batch_size},
        {"seed", seed},
        {"threads", threads},
        {"disp_freq", disp_freq},
        {"checkpoint_freq", checkpoint_freq},
        {"val_frames", val_frames},
        {"train_eval_frames", train_eval_frames},
        {"refit_energy_bias", refit_energy_bias}}},
      {"output",
       {{"dir", output_dir},
        {"model", model_file},
        {"checkpoint", checkpoint_file},
        {"lcurve", lcurve_file},
        {"plot", plot_file},
        {"storage_dtype", storage_dtype}}},
  };
}

json TrainConfig::provenance_json() const {
  json j = to_json();
  json checksums = json::object();
  for (const char* key : {"systems", "validation_systems"}) {
    json rel = json::array();
    for (const std::string& s : j["data"][key].get<std::vector<std::string>>()) {
      rel.push_back(config::relative_to(base_dir, s));
      checksums[rel.back().get<std::string>()] = dataset_checksum(s);
    }
    j["data"][key] = rel;
  }
  j["output"]["dir"] = config::relative_to(base_dir, output_dir);
  j["data_checksums"] = checksums;
  return j;
}

std::string TrainConfig::output_path(const std::string& file) const { return resolve(output_dir, file); }

// Parses the file as JSON and validates it.
TrainConfig read_train_config(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error(path + ": cannot open the training config");
  json j;
  try {
    j = json::parse(in);
  } catch (const json::parse_error& e) {
    throw Error(path + ": not valid JSON (" + e.what() + ")");
  }
  fs::path base = fs::absolute(path).parent_path();
  return TrainConfig::from_json(j, base.string(), path);
}

// ------------------------------------------------------------------------------ shared loop

// Threads, seed and allocator settings of a run.
void begin_run(const TrainConfig& cfg) {
#if defined(__GLIBC__)
  // Every step allocates and frees the same large tensors; keeping freed memory in the process
  // (instead of unmapping it) saves the page faults of re-mapping it, ~15% of a step.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
#endif
  torch::set_num_threads(cfg.threads);
  torch::manual_seed(cfg.seed);
}

// Frames of the training and validation systems, with edges in `dtype`.
Dataset load_dataset(const TrainConfig& cfg, torch::Dtype dtype, std::ostream& log) {
  const int S = static_cast<int>(cfg.species.size());
  Dataset data;
  std::vector<FrameData>& frames = data.frames;
  std::vector<int>& train_idx = data.train_idx;
  std::vector<int>& val_idx = data.val_idx;
  auto load = [&](const std::vector<std::string>& dirs, std::vector<int>& idx) {
    for (const System& sys : read_systems(dirs, cfg.species)) {
      std::vector<int> counts(static_cast<std::size_t>(S), 0);
      for (int s : sys.species) ++counts[static_cast<std::size_t>(s)];
      for (int f = 0; f < sys.nframes; ++f) {
        FrameData fd;
        fd.edges = frame_edges(sys.cell(f), sys.positions(f), sys.species, cfg.rcut, dtype);
        fd.force_ref = torch::tensor(sys.forces(f), torch::kFloat64).reshape({sys.natoms, 3}).to(dtype);
        fd.energy_ref = sys.energy[static_cast<std::size_t>(f)];
        fd.natoms = sys.natoms;
        fd.counts = counts;
        fd.label = sys.frame_label(f);
        idx.push_back(static_cast<int>(frames.size()));
        frames.push_back(std::move(fd));
      }
      log << "data: " << sys.path << ": " << sys.nframes << " frames of " << sys.natoms << " atoms\n";
    }
  };
  load(cfg.systems, train_idx);
  if (!cfg.validation_systems.empty()) {
    load(cfg.validation_systems, val_idx);
  } else if (cfg.validation_fraction > 0) {
    std::mt19937_64 split_rng(cfg.seed ^ 0x5eed5a1177ULL);
    shuffle(train_idx, split_rng);
    auto nval = static_cast<std::size_t>(std::llround(cfg.validation_fraction * static_cast<double>(train_idx.size())));
    nval = std::max<std::size_t>(1, nval);
    if (nval >= train_idx.size()) throw Error("config: data.validation_fraction leaves no training frames");
    val_idx.assign(train_idx.begin(), train_idx.begin() + static_cast<std::ptrdiff_t>(nval));
    train_idx.erase(train_idx.begin(), train_idx.begin() + static_cast<std::ptrdiff_t>(nval));
    std::sort(val_idx.begin(), val_idx.end());
    std::sort(train_idx.begin(), train_idx.end());
  }
  if (train_idx.empty()) throw Error("config: no training frames");
  log << "frames: " << train_idx.size() << " training, " << val_idx.size() << " validation\n";
  return data;
}

// The optimisation loop: Adam on spec.param_groups, the loss of trainer.hpp, validation rows,
// checkpoints, progress, and at the end the model (spec.export_model) and the plot.
TrainResult run_training(const TrainConfig& cfg, const TrainOptions& opt, Se2aModule& module, const Dataset& data,
                         const LoopSpec& spec) {
  using Clock = std::chrono::steady_clock;
  std::ostream& log = opt.log != nullptr ? *opt.log : std::cout;
  const bool tty = opt.progress && opt.log == nullptr && isatty(STDOUT_FILENO) != 0;
  const auto t_setup = Clock::now();
  const torch::Dtype dtype = module->dtype();
  const std::vector<FrameData>& frames = data.frames;
  const std::vector<int>& train_idx = data.train_idx;
  const int nspecies = static_cast<int>(module->architecture().nspecies());
  const std::vector<int>& val_idx = data.val_idx;
  if (spec.param_groups.empty()) throw Error(spec.command + ": nothing to optimise");

  std::vector<torch::optim::OptimizerParamGroup> groups;
  std::vector<double> lr_factor;
  for (const auto& [params, factor] : spec.param_groups) {
    groups.emplace_back(params);
    lr_factor.push_back(factor);
  }
  torch::optim::Adam optimizer(groups, torch::optim::AdamOptions(cfg.start_lr));
  TrainState st;
  st.rng.seed(cfg.seed + 1);
  const std::string ckpt_path = cfg.output_path(cfg.checkpoint_file);
  if (opt.resume) {
    load_checkpoint(ckpt_path, module, optimizer, st, spec.signature);
    log << "resumed from " << ckpt_path << " at step " << st.step << "\n";
  }
  const std::vector<int> train_eval = spaced_subset(train_idx, cfg.train_eval_frames);
  const std::vector<int> val_eval = spaced_subset(val_idx, cfg.val_frames);
  const std::string csv_path = cfg.output_path(cfg.lcurve_file);
  log << "setup: " << format_duration(std::chrono::duration<double>(Clock::now() - t_setup).count() + spec.setup_s)
      << "\n";
  log << std::setw(8) << "step" << std::setw(11) << "lr" << std::setw(11) << "loss" << std::setw(11) << "E_trn"
      << std::setw(11) << "E_val" << std::setw(11) << "F_trn" << std::setw(11) << "F_val"
      << (cfg.refit_energy_bias ? "  E_val_fit" : "") << "   (RMSE: E meV/atom, F meV/Å"
      << (cfg.refit_energy_bias ? "; E_val_fit: with the energy bias refit on the E_trn frames" : "") << ")\n";
  log.flush();

  const auto t0 = Clock::now();
  const double wall_before = st.wall_s;
  const int first_step = st.step;
  double loss_sum = 0;
  int loss_n = 0;
  auto last_progress = Clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(Clock::now() - t0).count(); };
  auto eta = [&](int step) {
    const int done = step - first_step;
    return done > 0 ? elapsed() / done * (cfg.steps - step) : kNaN;
  };

  // Validation row at `step` (before update `step`).
  auto record = [&](int step) {
    CurvePoint c;
    c.step = step;
    c.lr = learning_rate(cfg, step);
    c.pref_e = cfg.limit_pref_e + (cfg.start_pref_e - cfg.limit_pref_e) * c.lr / cfg.start_lr;
    c.pref_f = cfg.limit_pref_f + (cfg.start_pref_f - cfg.limit_pref_f) * c.lr / cfg.start_lr;
    c.loss = loss_n > 0 ? loss_sum / loss_n : kNaN;
    const FrameErrors trn = evaluate_errors(module, frames, train_eval);
    const FrameErrors val = evaluate_errors(module, frames, val_eval);
    c.train_e_rmse = trn.e_rmse(frames, {});
    c.train_f_rmse = trn.f_rmse;
    c.val_e_rmse = val.e_rmse(frames, {});
    c.val_f_rmse = val.f_rmse;
    c.val_e_rmse_refit = cfg.refit_energy_bias && !train_eval.empty()
                             ? val.e_rmse(frames, trn.bias_shift(frames, nspecies))
                             : kNaN;
    c.wall_s = wall_before + elapsed();
    loss_sum = 0;
    loss_n = 0;
    st.curve.push_back(c);
    write_curve_csv(csv_path, st.curve);
    if (tty) log << "\r\033[K";
    log << std::setw(8) << step << std::setw(11) << sci(c.lr) << std::setw(11) << (std::isnan(c.loss) ? "-" : sci(c.loss))
        << std::setw(11) << fmt(c.train_e_rmse) << std::setw(11) << fmt(c.val_e_rmse) << std::setw(11)
        << fmt(c.train_f_rmse, 1) << std::setw(11) << fmt(c.val_f_rmse, 1) << std::setw(11)
        << (cfg.refit_energy_bias ? fmt(c.val_e_rmse_refit) : "") << "   " << format_duration(c.wall_s)
        << " ETA " << format_duration(eta(step)) << std::endl;
  };

  // The jet path's constants of each training frame (geometry and slot layout; about 1.2 MB for
  // 192 atoms), kept for batches of one frame up to kJetCacheBytes in all: a step then
  // evaluates the network only. Larger batches, and fake quantization, compute them each step.
  constexpr std::size_t kJetCacheBytes = std::size_t{2} << 30;
  std::vector<std::optional<Se2aModuleImpl::JetInput>> jet_cache(
      cfg.batch_size == 1 && module->jet_ready() ? frames.size() : 0);
  std::size_t jet_cache_bytes = 0;
  if (module->jet_ready()) log << "forces: embedding jet (" << jet::float_isa() << " row loops)\n";

  if (st.curve.empty()) record(st.step);
  const int last_step = opt.stop_at >= 0 ? std::min(cfg.steps, opt.stop_at) : cfg.steps;
  while (st.step < last_step) {
    const int k = st.step;
    const double lr = learning_rate(cfg, k);
    for (std::size_t g = 0; g < optimizer.param_groups().size(); ++g) {
      optimizer.param_groups()[g].options().set_lr(lr * lr_factor[g]);
    }
    const double pref_e = cfg.limit_pref_e + (cfg.start_pref_e - cfg.limit_pref_e) * lr / cfg.start_lr;
    const double pref_f = cfg.limit_pref_f + (cfg.start_pref_f - cfg.limit_pref_f) * lr / cfg.start_lr;

    // The batch: the next batch_size frames of a shuffled epoch order.
    std::vector<const EdgeBatch*> parts;
    std::vector<torch::Tensor> fref;
    std::vector<double> eref, inv_n;
    for (int b = 0; b < cfg.batch_size; ++b) {
      if (st.cursor >= st.order.size()) {
        st.order = train_idx;
        shuffle(st.order, st.rng);
        st.cursor = 0;
      }
      const FrameData& f = frames[static_cast<std::size_t>(st.order[st.cursor++])];
      parts.push_back(&f.edges);
      fref.push_back(f.force_ref);
      eref.push_back(f.energy_ref);
      inv_n.push_back(1.0 / f.natoms);
    }
    EnergyForces ef;
    if (jet_cache.empty()) {
      ef = energy_and_forces(module, concat(parts), true);
    } else {
      std::optional<Se2aModuleImpl::JetInput>& kept = jet_cache[static_cast<std::size_t>(st.order[st.cursor - 1])];
      if (kept) {
        ef = energy_and_forces(module, *kept, true);
      } else {
        Se2aModuleImpl::JetInput in = module->prepare_jet(*parts[0]);
        ef = energy_and_forces(module, in, true);
        if (jet_cache_bytes + in.bytes() <= kJetCacheBytes) {
          jet_cache_bytes += in.bytes();
          kept = std::move(in);
        }
      }
    }
    torch::Tensor de = ef.frame_energy - torch::tensor(eref, torch::kFloat64).to(dtype);       // (B)
    torch::Tensor loss_e = (de * de * torch::tensor(inv_n, torch::kFloat64).to(dtype)).mean();
    torch::Tensor df = ef.forces - torch::cat(fref);                                           // (N, 3)
    torch::Tensor loss_f = (df * df).mean();
    torch::Tensor loss = pref_e * loss_e + pref_f * loss_f;
    optimizer.zero_grad();
    loss.backward();
    optimizer.step();
    loss_sum += loss.item<double>();
    ++loss_n;
    st.step = k + 1;

    if (st.step % cfg.disp_freq == 0 || st.step == cfg.steps) record(st.step);
    if (st.step % cfg.checkpoint_freq == 0 || st.step == last_step) {
      st.wall_s = wall_before + elapsed();
      save_checkpoint(ckpt_path, module, optimizer, st, spec.signature);
    }
    if (opt.progress) {
      const double since = std::chrono::duration<double>(Clock::now() - last_progress).count();
      if ((tty && since > 0.5) || (!tty && since > 60.0)) {
        last_progress = Clock::now();
        const double frac = static_cast<double>(st.step) / std::max(1, cfg.steps);
        const double rate = (st.step - first_step) / std::max(1e-9, elapsed());
        std::ostringstream line;
        if (tty) {
          constexpr int kWidth = 30;
          const int filled = static_cast<int>(frac * kWidth);
          line << "\r\033[K[" << std::string(static_cast<std::size_t>(filled), '#')
               << std::string(static_cast<std::size_t>(kWidth - filled), '.') << "] ";
        } else {
          line << "progress: ";
        }
        line << st.step << "/" << cfg.steps << " (" << fmt(100 * frac, 1) << "%)  loss "
             << sci(loss_n > 0 ? loss_sum / loss_n : loss.item<double>()) << "  lr " << sci(lr) << "  "
             << fmt(rate, 2) << " steps/s  ETA " << format_duration(eta(st.step));
        log << line.str() << (tty ? "" : "\n") << std::flush;
      }
    }
  }
  if (tty) log << "\r\033[K";

  // Final model.
  TrainResult result;
  result.wall_s = elapsed();
  st.wall_s = wall_before + result.wall_s;
  result.model = spec.export_model(module);
  result.curve = st.curve;
  json prov = spec.provenance;
  if (cfg.refit_energy_bias && !train_idx.empty()) {
    // The written model's energy bias, refit on every training frame (the module is untouched,
    // so a resumed run continues the same optimisation).
    // Energies only; a non-finite shift (a diverged run) is refused by write_model's validation.
    const FrameErrors all = evaluate_errors(module, frames, train_idx, /*with_forces=*/false);
    const std::vector<double> delta = all.bias_shift(frames, nspecies);
    json shift = json::object();
    for (int a = 0; a < nspecies; ++a) {
      const auto ua = static_cast<std::size_t>(a);
      result.model.energy_bias[ua] -= delta[ua];
      shift[result.model.species[ua]] = delta[ua];
    }
    const double before = all.e_rmse(frames, {}), after = all.e_rmse(frames, delta);
    prov["energy_bias_refit"] = {{"frames", train_idx.size()},
                                 {"subtracted_eV", shift},
                                 {"train_energy_rmse_meV_atom", {{"before", before}, {"after", after}}}};
    log << "energy bias refit on " << train_idx.size() << " training frames: training E RMSE " << fmt(before) << " -> "
        << fmt(after) << " meV/atom\n";
  }
  prov["created_by"] = spec.command;
  prov["qnn_version"] = QNN_VERSION;
  prov["training_frames"] = train_idx.size();
  prov["validation_frames"] = val_idx.size();
  prov["steps"] = st.step;
  prov["training_wall_s"] = st.wall_s;
  prov["storage_dtype"] = spec.storage_dtype;
  if (!st.curve.empty()) {
    const CurvePoint& c = st.curve.back();
    auto num = [](double v) { return std::isnan(v) ? json(nullptr) : json(v); };
    prov["final_rmse"] = {{"train_energy_meV_atom", num(c.train_e_rmse)}, {"train_force_meV_A", num(c.train_f_rmse)},
                          {"val_energy_meV_atom", num(c.val_e_rmse)},     {"val_force_meV_A", num(c.val_f_rmse)},
                          {"val_energy_refit_meV_atom", num(c.val_e_rmse_refit)}};
  }
  result.model.provenance = prov;
  const std::string model_path = cfg.output_path(cfg.model_file);
  write_model(result.model, model_path);
  log << "wrote " << model_path << " (" << st.step << " steps, training time " << format_duration(st.wall_s) << ")\n";
  log << "learning curve: " << csv_path << "\n";

  if (opt.plot && !cfg.plot_file.empty()) {
    // The script: $QNN_PLOT_SCRIPT, else found from the running executable (src/qnn/util/plot.hpp).
    const std::string script = find_plot_script("plot_learning_curve.py");
    const std::string py = find_python();
    const std::string png = cfg.output_path(cfg.plot_file);
    if (script.empty()) {
      log << "warning: scripts/plot_learning_curve.py not found (set QNN_PLOT_SCRIPT); the CSV is complete\n";
    } else if (py.empty()) {
      log << "warning: no python3 with matplotlib found (set QNN_PYTHON); the CSV is complete\n";
    } else {
      const std::vector<std::string> cmd{py, script, csv_path, png};
      log.flush();
      const int rc = run_program(cmd, ChildOutput::StderrToStdout);
      if (rc != 0) {
        log << "warning: plotting the learning curve failed (" << command_line(cmd) << " returned " << rc
            << "); the CSV is complete\n";
      } else {
        log << "plot: " << png << "\n";
      }
    }
  }
  log.flush();
  return result;
}

// ------------------------------------------------------------------------------ training

TrainResult train(const TrainConfig& cfg_in, const TrainOptions& opt) {
  using Clock = std::chrono::steady_clock;
  std::ostream& log = opt.log != nullptr ? *opt.log : std::cout;
  const auto t_setup = Clock::now();

  TrainConfig cfg = cfg_in;
  begin_run(cfg);
  const torch::Dtype dtype = cfg.precision == "float" ? torch::kFloat32 : torch::kFloat64;

  // Species and data.
  if (cfg.species.empty()) {
    std::vector<std::string> all = cfg.systems;
    all.insert(all.end(), cfg.validation_systems.begin(), cfg.validation_systems.end());
    cfg.species = collect_species(all);
  }
  if (cfg.species.size() != cfg.sel.size()) {
    throw Error("config: model.sel has " + std::to_string(cfg.sel.size()) + " entries but the data has " +
                std::to_string(cfg.species.size()) + " species; set model.species and model.sel to match");
  }
  log << "qnn train " << QNN_VERSION << "\nconfig (defaults filled in):\n" << cfg.to_json().dump(2) << "\n";
  fs::create_directories(cfg.output_dir);
  {
    std::ofstream full(cfg.output_path("config.full.json"));
    full << cfg.to_json().dump(2) << "\n";
  }

  const int S = static_cast<int>(cfg.species.size());
  const Dataset data = load_dataset(cfg, dtype, log);

  // Model, statistics, energy bias.
  Model init = Model::make_random(cfg.species, cfg.rcut, cfg.rcut_smth, cfg.sel, cfg.embed_widths, cfg.axis_neuron,
                                  cfg.fit_widths, cfg.resnet_dt, cfg.seed);
  if (cfg.neighbor_norm > 0) init.neighbor_norm = cfg.neighbor_norm;
  init.env_mat = cfg.env_mat;
  for (Net& net : init.fit) std::fill(net.layers.back().bias.begin(), net.layers.back().bias.end(), 0.0);  // start at the bias
  std::vector<int> max_nb;
  descriptor_statistics(data.frames, spaced_subset(data.train_idx, cfg.stat_frames), init, init.mean_s, init.std_s,
                        init.std_r, max_nb);
  init.energy_bias = energy_bias_lstsq(data.frames, data.train_idx, S);
  for (int a = 0; a < S; ++a) {
    const auto ua = static_cast<std::size_t>(a);
    log << "species " << cfg.species[ua] << ": energy bias " << sci(init.energy_bias[ua]) << " eV, max neighbours "
        << max_nb[ua] << " (sel " << cfg.sel[ua] << ")" << (max_nb[ua] > cfg.sel[ua] ? "  WARNING: exceeds sel" : "")
        << "\n";
    for (int b = 0; b < S; ++b) {
      const auto k = static_cast<std::size_t>(a * S + b);
      log << "  stats " << cfg.species[ua] << "-" << cfg.species[static_cast<std::size_t>(b)] << ": mean_s "
          << sci(init.mean_s[k]) << " std_s " << sci(init.std_s[k]) << " std_r " << sci(init.std_r[k]) << "\n";
    }
  }
  Se2aModule module(init, dtype);
  log << "parameters: " << init.parameter_count() << ", precision " << cfg.precision << ", threads " << cfg.threads << "\n";

  LoopSpec spec;
  spec.command = "qnn train";
  spec.param_groups.push_back({module->parameters(), 1.0});
  spec.signature = resume_signature(cfg);
  spec.provenance = {{"config", cfg.provenance_json()}};
  spec.storage_dtype = cfg.storage_dtype != "auto" ? cfg.storage_dtype : (cfg.precision == "float" ? "f32" : "f64");
  spec.export_model = [](Se2aModule& m) { return m->to_model(); };
  spec.setup_s = std::chrono::duration<double>(Clock::now() - t_setup).count();
  return run_training(cfg, opt, module, data, spec);
}

}  // namespace qnn::libtorch
