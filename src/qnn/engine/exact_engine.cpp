// The floating-point engine (docs/model.md eq. S..B). The kernels are templated on the Real
// type and on the Kokkos execution space; Engine<Real> picks the space at run time.
//
// Data flow of one compute() call:
//   graph upload -> per chunk of centre atoms: edge_geometry, embed_forward, descriptor,
//   fit_forward, fit_backward, descriptor_backward, edge_backward (g_ij into a whole-graph
//   buffer) -> force_gather over all atoms (own edges + reverse index, fixed order) ->
//   energy and virial summed on the host in atom order.
// No atomics anywhere, so every result is independent of the thread count and of the chunking.
//
// Reverse index: the graph's own (graph.build_reverse_index()) is used when present and
// checked against the neighbour lists (a stale one throws qnn::Error); a graph without one
// (empty rev_offsets) gets a private index built here, in the same order.
#include "qnn/engine/exact_engine.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <Kokkos_Core.hpp>

#include "qnn/engine/embedding_table.hpp"  // embedding_exact: the empty-slot term
#include "qnn/error.hpp"
#include "qnn/engine/network_ops.hpp"

namespace qnn {
namespace {

// ============================================================================ packed networks

// One dense layer as the kernels see it (eq. G, eq. F): offsets into the packed parameters of
// its net family and into the per-row activation buffers.
struct LayerDesc {
  int in = 0;
  int out = 0;
  int w = 0;         // offset of W (in, out), row-major
  int b = 0;         // offset of b (out)
  int dt = -1;       // offset of dt (out); -1 unless Residual::Timestep
  int act = 0;       // offset of this layer's outputs in a row of the t/y buffers
  int residual = 0;  // static_cast<int>(Residual)
  int tanh = 1;      // 1: tanh, 0: linear
};

constexpr int kResNone = static_cast<int>(Residual::None);
constexpr int kResIdentity = static_cast<int>(Residual::Identity);
constexpr int kResDoubling = static_cast<int>(Residual::Doubling);
constexpr int kResTimestep = static_cast<int>(Residual::Timestep);
constexpr int kResDoublingTimestep = static_cast<int>(Residual::DoublingTimestep);
constexpr double kMinDistance = kMinPairDistance;  // Å; closer pairs are rejected as overlapping atoms

// A family of nets (one per species) flattened for the kernels.
template <class Real>
struct PackedNets {
  std::vector<Real> params;        // all W, b, dt, converted to Real
  std::vector<LayerDesc> layers;   // (nlayers)
  std::vector<int> first;          // (nnets + 1) layer range of each net
  int row_width = 0;               // max over nets of the summed layer widths
};

// Packs `nets` and checks the shapes the kernels rely on: a chain in_0 -> ... -> out_last
// with in_0 == `in0` and out_last == `out_last`, residual kinds consistent with the widths.
template <class Real>
PackedNets<Real> pack_nets(const std::vector<Net>& nets, const std::string& family, int in0,
                           int out_last) {
  PackedNets<Real> p;
  p.first.push_back(0);
  for (std::size_t n = 0; n < nets.size(); ++n) {
    const auto& layers = nets[n].layers;
    auto fail = [&](std::size_t l, const std::string& why) {
      std::ostringstream os;
      os << "model: " << family << " net " << n << ", layer " << l << ": " << why;
      throw Error(os.str());
    };
    if (layers.empty()) fail(0, "the net has no layers");
    int act = 0;
    int prev_out = in0;
    for (std::size_t l = 0; l < layers.size(); ++l) {
      const DenseLayer& d = layers[l];
      if (d.in != prev_out || d.out <= 0)
        fail(l, "shape " + std::to_string(d.in) + " -> " + std::to_string(d.out) +
                    " does not follow the previous width " + std::to_string(prev_out));
      if (d.weight.size() != static_cast<std::size_t>(d.in) * d.out ||
          d.bias.size() != static_cast<std::size_t>(d.out))
        fail(l, "weight/bias sizes do not match the shape");
      const bool ok =
          d.residual == Residual::None ||
          (d.residual == Residual::Identity && d.out == d.in) ||
          (d.residual == Residual::Doubling && d.out == 2 * d.in) ||
          (d.residual == Residual::Timestep && d.out == d.in &&
           d.dt.size() == static_cast<std::size_t>(d.out)) ||
          (d.residual == Residual::DoublingTimestep && d.out == 2 * d.in &&
           d.dt.size() == static_cast<std::size_t>(d.out));
      if (!ok)
        fail(l, std::string("residual '") + to_string(d.residual) + "' does not fit shape " +
                    std::to_string(d.in) + " -> " + std::to_string(d.out));
      if (p.params.size() + d.weight.size() + 2 * d.bias.size() > 0x7fffffffu)
        fail(l, "too many parameters for 32-bit offsets");
      LayerDesc L;
      L.in = d.in;
      L.out = d.out;
      L.w = static_cast<int>(p.params.size());
      p.params.insert(p.params.end(), d.weight.begin(), d.weight.end());
      L.b = static_cast<int>(p.params.size());
      p.params.insert(p.params.end(), d.bias.begin(), d.bias.end());
      if (d.residual == Residual::Timestep || d.residual == Residual::DoublingTimestep) {
        L.dt = static_cast<int>(p.params.size());
        p.params.insert(p.params.end(), d.dt.begin(), d.dt.end());
      }
      L.act = act;
      L.residual = static_cast<int>(d.residual);
      L.tanh = d.activation == Activation::Tanh ? 1 : 0;
      act += d.out;
      prev_out = d.out;
      p.layers.push_back(L);
    }
    if (prev_out != out_last)
      fail(layers.size() - 1, "the net ends in width " + std::to_string(prev_out) +
                                  ", expected " + std::to_string(out_last));
    p.row_width = std::max(p.row_width, act);
    p.first.push_back(static_cast<int>(p.layers.size()));
  }
  return p;
}

// ============================================================================ device functions

// Forward of one dense layer (eq. G / eq. F): t = act(x·W + b) (out), y = residual(x, t) (out).
template <class Real>
KOKKOS_INLINE_FUNCTION void dense_forward(const LayerDesc& L, const Real* p, const Real* x,
                                          Real* t, Real* y) {
  const Real* W = p + L.w;
  const Real* b = p + L.b;
  for (int o = 0; o < L.out; ++o) t[o] = b[o];
  for (int k = 0; k < L.in; ++k) {
    const Real xk = x[k];
    const Real* wk = W + static_cast<std::size_t>(k) * L.out;
    for (int o = 0; o < L.out; ++o) t[o] += xk * wk[o];
  }
  if (L.tanh)
    for (int o = 0; o < L.out; ++o) t[o] = std::tanh(t[o]);
  if (L.residual == kResNone) {
    for (int o = 0; o < L.out; ++o) y[o] = t[o];
  } else if (L.residual == kResIdentity) {
    for (int o = 0; o < L.out; ++o) y[o] = x[o] + t[o];
  } else if (L.residual == kResDoubling) {
    for (int o = 0; o < L.in; ++o) y[o] = x[o] + t[o];
    for (int o = 0; o < L.in; ++o) y[L.in + o] = x[o] + t[L.in + o];
  } else if (L.residual == kResDoublingTimestep) {
    const Real* dt = p + L.dt;
    for (int o = 0; o < L.in; ++o) y[o] = x[o] + dt[o] * t[o];
    for (int o = 0; o < L.in; ++o) y[L.in + o] = x[o] + dt[L.in + o] * t[L.in + o];
  } else {
    const Real* dt = p + L.dt;
    for (int o = 0; o < L.out; ++o) y[o] = x[o] + dt[o] * t[o];
  }
}

// Backward of one dense layer, in place: reads gy = dE/dy (out) and the stored t (out),
// overwrites t with dE/dz and writes gx = dE/dx (in). gx must not alias gy or t.
template <class Real>
KOKKOS_INLINE_FUNCTION void dense_backward(const LayerDesc& L, const Real* p, const Real* gy,
                                           Real* t, Real* gx) {
  const Real* W = p + L.w;
  if (L.tanh) {
    for (int o = 0; o < L.out; ++o) t[o] = gy[o] * (Real(1) - t[o] * t[o]);
  } else {
    for (int o = 0; o < L.out; ++o) t[o] = gy[o];
  }
  if (L.residual == kResTimestep || L.residual == kResDoublingTimestep) {
    const Real* dt = p + L.dt;
    for (int o = 0; o < L.out; ++o) t[o] *= dt[o];
  }
  for (int k = 0; k < L.in; ++k) {
    const Real* wk = W + static_cast<std::size_t>(k) * L.out;
    Real acc = 0;
#ifdef _OPENMP
#pragma omp simd reduction(+ : acc)
#endif
    for (int o = 0; o < L.out; ++o) acc += wk[o] * t[o];
    gx[k] = acc;
  }
  if (L.residual == kResIdentity || L.residual == kResTimestep) {
    for (int k = 0; k < L.in; ++k) gx[k] += gy[k];
  } else if (L.residual == kResDoubling || L.residual == kResDoublingTimestep) {
    for (int k = 0; k < L.in; ++k) gx[k] += gy[k] + gy[L.in + k];
  }
}

// Per-edge geometry row (chunk buffer `geo`).
enum GeoColumn : int {
  kRhat = 0,    // R̂ (4)
  kShat = 4,    // ŝ
  kX = 5,       // x_ij (3)
  kR = 8,       // r
  kS = 9,       // s(r)
  kDs = 10,     // ds/dr
  kActive = 11, // 1 when r < rcut, else 0 (the edge contributes nothing)
  kGeoWidth = 12
};

// ============================================================================ host helpers

// Grows a view to at least n0 rows (with ~5% padding); never shrinks.
template <class View>
void ensure_rows(View& v, std::size_t n0) {
  if (v.extent(0) < n0) Kokkos::realloc(v, n0 + n0 / 20 + 1);
}
template <class View>
void ensure_rows(View& v, std::size_t n0, std::size_t n1) {
  if (v.extent(0) < n0 || v.extent(1) != n1) Kokkos::realloc(v, n0 + n0 / 20 + 1, n1);
}

// Copies a host vector into the first src.size() entries of a 1-D view (grown as needed).
template <class T, class View>
void upload(View& v, const std::vector<T>& src) {
  ensure_rows(v, src.size());
  Kokkos::View<const T*, Kokkos::HostSpace, Kokkos::MemoryTraits<Kokkos::Unmanaged>> h(
      src.data(), src.size());
  Kokkos::deep_copy(Kokkos::subview(v, std::make_pair(std::size_t(0), src.size())), h);
}

// Copies the first n0 rows of a 2-D view into dst (resized to n0 * extent(1)).
template <class View>
void download(const View& v, std::size_t n0, std::vector<double>& dst) {
  const std::size_t n1 = v.extent(1);
  dst.assign(n0 * n1, 0.0);
  if (n0 == 0) return;
  Kokkos::View<double**, Kokkos::LayoutRight, Kokkos::HostSpace,
               Kokkos::MemoryTraits<Kokkos::Unmanaged>>
      h(dst.data(), n0, n1);
  Kokkos::deep_copy(h, Kokkos::subview(v, std::make_pair(std::size_t(0), n0), Kokkos::ALL()));
}

// True when the graph carries a reverse index of the right size; throws if it is stale.
bool graph_has_reverse_index(const NeighborGraph& g) {
  if (g.rev_offsets.empty() && g.rev_edges.empty()) return false;
  const int nt = g.ntotal;
  const int ne = g.nedges();
  const std::string stale =
      "neighbour graph: the reverse index does not match the neighbour lists; call "
      "build_reverse_index() after changing them";
  if (g.rev_offsets.size() != static_cast<std::size_t>(nt) + 1 ||
      g.rev_edges.size() != static_cast<std::size_t>(ne) || g.rev_offsets[0] != 0 ||
      g.rev_offsets[nt] != ne)
    throw Error(stale);
  for (int a = 0; a < nt; ++a) {
    int prev = -1;
    if (g.rev_offsets[a + 1] < g.rev_offsets[a]) throw Error(stale);
    for (int q = g.rev_offsets[a]; q < g.rev_offsets[a + 1]; ++q) {
      const int e = g.rev_edges[q];
      if (e <= prev || e >= ne || g.neighbors[e] != a) throw Error(stale);
      prev = e;
    }
  }
  return true;
}

// ============================================================================ backends

class BackendBase {
 public:
  virtual ~BackendBase() = default;
  virtual void compute(const NeighborGraph& g, EvalResult& out, const EvalOptions& opt) = 0;
};

// The kernels for one (Real, execution space) pair; all buffers live here and are reused.
template <class Real, class Space>
class Backend final : public BackendBase {
  using Mem = typename Space::memory_space;
  template <class T>
  using V1 = Kokkos::View<T*, Kokkos::LayoutRight, Mem>;
  template <class T>
  using V2 = Kokkos::View<T**, Kokkos::LayoutRight, Mem>;
  using Policy = Kokkos::RangePolicy<Space, Kokkos::IndexType<int>>;

