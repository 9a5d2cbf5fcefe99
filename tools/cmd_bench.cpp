// `qnn bench`: energy + force throughput of every execution mode on replicated water frames,
// side by side in one run: fp32, weight-only, w8a16, int8, mixed, and the LibTorch FP32 module (what
// LibTorch-based pair styles run), with the time per phase, ratios against fp32 and LibTorch,
// the int8 GEMM roofline of this machine, and the descriptor's roofline (cycles per
// edge-channel, share of the float path's FMA peak). Medians of repeated calls.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <functional>
#include <iomanip>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <ctime>

#include <CLI/CLI.hpp>

#include "commands.hpp"
#include "qnn/data/data.hpp"
#include "qnn/error.hpp"
#include "qnn/engine/compressed_engine.hpp"
#include "qnn/engine/evaluator.hpp"
#include "qnn/kernels/int_gemm.hpp"
#include "quant_flags.hpp"
#ifdef QNN_HAVE_TORCH
#include <torch/torch.h>

#include "torch/se2a_module.hpp"
#endif

namespace qnn::cli {
namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}
double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

std::string cpu_model() {
  std::ifstream f("/proc/cpuinfo");
  for (std::string line; std::getline(f, line);)
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  return "unknown CPU";
}

struct System3 {
  Cell cell{};
  std::vector<double> pos;
  std::vector<int> species;
};

// Frame `frame` of `dir` replicated n x n x n.
System3 replicate(const System& s, int frame, int n) {
  System3 r;
  const Cell c = s.cell(frame);
  const std::vector<double> p = s.positions(frame);
  for (int i = 0; i < 9; ++i) r.cell[i] = c[i] * n;
  for (int a = 0; a < n; ++a)
    for (int b = 0; b < n; ++b)
      for (int cc = 0; cc < n; ++cc)
        for (int k = 0; k < s.natoms; ++k) {
          for (int d = 0; d < 3; ++d)
            r.pos.push_back(p[3 * k + d] + a * c[d] + b * c[3 + d] + cc * c[6 + d]);
          r.species.push_back(s.species[k]);
        }
  return r;
}

// Multiply-accumulates of the network per evaluation (forward + backward), for the achieved
// MAC rate: embedding nets on active edges, fitting nets on atoms.
double network_macs(const Model& m, const NeighborGraph& g) {
  double macs = 0;
  for (int i = 0; i < g.nlocal; ++i) {
    for (int e = g.offsets[i]; e < g.offsets[i + 1]; ++e) {
      const int j = g.neighbors[e];
      double r2 = 0;
      for (int d = 0; d < 3; ++d) r2 += std::pow(g.positions[3 * j + d] - g.positions[3 * i + d], 2);
      if (r2 >= m.rcut * m.rcut) continue;
      for (const DenseLayer& L : m.embed_net(g.species[i], g.species[j]).layers) macs += 2.0 * L.in * L.out;
    }
    for (const DenseLayer& L : m.fit[g.species[i]].layers) macs += 2.0 * L.in * L.out;
  }
  return macs;
}

// Edges within the cutoff times the last embedding width: the descriptor's edge-channels.
double edge_channels(const Model& m, const NeighborGraph& g) {
  double n = 0;
  for (int i = 0; i < g.nlocal; ++i)
    for (int e = g.offsets[i]; e < g.offsets[i + 1]; ++e) {
      const int j = g.neighbors[e];
      double r2 = 0;
      for (int d = 0; d < 3; ++d) r2 += std::pow(g.positions[3 * j + d] - g.positions[3 * i + d], 2);
      if (r2 < m.rcut * m.rcut) n += m.m1();
    }
  return n;
}

// This core's clock in GHz, from a chain of dependent integer additions (one per cycle);
// 0 where that cannot be measured (not x86-64).
double clock_ghz() {
#if defined(__x86_64__)
  const long n = 200000000;
  long x = 0;
  const auto t0 = Clock::now();
  for (long i = 0; i < n; ++i) __asm__ volatile("add $1, %0" : "+r"(x));
  return n / seconds_since(t0) / 1e9;
#else
  return 0.0;
#endif
}

