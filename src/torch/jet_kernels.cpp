// Row loops of the embedding jet (jet_kernels.hpp; docs/training.md, eqs. J1–J4).
//
// Each loop is written once, as an always-inline template, and instantiated for double and,
// three times, for float: inside functions compiled for AVX-512, for AVX2 with FMA and for the
// baseline, so that the compiler vectorizes the same source for each; float_isa() picks one
// at first use. Results differ between the float variants only by rounding (FMA contraction).
#include "torch/jet_kernels.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#define QNN_JET_INLINE inline __attribute__((always_inline))
#if defined(__GNUC__) && defined(__x86_64__)
#define QNN_JET_X86 1
#define QNN_JET_AVX512 __attribute__((target("avx512f,avx512dq,avx512vl,avx512bw,avx2,fma")))
#define QNN_JET_AVX2 __attribute__((target("avx2,fma")))
#endif

namespace qnn::libtorch::jet {
namespace {

// tanh in float: sign(x) · (−m)/(2 + m), m = e − 1, e = exp(−2|x|) = 2^n · 2^f with |f| <= 1/2
// and 2^f = 1 + q(f) by the degree-7 Taylor polynomial of the engine's block kernel
// (src/qnn/kernels/block_kernel_impl.hpp, vtanh). m = 2^n q + (2^n − 1) carries no
// cancellation, so small arguments keep their relative accuracy. |x| is clamped at 9; NaN
// stays NaN.
QNN_JET_INLINE float tanh_of(float x) {
  std::int32_t xi;
  std::memcpy(&xi, &x, sizeof xi);
  const std::int32_t sign = xi & static_cast<std::int32_t>(0x80000000u);
  const std::int32_t axi = xi & 0x7fffffff;
  float ax;
  std::memcpy(&ax, &axi, sizeof ax);
  ax = std::min(ax, 9.0f);  // (9 < NaN) is false: NaN passes through
  const float y = ax * -2.8853900817779268f;  // −2 log2(e) |x|, in [−26, 0]
  const auto n = static_cast<std::int32_t>(y - 0.5f);
  const float f = y - static_cast<float>(n);  // in (−1/2, 1/2]
  float q = 1.525273380405984e-05f;
  q = q * f + 0.00015403530393381608f;
  q = q * f + 0.0013333558146428443f;
  q = q * f + 0.009618129107628477f;
  q = q * f + 0.05550410866482158f;
  q = q * f + 0.2402265069591007f;
  q = q * f + 0.6931471805599453f;
  q = q * f;  // 2^f − 1
  const std::int32_t bits = (n + 127) << 23;
  float two_n;
  std::memcpy(&two_n, &bits, sizeof two_n);
  const float m = two_n * q + (two_n - 1.0f);
  float t = -m / (2.0f + m);
  std::int32_t ti;
  std::memcpy(&ti, &t, sizeof ti);
  ti |= sign;
  std::memcpy(&t, &ti, sizeof t);
  return t;
}
QNN_JET_INLINE double tanh_of(double x) { return std::tanh(x); }

// Columns [k0, k1) of one row pair of eq. J1; ys/ts: the residual source of column k0 (null: none).
template <typename T>
QNN_JET_INLINE void out_columns(std::int64_t k0, std::int64_t k1, bool tanh_act, const T* __restrict ys,
                                const T* __restrict ts, const T* __restrict a, const T* __restrict u,
                                const T* __restrict dt, T* __restrict yo, T* __restrict to) {
  if (ys != nullptr) {
    for (std::int64_t k = k0; k < k1; ++k) {
      const T ta = tanh_act ? (T(1) - a[k] * a[k]) * u[k] : u[k];
      yo[k] = ys[k - k0] + dt[k] * a[k];
      to[k] = ts[k - k0] + dt[k] * ta;
    }
  } else {
    for (std::int64_t k = k0; k < k1; ++k) {
      const T ta = tanh_act ? (T(1) - a[k] * a[k]) * u[k] : u[k];
      yo[k] = dt[k] * a[k];
      to[k] = dt[k] * ta;
    }
  }
}

template <typename T>
QNN_JET_INLINE void layer_forward_body(std::int64_t n, std::int64_t in, std::int64_t out, Res res, bool tanh_act,
                                       const T* bias, const T* dt, const T* Y, T* Z, T* Ynext) {
  for (std::int64_t r = 0; r < n; ++r) {
    const T* yr = Y + r * in;
    const T* tr = Y + (n + r) * in;
    T* __restrict a = Z + r * out;
    const T* u = Z + (n + r) * out;
    T* yo = Ynext + r * out;
    T* to = Ynext + (n + r) * out;
    if (tanh_act) {
      for (std::int64_t k = 0; k < out; ++k) a[k] = tanh_of(a[k] + bias[k]);
    } else {
      for (std::int64_t k = 0; k < out; ++k) a[k] = a[k] + bias[k];
    }
    switch (res) {
      case Res::None: out_columns<T>(0, out, tanh_act, nullptr, nullptr, a, u, dt, yo, to); break;
      case Res::Identity: out_columns<T>(0, out, tanh_act, yr, tr, a, u, dt, yo, to); break;
      case Res::Doubling:
        out_columns<T>(0, in, tanh_act, yr, tr, a, u, dt, yo, to);
        out_columns<T>(in, out, tanh_act, yr, tr, a, u, dt, yo, to);
        break;
    }
  }
}

template <typename T>
QNN_JET_INLINE void layer_backward_body(std::int64_t n, std::int64_t in, std::int64_t out, Res res, bool tanh_act,
                                        const T* dt, const T* GYv, const T* GYt, const T* Z, T* GZ,
                                        double* __restrict gb, double* __restrict gdt, T* skip) {
  for (std::int64_t r = 0; r < n; ++r) {
    const T* __restrict a = Z + r * out;
    const T* __restrict u = Z + (n + r) * out;
    const T* __restrict gy = GYv + r * out;
    const T* __restrict gt = GYt + r * out;
    if (skip != nullptr) {
      T* __restrict sy = skip + r * in;
      T* __restrict st = skip + (n + r) * in;
      if (res == Res::Doubling) {
        for (std::int64_t k = 0; k < in; ++k) {
          sy[k] = gy[k] + gy[in + k];
          st[k] = gt[k] + gt[in + k];
        }
      } else {
        for (std::int64_t k = 0; k < in; ++k) {
          sy[k] = gy[k];
          st[k] = gt[k];
        }
      }
    }
    T* __restrict gz = GZ + r * out;
    T* __restrict gu = GZ + (n + r) * out;
    for (std::int64_t k = 0; k < out; ++k) {
      const T d = tanh_act ? T(1) - a[k] * a[k] : T(1);
      const T gta = dt[k] * gt[k];
      gu[k] = gta * d;
      gz[k] = tanh_act ? (dt[k] * gy[k] - T(2) * a[k] * u[k] * gta) * d : dt[k] * gy[k];
      gb[k] += static_cast<double>(gz[k]);
    }
    if (gdt != nullptr) {
      for (std::int64_t k = 0; k < out; ++k) {
        const T d = tanh_act ? T(1) - a[k] * a[k] : T(1);
        gdt[k] += static_cast<double>(gy[k] * a[k] + gt[k] * d * u[k]);
      }
    }
  }
}

template <typename T>
QNN_JET_INLINE void slot_sum_body(std::int64_t nb, std::int64_t M, const std::int64_t* offsets, const T* G,
                                  const T* R, T* out) {
  std::vector<T> acc(static_cast<std::size_t>(4 * M));  // [k][m]
  for (std::int64_t b = 0; b < nb; ++b) {
    T* __restrict a0 = acc.data();
    T* __restrict a1 = a0 + M;
    T* __restrict a2 = a1 + M;
    T* __restrict a3 = a2 + M;
    std::fill(acc.begin(), acc.end(), T(0));
    for (std::int64_t j = offsets[b]; j < offsets[b + 1]; ++j) {
      const T* __restrict g = G + j * M;
      const T r0 = R[4 * j], r1 = R[4 * j + 1], r2 = R[4 * j + 2], r3 = R[4 * j + 3];
      for (std::int64_t m = 0; m < M; ++m) {
        a0[m] += g[m] * r0;
        a1[m] += g[m] * r1;
        a2[m] += g[m] * r2;
        a3[m] += g[m] * r3;
      }
    }
    T* o = out + b * M * 4;
    for (std::int64_t m = 0; m < M; ++m) {
      o[4 * m] = a0[m];
      o[4 * m + 1] = a1[m];
      o[4 * m + 2] = a2[m];
      o[4 * m + 3] = a3[m];
    }
  }
}

// gΣ_b transposed to [k][m] (contiguous in m).
template <typename T>
QNN_JET_INLINE void transpose_sum(std::int64_t M, const T* gsum_b, T* gt) {
  for (std::int64_t m = 0; m < M; ++m)
    for (std::int64_t k = 0; k < 4; ++k) gt[k * M + m] = gsum_b[4 * m + k];
}

template <typename T>
QNN_JET_INLINE void slot_sum_backward_body(std::int64_t nb, std::int64_t M, const std::int64_t* offsets,
                                           const T* gsum, const T* R, T* gG) {
  std::vector<T> gt(static_cast<std::size_t>(4 * M));
  for (std::int64_t b = 0; b < nb; ++b) {
    transpose_sum(M, gsum + b * M * 4, gt.data());
    const T* __restrict g0 = gt.data();
    const T* __restrict g1 = g0 + M;
    const T* __restrict g2 = g1 + M;
    const T* __restrict g3 = g2 + M;
    for (std::int64_t j = offsets[b]; j < offsets[b + 1]; ++j) {
      const T r0 = R[4 * j], r1 = R[4 * j + 1], r2 = R[4 * j + 2], r3 = R[4 * j + 3];
      T* __restrict o = gG + j * M;
      for (std::int64_t m = 0; m < M; ++m) o[m] = r0 * g0[m] + r1 * g1[m] + r2 * g2[m] + r3 * g3[m];
    }
  }
}

template <typename T>
QNN_JET_INLINE void slot_gradients_body(std::int64_t nb, std::int64_t M, const std::int64_t* offsets, const T* gsum,
                                        const T* G, const T* Gp, const T* R, T* s, T* rho) {
  std::vector<T> gt(static_cast<std::size_t>(4 * M));
  for (std::int64_t b = 0; b < nb; ++b) {
    transpose_sum(M, gsum + b * M * 4, gt.data());
    const T* __restrict g0 = gt.data();
    const T* __restrict g1 = g0 + M;
    const T* __restrict g2 = g1 + M;
    const T* __restrict g3 = g2 + M;
    for (std::int64_t j = offsets[b]; j < offsets[b + 1]; ++j) {
      const T r0 = R[4 * j], r1 = R[4 * j + 1], r2 = R[4 * j + 2], r3 = R[4 * j + 3];
      const T* __restrict g = G + j * M;
      const T* __restrict gp = Gp + j * M;
      T acc_s = 0, p0 = 0, p1 = 0, p2 = 0, p3 = 0;
#pragma omp simd reduction(+ : acc_s, p0, p1, p2, p3)
      for (std::int64_t m = 0; m < M; ++m) {
        acc_s += (r0 * g0[m] + r1 * g1[m] + r2 * g2[m] + r3 * g3[m]) * gp[m];
        p0 += g[m] * g0[m];
        p1 += g[m] * g1[m];
        p2 += g[m] * g2[m];
        p3 += g[m] * g3[m];
      }
      s[j] = acc_s;
      rho[4 * j] = p0;
      rho[4 * j + 1] = p1;
      rho[4 * j + 2] = p2;
      rho[4 * j + 3] = p3;
    }
  }
}

template <typename T>
QNN_JET_INLINE void slot_gradients_backward_body(std::int64_t nb, std::int64_t M, const std::int64_t* offsets,
                                                 const T* gsum, const T* G, const T* Gp, const T* R, const T* gs,
                                                 const T* grho, T* g_gsum, T* gG, T* gGp) {
  std::vector<T> gt(static_cast<std::size_t>(4 * M)), acc(static_cast<std::size_t>(4 * M));
  for (std::int64_t b = 0; b < nb; ++b) {
    transpose_sum(M, gsum + b * M * 4, gt.data());
    std::fill(acc.begin(), acc.end(), T(0));
    const T* __restrict g0 = gt.data();
    const T* __restrict g1 = g0 + M;
    const T* __restrict g2 = g1 + M;
    const T* __restrict g3 = g2 + M;
    T* __restrict a0 = acc.data();
    T* __restrict a1 = a0 + M;
    T* __restrict a2 = a1 + M;
    T* __restrict a3 = a2 + M;
    for (std::int64_t j = offsets[b]; j < offsets[b + 1]; ++j) {
      const T w = gs[j];
      const T c0 = w * R[4 * j], c1 = w * R[4 * j + 1], c2 = w * R[4 * j + 2], c3 = w * R[4 * j + 3];
      const T w0 = grho[4 * j], w1 = grho[4 * j + 1], w2 = grho[4 * j + 2], w3 = grho[4 * j + 3];
      const T* __restrict g = G + j * M;
      const T* __restrict gp = Gp + j * M;
      T* __restrict ogg = gG + j * M;
      T* __restrict ogp = gGp + j * M;
      for (std::int64_t m = 0; m < M; ++m) {
        ogp[m] = c0 * g0[m] + c1 * g1[m] + c2 * g2[m] + c3 * g3[m];
        ogg[m] = w0 * g0[m] + w1 * g1[m] + w2 * g2[m] + w3 * g3[m];
      }
      for (std::int64_t m = 0; m < M; ++m) {
        const T gpm = gp[m], gm = g[m];
        a0[m] += c0 * gpm + w0 * gm;
        a1[m] += c1 * gpm + w1 * gm;
        a2[m] += c2 * gpm + w2 * gm;
        a3[m] += c3 * gpm + w3 * gm;
      }
    }
    T* o = g_gsum + b * M * 4;
    for (std::int64_t m = 0; m < M; ++m) {
      o[4 * m] = a0[m];
      o[4 * m + 1] = a1[m];
      o[4 * m + 2] = a2[m];
      o[4 * m + 3] = a3[m];
    }
  }
}

// 0: baseline, 1: AVX2 + FMA, 2: AVX-512 (F, DQ, VL, BW): the best this CPU runs.
int best_isa_level() {
#ifdef QNN_JET_X86
  static const int level = [] {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512bw")) {
      return 2;
    }
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 1;
    return 0;
  }();
  return level;
#else
  return 0;
#endif
}

// The level in use: the best, unless use_float_isa chose a lower one.
std::atomic<int> g_isa_level{-1};
int isa_level() {
  const int l = g_isa_level.load(std::memory_order_relaxed);
  return l >= 0 ? l : best_isa_level();
}

// One float entry point per ISA for each loop, and the dispatching specialisation.
#ifdef QNN_JET_X86
#define QNN_JET_FLOAT_VARIANTS(name, params, args)                                   \
  QNN_JET_AVX512 void name##_avx512 params { name##_body<float> args; }             \
  QNN_JET_AVX2 void name##_avx2 params { name##_body<float> args; }                 \
  void name##_base params { name##_body<float> args; }                              \
  void name##_float params {                                                        \
    switch (isa_level()) {                                                          \
      case 2: name##_avx512 args; break;                                            \
      case 1: name##_avx2 args; break;                                              \
      default: name##_base args; break;                                             \
    }                                                                               \
  }