 public:
  explicit Backend(const Model& m);
  void compute(const NeighborGraph& g, EvalResult& out, const EvalOptions& opt) override;

 private:
  void run_chunk(int a0, int a1, int e0, int e1);
  // Adds the time since the last lap to *slot (only when timing is on).
  void lap(double PhaseTimes::*slot);
  PhaseTimes* times_ = nullptr;
  std::chrono::steady_clock::time_point t_;
  void gather(int nlocal, int ntotal, bool atom_virial);

  // model constants
  int nspecies_ = 0;
  int epair_ = 0;               // embedding net of edge (c, a): epair_*c + a (0: one side; S: pairs)
  int m1_ = 0;                  // M1
  int m2_ = 0;                  // M2
  double rc_ = 0.0;
  double rs_ = 0.0;
  Real inv_nc_ = 0;             // 1 / Nc
  int embed_width_ = 0;         // summed widths of an embedding net
  int fit_width_ = 0;           // summed widths of a fitting net
  V1<Real> d_eparam_;           // packed embedding parameters
  V1<LayerDesc> d_elayers_;     // (n embedding layers)
  V1<int> d_efirst_;            // (n embedding nets + 1)
  V1<int> d_goff_;              // (n embedding nets) offset of G in an embedding row, per net
  V1<Real> d_fparam_;           // packed fitting parameters
  V1<LayerDesc> d_flayers_;     // (n fitting layers)
  V1<int> d_ffirst_;            // (S + 1)
  V2<double> d_norm_;           // (S * S, 3) mean_s, 1/std_s, 1/std_r per [centre][neighbour]
  V1<double> d_bias_;           // (S) energy bias
  // env_mat "deepmd": R̂₀ = ŝ, and the empty slots of species a add (sel_a − n_ia) pad(c, a)
  // to column 0 of T_i, pad(c, a)[m] = G_a(ŝ₀)[m] ŝ₀ with ŝ₀ = −mean_s/std_s of the pair.
  bool deepmd_ = false;
  V2<Real> d_pad_;              // (S * S, M1)
  V1<int> d_sel_;               // (S)

