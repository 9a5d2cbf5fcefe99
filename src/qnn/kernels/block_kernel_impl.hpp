// The per-block kernel of the compressed engine (see block_kernel.hpp and
// compressed_engine.hpp). Included once per instruction set with QNN_VW (float lanes) and
// QNN_NS (namespace) defined; written with GCC vector extensions so each translation unit
// compiles it for its own -m flags. The equations are docs/model.md; the fixed-point
// contract is docs/model.md, "Determinism".
//
// Determinism by construction: every float value is computed from the inputs of one edge or
// one atom, in an order fixed by the code (GEMM: sequential k per output element, the same in
// every tile; horizontal sums: lanes in order), and every cross-edge or cross-atom sum is an
// integer sum.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "qnn/kernels/block_kernel.hpp"
#include "qnn/graph/graph.hpp"  // kMinPairDistance
#include "qnn/engine/network_ops.hpp"  // switch_function (eq. S)

namespace qnn::v2 {
namespace QNN_NS {
namespace {

#include "qnn/kernels/vec_impl.hpp"

constexpr int kResNone = 0, kResIdentity = 1, kResDoubling = 2, kResTimestep = 3;

// tanh in float: sign(x) (1 − e)/(1 + e), e = exp(−2|x|) = 2^y with y = n + f, |f| <= 1/2,
// 2^f by its degree-7 Taylor polynomial (relative error < 2e-9 before rounding), 2^n from
// the exponent bits. |x| is clamped at 9 (tanh(9) rounds to 1 in float).
inline vf vtanh(vf x) {
  const vi sign = (vi)x & (vi{} + static_cast<std::int32_t>(0x80000000u));
  vf ax = (vf)((vi)x & (vi{} + 0x7fffffff));
  ax = ax < 9.0f ? ax : vset(9.0f);
  const vf y = ax * -2.8853900817779268f;  // −2 log2(e) |x|, in [−26, 0]
  const vi n = __builtin_convertvector(y - 0.5f, vi);  // trunc toward 0 of y − 1/2
  const vf f = y - __builtin_convertvector(n, vf);     // in (−1/2, 1/2]
  const float l1 = 0.6931471805599453f, l2 = 0.2402265069591007f, l3 = 0.05550410866482158f,
              l4 = 0.009618129107628477f, l5 = 0.0013333558146428443f,
              l6 = 0.00015403530393381608f, l7 = 1.525273380405984e-05f;
  vf p = vset(l7);
  p = p * f + l6;
  p = p * f + l5;
  p = p * f + l4;
  p = p * f + l3;
  p = p * f + l2;
  p = p * f + l1;
  p = p * f + 1.0f;
  const vi bits = (n + 127) << 23;
  const vf e = p * (vf)bits;
  const vf t = (1.0f - e) / (1.0f + e);
  return (vf)((vi)t | sign);
}

// C (M, Np) = A (M, K) · B (K, Np); M a multiple of 4, Np of 4·VW (kColPad). B(k, n) is at
// B[(n / kColPad) · bpanel + k · ldb + n % kColPad]: a row-major B is ldb = its row stride,
// bpanel = kColPad; a panel-packed one (the fitting weights, packed_panel_index) is ldb =
// kColPad, bpanel = kColPad · K, so that the kernel walks each panel contiguously (a row
// stride of 2^n bytes maps the rows of a panel onto a few L1 sets). Each element is a
// sequential sum over k, whatever its row or column: the result of a row does not depend on
// the other rows of the block.
void sgemm(int M, int Np, int K, const float* A, int lda, const float* B, int ldb,
           std::size_t bpanel, float* C, int ldc) {
  constexpr int MR = 4, NV = 4, NC = NV * VW, KC = 128;
  static_assert(kColPad % NC == 0, "a column block lies within one panel");
  for (int n0 = 0; n0 < Np; n0 += NC) {
    const float* bp = B + static_cast<std::size_t>(n0 / kColPad) * bpanel + n0 % kColPad;
    for (int k0 = 0; k0 < K; k0 += KC) {  // a KC x NC panel of B stays in L1
      const int k1 = std::min(K, k0 + KC);
      for (int m0 = 0; m0 < M; m0 += MR) {
        vf acc[MR][NV];
        float* c0 = C + static_cast<std::size_t>(m0) * ldc + n0;
        for (int r = 0; r < MR; ++r)
          for (int v = 0; v < NV; ++v)
            acc[r][v] = k0 == 0 ? vf{} : vload(c0 + static_cast<std::size_t>(r) * ldc + v * VW);
        const float* a0 = A + static_cast<std::size_t>(m0) * lda;
        for (int k = k0; k < k1; ++k) {
          const float* b = bp + static_cast<std::size_t>(k) * ldb;
          vf bv[NV];
          for (int v = 0; v < NV; ++v) bv[v] = vload(b + v * VW);
          for (int r = 0; r < MR; ++r) {
            const vf av = vset(a0[static_cast<std::size_t>(r) * lda + k]);
            for (int v = 0; v < NV; ++v) acc[r][v] += av * bv[v];
          }
        }
        for (int r = 0; r < MR; ++r)
          for (int v = 0; v < NV; ++v)
            vstore(c0 + static_cast<std::size_t>(r) * ldc + v * VW, acc[r][v]);
      }
    }
  }
}

// Symmetric int8 quantization of `n` floats, x / scale rounded half away from zero and
// clamped to ±127 (docs/quantization.md).
inline float round_clamp(float v, float qmax) {
  v = v > qmax ? qmax : (v < -qmax ? -qmax : v);
  return static_cast<float>(static_cast<int>(v + (v >= 0.0f ? 0.5f : -0.5f)));
}
// round_clamp lane by lane (the same operations, hence the same integers), as int32.
inline vi vround_clamp(vf v, float qmax) {
  const vf hi = vset(qmax), lo = vset(-qmax);
  v = v > hi ? hi : (v < lo ? lo : v);
  return __builtin_convertvector(v + (v >= 0.0f ? vset(0.5f) : vset(-0.5f)), vi);  // truncation
}
typedef std::int8_t vq8 __attribute__((vector_size(VW)));
typedef std::int16_t vq16 __attribute__((vector_size(2 * VW)));
typedef std::int8_t vq8u __attribute__((vector_size(VW), aligned(1)));
typedef std::int16_t vq16u __attribute__((vector_size(2 * VW), aligned(2)));

// x (np values, np a multiple of VW, zero past the row's true width) onto the int8 / int16 grid
// of scale 1/inv_scale (round_clamp).
inline void quantize_row_v(const float* x, int np, float inv_scale, float qmax, std::int8_t* q) {
  for (int i = 0; i < np; i += VW)
    *reinterpret_cast<vq8u*>(q + i) =
        __builtin_convertvector(vround_clamp(vload(x + i) * inv_scale, qmax), vq8);
}
inline void quantize_row_v(const float* x, int np, float inv_scale, float qmax, std::int16_t* q) {
  for (int i = 0; i < np; i += VW)
    *reinterpret_cast<vq16u*>(q + i) =
        __builtin_convertvector(vround_clamp(vload(x + i) * inv_scale, qmax), vq16);
}

// A GEMM row's int32 sums to floats, acc·scale[o] + bias[o] over the padded width np (scale
// and bias are zero past the true width, so the padding becomes 0).
inline void dequantize_row(const std::int32_t* acc, int np, const float* scale, const float* bias,
                           float* out) {
  for (int o = 0; o < np; o += VW)
    vstore(out + o, vfma(__builtin_convertvector(viload(acc + o), vf), vload(scale + o), vload(bias + o)));
}

// The same with a per-row factor: float(acc)·row_scale·scale[o] + bias[o].
inline void dequantize_row(const std::int32_t* acc, int np, float row_scale, const float* scale,
                           const float* bias, float* out) {
  for (int o = 0; o < np; o += VW)
    vstore(out + o, vfma(__builtin_convertvector(viload(acc + o), vf) * row_scale,
                         vload(scale + o), vload(bias + o)));
}

// max |x[i]| over np values (np a multiple of VW); a max is exact in any order.
inline float row_amax(const float* x, int np) {
  vf m{};
  for (int i = 0; i < np; i += VW) {
    const vf a = (vf)((vi)vload(x + i) & (vi{} + 0x7fffffff));
    m = a > m ? a : m;
  }
  float r = 0.0f;
  for (int l = 0; l < VW; ++l) r = std::max(r, m[l]);
  return r;
}

// Row r of the backward's gZ times the weight scales, onto an int16 / int8 grid with a
// dynamic scale max|gZ·s_w| / qmax (returned), zero past n up to np.
template <class Int>
inline float quantize_gradient_row(float* z, int n, int np, const float* wscale, float qmax,
                                   Int* q) {
  vf amax{};
  const int nv = n / VW * VW;
  for (int o = 0; o < nv; o += VW) {
    const vf v = vload(z + o) * vload(wscale + o);
    vstore(z + o, v);
    const vf a = (vf)((vi)v & (vi{} + 0x7fffffff));
    amax = a > amax ? a : amax;
  }
  float m = 0.0f;
  for (int l = 0; l < VW; ++l) m = std::max(m, amax[l]);
  for (int o = nv; o < n; ++o) {
    z[o] *= wscale[o];
    m = std::max(m, std::abs(z[o]));
  }
  for (int o = n; o < np; ++o) z[o] = 0.0f;
  const float sc = m / qmax;
  quantize_row_v(z, np, sc > 0.0f ? 1.0f / sc : 0.0f, qmax, q);
  return sc;
}

struct Scratch {
  float* T;       // (NB, 4, m1p) descriptor T (inv_nc applied)
  float* gT;      // (NB, 4, m1p) dE/dT
  float* act;     // (NB, k0_p) D; then per layer t and y: (2 * max_layers, NB, max_out_p)
  float* gA;      // (NB, max_width_p)
  float* gB;      // (NB, max_width_p)
  float* gZ;      // (NB, max_out_p)
  std::int8_t* a8;      // (NB, max_width_p)
  std::int16_t* a16;    // (NB, max_width_p)
  std::int32_t* acc32;  // (NB, max_width_p)
  std::int64_t* t64;    // (4, m1p)
  double* gd;           // (2, m1p) slow path G, dG
  double* sg;           // (NB) dynamic gradient scales
  float* gdt;           // (m2, m1p) gDᵀ of one centre
};

inline std::size_t align64(std::size_t n) { return (n + 63) / 64 * 64; }

Scratch carve(const ModelArgs& M, void* base, std::size_t* total) {
  const std::size_t NB = kBlockAtoms;
  std::size_t off = 0;
  auto take = [&](std::size_t bytes) {
    const std::size_t o = off;
    off += align64(bytes);
    return o;
  };
  const std::size_t oT = take(NB * 4 * M.m1p * sizeof(float));
  const std::size_t ogT = take(NB * 4 * M.m1p * sizeof(float));
  const std::size_t oact =
      take((NB * M.k0_p + 2 * std::size_t(M.max_layers) * NB * M.max_out_p) * sizeof(float));
  const std::size_t ogA = take(NB * M.max_width_p * sizeof(float));
  const std::size_t ogB = take(NB * M.max_width_p * sizeof(float));
  const std::size_t ogZ =
      take(std::max<std::size_t>(NB * M.max_out_p, 4 * std::size_t(M.m1p)) * sizeof(float));
  const std::size_t oa8 = take(NB * M.max_width_p);
  const std::size_t oa16 = take(NB * M.max_width_p * sizeof(std::int16_t));
  const std::size_t oacc = take(NB * M.max_width_p * sizeof(std::int32_t));
  const std::size_t ot64 = take(4 * M.m1p * sizeof(std::int64_t));
  const std::size_t ogd = take(2 * M.m1p * sizeof(double));
  const std::size_t osg = take(NB * sizeof(double));
  const std::size_t ogdt = take(std::size_t(M.m2) * M.m1p * sizeof(float));
  if (total) *total = off + 64;
  Scratch s{};
  if (!base) return s;
  char* p = reinterpret_cast<char*>((reinterpret_cast<std::uintptr_t>(base) + 63) / 64 * 64);
  s.T = reinterpret_cast<float*>(p + oT);
  s.gT = reinterpret_cast<float*>(p + ogT);
  s.act = reinterpret_cast<float*>(p + oact);
  s.gA = reinterpret_cast<float*>(p + ogA);
  s.gB = reinterpret_cast<float*>(p + ogB);
  s.gZ = reinterpret_cast<float*>(p + ogZ);
  s.a8 = reinterpret_cast<std::int8_t*>(p + oa8);
  s.a16 = reinterpret_cast<std::int16_t*>(p + oa16);
  s.acc32 = reinterpret_cast<std::int32_t*>(p + oacc);
  s.t64 = reinterpret_cast<std::int64_t*>(p + ot64);
  s.gd = reinterpret_cast<double*>(p + ogd);
  s.sg = reinterpret_cast<double*>(p + osg);
  s.gdt = reinterpret_cast<float*>(p + ogdt);
  return s;
}

// Species of a model with env_mat "deepmd" the kernel counts neighbours of (limits::kMaxSpecies).
constexpr int kMaxPadSpecies = 128;

#include "qnn/kernels/descriptor_impl.hpp"

}  // namespace

void run_block_tables(const ModelArgs& M, const GraphArgs& G, const OutArgs& O, const int* atoms,
                      int n, int c, void* scratch, BlockResult& res);

// A block's centres are all of species c: with pair embedding nets (coef_centre_stride != 0)
// the tables of centre species c are those the block reads.
void run_block(const ModelArgs& M, const GraphArgs& G, const OutArgs& O, const int* atoms, int n,
               int c, void* scratch, BlockResult& res) {
  const RoundNearest rounding;  // vround's conversions: nearest-even, whatever the caller set
  if (M.coef_centre_stride == 0) {
    run_block_tables(M, G, O, atoms, n, c, scratch, res);
    return;
  }
  ModelArgs Mc = M;
  Mc.coef = M.coef + static_cast<std::size_t>(c) * M.coef_centre_stride;
  run_block_tables(Mc, G, O, atoms, n, c, scratch, res);
}

void run_block_tables(const ModelArgs& M, const GraphArgs& G, const OutArgs& O, const int* atoms,
                      int n, int c, void* scratch, BlockResult& res) {
  const Scratch S = carve(M, scratch, nullptr);
  const int P = M.m1p;
  const int rows = (n + 3) / 4 * 4;
  const FitNet& net = M.fit[c];
  float* D = S.act;
  const int k0p = M.k0_p;
  using Clock = std::chrono::steady_clock;
  Clock::time_point tp = O.timing ? Clock::now() : Clock::time_point{};
  auto lap = [&](int phase) {  // qnn bench's phase split
    if (!O.timing) return;
    const Clock::time_point now = Clock::now();
    res.phase_s[phase] += std::chrono::duration<double>(now - tp).count();
    tp = now;
  };
  // ---- descriptor forward: the block's active edges and their geometry, then one centre per row
  EdgeBuf& B = edge_buf();
  int first[kBlockAtoms + 1];
  const int ne = gather_edges(M, G, atoms, n, B, first, res);
  edge_geometry(M, c, B, ne);
  for (int r = 0; r < rows; ++r) {
    float* d = D + static_cast<std::size_t>(r) * k0p;
    if (r < n)
      descriptor_forward(M, c, B, first[r], first[r + 1], S.t64, S.gd,
                         S.T + static_cast<std::size_t>(r) * 4 * P, d, res);
    else
      std::fill(d, d + M.k0, 0.0f);
    std::fill(d + M.k0, d + k0p, 0.0f);
  }
  lap(0);
  // ---- fitting net forward (eq. F), layer by layer over the block
  const std::size_t layer_stride = static_cast<std::size_t>(kBlockAtoms) * M.max_out_p;
  float* tbuf = S.act + static_cast<std::size_t>(kBlockAtoms) * k0p;  // t of layer l at 2l
  const float* x = D;
  int ldx = k0p;
  for (int l = 0; l < net.nlayers; ++l) {
    const FitLayer& L = net.layers[l];
    float* t = tbuf + 2 * l * layer_stride;
    float* y = t + layer_stride;
    const int ldo = L.out_p;
    if (L.pk16) {  // w8a16: int16 activations, per-row dynamic scale, exact int32 sums
      for (int r = 0; r < rows; ++r) {
        const float* xr = x + static_cast<std::size_t>(r) * ldx;
        const float sx = row_amax(xr, L.in_p) / L.qmax_a;
        S.sg[r] = sx;
        quantize_row_v(xr, L.in_p, sx > 0.0f ? 1.0f / sx : 0.0f, L.qmax_a,
                       S.a16 + static_cast<std::size_t>(r) * L.in_p);
      }
      igemm::gemm_s16s8s32(rows, S.a16, L.in_p, *L.pk16, S.acc32, ldo, M.gemm_isa);
      for (int r = 0; r < rows; ++r)
        dequantize_row(S.acc32 + static_cast<std::size_t>(r) * ldo, ldo, static_cast<float>(S.sg[r]),
                       L.wscale, L.b, t + static_cast<std::size_t>(r) * ldo);
    } else if (L.pk) {  // w8a8: activations on the static grid, exact int32 sums
      for (int r = 0; r < rows; ++r)
        quantize_row_v(x + static_cast<std::size_t>(r) * ldx, L.in_p, L.inv_act_scale, L.qmax_a,
                       S.a8 + static_cast<std::size_t>(r) * L.in_p);
      igemm::gemm_s8s8s32(rows, S.a8, L.in_p, *L.pk, S.acc32, ldo, M.gemm_isa);
      for (int r = 0; r < rows; ++r)
        dequantize_row(S.acc32 + static_cast<std::size_t>(r) * ldo, ldo, L.zscale, L.b,
                       t + static_cast<std::size_t>(r) * ldo);
    } else if (L.fake_quant) {
      // a > 8-bit integer layer, run in float: its input on the activation grid, exactly
      // representable; products and sums in float32 (not the old engine's exact int64).
      float* xq = S.gA;
      for (int r = 0; r < rows; ++r)
        for (int k = 0; k < L.in; ++k)
          xq[static_cast<std::size_t>(r) * L.in_p + k] =
              round_clamp(x[static_cast<std::size_t>(r) * ldx + k] * L.inv_act_scale, L.qmax_a) *
              L.act_scale;
      sgemm(rows, ldo, L.in, xq, L.in_p, L.w, kColPad, std::size_t(kColPad) * L.in, t, ldo);
      for (int r = 0; r < rows; ++r) {
        float* tr = t + static_cast<std::size_t>(r) * ldo;
        for (int o = 0; o < ldo; o += VW) vstore(tr + o, vload(tr + o) + vload(L.b + o));
      }
    } else {
      sgemm(rows, ldo, L.in, x, ldx, L.w, kColPad, std::size_t(kColPad) * L.in, t, ldo);
      for (int r = 0; r < rows; ++r) {
        float* tr = t + static_cast<std::size_t>(r) * ldo;
        for (int o = 0; o < ldo; o += VW) vstore(tr + o, vload(tr + o) + vload(L.b + o));
      }
    }
    for (int r = 0; r < rows; ++r) {
      float* tr = t + static_cast<std::size_t>(r) * ldo;
      float* yr = y + static_cast<std::size_t>(r) * ldo;
      const float* xr = x + static_cast<std::size_t>(r) * ldx;
      if (L.tanh)
        for (int o = 0; o < ldo; o += VW) vstore(tr + o, vtanh(vload(tr + o)));
      switch (L.residual) {
        case kResNone:
          for (int o = 0; o < ldo; ++o) yr[o] = tr[o];
          break;
        case kResIdentity:
          for (int o = 0; o < L.out; ++o) yr[o] = xr[o] + tr[o];
          break;
        case kResDoubling:
          for (int o = 0; o < L.out; ++o) yr[o] = xr[o % L.in] + tr[o];
          break;
        default:
          for (int o = 0; o < L.out; ++o) yr[o] = xr[o] + L.dt[o] * tr[o];
          break;
      }
      for (int o = L.out; o < ldo; ++o) yr[o] = 0.0f;
    }
    x = y;
    ldx = ldo;
  }
  // ---- energies: output layer in double, onto the energy grid
  const int wl = net.nlayers > 0 ? net.layers[net.nlayers - 1].out : M.k0;
  // (four DW-lane partial sums, then their lanes in a fixed order: independent chains)
  const int wv = wl / (4 * DW) * (4 * DW);
  for (int r = 0; r < n; ++r) {
    const float* xr = x + static_cast<std::size_t>(r) * ldx;
    vd acc[4] = {vd{}, vd{}, vd{}, vd{}};
    for (int o = 0; o < wv; o += 4 * DW)
      for (int u = 0; u < 4; ++u)
        acc[u] += __builtin_convertvector(vfhload(xr + o + u * DW), vd) *
                  __builtin_convertvector(vfhload(net.w_out + o + u * DW), vd);
    const vd a = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    double e = net.b_out;
    for (int l = 0; l < DW; ++l) e += a[l];
    for (int o = wv; o < wl; ++o) e += static_cast<double>(xr[o]) * net.w_out[o];
    O.eatom[atoms[r]] = energy_grid(e, res);
  }
  // ---- fitting net backward: dE/dy of the last hidden layer is w_out for every row
  float* gy = S.gA;
  float* gx = S.gB;
  for (int r = 0; r < rows; ++r) {
    float* g = gy + static_cast<std::size_t>(r) * M.max_width_p;
    for (int o = 0; o < wl; ++o) g[o] = net.w_out[o];
  }
  const int ldg = M.max_width_p;
  for (int l = net.nlayers - 1; l >= 0; --l) {
    const FitLayer& L = net.layers[l];
    const float* t = tbuf + 2 * l * layer_stride;
    const int ldo = L.out_p;
    // gZ = gY ⊙ act'(z) (⊙ dt)
    const int outv = L.out / VW * VW;
    for (int r = 0; r < rows; ++r) {
      const float* gr = gy + static_cast<std::size_t>(r) * ldg;
      const float* tr = t + static_cast<std::size_t>(r) * ldo;
      float* zr = S.gZ + static_cast<std::size_t>(r) * ldo;
      for (int o = 0; o < outv; o += VW) {
        vf v = vload(gr + o);
        if (L.tanh) {
          const vf tt = vload(tr + o);
          v *= 1.0f - tt * tt;
        }
        if (L.residual == kResTimestep) v *= vload(L.dt + o);
        vstore(zr + o, v);
      }
      for (int o = outv; o < L.out; ++o) {
        float v = gr[o];
        if (L.tanh) v *= 1.0f - tr[o] * tr[o];
        if (L.residual == kResTimestep) v *= L.dt[o];
        zr[o] = v;
      }
      for (int o = L.out; o < ldo; ++o) zr[o] = 0.0f;
    }
    // gX = gZ · Wᵀ
    if (L.pkt16 || L.pkt) {  // gZ·s_w per row onto int16 / int8 (dynamic scale), exact sums
      for (int r = 0; r < rows; ++r) {
        float* zr = S.gZ + static_cast<std::size_t>(r) * ldo;
        S.sg[r] = L.pkt16 ? quantize_gradient_row(zr, L.out, ldo, L.wscale, L.qmax_g,
                                                  S.a16 + static_cast<std::size_t>(r) * ldo)
                          : quantize_gradient_row(zr, L.out, ldo, L.wscale, 127.0f,
                                                  S.a8 + static_cast<std::size_t>(r) * ldo);
      }
      if (L.pkt16)
        igemm::gemm_s16s8s32(rows, S.a16, ldo, *L.pkt16, S.acc32, L.in_p, M.gemm_isa);
      else
        igemm::gemm_s8s8s32(rows, S.a8, ldo, *L.pkt, S.acc32, L.in_p, M.gemm_isa);
      const int inv_ = L.in / VW * VW;
      for (int r = 0; r < rows; ++r) {
        const std::int32_t* acc = S.acc32 + static_cast<std::size_t>(r) * L.in_p;
        float* xr = gx + static_cast<std::size_t>(r) * ldg;
        const float sc = static_cast<float>(S.sg[r]);
        for (int k = 0; k < inv_; k += VW)
          vstore(xr + k, __builtin_convertvector(viload(acc + k), vf) * sc);
        for (int k = inv_; k < L.in; ++k) xr[k] = static_cast<float>(acc[k]) * sc;
      }
    } else {
      sgemm(rows, L.in_p, L.out, S.gZ, ldo, L.wt, kColPad, std::size_t(kColPad) * L.out, gx, ldg);
    }
    for (int r = 0; r < rows; ++r) {
      const float* gr = gy + static_cast<std::size_t>(r) * ldg;
      float* xr = gx + static_cast<std::size_t>(r) * ldg;
      if (L.residual == kResIdentity || L.residual == kResTimestep) {
        for (int k = 0; k < L.in; ++k) xr[k] += gr[k];
      } else if (L.residual == kResDoubling) {
        for (int k = 0; k < L.in; ++k) xr[k] += gr[k] + gr[L.in + k];
      }
    }
    std::swap(gx, gy);
  }
  lap(1);
  // gy now holds dE/dD per row. ---- descriptor backward and forces
  float* gT = S.gT;
  for (int r = 0; r < n; ++r)
    centre_gradients(M, B, first[r], first[r + 1], S.gdt,
                     S.T + static_cast<std::size_t>(r) * 4 * P,
                     gy + static_cast<std::size_t>(r) * ldg, gT + static_cast<std::size_t>(r) * 4 * P);
  block_scatter(M, O, atoms, n, c, B, first, gT, S.gd, res);
  lap(2);
}

// Lane-FMAs per second of this path on one thread: a loop of 12 independent vector FMAs (the
// descriptor roofline of qnn bench). The generic path counts a multiply and an add as one.
double fma_peak() {
  vf a[12];
  for (int k = 0; k < 12; ++k) a[k] = vset(1.0f + 1e-3f * k);
  const vf b = vset(0.999999f), c = vset(1e-7f);
  const long n = 2000000;
  const auto t0 = std::chrono::steady_clock::now();
  for (long i = 0; i < n; ++i)
    for (int k = 0; k < 12; ++k) a[k] = vfma(a[k], b, c);  // a recurrence: nothing folds
  const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  volatile float sink = 0.0f;
  for (int k = 0; k < 12; ++k) sink = sink + hsum(a[k]);
  return 12.0 * n * VW / t;
}

std::size_t scratch_size(const ModelArgs& M) {
  std::size_t total = 0;
  carve(M, nullptr, &total);
  return total;
}

}  // namespace QNN_NS
}  // namespace qnn::v2