#else
#define QNN_JET_FLOAT_VARIANTS(name, params, args) \
  void name##_float params { name##_body<float> args; }
#endif

QNN_JET_FLOAT_VARIANTS(layer_forward,
                       (std::int64_t n, std::int64_t in, std::int64_t out, Res res, bool tanh_act, const float* bias,
                        const float* dt, const float* Y, float* Z, float* Ynext),
                       (n, in, out, res, tanh_act, bias, dt, Y, Z, Ynext))
QNN_JET_FLOAT_VARIANTS(layer_backward,
                       (std::int64_t n, std::int64_t in, std::int64_t out, Res res, bool tanh_act, const float* dt,
                        const float* gy, const float* gt, const float* Z, float* GZ, double* gb, double* gdt,
                        float* skip),
                       (n, in, out, res, tanh_act, dt, gy, gt, Z, GZ, gb, gdt, skip))
QNN_JET_FLOAT_VARIANTS(slot_sum,
                       (std::int64_t nb, std::int64_t M, const std::int64_t* offsets, const float* G, const float* R,
                        float* out),
                       (nb, M, offsets, G, R, out))
QNN_JET_FLOAT_VARIANTS(slot_sum_backward,
                       (std::int64_t nb, std::int64_t M, const std::int64_t* offsets, const float* gsum,
                        const float* R, float* gG),
                       (nb, M, offsets, gsum, R, gG))