  // graph
  V1<double> d_pos_;            // (ntotal * 3)
  V1<int> d_species_;           // (ntotal)
  V1<int> d_offsets_;           // (nlocal + 1)
  V1<int> d_neighbors_;         // (nedges)
  V1<int> d_centre_;            // (nedges) centre atom of each edge
  V1<int> d_rev_offsets_;       // (ntotal + 1)
  V1<int> d_rev_edges_;         // (nedges)
  std::vector<int> h_rev_offsets_, h_rev_edges_;  // private reverse index, when needed
  std::vector<std::pair<int, int>> chunks_;       // atom ranges of the chunks of this call
  std::vector<double> h_eatom_, h_vcentre_;       // host copies of the per-atom results

  // chunk scratch (ce: edges of a chunk, ca: atoms of a chunk)
  V2<Real> d_geo_;              // (ce, kGeoWidth)
  V2<Real> d_et_;               // (ce, embed_width) activations t, then dE/dz
  V2<Real> d_ey_;               // (ce, embed_width) layer outputs y, then dE/dy
  V2<Real> d_ft_;               // (ca, fit_width)
  V2<Real> d_fy_;               // (ca, fit_width)
  V2<Real> d_T_;                // (ca, M1 * 4)
  V2<Real> d_D_;                // (ca, M1 * M2)
  V2<Real> d_gD_;               // (ca, M1 * M2)
  V2<Real> d_gT_;               // (ca, M1 * 4)

