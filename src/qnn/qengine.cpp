// The integer engine (docs/quantization.md, "Integer network"): Kokkos parallel kernels over
// blocks of edge rows and atom rows on the host execution spaces. Rows are batched per
// species so each int8 layer is one packed int8 GEMM per block (int_gemm.hpp micro-kernels,
// ISA chosen at run time); the arithmetic around the products is qengine_ops.hpp, shared with
// the scalar reference (qengine_reference.cpp), which this code reproduces bit for bit.
//
// Data flow of compute(): geometry of every edge -> per chunk of centre atoms:
//   embedding forward (per neighbour species, blocks of kBlock edge rows)
//   -> descriptor per atom (integer T when G is quantized) -> fitting forward and backward
//   (per centre species, blocks of atom rows) -> descriptor backward per atom
//   -> embedding backward + chain rule per edge (dE/dx_ij on the force grid)
// -> force / virial gather per atom over own and reverse edges (exact sums on the grid).
// Every buffer is a member, grown on demand and reused across calls.
#include "qnn/qengine.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <sstream>
#include <utility>
#include <vector>

#include <Kokkos_Core.hpp>

#include "qnn/error.hpp"
#include "qnn/qengine_ops.hpp"

namespace qnn {

using namespace qdetail;

// ============================================================================ preparation

const double* qdetail::tanh_lut() {
  static const std::vector<double> lut = [] {
    std::vector<double> v(2 * kLutHalf + 1);
    for (int k = -kLutHalf; k <= kLutHalf; ++k)
      v[k + kLutHalf] = std::tanh(static_cast<double>(k) / kLutSteps);
    return v;
  }();
  return lut.data();
}
const double* const qdetail::kTanhLut = qdetail::tanh_lut();

LayerExec layer_exec(const DenseLayer& L, bool integer_all, const std::string& name) {
  const QuantSpec& q = L.quant;
  const std::string run_mixed = "; run the file in mode mixed, or quantize every layer to 8 bits";
  if (q.weight_bits == 0 && q.act_bits != 0)
    throw Error(name + ": activations are quantized but the weights are float, which is not an "
                       "execution mode; quantize the weights too (16 bits is nearly exact)");
  if (q.weight_bits == 0) {
    if (integer_all) throw Error(name + " is fp32 in the file's plan, so mode int8 cannot run it" + run_mixed);
    return LayerExec::Float;
  }
  if (q.act_bits == 0) {
    if (integer_all)
      throw Error(name + " is weight-only in the file's plan, so mode int8 cannot run it" + run_mixed);
    return LayerExec::Float;
  }
  if (integer_all && (q.weight_bits > 8 || q.act_bits > 8))
    throw Error(name + " has " + std::to_string(q.weight_bits) + "-bit weights and " +
                std::to_string(q.act_bits) + "-bit activations; mode int8 runs at most 8 bits" +
                run_mixed);
  return LayerExec::Integer;
}

QModel qdetail::prepare(const Model& m, bool integer_all, bool pack) {
  QModel q;
  q.S = m.nspecies();
  q.m1 = m.m1();
  q.m2 = m.axis_neuron;
  q.rc = m.rcut;
  q.rs = m.rcut_smth;
  q.inv_nc = 1.0 / m.neighbor_norm;
  const std::size_t SS = static_cast<std::size_t>(q.S) * q.S;
  q.mean_s = m.mean_s;
  q.inv_std_s.resize(SS);
  q.inv_std_r.resize(SS);
  for (std::size_t p = 0; p < SS; ++p) {
    q.inv_std_s[p] = 1.0 / m.std_s[p];
    q.inv_std_r[p] = 1.0 / m.std_r[p];
  }
  q.energy_bias = m.energy_bias;
  auto prep_net = [&](const Net& net, const std::string& family, int s) {
    QNet out;
    int toff = 0;
    for (std::size_t l = 0; l < net.layers.size(); ++l) {
      const DenseLayer& d = net.layers[l];
      const std::string name = family + " net " +
                               (family == "embedding" ? m.embed_label(s) : m.species[static_cast<std::size_t>(s)]) +
                               " layer " + std::to_string(l);
      QLayer L;
      L.in = d.in;
      L.out = d.out;
      L.residual = static_cast<int>(d.residual);
      L.tanh = d.activation == Activation::Tanh;
      L.exec = layer_exec(d, integer_all, name);
      L.w = d.weight;
      L.b = d.bias;
      L.dt = d.dt;
      L.out_scale = d.quant.out_scale;
      if (L.exec == LayerExec::Integer) {
        const QuantSpec& qs = d.quant;
        L.wbits = qs.weight_bits;
        L.abits = qs.act_bits;
        L.qmax_a = (1 << (L.abits - 1)) - 1;
        L.qmax_g = L.wbits <= 8 ? 127 : 32767;
        L.act_scale = static_cast<double>(qs.act_scale);
        L.inv_act_scale = 1.0 / L.act_scale;
        L.sw.resize(static_cast<std::size_t>(L.out));
        L.zscale.resize(static_cast<std::size_t>(L.out));
        for (int o = 0; o < L.out; ++o) {
          L.sw[o] = static_cast<double>(qs.weight_scale.size() == 1 ? qs.weight_scale[0]
                                                                     : qs.weight_scale[o]);
          L.zscale[o] = L.act_scale * L.sw[o];
        }
        const long lim = (1L << (L.wbits - 1)) - 1;
        L.wq.resize(d.weight.size());
        for (std::size_t k = 0; k < d.weight.size(); ++k) {
          const double sc = L.sw[k % static_cast<std::size_t>(L.out)];
          const double v = std::round(d.weight[k] / sc);
          if (std::abs(v) > static_cast<double>(lim) ||
              std::abs(d.weight[k] - v * sc) > 1e-6 * sc)
            throw Error(name + ": weights are not integer multiples of the weight scales within " +
                        std::to_string(L.wbits) + " bits (is the file's quantization metadata "
                        "consistent?)");
          L.wq[k] = static_cast<std::int32_t>(v);
        }
        if (L.int8() && pack) {
          L.wq8.assign(L.wq.begin(), L.wq.end());
          L.pk = igemm::PackedB(L.wq8.data(), L.in, L.out, L.out, igemm::BLayout::kKN);
          L.pkT = igemm::PackedB(L.wq8.data(), L.out, L.in, L.out, igemm::BLayout::kNK);
        }
      }
      out.max_width = std::max({out.max_width, L.in, L.out});
      out.t_off.push_back(toff);
      toff += L.out;
      out.layers.push_back(std::move(L));
    }
    out.t_width = toff;
    return out;
  };
  bool all_out = true;
  for (int s = 0; s < static_cast<int>(m.embed.size()); ++s) {  // one per net (S or S*S)
    q.embed.push_back(prep_net(m.embed[s], "embedding", s));
    all_out = all_out && q.embed.back().layers.back().out_scale > 0;
  }
  for (int s = 0; s < q.S; ++s) q.fit.push_back(prep_net(m.fit[s], "fitting", s));
  q.int_descriptor = all_out;
  if (integer_all && !all_out)
    throw Error("mode int8 needs the output scale (out_scale) of every embedding net's last "
                "layer, so that G enters the descriptor as int8; re-quantize the file with "
                "`qnn quantize`");
  return q;
}

// ============================================================================ fast engine

namespace {

constexpr int kBlock = 64;  // rows per GEMM block

template <class Space>
using Policy = Kokkos::RangePolicy<Space, Kokkos::IndexType<int>>;

// Per-block scratch, sliced from chunk-wide buffers by row range (blocks never overlap).
struct RowBuffers {
  std::vector<double> x, y;          // (rows, max_width) ping-pong activations / gradients
  std::vector<double> gz;            // (rows, max_width)
  std::vector<std::int8_t> a8;       // (rows, max_width) int8 GEMM operand
  std::vector<std::int32_t> acc32;   // (rows, max_width) int8 GEMM result
  std::vector<std::int32_t> q32;     // (rows, max_width) >8-bit operands
  std::vector<std::int64_t> acc64;   // (rows, max_width) >8-bit products
  std::vector<double> sg;            // (rows) dynamic gradient scales
  int width = 0;
  void ensure(std::size_t rows, int w) {
    width = w;
    const std::size_t n = rows * static_cast<std::size_t>(w);
    for (auto* v : {&x, &y, &gz})
      if (v->size() < n) v->resize(n);
    if (a8.size() < n) a8.resize(n);
    if (acc32.size() < n) acc32.resize(n);
    if (q32.size() < n) q32.resize(n);
    if (acc64.size() < n) acc64.resize(n);
    if (sg.size() < rows) sg.resize(rows);
  }
};

// Forward of `net` on rows [r0, r1) of `rb` (input in rb.x, width net.layers[0].in, stride
// rb.width); stores t rows (stride t_stride) at t + row * t_stride; leaves the output in rb.x.
// Compiled for AVX-512, AVX2 and baseline x86-64, picked at load time: the element-wise work
// around the GEMMs dominates, and IEEE double arithmetic without contraction rounds the same
// at every vector width, so every clone gives the reference's bits.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define QNN_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define QNN_CLONES
#endif

QNN_CLONES
void net_forward_block(const QNet& net, RowBuffers& rb, int r0, int r1, double* t,
                       int t_stride, igemm::Isa isa) {
  const int w = rb.width;
  const int nr = r1 - r0;
  double* x = rb.x.data();
  double* y = rb.y.data();
  for (std::size_t l = 0; l < net.layers.size(); ++l) {
    const QLayer& L = net.layers[l];
    const int toff = net.t_off[l];
    if (L.int8()) {
      std::int8_t* a = rb.a8.data() + static_cast<std::size_t>(r0) * w;
      std::int32_t* c = rb.acc32.data() + static_cast<std::size_t>(r0) * w;
      for (int r = 0; r < nr; ++r) {
        const double* xr = x + static_cast<std::size_t>(r0 + r) * w;
        for (int k = 0; k < L.in; ++k)
          a[static_cast<std::size_t>(r) * L.in + k] =
              static_cast<std::int8_t>(quantize(xr[k], L.inv_act_scale, L.qmax_a));
      }
      igemm::gemm_s8s8s32(nr, a, L.in, L.pk, c, L.out, isa);
      for (int r = 0; r < nr; ++r)
        int_forward_finish(L, c + static_cast<std::size_t>(r) * L.out,
                           a + static_cast<std::size_t>(r) * L.in,
                           t + static_cast<std::size_t>(r0 + r) * t_stride + toff,
                           y + static_cast<std::size_t>(r0 + r) * w);
    } else if (L.exec == LayerExec::Integer) {
      for (int r = r0; r < r1; ++r) {
        std::int32_t* xq = rb.q32.data() + static_cast<std::size_t>(r) * w;
        std::int64_t* acc = rb.acc64.data() + static_cast<std::size_t>(r) * w;
        const double* xr = x + static_cast<std::size_t>(r) * w;
        for (int k = 0; k < L.in; ++k) xq[k] = quantize(xr[k], L.inv_act_scale, L.qmax_a);
        int_product(L, xq, acc);
        int_forward_finish(L, acc, xq, t + static_cast<std::size_t>(r) * t_stride + toff,
                           y + static_cast<std::size_t>(r) * w);
      }
    } else {
      for (int r = r0; r < r1; ++r)
        float_forward(L, x + static_cast<std::size_t>(r) * w,
                      t + static_cast<std::size_t>(r) * t_stride + toff,
                      y + static_cast<std::size_t>(r) * w);
    }
    std::swap(x, y);  // the output becomes the next input
  }
  if (x != rb.x.data())  // leave the output in rb.x
    for (int r = r0; r < r1; ++r)
      std::copy_n(x + static_cast<std::size_t>(r) * w, net.layers.back().out,
                  rb.x.data() + static_cast<std::size_t>(r) * w);
}

// Backward of `net` on rows [r0, r1): dE/dy of the last layer in rb.x (width out), t rows as
// stored by the forward; leaves dE/dx of the first layer in rb.x.
QNN_CLONES
void net_backward_block(const QNet& net, RowBuffers& rb, int r0, int r1, const double* t,
                        int t_stride, igemm::Isa isa) {
  const int w = rb.width;
  const int nr = r1 - r0;
  double* gy = rb.x.data();
  double* gx = rb.y.data();
  double* gz = rb.gz.data();
  for (int l = static_cast<int>(net.layers.size()) - 1; l >= 0; --l) {
    const QLayer& L = net.layers[l];
    const int toff = net.t_off[l];
    for (int r = r0; r < r1; ++r)
      grad_z(L, gy + static_cast<std::size_t>(r) * w,
             t + static_cast<std::size_t>(r) * t_stride + toff, gz + static_cast<std::size_t>(r) * w);
    if (L.int8()) {
      std::int8_t* a = rb.a8.data() + static_cast<std::size_t>(r0) * w;
      std::int32_t* c = rb.acc32.data() + static_cast<std::size_t>(r0) * w;
      for (int r = 0; r < nr; ++r)
        rb.sg[r0 + r] = int_backward_prepare(L, gz + static_cast<std::size_t>(r0 + r) * w,
                                             a + static_cast<std::size_t>(r) * L.out);
      igemm::gemm_s8s8s32(nr, a, L.out, L.pkT, c, L.in, isa);
      for (int r = 0; r < nr; ++r)
        int_backward_finish(L, c + static_cast<std::size_t>(r) * L.in, rb.sg[r0 + r],
                            gy + static_cast<std::size_t>(r0 + r) * w,
                            gx + static_cast<std::size_t>(r0 + r) * w);
    } else if (L.exec == LayerExec::Integer) {
      for (int r = r0; r < r1; ++r) {
        std::int32_t* gq = rb.q32.data() + static_cast<std::size_t>(r) * w;
        std::int64_t* acc = rb.acc64.data() + static_cast<std::size_t>(r) * w;
        const double sg = int_backward_prepare(L, gz + static_cast<std::size_t>(r) * w, gq);
        int_product_t(L, gq, acc);
        int_backward_finish(L, acc, sg, gy + static_cast<std::size_t>(r) * w,
                            gx + static_cast<std::size_t>(r) * w);
      }
    } else {
      for (int r = r0; r < r1; ++r)
        float_backward(L, gz + static_cast<std::size_t>(r) * w,
                       gy + static_cast<std::size_t>(r) * w, gx + static_cast<std::size_t>(r) * w);
    }
    std::swap(gx, gy);
  }
  if (gy != rb.x.data())  // leave dE/dx in rb.x
    for (int r = r0; r < r1; ++r)
      std::copy_n(gy + static_cast<std::size_t>(r) * w, net.layers.front().in,
                  rb.x.data() + static_cast<std::size_t>(r) * w);
}

class QBackendBase {
 public:
  virtual ~QBackendBase() = default;
  virtual void compute(const NeighborGraph& g, EvalResult& out, const EvalOptions& opt) = 0;
};

template <class Space>
class QBackend final : public QBackendBase {
 public:
  QBackend(const QModel& q, igemm::Isa isa) : q_(q), isa_(isa) {}
  void compute(const NeighborGraph& g, EvalResult& out, const EvalOptions& opt) override;