// Peak int8 MAC rate of the active GEMM path on one thread (large GEMM, best of 5).
double gemm_roofline_gmacs() {
  const int M = 1024, K = 1024, N = 256;
  std::vector<std::int8_t> a(static_cast<std::size_t>(M) * K), b(static_cast<std::size_t>(K) * N);
  for (std::size_t i = 0; i < a.size(); ++i) a[i] = static_cast<std::int8_t>((i * 37) % 255 - 127);
  for (std::size_t i = 0; i < b.size(); ++i) b[i] = static_cast<std::int8_t>((i * 91) % 255 - 127);
  igemm::PackedB pb(b.data(), K, N, N);
  std::vector<std::int32_t> c(static_cast<std::size_t>(M) * N);
  double best = 1e30;
  for (int r = 0; r < 5; ++r) {
    const auto t0 = Clock::now();
    igemm::gemm_s8s8s32(M, a.data(), K, pb, c.data(), N);
    best = std::min(best, seconds_since(t0));
  }
  return double(M) * K * N / best / 1e9;
}

// Multiply-accumulates of the fitting nets alone (forward + backward): the GEMM part.
double fitting_macs(const Model& m, const NeighborGraph& g) {
  double macs = 0;
  for (int i = 0; i < g.nlocal; ++i)
    for (const DenseLayer& L : m.fit[g.species[i]].layers) macs += 2.0 * L.in * L.out;
  return macs;
}

// Lane-FMAs the block kernel spends per edge-channel (kernels/descriptor_impl.hpp): forward,
// G by Horner (5) and G·R̂[k] for k < 4 (4 products); backward, G and dG/dt in one Horner pass
// (9), g_G (4), g_R̂ (4), Σ g_G dG/dt (1).
constexpr double kDescriptorFmas = 27;

struct Row {
  std::string mode;
  int natoms = 0;
  double t_total = 0;  // median wall seconds per energy+force evaluation
  double t_cpu = 0;    // median process CPU seconds per evaluation
  PhaseTimes phase;    // medians per phase
  bool has_phase = false;
  double macs = 0;
  double fit_macs = 0;
  double edge_channels = 0;  // active edges x last embedding width
};

struct Options {
  std::string fp32, int8, mixed, data, json, markdown;
  std::vector<int> replicas{1, 2, 4};
  int repeats = 5;
  int threads = 1;
  int frame = 0;
  bool torch = true;
  std::vector<std::string> only;  // --modes: subset of fp32, weight-only, w8a16, int8, mixed, libtorch
};

bool wanted(const Options& o, const std::string& m) {
  return o.only.empty() || std::find(o.only.begin(), o.only.end(), m) != o.only.end();
}

// CPU time of the whole process (all threads), seconds.
double process_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