  // results
  V2<Real> d_g_;                // (nedges, 3) dE/dx_ij
  V1<double> d_eatom_;          // (nlocal)
  V2<double> d_force_;          // (ntotal, 3)
  V2<double> d_vcentre_;        // (nlocal, 6) -sum over own edges of x ⊗ g
  V2<double> d_vatom_;          // (ntotal, 6)
};

// Copies the model into views, converted to Real (done once).
template <class Real, class Space>
Backend<Real, Space>::Backend(const Model& m)
    : d_eparam_("qnn:eparam", 0), d_elayers_("qnn:elayers", 0), d_efirst_("qnn:efirst", 0),
      d_goff_("qnn:goff", 0), d_fparam_("qnn:fparam", 0), d_flayers_("qnn:flayers", 0),
      d_ffirst_("qnn:ffirst", 0), d_norm_("qnn:norm", 0, 3), d_bias_("qnn:bias", 0),
      d_pad_("qnn:pad", 0, 0), d_sel_("qnn:sel", 0),
      d_pos_("qnn:pos", 0), d_species_("qnn:species", 0), d_offsets_("qnn:offsets", 0),
      d_neighbors_("qnn:neighbors", 0), d_centre_("qnn:centre", 0),
      d_rev_offsets_("qnn:rev_offsets", 0), d_rev_edges_("qnn:rev_edges", 0),
      d_geo_("qnn:geo", 0, kGeoWidth), d_et_("qnn:embed_t", 0, 0), d_ey_("qnn:embed_y", 0, 0),
      d_ft_("qnn:fit_t", 0, 0), d_fy_("qnn:fit_y", 0, 0), d_T_("qnn:T", 0, 0),
      d_D_("qnn:D", 0, 0), d_gD_("qnn:gD", 0, 0), d_gT_("qnn:gT", 0, 0), d_g_("qnn:g", 0, 3),
      d_eatom_("qnn:eatom", 0), d_force_("qnn:force", 0, 3), d_vcentre_("qnn:vcentre", 0, 6),
      d_vatom_("qnn:vatom", 0, 6) {
  const int S = m.nspecies();
  nspecies_ = S;
  m1_ = m.m1();
  m2_ = m.axis_neuron;
  rc_ = m.rcut;
  rs_ = m.rcut_smth;
  if (S <= 0) throw Error("model: no species");
  if (m1_ <= 0 || m2_ <= 0 || m2_ > m1_)
    throw Error("model: needs 0 < axis_neuron <= last embedding width");
  if (!(rs_ >= 0.0 && rs_ < rc_)) throw Error("model: needs 0 <= rcut_smth < rcut");
  if (!(m.neighbor_norm > 0.0)) throw Error("model: neighbor_norm must be positive");
  inv_nc_ = static_cast<Real>(1.0 / m.neighbor_norm);
  if (m.embed.size() != static_cast<std::size_t>(m.n_embed_nets()) ||
      m.fit.size() != static_cast<std::size_t>(S))
    throw Error("model: needs one embedding and one fitting net per species");
  const std::size_t SS = static_cast<std::size_t>(S) * S;
  if (m.mean_s.size() != SS || m.std_s.size() != SS || m.std_r.size() != SS ||
      m.energy_bias.size() != static_cast<std::size_t>(S))
    throw Error("model: normalisation statistics or energy bias have the wrong size");

  const PackedNets<Real> e = pack_nets<Real>(m.embed, "embedding", 1, m1_);
  const PackedNets<Real> f = pack_nets<Real>(m.fit, "fitting", m1_ * m2_, 1);
  embed_width_ = e.row_width;
  fit_width_ = f.row_width;
  upload(d_eparam_, e.params);
  upload(d_elayers_, e.layers);
  upload(d_efirst_, e.first);
  epair_ = m.type_one_side ? 0 : S;
  std::vector<int> goff(m.embed.size());
  for (std::size_t n = 0; n < goff.size(); ++n) goff[n] = e.layers[e.first[n + 1] - 1].act;
  upload(d_goff_, goff);
  upload(d_fparam_, f.params);
  upload(d_flayers_, f.layers);
  upload(d_ffirst_, f.first);

  Kokkos::realloc(d_norm_, SS, 3);
  auto h_norm = Kokkos::create_mirror_view(d_norm_);
  for (std::size_t p = 0; p < SS; ++p) {
    if (!(m.std_s[p] > 0.0) || !(m.std_r[p] > 0.0))
      throw Error("model: std_s and std_r must be positive");
    h_norm(p, 0) = m.mean_s[p];
    h_norm(p, 1) = 1.0 / m.std_s[p];
    h_norm(p, 2) = 1.0 / m.std_r[p];
  }
  Kokkos::deep_copy(d_norm_, h_norm);
  upload(d_bias_, m.energy_bias);

  deepmd_ = m.deepmd_env_mat();
  if (deepmd_) {
    if (m.sel.size() != static_cast<std::size_t>(S)) throw Error("model: env_mat 'deepmd' needs sel for every species");
    Kokkos::realloc(d_pad_, SS, static_cast<std::size_t>(m1_));
    auto h_pad = Kokkos::create_mirror_view(d_pad_);
    std::vector<double> g(static_cast<std::size_t>(m1_)), dg(g.size()), d2g(g.size());
    for (int c = 0; c < S; ++c) {
      for (int a = 0; a < S; ++a) {
        const std::size_t p = static_cast<std::size_t>(c * S + a);
        const double s0 = -m.mean_s[p] / m.std_s[p];
        embedding_exact(m, m.embed_index(c, a), s0, g.data(), dg.data(), d2g.data());
        for (int k = 0; k < m1_; ++k) h_pad(p, static_cast<std::size_t>(k)) = static_cast<Real>(g[static_cast<std::size_t>(k)] * s0);
      }
    }
    Kokkos::deep_copy(d_pad_, h_pad);
    upload(d_sel_, m.sel);
  }
}

// One call: upload, chunked forward/backward, gather, download (see the file banner).
template <class Real, class Space>
void Backend<Real, Space>::compute(const NeighborGraph& g, EvalResult& out,
                                   const EvalOptions& opt) {
  const int nlocal = g.nlocal;
  const int ntotal = g.ntotal;
  const int nedges = g.nedges();
  times_ = opt.times;
  t_ = std::chrono::steady_clock::now();

  upload(d_pos_, g.positions);
  upload(d_species_, g.species);
  if (nlocal > 0) upload(d_offsets_, g.offsets);
  upload(d_neighbors_, g.neighbors);
  if (graph_has_reverse_index(g)) {
    upload(d_rev_offsets_, g.rev_offsets);
    upload(d_rev_edges_, g.rev_edges);
  } else {
    build_reverse_index(g, h_rev_offsets_, h_rev_edges_);
    upload(d_rev_offsets_, h_rev_offsets_);
    upload(d_rev_edges_, h_rev_edges_);
  }
  ensure_rows(d_centre_, nedges);
  ensure_rows(d_g_, nedges, 3);
  ensure_rows(d_eatom_, nlocal);
  ensure_rows(d_force_, ntotal, 3);
  ensure_rows(d_vcentre_, nlocal, 6);
  if (opt.atom_virial) ensure_rows(d_vatom_, ntotal, 6);

  // edge -> centre map
  {
    const auto offsets = d_offsets_;
    const auto centre = d_centre_;
    Kokkos::parallel_for(
        "qnn:edge_centre", Policy(0, nlocal), KOKKOS_LAMBDA(const int i) {
          for (int e = offsets(i); e < offsets(i + 1); ++e) centre(e) = i;
        });
  }

  // Chunks of consecutive centre atoms, bounded in edges and atoms (at least one atom each).
  const std::size_t edge_bytes = sizeof(Real) * (kGeoWidth + 2 * embed_width_);
  const std::size_t atom_bytes =
      sizeof(Real) * (2 * fit_width_ + 2 * m1_ * m2_ + 8 * m1_);
  const std::size_t budget = std::size_t(128) << 20;
  const long cap_e = opt.chunk_edges > 0
                         ? opt.chunk_edges
                         : static_cast<long>(std::max<std::size_t>(1, budget / edge_bytes));
  const long cap_a = static_cast<long>(std::max<std::size_t>(1, budget / atom_bytes));
  std::vector<std::pair<int, int>>& chunks = chunks_;
  chunks.clear();
  int max_ce = 0;
  int max_ca = 0;
  for (int a0 = 0; a0 < nlocal;) {
    int a1 = a0 + 1;
    while (a1 < nlocal && a1 - a0 < cap_a && g.offsets[a1 + 1] - g.offsets[a0] <= cap_e) ++a1;
    chunks.emplace_back(a0, a1);
    max_ca = std::max(max_ca, a1 - a0);
    max_ce = std::max(max_ce, g.offsets[a1] - g.offsets[a0]);
    a0 = a1;
  }
  ensure_rows(d_geo_, max_ce, kGeoWidth);
  ensure_rows(d_et_, max_ce, embed_width_);
  ensure_rows(d_ey_, max_ce, embed_width_);
  ensure_rows(d_ft_, max_ca, fit_width_);
  ensure_rows(d_fy_, max_ca, fit_width_);
  ensure_rows(d_T_, max_ca, 4 * m1_);
  ensure_rows(d_D_, max_ca, m1_ * m2_);
  ensure_rows(d_gD_, max_ca, m1_ * m2_);
  ensure_rows(d_gT_, max_ca, 4 * m1_);

  lap(&PhaseTimes::geometry);
  for (const auto& c : chunks)
    run_chunk(c.first, c.second, g.offsets[c.first], g.offsets[c.second]);
  gather(nlocal, ntotal, opt.atom_virial);
  Space().fence();
  lap(&PhaseTimes::gather);

  // Results, with totals summed in atom order on the host.
  std::vector<double>& eatom = h_eatom_;
  eatom.resize(static_cast<std::size_t>(nlocal));
  if (nlocal > 0) {
    Kokkos::View<double*, Kokkos::HostSpace, Kokkos::MemoryTraits<Kokkos::Unmanaged>> h(
        eatom.data(), eatom.size());
    Kokkos::deep_copy(h, Kokkos::subview(d_eatom_, std::make_pair(0, nlocal)));
  }
  out.energy = 0.0;
  for (double e : eatom) out.energy += e;
  if (opt.atom_energy)
    out.atom_energy.assign(eatom.begin(), eatom.end());
  else
    out.atom_energy.clear();
  download(d_force_, ntotal, out.force);
  std::vector<double>& vcentre = h_vcentre_;
  download(d_vcentre_, nlocal, vcentre);
  out.virial.fill(0.0);
  for (int i = 0; i < nlocal; ++i)
    for (int c = 0; c < 6; ++c) out.virial[c] += vcentre[6 * static_cast<std::size_t>(i) + c];
  if (opt.atom_virial)
    download(d_vatom_, ntotal, out.atom_virial);
  else
    out.atom_virial.clear();
}

template <class Real, class Space>
void Backend<Real, Space>::lap(double PhaseTimes::*slot) {
  if (!times_) return;
  Space().fence();
  const auto now = std::chrono::steady_clock::now();
  times_->*slot += std::chrono::duration<double>(now - t_).count();
  t_ = now;
}

// Forward and backward of the centre atoms [a0, a1) whose edges are [e0, e1); leaves dE/dx_ij
// of those edges in d_g_.
template <class Real, class Space>
void Backend<Real, Space>::run_chunk(int a0, int a1, int e0, int e1) {
  const auto pos = d_pos_;
  const auto species = d_species_;
  const auto offsets = d_offsets_;
  const auto neighbors = d_neighbors_;
  const auto centre = d_centre_;
  const auto norm = d_norm_;
  const auto geo = d_geo_;
  const auto et = d_et_;
  const auto ey = d_ey_;
  const auto eparam = d_eparam_;
  const auto elayers = d_elayers_;
  const auto efirst = d_efirst_;
  const auto goff = d_goff_;
  const auto fparam = d_fparam_;
  const auto flayers = d_flayers_;
  const auto ffirst = d_ffirst_;
  const auto bias = d_bias_;
  const auto ft = d_ft_;
  const auto fy = d_fy_;
  const auto dT = d_T_;
  const auto dD = d_D_;
  const auto gD = d_gD_;
  const auto gT = d_gT_;
  const auto eatom = d_eatom_;
  const auto gedge = d_g_;
  const int S = nspecies_;
  const int epair = epair_;
  const int m1 = m1_;
  const int m2 = m2_;
  const double rc = rc_;
  const double rs = rs_;
  const Real inv_nc = inv_nc_;
  const bool deepmd = deepmd_;
  const auto pad = d_pad_;
  const auto sel = d_sel_;

  // eq. S, eq. R
  Kokkos::parallel_for(
      "qnn:edge_geometry", Policy(e0, e1), KOKKOS_LAMBDA(const int e) {
        const int le = e - e0;
        const int i = centre(e);
        const int j = neighbors(e);
        const double dx = pos(3 * j) - pos(3 * i);
        const double dy = pos(3 * j + 1) - pos(3 * i + 1);
        const double dz = pos(3 * j + 2) - pos(3 * i + 2);
        const double r = std::sqrt(dx * dx + dy * dy + dz * dz);
        double s = 0.0;
        double ds = 0.0;
        switch_function(r, rs, rc, s, ds);
        const int pair = species(i) * S + species(j);
        const double inv_std_s = norm(pair, 1);
        const double sr = r < rc ? s / r * norm(pair, 2) : 0.0;
        geo(le, kRhat + 0) = static_cast<Real>((deepmd ? s - norm(pair, 0) : s) * inv_std_s);
        geo(le, kRhat + 1) = static_cast<Real>(sr * dx);
        geo(le, kRhat + 2) = static_cast<Real>(sr * dy);
        geo(le, kRhat + 3) = static_cast<Real>(sr * dz);
        geo(le, kShat) = static_cast<Real>((s - norm(pair, 0)) * inv_std_s);
        geo(le, kX + 0) = static_cast<Real>(dx);
        geo(le, kX + 1) = static_cast<Real>(dy);
        geo(le, kX + 2) = static_cast<Real>(dz);
        geo(le, kR) = static_cast<Real>(r);
        geo(le, kS) = static_cast<Real>(s);
        geo(le, kDs) = static_cast<Real>(ds);
        geo(le, kActive) = r < rc ? Real(1) : Real(0);
      });

  // Coincident atoms make s = 1/r infinite: refuse them instead of returning NaN.
  double rmin = 0.0;
  Kokkos::parallel_reduce(
      "qnn:edge_min_distance", Policy(e0, e1),
      KOKKOS_LAMBDA(const int e, double& m) {
        const double r = static_cast<double>(geo(e - e0, kR));
        if (r < m) m = r;
      },
      Kokkos::Min<double>(rmin));
  if (e1 > e0 && !(rmin > kMinDistance)) {
    throw Error(overlap_message(rmin));
  }

  lap(&PhaseTimes::geometry);

  // eq. G: G_ij = EmbedNet_{t_j}(ŝ_ij); inactive edges get G = 0 and are skipped later.
  Kokkos::parallel_for(
      "qnn:embed_forward", Policy(e0, e1), KOKKOS_LAMBDA(const int e) {
        const int le = e - e0;
        const int a = epair * species(centre(e)) + species(neighbors(e));  // embedding net
        Real* t = &et(le, 0);
        Real* y = &ey(le, 0);
        const int l0 = efirst(a);
        const int l1 = efirst(a + 1);
        if (geo(le, kActive) == Real(0)) {
          for (int m = 0; m < m1; ++m) y[goff(a) + m] = 0;
          return;
        }
        const Real shat = geo(le, kShat);
        const Real* x = &shat;
        for (int l = l0; l < l1; ++l) {
          const LayerDesc L = elayers(l);
          dense_forward(L, eparam.data(), x, t + L.act, y + L.act);
          x = y + L.act;
        }
      });

  lap(&PhaseTimes::embedding);

  // eq. D: T_i = (1/Nc) Σ_j G_ij ⊗ R̂_ij, D_i[m][n] = Σ_k T_i[m][k] T_i[n][k] (n < M2)
  Kokkos::parallel_for(
      "qnn:descriptor", Policy(a0, a1), KOKKOS_LAMBDA(const int i) {
        const int la = i - a0;
        Real* T = &dT(la, 0);
        for (int q = 0; q < 4 * m1; ++q) T[q] = 0;
        for (int e = offsets(i); e < offsets(i + 1); ++e) {
          const int le = e - e0;
          if (geo(le, kActive) == Real(0)) continue;
          const Real* G = &ey(le, 0) + goff(epair * species(i) + species(neighbors(e)));
          const Real r0 = geo(le, kRhat + 0);
          const Real r1 = geo(le, kRhat + 1);
          const Real r2 = geo(le, kRhat + 2);
          const Real r3 = geo(le, kRhat + 3);
          for (int m = 0; m < m1; ++m) {
            T[4 * m + 0] += G[m] * r0;
            T[4 * m + 1] += G[m] * r1;
            T[4 * m + 2] += G[m] * r2;
            T[4 * m + 3] += G[m] * r3;
          }
        }
        if (deepmd) {  // empty slots, species by species
          const int c = species(i);
          for (int a = 0; a < S; ++a) {
            int n = 0;
            for (int e = offsets(i); e < offsets(i + 1); ++e)
              n += (species(neighbors(e)) == a && geo(e - e0, kActive) != Real(0)) ? 1 : 0;
            const Real empty = static_cast<Real>(sel(a) - n);
            for (int m = 0; m < m1; ++m) T[4 * m + 0] += empty * pad(c * S + a, m);
          }
        }
        for (int q = 0; q < 4 * m1; ++q) T[q] *= inv_nc;
        descriptor_from_T(m1, m2, T, &dD(la, 0));
      });

  lap(&PhaseTimes::descriptor);

  // eq. F: E_i = FitNet_{t_i}(D_i) + bias_{t_i}
  Kokkos::parallel_for(
      "qnn:fit_forward", Policy(a0, a1), KOKKOS_LAMBDA(const int i) {
        const int la = i - a0;
        const int c = species(i);
        Real* t = &ft(la, 0);
        Real* y = &fy(la, 0);
        const Real* x = &dD(la, 0);
        for (int l = ffirst(c); l < ffirst(c + 1); ++l) {
          const LayerDesc L = flayers(l);
          dense_forward(L, fparam.data(), x, t + L.act, y + L.act);
          x = y + L.act;
        }
        eatom(i) = static_cast<double>(x[0]) + bias(c);
      });

  // eq. B step 1: g_D = dE_i/dD_i
  Kokkos::parallel_for(
      "qnn:fit_backward", Policy(a0, a1), KOKKOS_LAMBDA(const int i) {
        const int la = i - a0;
        const int c = species(i);
        Real* t = &ft(la, 0);
        Real* y = &fy(la, 0);
        const int l0 = ffirst(c);
        const int l1 = ffirst(c + 1);
        y[flayers(l1 - 1).act] = Real(1);
        for (int l = l1 - 1; l >= l0; --l) {
          const LayerDesc L = flayers(l);
          Real* gx = l > l0 ? y + flayers(l - 1).act : &gD(la, 0);
          dense_backward(L, fparam.data(), y + L.act, t + L.act, gx);
        }
      });

  lap(&PhaseTimes::fitting);

  // eq. B step 2: g_T
  Kokkos::parallel_for(
      "qnn:descriptor_backward", Policy(a0, a1), KOKKOS_LAMBDA(const int i) {
        const int la = i - a0;
        descriptor_backward(m1, m2, &dT(la, 0), &gD(la, 0), &gT(la, 0));
      });

  lap(&PhaseTimes::descriptor);

  // eq. B steps 3-5: g_G, g_R̂, embedding backward, chain to x_ij
  Kokkos::parallel_for(
      "qnn:edge_backward", Policy(e0, e1), KOKKOS_LAMBDA(const int e) {
        const int le = e - e0;
        if (geo(le, kActive) == Real(0)) {
          gedge(e, 0) = 0;
          gedge(e, 1) = 0;
          gedge(e, 2) = 0;
          return;
        }
        const int i = centre(e);
        const int a = epair * species(i) + species(neighbors(e));  // embedding net
        const Real* gt = &gT(i - a0, 0);
        Real* t = &et(le, 0);
        Real* y = &ey(le, 0);
        Real* G = y + goff(a);
        Real R[4];
        for (int k = 0; k < 4; ++k) R[k] = geo(le, kRhat + k);
        Real gR[4] = {0, 0, 0, 0};
        for (int m = 0; m < m1; ++m)
          for (int k = 0; k < 4; ++k) gR[k] += gt[4 * m + k] * G[m];
        for (int k = 0; k < 4; ++k) gR[k] *= inv_nc;
        for (int m = 0; m < m1; ++m)
          G[m] = inv_nc * (gt[4 * m] * R[0] + gt[4 * m + 1] * R[1] + gt[4 * m + 2] * R[2] +
                           gt[4 * m + 3] * R[3]);
        Real gs = 0;
        const int l0 = efirst(a);
        for (int l = efirst(a + 1) - 1; l >= l0; --l) {
          const LayerDesc L = elayers(l);
          Real* gx = l > l0 ? y + elayers(l - 1).act : &gs;
          dense_backward(L, eparam.data(), y + L.act, t + L.act, gx);
        }
        const int pair = species(i) * S + species(neighbors(e));
        const Real inv_std_s = static_cast<Real>(norm(pair, 1));
        const Real inv_std_r = static_cast<Real>(norm(pair, 2));
        const Real r = geo(le, kR);
        const Real s = geo(le, kS);
        const Real ds = geo(le, kDs);
        const Real ex = geo(le, kX + 0) / r;
        const Real ey_ = geo(le, kX + 1) / r;
        const Real ez = geo(le, kX + 2) / r;
        const Real ge = gR[1] * ex + gR[2] * ey_ + gR[3] * ez;
        const Real radial = (gs + gR[0]) * ds * inv_std_s + (ds - s / r) * inv_std_r * ge;
        const Real tangential = s / r * inv_std_r;
        gedge(e, 0) = radial * ex + tangential * gR[1];
        gedge(e, 1) = radial * ey_ + tangential * gR[2];
        gedge(e, 2) = radial * ez + tangential * gR[3];
      });
  lap(&PhaseTimes::embedding_backward);
}

// eq. E: forces gathered per atom over its own edges (+g) and its reverse edges (−g), in
// fixed order; per-centre virial −Σ x⊗g and, on request, the per-atom virial.
template <class Real, class Space>
void Backend<Real, Space>::gather(int nlocal, int ntotal, bool atom_virial) {
  const auto pos = d_pos_;
  const auto offsets = d_offsets_;
  const auto neighbors = d_neighbors_;
  const auto centre = d_centre_;
  const auto rev_offsets = d_rev_offsets_;
  const auto rev_edges = d_rev_edges_;
  const auto gedge = d_g_;
  const auto force = d_force_;
  const auto vcentre = d_vcentre_;
  const auto vatom = d_vatom_;
  Kokkos::parallel_for(
      "qnn:force_gather", Policy(0, ntotal), KOKKOS_LAMBDA(const int a) {
        double f[3] = {0.0, 0.0, 0.0};
        double vo[6] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0};  // own edges (a is the centre)
        double vr[6] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0};  // reverse edges (a is the neighbour)
        if (a < nlocal) {
          for (int e = offsets(a); e < offsets(a + 1); ++e) {
            const int j = neighbors(e);
            double x[3];
            double gv[3];
            for (int d = 0; d < 3; ++d) {
              x[d] = pos(3 * j + d) - pos(3 * a + d);
              gv[d] = static_cast<double>(gedge(e, d));
              f[d] += gv[d];
            }
            vo[0] -= x[0] * gv[0];
            vo[1] -= x[1] * gv[1];
            vo[2] -= x[2] * gv[2];
            vo[3] -= x[0] * gv[1];
            vo[4] -= x[0] * gv[2];
            vo[5] -= x[1] * gv[2];
          }
          for (int c = 0; c < 6; ++c) vcentre(a, c) = vo[c];
        }
        for (int q = rev_offsets(a); q < rev_offsets(a + 1); ++q) {
          const int e = rev_edges(q);
          const int i = centre(e);
          double x[3];
          double gv[3];
          for (int d = 0; d < 3; ++d) {
            x[d] = pos(3 * a + d) - pos(3 * i + d);
            gv[d] = static_cast<double>(gedge(e, d));
            f[d] -= gv[d];
          }
          vr[0] -= x[0] * gv[0];
          vr[1] -= x[1] * gv[1];
          vr[2] -= x[2] * gv[2];
          vr[3] -= x[0] * gv[1];
          vr[4] -= x[0] * gv[2];
          vr[5] -= x[1] * gv[2];
        }
        for (int d = 0; d < 3; ++d) force(a, d) = f[d];
        if (atom_virial)
          for (int c = 0; c < 6; ++c) vatom(a, c) = 0.5 * (vo[c] + vr[c]);
      });
}