QNN_JET_FLOAT_VARIANTS(slot_gradients,
                       (std::int64_t nb, std::int64_t M, const std::int64_t* offsets, const float* gsum,
                        const float* G, const float* Gp, const float* R, float* s, float* rho),
                       (nb, M, offsets, gsum, G, Gp, R, s, rho))
QNN_JET_FLOAT_VARIANTS(slot_gradients_backward,
                       (std::int64_t nb, std::int64_t M, const std::int64_t* offsets, const float* gsum,
                        const float* G, const float* Gp, const float* R, const float* gs, const float* grho,
                        float* g_gsum, float* gG, float* gGp),
                       (nb, M, offsets, gsum, G, Gp, R, gs, grho, g_gsum, gG, gGp))

}  // namespace

template <>
void layer_forward<float>(std::int64_t n, std::int64_t in, std::int64_t out, Res res, bool tanh_act, const float* bias,
                          const float* dt, const float* Y, float* Z, float* Ynext) {
  layer_forward_float(n, in, out, res, tanh_act, bias, dt, Y, Z, Ynext);
}
template <>
void layer_forward<double>(std::int64_t n, std::int64_t in, std::int64_t out, Res res, bool tanh_act,
                           const double* bias, const double* dt, const double* Y, double* Z, double* Ynext) {
  layer_forward_body<double>(n, in, out, res, tanh_act, bias, dt, Y, Z, Ynext);
}
template <>
void layer_backward<float>(std::int64_t n, std::int64_t in, std::int64_t out, Res res, bool tanh_act, const float* dt,
                           const float* gy, const float* gt, const float* Z, float* GZ, double* gb, double* gdt,
                           float* skip) {
  layer_backward_float(n, in, out, res, tanh_act, dt, gy, gt, Z, GZ, gb, gdt, skip);
}
template <>
void layer_backward<double>(std::int64_t n, std::int64_t in, std::int64_t out, Res res, bool tanh_act,
                            const double* dt, const double* gy, const double* gt, const double* Z, double* GZ,
                            double* gb, double* gdt, double* skip) {
  layer_backward_body<double>(n, in, out, res, tanh_act, dt, gy, gt, Z, GZ, gb, gdt, skip);
}
template <>
void slot_sum<float>(std::int64_t nb, std::int64_t M, const std::int64_t* offsets, const float* G, const float* R,
                     float* out) {
  slot_sum_float(nb, M, offsets, G, R, out);
}
template <>
void slot_sum<double>(std::int64_t nb, std::int64_t M, const std::int64_t* offsets, const double* G, const double* R,
                      double* out) {
  slot_sum_body<double>(nb, M, offsets, G, R, out);
}
template <>
void slot_sum_backward<float>(std::int64_t nb, std::int64_t M, const std::int64_t* offsets, const float* gsum,
                              const float* R, float* gG) {
  slot_sum_backward_float(nb, M, offsets, gsum, R, gG);
}
template <>
void slot_sum_backward<double>(std::int64_t nb, std::int64_t M, const std::int64_t* offsets, const double* gsum,
                               const double* R, double* gG) {
  slot_sum_backward_body<double>(nb, M, offsets, gsum, R, gG);
}
template <>
void slot_gradients<float>(std::int64_t nb, std::int64_t M, const std::int64_t* offsets, const float* gsum,
                           const float* G, const float* Gp, const float* R, float* s, float* rho) {
  slot_gradients_float(nb, M, offsets, gsum, G, Gp, R, s, rho);
}
template <>
void slot_gradients<double>(std::int64_t nb, std::int64_t M, const std::int64_t* offsets, const double* gsum,
                            const double* G, const double* Gp, const double* R, double* s, double* rho) {
  slot_gradients_body<double>(nb, M, offsets, gsum, G, Gp, R, s, rho);
}
template <>
void slot_gradients_backward<float>(std::int64_t nb, std::int64_t M, const std::int64_t* offsets, const float* gsum,
                                    const float* G, const float* Gp, const float* R, const float* gs,
                                    const float* grho, float* g_gsum, float* gG, float* gGp) {
  slot_gradients_backward_float(nb, M, offsets, gsum, G, Gp, R, gs, grho, g_gsum, gG, gGp);
}
template <>
void slot_gradients_backward<double>(std::int64_t nb, std::int64_t M, const std::int64_t* offsets,
                                     const double* gsum, const double* G, const double* Gp, const double* R,
                                     const double* gs, const double* grho, double* g_gsum, double* gG, double* gGp) {
  slot_gradients_backward_body<double>(nb, M, offsets, gsum, G, Gp, R, gs, grho, g_gsum, gG, gGp);
}