void run(const Options& o) {
  ensure_kokkos_initialized(o.threads);
#ifdef QNN_HAVE_TORCH
  torch::set_num_threads(o.threads);
#endif
  if (o.repeats < 1) throw Error("--repeats must be at least 1");
  const Model fp = read_model(o.fp32);
  struct ModeSpec {
    std::string name;
    Model model;
    Mode mode;
  };
  std::vector<ModeSpec> modes;
  modes.push_back({"fp32", fp, Mode::FP32});
  if (!o.int8.empty()) {
    Model q = read_model(o.int8);
    modes.push_back({"weight-only", q, Mode::WeightOnly});
    modes.push_back({"w8a16", q, Mode::W8A16});
    modes.push_back({"int8", q, Mode::Int8});
  }
  if (!o.mixed.empty()) modes.push_back({"mixed", read_model(o.mixed), Mode::Mixed});
  modes.erase(std::remove_if(modes.begin(), modes.end(),
                             [&](const ModeSpec& m) { return !wanted(o, m.name); }),
              modes.end());
  for (const auto& m : modes) {
    const std::string why = mode_unsupported_reason(m.model, m.mode);
    if (!why.empty()) throw Error("bench: " + m.name + ": " + why);
  }
  const System sys = read_system(o.data, fp.species);
  if (o.frame < 0 || o.frame >= sys.nframes)
    throw Error("--frame " + std::to_string(o.frame) + " is outside the data's " +
                std::to_string(sys.nframes) + " frames");

  std::cout << "qnn bench: " << cpu_model() << ", " << o.threads << " thread(s), GEMM path "
            << igemm::isa_name(igemm::active_isa()) << "\n";
  const double roof = gemm_roofline_gmacs();
  std::cout << "int8 GEMM roofline (1024x1024x256, one thread): " << std::fixed << std::setprecision(1)
            << roof << " GMAC/s\n";
  const CompressedEngine probe(fp, compressed_options(Mode::FP32));
  const double fma_peak = probe.kernel_fma_peak();
  const double ghz = clock_ghz();
  std::cout << "float path " << probe.kernel_name() << ": FMA peak " << std::setprecision(1)
            << fma_peak / 1e9 << " G lane-FMA/s, clock " << std::setprecision(2) << ghz << " GHz\n";

  std::vector<Row> rows;
  std::map<int, double> graph_time;
  for (int n : o.replicas) {
    if (n < 1) throw Error("--replicas values must be positive");
    const System3 s = replicate(sys, o.frame, n);
    const int natoms = static_cast<int>(s.species.size());
    std::vector<double> tg;
    NeighborGraph g;
    for (int r = 0; r < std::max(1, o.repeats / 2); ++r) {
      const auto t0 = Clock::now();
      g = build_periodic_graph(s.cell, s.pos, s.species, fp.rcut);
      tg.push_back(seconds_since(t0));
    }
    graph_time[natoms] = median(tg);
    const double macs = network_macs(fp, g);
    const double fit_macs = fitting_macs(fp, g);
    const double ech = edge_channels(fp, g);
    std::cout << "\n" << natoms << " atoms, " << g.nedges() << " edges (graph "
              << std::setprecision(3) << graph_time[natoms] << " s)\n" << std::flush;
    for (const auto& m : modes) {
      auto ev = make_evaluator(m.model, m.mode);
      EvalResult res;
      EvalOptions opt;
      opt.atom_energy = false;
      ev->compute(g, res, opt);  // warm-up: buffers sized, weights packed
      std::vector<double> tt, tc;
      std::vector<PhaseTimes> pt;
      for (int r = 0; r < o.repeats; ++r) {
        PhaseTimes p;
        opt.times = &p;
        const double c0 = process_cpu_seconds();
        const auto t0 = Clock::now();
        ev->compute(g, res, opt);
        tt.push_back(seconds_since(t0));
        tc.push_back(process_cpu_seconds() - c0);
        pt.push_back(p);
      }
      Row row{m.name, natoms, median(tt), median(tc), {}, true, macs, fit_macs, ech};
      auto med = [&](double PhaseTimes::*f) {
        std::vector<double> v;
        for (const auto& p : pt) v.push_back(p.*f);
        return median(v);
      };
      for (auto f : {&PhaseTimes::geometry, &PhaseTimes::embedding, &PhaseTimes::descriptor,
                     &PhaseTimes::fitting, &PhaseTimes::embedding_backward, &PhaseTimes::gather})
        row.phase.*f = med(f);
      std::cout << "  " << std::left << std::setw(12) << m.name << std::right << std::setprecision(4)
                << row.t_total << " s/eval (cpu " << row.t_cpu << " s)  " << std::setprecision(0)
                << natoms / row.t_total << " atom-steps/s\n" << std::flush;
      rows.push_back(row);
    }
#ifdef QNN_HAVE_TORCH
    if (o.torch && wanted(o, "libtorch")) {
      namespace lt = qnn::libtorch;
      lt::Se2aModule module(fp, torch::kFloat32);
      const lt::EdgeBatch batch = lt::edges_from_graph(g, torch::kFloat32);
      // Autograd forces, as LibTorch-based pair styles compute them (not the trainer's jet).
      lt::energy_and_forces(module, batch, false, /*autograd_only=*/true);
      std::vector<double> tt, tc;
      for (int r = 0; r < o.repeats; ++r) {
        const double c0 = process_cpu_seconds();
        const auto t0 = Clock::now();
        lt::EnergyForces ef = lt::energy_and_forces(module, batch, false, /*autograd_only=*/true);
        (void)ef.forces.sum().item<double>();
        tt.push_back(seconds_since(t0));
        tc.push_back(process_cpu_seconds() - c0);
      }
      Row row{"libtorch", natoms, median(tt), median(tc), {}, false, macs};
      std::cout << "  " << std::left << std::setw(12) << "libtorch" << std::right
                << std::setprecision(4) << row.t_total << " s/eval  " << std::setprecision(0)
                << natoms / row.t_total << " atom-steps/s\n" << std::flush;
      rows.push_back(row);
    }
#endif
  }

  // ---- tables
  std::ostringstream md;
  md << "Machine: " << cpu_model() << "; " << o.threads << " thread(s); GEMM path "
     << igemm::isa_name(igemm::active_isa()) << "; medians of " << o.repeats << " calls.\n\n"
     << "int8 GEMM roofline on this machine (1024x1024x256, one thread): "
     << std::fixed << std::setprecision(1) << roof << " GMAC/s.\n\n";
  md << "Wall times are medians per energy+force evaluation; `cpu s` is the process CPU time of "
        "the same calls (robust against other load on a shared machine). Ratios are of wall "
        "times measured in this run; phase times (wall, fenced) split the evaluation.\n\n"
        "The compressed modes (fp32, weight-only, w8a16, int8, mixed: engine v2) fuse the phases: "
        "`embedding` is their descriptor forward (geometry, table, T, D), `fitting` the fitting "
        "net forward and backward (the GEMMs), `embed. backward` the descriptor backward (table "
        "derivative, chain rule, force and virial scatter), `gather` the rest of the call. "
        "`fitting GMAC/s` is the fitting nets' multiply-accumulates over the fitting phase, and "
        "`% roofline` that rate against the int8 GEMM roofline above.\n\n";
  md << "| atoms | mode | s/eval | cpu s | atom-steps/s | vs fp32 | vs libtorch | network s | network vs fp32 "
        "| network GMAC/s | geometry | embedding | descriptor | fitting | embed. backward | gather "
        "| fitting GMAC/s | % roofline |\n"
     << "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
  for (const Row& r : rows) {
    const Row* f = nullptr;
    const Row* t = nullptr;
    for (const Row& x : rows)
      if (x.natoms == r.natoms) {
        if (x.mode == "fp32") f = &x;
        if (x.mode == "libtorch") t = &x;
      }
    md << "| " << r.natoms << " | " << r.mode << " | " << std::setprecision(4) << r.t_total
       << " | " << r.t_cpu << " | " << std::setprecision(0) << r.natoms / r.t_total << " | " << std::setprecision(2)
       << (f ? f->t_total / r.t_total : 0) << "x | ";
    if (t)
      md << t->t_total / r.t_total << "x | ";
    else
      md << "- | ";
    if (r.has_phase) {
      const double net = r.phase.network();
      md << std::setprecision(4) << net << " | " << std::setprecision(2)
         << (f ? f->phase.network() / net : 0) << "x | " << std::setprecision(1)
         << r.macs / net / 1e9 << " | " << std::setprecision(4) << r.phase.geometry << " | "
         << r.phase.embedding << " | " << r.phase.descriptor << " | " << r.phase.fitting << " | "
         << r.phase.embedding_backward << " | " << r.phase.gather << " | ";
      if (r.phase.fitting > 0) {
        const double gm = r.fit_macs / r.phase.fitting / 1e9;
        md << std::setprecision(1) << gm << " | " << (roof > 0 ? 100.0 * gm / roof : 0.0) << "% |\n";
      } else {
        md << "- | - |\n";
      }
    } else {
      md << "- | - | - | - | - | - | - | - | - | - | - |\n";
    }
  }
  // ---- the descriptor's roofline
  md << "\nDescriptor roofline: float path " << probe.kernel_name() << ", FMA peak "
     << std::setprecision(1) << fma_peak / 1e9 << " G lane-FMA/s on one thread, clock "
     << std::setprecision(2) << ghz << " GHz (a dependent-add chain). An edge-channel is one "
        "active edge times one output of the embedding (its last width); the kernel spends "
     << kDescriptorFmas << " lane-FMAs on each (forward: Horner 5 and the four terms of T; "
        "backward: Horner with derivative 9, g_G 4, g_R 4, g_s 1). `% FMA peak` is that work "
        "over the descriptor time (forward + backward) against the peak; the rest of the time "
        "is geometry, rounding, reductions, D, dE/dT and the scatter.\n\n"
     << "| atoms | mode | descriptor s | edge-channels | ns / edge-channel | cycles / edge-channel | % FMA peak |\n"
     << "|---|---|---|---|---|---|---|\n";
  for (const Row& r : rows) {
    if (!r.has_phase || r.edge_channels <= 0) continue;
    const double t = r.phase.embedding + r.phase.embedding_backward;
    const double ns = 1e9 * t / r.edge_channels;
    md << "| " << r.natoms << " | " << r.mode << " | " << std::setprecision(4) << t << " | "
       << std::setprecision(0) << r.edge_channels << " | " << std::setprecision(3) << ns << " | ";
    if (ghz > 0) md << std::setprecision(2) << ns * ghz << " | "; else md << "- | ";
    md << std::setprecision(1) << 100.0 * r.edge_channels * kDescriptorFmas / (fma_peak * t)
       << "% |\n";
  }
  md << "\nGraph construction (build_periodic_graph, not included above): ";
  for (const auto& [n, t] : graph_time) md << n << " atoms " << std::setprecision(4) << t << " s; ";
  md << "\n";
  std::cout << "\n" << md.str();
  if (!o.markdown.empty()) {
    std::ofstream f(o.markdown);
    if (!f) throw Error("cannot write " + o.markdown);
    f << md.str();
  }
}

}  // namespace