// Builds the backend for the requested execution space.
template <class Real>
std::unique_ptr<BackendBase> make_backend(const Model& m, ExecSpace space) {
  switch (space) {
    case ExecSpace::Serial:
#ifdef KOKKOS_ENABLE_SERIAL
      return std::make_unique<Backend<Real, Kokkos::Serial>>(m);
#else
      throw Error("this build of Kokkos has no Serial execution space");
#endif
    case ExecSpace::OpenMP:
#ifdef KOKKOS_ENABLE_OPENMP
      return std::make_unique<Backend<Real, Kokkos::OpenMP>>(m);
#else
      throw Error("this build of Kokkos has no OpenMP execution space; use ExecSpace::Serial");
#endif
  }
  throw Error("unknown execution space");
}

}  // namespace

// ============================================================================ Engine

template <class Real>
struct Engine<Real>::Impl {
  Model model;
  std::unique_ptr<BackendBase> backend;
};

// Validates the model and copies its weights to the chosen execution space.
template <class Real>
Engine<Real>::Engine(const Model& model, ExecSpace space) : impl_(std::make_unique<Impl>()) {
  model.validate("model");
  ensure_kokkos_initialized();
  impl_->model = model;
  impl_->backend = make_backend<Real>(impl_->model, space);
}

template <class Real>
Engine<Real>::~Engine() = default;

// Energy, forces and virial of the model on `graph` (docs/model.md eq. E).
template <class Real>
void Engine<Real>::compute(const NeighborGraph& graph, EvalResult& out, const EvalOptions& opt) {
  graph.validate(impl_->model.nspecies());
  impl_->backend->compute(graph, out, opt);
}

template <class Real>
const Model& Engine<Real>::model() const {
  return impl_->model;
}

template class Engine<float>;
template class Engine<double>;

}  // namespace qnn