 private:
  void run_chunk(const NeighborGraph& g, int a0, int a1);
  // Adds the time since the last lap to *slot (only when timing is on).
  void lap(double PhaseTimes::*slot) {
    if (!times_) return;
    Space().fence();
    const auto now = std::chrono::steady_clock::now();
    times_->*slot += std::chrono::duration<double>(now - t_).count();
    t_ = now;
  }
  PhaseTimes* times_ = nullptr;
  std::chrono::steady_clock::time_point t_;

  const QModel& q_;
  igemm::Isa isa_;
  // whole graph
  std::vector<int> centre_, rev_off_, rev_, cursor_;
  std::vector<EdgeGeo> geo_;
  std::vector<double> gedge_;     // (nedges, 3)
  std::vector<double> eatom_;     // (nlocal)
  std::vector<double> vcentre_;   // (nlocal, 6) virial of each centre's own edges
  // chunk
  std::vector<int> erows_;        // edge rows grouped by neighbour species
  std::vector<int> erow_of_;      // (chunk edges) row of each edge, -1 inactive
  std::vector<int> ebegin_;       // (S + 1) row range of each species
  std::vector<int> arows_;        // atom rows grouped by centre species
  std::vector<int> abegin_;       // (S + 1)
  std::vector<double> et_;        // (edge rows, embed t width)
  std::vector<double> G_;         // (edge rows, M1) G as used
  std::vector<std::int8_t> Gq_;   // (edge rows, M1)
  std::vector<double> ft_;        // (atom rows, fit t width)
  std::vector<double> T_, gT_;    // (chunk atoms, 4 M1)
  std::vector<double> D_, gD_;    // (chunk atoms, M1 M2)
  RowBuffers erb_, arb_;
  int et_w_ = 0, ft_w_ = 0;
};

template <class Space>
void QBackend<Space>::compute(const NeighborGraph& g, EvalResult& out, const EvalOptions& opt) {
  const int nl = g.nlocal, nt = g.ntotal, ne = g.nedges();
  const int S = q_.S;
  times_ = opt.times;
  t_ = std::chrono::steady_clock::now();
  centre_.resize(static_cast<std::size_t>(ne));
  for (int i = 0; i < nl; ++i)
    for (int e = g.offsets[i]; e < g.offsets[i + 1]; ++e) centre_[e] = i;
  build_reverse_index(g, rev_off_, rev_);  // increasing e per atom

  // geometry of every edge
  geo_.resize(static_cast<std::size_t>(ne));
  {
    const double* pos = g.positions.data();
    const int* sp = g.species.data();
    const int* nb = g.neighbors.data();
    const int* ce = centre_.data();
    EdgeGeo* geo = geo_.data();
    const QModel& q = q_;
    Kokkos::parallel_for(
        "qnn:q_edge_geometry", Policy<Space>(0, ne), [=, &q](const int e) {
          const int i = ce[e], j = nb[e];
          edge_geometry(q, pos + 3 * i, pos + 3 * j, sp[i] * S + sp[j], geo[e]);
        });
    Space().fence();
  }
  for (int e = 0; e < ne; ++e)
    if (!(geo_[e].r > 1e-4)) {
      std::ostringstream os;
      os << overlap_message(geo_[e].r);
      throw Error(os.str());
    }

  lap(&PhaseTimes::geometry);
  gedge_.assign(static_cast<std::size_t>(3) * ne, 0.0);
  eatom_.assign(static_cast<std::size_t>(nl), 0.0);
  // chunks of centre atoms, bounded by an edge budget (results do not depend on it)
  const long cap_e = opt.chunk_edges > 0 ? opt.chunk_edges : 4096;
  for (int a0 = 0; a0 < nl;) {
    int a1 = a0 + 1;
    while (a1 < nl && g.offsets[a1 + 1] - g.offsets[a0] <= cap_e) ++a1;
    run_chunk(g, a0, a1);
    a0 = a1;
  }

  // gather: exact sums of grid values
  out.force.assign(static_cast<std::size_t>(3) * nt, 0.0);
  vcentre_.assign(static_cast<std::size_t>(6) * nl, 0.0);
  std::vector<double>& vcentre = vcentre_;
  if (opt.atom_virial)
    out.atom_virial.assign(static_cast<std::size_t>(6) * nt, 0.0);
  else
    out.atom_virial.clear();
  {
    const int* off = g.offsets.data();
    const int* roff = rev_off_.data();
    const int* rev = rev_.data();
    const EdgeGeo* geo = geo_.data();
    const double* ge = gedge_.data();
    double* f = out.force.data();
    double* vc = vcentre.data();
    double* va = out.atom_virial.data();
    const bool want_va = opt.atom_virial;
    Kokkos::parallel_for(
        "qnn:q_force_gather", Policy<Space>(0, nt), [=](const int a) {
          double fa[3] = {0, 0, 0}, vo[6] = {0, 0, 0, 0, 0, 0}, vr[6] = {0, 0, 0, 0, 0, 0}, v[6];
          if (a < nl) {
            for (int e = off[a]; e < off[a + 1]; ++e) {
              for (int d = 0; d < 3; ++d) fa[d] += ge[3 * e + d];
              virial_terms(geo[e].x, ge + 3 * e, kVirialGrid, v);
              for (int c = 0; c < 6; ++c) vo[c] += v[c];
            }
            for (int c = 0; c < 6; ++c) vc[6 * a + c] = vo[c];
          }
          for (int p = roff[a]; p < roff[a + 1]; ++p) {
            const int e = rev[p];
            for (int d = 0; d < 3; ++d) fa[d] -= ge[3 * e + d];
            if (want_va) {
              virial_terms(geo[e].x, ge + 3 * e, kVirialGrid, v);
              for (int c = 0; c < 6; ++c) vr[c] += v[c];
            }
          }
          for (int d = 0; d < 3; ++d) f[3 * a + d] = fa[d];
          if (want_va)
            for (int c = 0; c < 6; ++c) va[6 * a + c] = 0.5 * (vo[c] + vr[c]);
        });
    Space().fence();
  }
  out.virial.fill(0.0);
  for (int i = 0; i < nl; ++i)
    for (int c = 0; c < 6; ++c) out.virial[c] += vcentre[6 * static_cast<std::size_t>(i) + c];
  out.energy = 0.0;
  for (double e : eatom_) out.energy += e;
  lap(&PhaseTimes::gather);
  if (opt.atom_energy)
    out.atom_energy = eatom_;
  else
    out.atom_energy.clear();
}

template <class Space>
void QBackend<Space>::run_chunk(const NeighborGraph& g, int a0, int a1) {
  const QModel& q = q_;
  const int S = q.S, m1 = q.m1, m2 = q.m2;
  const int e0 = g.offsets[a0], e1 = g.offsets[a1];
  const int na = a1 - a0;
  const igemm::Isa isa = isa_;

  // rows grouped by species, in edge / atom order within a species
  ebegin_.assign(static_cast<std::size_t>(S) + 1, 0);
  for (int e = e0; e < e1; ++e)
    if (geo_[e].active) ++ebegin_[g.species[g.neighbors[e]] + 1];
  for (int s = 0; s < S; ++s) ebegin_[s + 1] += ebegin_[s];
  const int nrows = ebegin_[S];
  erows_.resize(static_cast<std::size_t>(nrows));
  erow_of_.assign(static_cast<std::size_t>(e1 - e0), -1);
  cursor_.assign(ebegin_.begin(), ebegin_.end() - 1);
  for (int e = e0; e < e1; ++e)
    if (geo_[e].active) {
      const int r = cursor_[g.species[g.neighbors[e]]]++;
      erows_[r] = e;
      erow_of_[e - e0] = r;
    }
  abegin_.assign(static_cast<std::size_t>(S) + 1, 0);
  for (int i = a0; i < a1; ++i) ++abegin_[g.species[i] + 1];
  for (int s = 0; s < S; ++s) abegin_[s + 1] += abegin_[s];
  arows_.resize(static_cast<std::size_t>(na));
  cursor_.assign(abegin_.begin(), abegin_.end() - 1);
  for (int i = a0; i < a1; ++i) arows_[cursor_[g.species[i]]++] = i;

  int ew = 0, fw = 0, ets = 0, fts = 0;
  for (int s = 0; s < S; ++s) {
    ew = std::max(ew, q.embed[s].max_width);
    fw = std::max(fw, q.fit[s].max_width);
    ets = std::max(ets, q.embed[s].t_width);
    fts = std::max(fts, q.fit[s].t_width);
  }
  erb_.ensure(static_cast<std::size_t>(nrows), ew);
  arb_.ensure(static_cast<std::size_t>(na), fw);
  et_w_ = ets;
  ft_w_ = fts;
  const std::size_t need_et = static_cast<std::size_t>(nrows) * ets;
  if (et_.size() < need_et) et_.resize(need_et);
  if (G_.size() < static_cast<std::size_t>(nrows) * m1) G_.resize(static_cast<std::size_t>(nrows) * m1);
  if (Gq_.size() < static_cast<std::size_t>(nrows) * m1) Gq_.resize(static_cast<std::size_t>(nrows) * m1);
  if (ft_.size() < static_cast<std::size_t>(na) * fts) ft_.resize(static_cast<std::size_t>(na) * fts);
  for (auto* v : {&T_, &gT_})
    if (v->size() < static_cast<std::size_t>(na) * 4 * m1) v->resize(static_cast<std::size_t>(na) * 4 * m1);
  for (auto* v : {&D_, &gD_})
    if (v->size() < static_cast<std::size_t>(na) * m1 * m2) v->resize(static_cast<std::size_t>(na) * m1 * m2);

  RowBuffers& erb = erb_;
  RowBuffers& arb = arb_;
  const EdgeGeo* geo = geo_.data();
  const int* erows = erows_.data();
  const int* erow_of = erow_of_.data();
  const int* arows = arows_.data();
  const int* sp = g.species.data();
  const int* nb = g.neighbors.data();
  const int* off = g.offsets.data();
  const int* ce = centre_.data();
  double* et = et_.data();
  double* G = G_.data();
  std::int8_t* Gq = Gq_.data();
  double* ft = ft_.data();
  double* T = T_.data();
  double* gT = gT_.data();
  double* D = D_.data();
  double* gD = gD_.data();
  double* eatom = eatom_.data();
  double* gedge = gedge_.data();

  // ---- embedding forward, per neighbour species, blocks of rows
  for (int s = 0; s < S; ++s) {
    const int r0s = ebegin_[s], r1s = ebegin_[s + 1];
    if (r1s == r0s) continue;
    const QNet& net = q.embed[s];
    const int nblk = (r1s - r0s + kBlock - 1) / kBlock;
    const double out_scale = net.layers.back().out_scale;
    Kokkos::parallel_for(
        "qnn:q_embed_forward", Policy<Space>(0, nblk), [&, r0s, r1s](const int b) {
          const int r0 = r0s + b * kBlock, r1 = std::min(r1s, r0 + kBlock);
          const int w = erb.width;
          for (int r = r0; r < r1; ++r) erb.x[static_cast<std::size_t>(r) * w] = geo[erows[r]].shat;
          net_forward_block(net, erb, r0, r1, et, ets, isa);
          for (int r = r0; r < r1; ++r) {
            const double* y = erb.x.data() + static_cast<std::size_t>(r) * w;
            double* Gr = G + static_cast<std::size_t>(r) * m1;
            if (q.int_descriptor) {
              std::int8_t* Gqr = Gq + static_cast<std::size_t>(r) * m1;
              for (int m = 0; m < m1; ++m) {
                Gqr[m] = static_cast<std::int8_t>(quantize(y[m], 1.0 / out_scale, 127));
                Gr[m] = static_cast<double>(Gqr[m]) * out_scale;
              }
            } else {
              std::copy_n(y, m1, Gr);
            }
          }
        });
  }
  Space().fence();
  lap(&PhaseTimes::embedding);

  // ---- descriptor per atom
  Kokkos::parallel_for(
      "qnn:q_descriptor", Policy<Space>(a0, a1), [&](const int i) {
        const int la = i - a0;
        double* Ti = T + static_cast<std::size_t>(la) * 4 * m1;
        std::fill_n(Ti, 4 * m1, 0.0);
        if (q.int_descriptor) {
          std::int64_t acc[4 * 256];  // per species: m1 <= 256 (checked at construction)
          for (int a = 0; a < S; ++a) {
            std::fill_n(acc, 4 * m1, std::int64_t(0));
            for (int e = off[i]; e < off[i + 1]; ++e) {
              const int r = erow_of[e - e0];
              if (r < 0 || sp[nb[e]] != a) continue;
              const std::int8_t* Gr = Gq + static_cast<std::size_t>(r) * m1;
              const std::int64_t* R = geo[e].Rfx;
              for (int m = 0; m < m1; ++m) {
                const std::int64_t gm = Gr[m];
                acc[4 * m] += gm * R[0];
                acc[4 * m + 1] += gm * R[1];
                acc[4 * m + 2] += gm * R[2];
                acc[4 * m + 3] += gm * R[3];
              }
            }
            const double sc = q.embed[a].layers.back().out_scale / kRFixed * q.inv_nc;
            for (int p = 0; p < 4 * m1; ++p) Ti[p] += static_cast<double>(acc[p]) * sc;
          }
        } else {
          for (int e = off[i]; e < off[i + 1]; ++e) {
            const int r = erow_of[e - e0];
            if (r < 0) continue;
            const double* Gr = G + static_cast<std::size_t>(r) * m1;
            for (int m = 0; m < m1; ++m)
              for (int k = 0; k < 4; ++k) Ti[4 * m + k] += Gr[m] * geo[e].R[k];
          }
          for (int p = 0; p < 4 * m1; ++p) Ti[p] *= q.inv_nc;
        }
        descriptor_from_T(m1, m2, Ti, D + static_cast<std::size_t>(la) * m1 * m2);
      });
  Space().fence();
  lap(&PhaseTimes::descriptor);

  // ---- fitting forward and backward, per centre species, blocks of atom rows
  for (int s = 0; s < S; ++s) {
    const int r0s = abegin_[s], r1s = abegin_[s + 1];
    if (r1s == r0s) continue;
    const QNet& net = q.fit[s];
    const int nblk = (r1s - r0s + kBlock - 1) / kBlock;
    const int dim = m1 * m2;
    Kokkos::parallel_for(
        "qnn:q_fit", Policy<Space>(0, nblk), [&, r0s, r1s, s](const int b) {
          const int r0 = r0s + b * kBlock, r1 = std::min(r1s, r0 + kBlock);
          const int w = arb.width;
          for (int r = r0; r < r1; ++r)
            std::copy_n(D + static_cast<std::size_t>(arows[r] - a0) * dim, dim,
                        arb.x.data() + static_cast<std::size_t>(r) * w);
          net_forward_block(net, arb, r0, r1, ft, fts, isa);
          for (int r = r0; r < r1; ++r) {
            const int i = arows[r];
            eatom[i] = on_grid(arb.x[static_cast<std::size_t>(r) * w] + q.energy_bias[s], kEnergyGrid);
            arb.x[static_cast<std::size_t>(r) * w] = 1.0;
          }
          net_backward_block(net, arb, r0, r1, ft, fts, isa);
          for (int r = r0; r < r1; ++r)
            std::copy_n(arb.x.data() + static_cast<std::size_t>(r) * w, dim,
                        gD + static_cast<std::size_t>(arows[r] - a0) * dim);
        });
  }
  Space().fence();
  lap(&PhaseTimes::fitting);

  // ---- descriptor backward per atom
  Kokkos::parallel_for(
      "qnn:q_descriptor_backward", Policy<Space>(0, na), [&](const int la) {
        descriptor_backward(m1, m2, T + static_cast<std::size_t>(la) * 4 * m1,
                            gD + static_cast<std::size_t>(la) * m1 * m2,
                            gT + static_cast<std::size_t>(la) * 4 * m1);
      });
  Space().fence();
  lap(&PhaseTimes::descriptor);

  // ---- embedding backward and chain rule, per neighbour species, blocks of rows
  for (int s = 0; s < S; ++s) {
    const int r0s = ebegin_[s], r1s = ebegin_[s + 1];
    if (r1s == r0s) continue;
    const QNet& net = q.embed[s];
    const int nblk = (r1s - r0s + kBlock - 1) / kBlock;
    Kokkos::parallel_for(
        "qnn:q_embed_backward", Policy<Space>(0, nblk), [&, r0s, r1s, s](const int b) {
          const int r0 = r0s + b * kBlock, r1 = std::min(r1s, r0 + kBlock);
          const int w = erb.width;
          for (int r = r0; r < r1; ++r) {
            const int e = erows[r];
            const double* gt = gT + static_cast<std::size_t>(ce[e] - a0) * 4 * m1;
            const double* R = geo[e].R;
            double* gG = erb.x.data() + static_cast<std::size_t>(r) * w;
            for (int m = 0; m < m1; ++m)
              gG[m] = q.inv_nc * (gt[4 * m] * R[0] + gt[4 * m + 1] * R[1] +
                                  gt[4 * m + 2] * R[2] + gt[4 * m + 3] * R[3]);
          }
          net_backward_block(net, erb, r0, r1, et, ets, isa);
          for (int r = r0; r < r1; ++r) {
            const int e = erows[r];
            const int i = ce[e];
            const double* gt = gT + static_cast<std::size_t>(i - a0) * 4 * m1;
            const double* Gr = G + static_cast<std::size_t>(r) * m1;
            double gR[4] = {0, 0, 0, 0};
            for (int m = 0; m < m1; ++m)
              for (int k = 0; k < 4; ++k) gR[k] += gt[4 * m + k] * Gr[m];
            for (int k = 0; k < 4; ++k) gR[k] *= q.inv_nc;
            const double gs = erb.x[static_cast<std::size_t>(r) * w];
            edge_chain(q, geo[e], sp[i] * S + s, gs, gR, kForceGrid, gedge + 3 * e);
          }
        });
  }
  Space().fence();
  lap(&PhaseTimes::embedding_backward);
}

}  // namespace

// ============================================================================ QEngine

struct QEngine::Impl {
  Model model;
  QModel q;
  bool integer_all = false;
  igemm::Isa isa = igemm::Isa::kScalar;
  std::unique_ptr<QBackendBase> backend;
};

QEngine::QEngine(const Model& model, bool integer_all, ExecSpace space)
    : impl_(std::make_unique<Impl>()) {
  model.validate("model");
  if (model.deepmd_env_mat()) throw Error("model: the per-edge integer engine runs env_mat 'qnn' only (this file uses '" + model.env_mat + "')");
  if (!model.type_one_side) throw Error("model: the per-edge integer engine runs one embedding net per neighbour species only (this file has type_one_side false: pair nets)");
  ensure_kokkos_initialized();
  impl_->model = model;
  impl_->integer_all = integer_all;
  impl_->q = prepare(impl_->model, integer_all, true);
  if (impl_->q.m1 > 256) throw Error("model: the integer engine supports M1 <= 256");
  impl_->isa = igemm::active_isa();
  switch (space) {
    case ExecSpace::Serial:
#ifdef KOKKOS_ENABLE_SERIAL
      impl_->backend = std::make_unique<QBackend<Kokkos::Serial>>(impl_->q, impl_->isa);
      break;
#else
      throw Error("this build of Kokkos has no Serial execution space");
#endif
    case ExecSpace::OpenMP:
#ifdef KOKKOS_ENABLE_OPENMP
      impl_->backend = std::make_unique<QBackend<Kokkos::OpenMP>>(impl_->q, impl_->isa);
      break;
#else
      throw Error("this build of Kokkos has no OpenMP execution space; use ExecSpace::Serial");
#endif
  }
}

QEngine::~QEngine() = default;

void QEngine::compute(const NeighborGraph& graph, EvalResult& out, const EvalOptions& opt) {
  graph.validate(impl_->model.nspecies());
  impl_->backend->compute(graph, out, opt);
}

const Model& QEngine::model() const { return impl_->model; }

std::string QEngine::describe() const {
  std::ostringstream os;
  os << (impl_->integer_all ? "int8" : "mixed") << ": integer engine;";
  auto fam = [&](const char* name, const std::vector<QNet>& nets) {
    for (std::size_t s = 0; s < nets.size(); ++s) {
      os << " " << name << " " << impl_->model.species[s] << " [";
      for (std::size_t l = 0; l < nets[s].layers.size(); ++l) {
        const QLayer& L = nets[s].layers[l];
        os << (l ? " " : "");
        if (L.exec == LayerExec::Integer)
          os << "w" << L.wbits << "a" << L.abits;
        else
          os << (L.wbits ? "weight-only" : "fp32");
      }
      os << "]";
    }
  };
  fam("embed", impl_->q.embed);
  fam("fit", impl_->q.fit);
  os << "; descriptor " << (impl_->q.int_descriptor ? "integer (int8 G)" : "float")
     << "; GEMM path " << igemm::isa_name(impl_->isa);
  return os.str();
}

}  // namespace qnn