void register_bench(CLI::App& app) {
  auto opt = std::make_shared<Options>();
  CLI::App* c = app.add_subcommand(
      "bench", "Energy+force throughput of every execution mode side by side (and LibTorch)");
  c->add_option("--fp32", opt->fp32, "FP32 model file")->required()->check(CLI::ExistingFile);
  c->add_option("--int8", opt->int8, "int8 model file (also runs its weight-only mode)")
      ->check(CLI::ExistingFile);
  c->add_option("--mixed", opt->mixed, "mixed-precision model file")->check(CLI::ExistingFile);
  add_data_option(c, "--data", opt->data, "DeePMD system directory holding the frame to replicate")->required();
  c->add_option("--frame", opt->frame, "frame index in --data")->capture_default_str();
  c->add_option("--replicas", opt->replicas, "replications n (n^3 copies of the frame)")
      ->delimiter(',')->capture_default_str();
  c->add_option("--repeats", opt->repeats, "timed calls per mode (median reported)")
      ->capture_default_str()->check(CLI::PositiveNumber);
  add_threads_option(c, opt->threads, "OpenMP / LibTorch threads")->capture_default_str()->check(CLI::PositiveNumber);
  c->add_flag("!--no-torch", opt->torch, "skip the LibTorch module");
  c->add_option("--modes", opt->only, "run only these: fp32, weight-only, w8a16, int8, mixed, libtorch")
      ->delimiter(',')
      ->check(CLI::IsMember({"fp32", "weight-only", "w8a16", "int8", "mixed", "libtorch"}));
  c->add_option("--markdown", opt->markdown, "also write the table to this file");
  c->callback([opt] { run(*opt); });
}

}  // namespace qnn::cli
