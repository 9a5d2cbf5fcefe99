// Internal to the integer engine: the prepared layers and the per-row operations shared by the
// fast engine (qengine.cpp) and the scalar reference (qengine_reference.cpp). The two differ
// in how rows are batched, threaded and multiplied (packed int8 GEMM micro-kernels vs plain
// loops); the element-wise arithmetic around the products is this one code, so both produce
// the same bits (the core is compiled with -ffp-contract=off). The contract is
// docs/quantization.md, "Integer network".
#pragma once
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "qnn/int_gemm.hpp"
#include "qnn/model.hpp"
#include "qnn/network_ops.hpp"
#include "qnn/qengine.hpp"

namespace qnn::qdetail {

// tanh lookup table (eq. Q4): t = tanh(k / 256) for k = clamp(round_half_away(256 z), ±2048).
inline constexpr int kLutSteps = 256;   // entries per unit of z
inline constexpr int kLutHalf = 2048;   // z in [-8, 8]
// (2 * kLutHalf + 1) entries, index k + kLutHalf; filled during static initialisation.
extern const double* const kTanhLut;
const double* tanh_lut();

// Round half away from zero of a value whose magnitude is below 2^31: trunc(v ± 0.5) in double
// arithmetic (one add and one truncating conversion; v + 0.5 itself rounds, so values within
// one ulp below a half-integer round up: this is the contract, shared by every path).
inline std::int32_t round_half_away(double v) {
  return static_cast<std::int32_t>(v + std::copysign(0.5, v));  // branch-free
}

// clamp(v, lo, hi) written so that it compiles to minsd/maxsd (no data-dependent branches).
inline double clamp_branchless(double v, double lo, double hi) {
  v = v < hi ? v : hi;
  return v > lo ? v : lo;
}

inline double lut_tanh(double z) {
  const double v = clamp_branchless(z * kLutSteps, -double(kLutHalf), double(kLutHalf));
  return kTanhLut[round_half_away(v) + kLutHalf];
}

// Symmetric quantization of an activation: round_half_away(clamp(x * inv_scale, ±qmax)).
inline std::int32_t quantize(double x, double inv_scale, int qmax) {
  return round_half_away(clamp_branchless(x * inv_scale, -double(qmax), double(qmax)));
}

// Rounding to a power-of-two grid, to nearest with ties to even, exact for |v / grid| < 2^51:
// adding and subtracting 1.5 * 2^52 leaves the integer nearest to v / grid.
inline double on_grid(double v, double grid) {
  constexpr double kMagic = 6755399441055744.0;  // 1.5 * 2^52
  const double y = v / grid;
  return ((y + kMagic) - kMagic) * grid;
}

// Fixed-point R̂ of the integer descriptor (eq. Q6): R_fx = round(R̂ * 2^20).
inline constexpr double kRFixed = 1048576.0;  // 2^20
inline std::int64_t r_fixed(double r) {
  return round_half_away(clamp_branchless(r * kRFixed, -2147483647.0, 2147483647.0));
}

// One dense layer prepared for execution.
struct QLayer {
  int in = 0, out = 0;
  int residual = 0;  // static_cast<int>(Residual)
  bool tanh = true;
  LayerExec exec = LayerExec::Float;
  int wbits = 0, abits = 0;
  int qmax_a = 0;       // 2^(abits-1) - 1
  int qmax_g = 0;       // gradient quantization range: 127 (wbits <= 8) or 32767
  double act_scale = 0, inv_act_scale = 0;
  double out_scale = 0;           // last embedding layer: scale of G_q (0: float G)
  std::vector<double> w;          // (in, out) weights as stored (float layers)
  std::vector<double> b, dt;      // (out)
  std::vector<double> zscale;     // (out) act_scale * s_w[o]
  std::vector<double> sw;         // (out) weight scale per output channel
  std::vector<std::int32_t> wq;   // (in, out) integer weights
  std::vector<std::int8_t> wq8;   // (in, out) the same as int8 (int8 layers)
  igemm::PackedB pk;              // W  (K = in,  N = out)   int8 layers
  igemm::PackedB pkT;             // Wᵀ (K = out, N = in)    int8 layers
  bool int8() const { return exec == LayerExec::Integer && wbits <= 8 && abits <= 8; }
};

struct QNet {
  std::vector<QLayer> layers;
  int max_width = 0;   // max(in, out) over layers
  int t_width = 0;     // sum of out over layers (stored t per row)
  std::vector<int> t_off;  // (layers) offset of each layer's t in a row
};

struct QModel {
  int S = 0, m1 = 0, m2 = 0;
  double rc = 0, rs = 0, inv_nc = 0;
  std::vector<QNet> embed, fit;     // (S)
  std::vector<double> mean_s, inv_std_s, inv_std_r;  // (S*S)
  std::vector<double> energy_bias;  // (S)
  bool int_descriptor = false;      // every embedding net ends in an integer layer with out_scale
};

// Prepares the model (validated by the caller); throws qnn::Error like layer_exec().
QModel prepare(const Model& m, bool integer_all, bool pack);

// ---------------------------------------------------------------------------- forward rows
// Integer layer, after the product acc[o] = Σ_k xq[k] Wq[k][o] (exact, int32 or int64):
//   z = acc * zscale[o] + b[o];  t = lut_tanh(z) (or z when linear);  y = residual(xq*s, t).
template <class Acc, class XQ>
inline void int_forward_finish(const QLayer& L, const Acc* acc, const XQ* xq, double* t,
                               double* y) {
  const double* zs = L.zscale.data();
  const double* b = L.b.data();
  for (int o = 0; o < L.out; ++o) t[o] = static_cast<double>(acc[o]) * zs[o] + b[o];
  if (L.tanh)
    for (int o = 0; o < L.out; ++o) t[o] = lut_tanh(t[o]);
  switch (L.residual) {
    case 0:  // None
      for (int o = 0; o < L.out; ++o) y[o] = t[o];
      break;
    case 1:  // Identity
      for (int o = 0; o < L.out; ++o) y[o] = static_cast<double>(xq[o]) * L.act_scale + t[o];
      break;
    case 2:  // Doubling: y = [x, x] + t
      for (int o = 0; o < L.in; ++o) y[o] = static_cast<double>(xq[o]) * L.act_scale + t[o];
      for (int o = 0; o < L.in; ++o)
        y[L.in + o] = static_cast<double>(xq[o]) * L.act_scale + t[L.in + o];
      break;
    case 4:  // DoublingTimestep: y = [x, x] + dt ⊙ t
      for (int o = 0; o < L.out; ++o)
        y[o] = static_cast<double>(xq[o % L.in]) * L.act_scale + L.dt[o] * t[o];
      break;
    default:  // Timestep
      for (int o = 0; o < L.out; ++o)
        y[o] = static_cast<double>(xq[o]) * L.act_scale + L.dt[o] * t[o];
      break;
  }
}

// Float layer: t = act(x·W + b), y = residual(x, t), products in increasing k.
inline void float_forward(const QLayer& L, const double* x, double* t, double* y) {
  for (int o = 0; o < L.out; ++o) t[o] = L.b[o];
  for (int k = 0; k < L.in; ++k) {
    const double xk = x[k];
    const double* wk = L.w.data() + static_cast<std::size_t>(k) * L.out;
    for (int o = 0; o < L.out; ++o) t[o] += xk * wk[o];
  }
  if (L.tanh)
    for (int o = 0; o < L.out; ++o) t[o] = std::tanh(t[o]);
  switch (L.residual) {
    case 0:
      for (int o = 0; o < L.out; ++o) y[o] = t[o];
      break;
    case 1:
      for (int o = 0; o < L.out; ++o) y[o] = x[o] + t[o];
      break;
    case 2:
      for (int o = 0; o < L.in; ++o) y[o] = x[o] + t[o];
      for (int o = 0; o < L.in; ++o) y[L.in + o] = x[o] + t[L.in + o];
      break;
    case 4:
      for (int o = 0; o < L.out; ++o) y[o] = x[o % L.in] + L.dt[o] * t[o];
      break;
    default:
      for (int o = 0; o < L.out; ++o) y[o] = x[o] + L.dt[o] * t[o];
      break;
  }
}

// --------------------------------------------------------------------------- backward rows
// dE/dz from dE/dy and the stored t (tanh' = 1 - t², times dt for the timestep residual).
inline void grad_z(const QLayer& L, const double* gy, const double* t, double* gz) {
  if (L.tanh)
    for (int o = 0; o < L.out; ++o) gz[o] = gy[o] * (1.0 - t[o] * t[o]);
  else
    for (int o = 0; o < L.out; ++o) gz[o] = gy[o];
  if (L.residual == 3 || L.residual == 4)
    for (int o = 0; o < L.out; ++o) gz[o] *= L.dt[o];
}

// The residual's share of dE/dx, added to gx.
inline void grad_residual(const QLayer& L, const double* gy, double* gx) {
  if (L.residual == 1 || L.residual == 3) {
    for (int k = 0; k < L.in; ++k) gx[k] += gy[k];
  } else if (L.residual == 2 || L.residual == 4) {
    for (int k = 0; k < L.in; ++k) gx[k] += gy[k] + gy[L.in + k];
  }
}

// Integer layer, before the product (eq. Q5): h[o] = gz[o] * s_w[o], quantized per row with
// the dynamic scale s_g = max|h| / qmax_g. Returns s_g (0 when the row is zero).
template <class GQ>
inline double int_backward_prepare(const QLayer& L, const double* gz, GQ* gq) {
  // h is formed twice (identical products); max over |h| is exact in any order.
  const double* sw = L.sw.data();
  double amax = 0.0;
  for (int o = 0; o < L.out; ++o) {
    const double h = std::abs(gz[o] * sw[o]);
    amax = h > amax ? h : amax;
  }
  if (!(amax > 0.0)) {
    for (int o = 0; o < L.out; ++o) gq[o] = 0;
    return 0.0;
  }
  const double inv = L.qmax_g / amax;
  for (int o = 0; o < L.out; ++o)
    gq[o] = static_cast<GQ>(quantize(gz[o] * sw[o], inv, L.qmax_g));
  return amax / L.qmax_g;
}

// After the product acc[k] = Σ_o gq[o] Wq[k][o]: gx = acc * s_g + residual.
template <class Acc>
inline void int_backward_finish(const QLayer& L, const Acc* acc, double sg, const double* gy,
                                double* gx) {
  for (int k = 0; k < L.in; ++k) gx[k] = static_cast<double>(acc[k]) * sg;
  grad_residual(L, gy, gx);
}

// Float layer backward: gx = gz·Wᵀ + residual, products in increasing o.
inline void float_backward(const QLayer& L, const double* gz, const double* gy, double* gx) {
  for (int k = 0; k < L.in; ++k) {
    const double* wk = L.w.data() + static_cast<std::size_t>(k) * L.out;
    double acc = 0.0;
    for (int o = 0; o < L.out; ++o) acc += wk[o] * gz[o];
    gx[k] = acc;
  }
  grad_residual(L, gy, gx);
}

// Plain integer products (the reference, and the fast engine's > 8-bit layers).
template <class XQ>
inline void int_product(const QLayer& L, const XQ* xq, std::int64_t* acc) {
  for (int o = 0; o < L.out; ++o) acc[o] = 0;
  for (int k = 0; k < L.in; ++k) {
    const std::int64_t xk = xq[k];
    const std::int32_t* wk = L.wq.data() + static_cast<std::size_t>(k) * L.out;
    for (int o = 0; o < L.out; ++o) acc[o] += xk * wk[o];
  }
}
template <class GQ>
inline void int_product_t(const QLayer& L, const GQ* gq, std::int64_t* acc) {
  for (int k = 0; k < L.in; ++k) {
    const std::int32_t* wk = L.wq.data() + static_cast<std::size_t>(k) * L.out;
    std::int64_t a = 0;
    for (int o = 0; o < L.out; ++o) a += static_cast<std::int64_t>(gq[o]) * wk[o];
    acc[k] = a;
  }
}

// ---------------------------------------------------------------------------- geometry
// Per-edge geometry: R̂ (4), ŝ, the fixed-point R̂ when the descriptor is integer.
struct EdgeGeo {
  double x[3] = {0, 0, 0};
  double r = 0, s = 0, ds = 0;
  double R[4] = {0, 0, 0, 0};      // R̂ as used (dequantized from R_fx in the integer descriptor)
  std::int64_t Rfx[4] = {0, 0, 0, 0};
  double shat = 0;
  bool active = false;
};

inline void edge_geometry(const QModel& q, const double* pi, const double* pj, int pair,
                          EdgeGeo& g) {
  for (int d = 0; d < 3; ++d) g.x[d] = pj[d] - pi[d];
  g.r = std::sqrt(g.x[0] * g.x[0] + g.x[1] * g.x[1] + g.x[2] * g.x[2]);
  switch_function(g.r, q.rs, q.rc, g.s, g.ds);
  g.active = g.r < q.rc;
  if (!g.active) return;
  const double isd = q.inv_std_s[pair];
  const double sr = g.s / g.r * q.inv_std_r[pair];
  const double R[4] = {g.s * isd, sr * g.x[0], sr * g.x[1], sr * g.x[2]};
  for (int k = 0; k < 4; ++k) {
    if (q.int_descriptor) {
      g.Rfx[k] = r_fixed(R[k]);
      g.R[k] = static_cast<double>(g.Rfx[k]) / kRFixed;
    } else {
      g.R[k] = R[k];
    }
  }
  g.shat = (g.s - q.mean_s[pair]) * isd;
}

// dE/dx_ij from dE/dŝ (gs) and dE/dR̂ (gR), rounded to the force grid when `grid` > 0.
inline void edge_chain(const QModel& q, const EdgeGeo& g, int pair, double gs, const double* gR,
                       double grid, double* out) {
  const double isd = q.inv_std_s[pair];
  const double isr = q.inv_std_r[pair];
  const double ex = g.x[0] / g.r, ey = g.x[1] / g.r, ez = g.x[2] / g.r;
  const double ge = gR[1] * ex + gR[2] * ey + gR[3] * ez;
  const double radial = (gs + gR[0]) * g.ds * isd + (g.ds - g.s / g.r) * isr * ge;
  const double tangential = g.s / g.r * isr;
  out[0] = radial * ex + tangential * gR[1];
  out[1] = radial * ey + tangential * gR[2];
  out[2] = radial * ez + tangential * gR[3];
  if (grid > 0)
    for (int d = 0; d < 3; ++d) out[d] = on_grid(out[d], grid);
}

// Virial term -x_a g_b in Voigt order (xx yy zz xy xz yz), each rounded to `grid` when > 0.
inline void virial_terms(const double* x, const double* g, double grid, double* v) {
  const double raw[6] = {-x[0] * g[0], -x[1] * g[1], -x[2] * g[2],
                         -x[0] * g[1], -x[0] * g[2], -x[1] * g[2]};
  for (int c = 0; c < 6; ++c) v[c] = grid > 0 ? on_grid(raw[c], grid) : raw[c];
}

}  // namespace qnn::qdetail