// Small per-edge loops: no vector variants.
template <typename T>
void edge_chain(std::int64_t E, const T* gs, const T* gR, const T* dshat_dx, const T* dR_dx, T* gx) {
  for (std::int64_t e = 0; e < E; ++e) {
    for (int d = 0; d < 3; ++d) {
      T v = gs[e] * dshat_dx[3 * e + d];
      for (int k = 0; k < 4; ++k) v += gR[4 * e + k] * dR_dx[12 * e + 3 * k + d];
      gx[3 * e + d] = v;
    }
  }
}
template <typename T>
void edge_chain_backward(std::int64_t E, const T* ggx, const T* dshat_dx, const T* dR_dx, T* g_gs, T* g_gR) {
  for (std::int64_t e = 0; e < E; ++e) {
    const T* g = ggx + 3 * e;
    g_gs[e] = g[0] * dshat_dx[3 * e] + g[1] * dshat_dx[3 * e + 1] + g[2] * dshat_dx[3 * e + 2];
    for (int k = 0; k < 4; ++k) {
      const T* dr = dR_dx + 12 * e + 3 * k;
      g_gR[4 * e + k] = g[0] * dr[0] + g[1] * dr[1] + g[2] * dr[2];
    }
  }
}
template void edge_chain<float>(std::int64_t, const float*, const float*, const float*, const float*, float*);
template void edge_chain<double>(std::int64_t, const double*, const double*, const double*, const double*, double*);
template void edge_chain_backward<float>(std::int64_t, const float*, const float*, const float*, float*, float*);
template void edge_chain_backward<double>(std::int64_t, const double*, const double*, const double*, double*, double*);

bool use_float_isa(const char* name) {
  const std::string n = name != nullptr ? name : "";
  const int level = n == "avx512" ? 2 : n == "avx2" ? 1 : n == "baseline" ? 0 : -1;
  if (level < 0 || level > best_isa_level()) return false;
  g_isa_level.store(level, std::memory_order_relaxed);
  return true;
}

const char* float_isa() {
  switch (isa_level()) {
    case 2: return "avx512";
    case 1: return "avx2";
    default: return "baseline";
  }
}

}  // namespace qnn::libtorch::jet
