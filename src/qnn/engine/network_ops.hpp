// Device functions of the se_e2_a network shared by the exact engine (exact_engine.cpp), the
// compressed engine's block kernel (kernels/) and the CUDA kernels (cuda/), and by the trainer's
// jet (src/torch/embedding_jet.cpp): the switching function (eq. S) and the descriptor
// contraction with its backward pass (eq. D, eq. B step 2) and that pass's own backward.
#pragma once

// Plain functions, so that every backend can call them: Kokkos kernels on the host (and on a
// device in a future Kokkos build with CUDA) and the native CUDA kernels of src/qnn/cuda,
// which are compiled without Kokkos.
#if defined(__CUDACC__)
#define QNN_HD_INLINE __host__ __device__ inline
#else
#define QNN_HD_INLINE inline
#endif

namespace qnn {

// Switching function s(r) and ds/dr (docs/model.md eq. S), in double: V is double, or a GCC
// vector of doubles (the block kernel's edge loop, kernels/descriptor_impl.hpp). Written
// without branches (each case is computed and selected), so that edge loops vectorise; the
// selected value is the same expression, hence the same bits, as a branching version.
template <class V>
QNN_HD_INLINE void switch_function(V r, double rs, double rc, V& s, V& ds) {
  const V inv = 1.0 / r;
  const double w = rc - rs;
  const V u = (r - rs) / w;
  const V u2 = u * u;
  const V u3 = u2 * u;
  const V poly = u3 * (-6.0 * u2 + 15.0 * u - 10.0) + 1.0;
  const V dpoly = (-30.0 * u2 * u2 + 60.0 * u3 - 30.0 * u2) / w;
  const auto outside = r >= rc;
  const auto inner = r < rs;
  s = outside ? V{} : inner ? inv : inv * poly;
  ds = outside ? V{} : inner ? -inv * inv : -inv * inv * poly + inv * dpoly;
}

// D = T Tᵀ restricted to n < M2 (eq. D); T is (M1, 4), D is (M1, M2).
template <class Real>
QNN_HD_INLINE void descriptor_from_T(int m1, int m2, const Real* T, Real* D) {
  for (int m = 0; m < m1; ++m)
    for (int n = 0; n < m2; ++n)
      D[m * m2 + n] = T[4 * m] * T[4 * n] + T[4 * m + 1] * T[4 * n + 1] +
                      T[4 * m + 2] * T[4 * n + 2] + T[4 * m + 3] * T[4 * n + 3];
}

// g_T = dE/dT from g_D = dE/dD (eq. B step 2).
template <class Real>
QNN_HD_INLINE void descriptor_backward(int m1, int m2, const Real* T, const Real* gd, Real* gt) {
  for (int m = 0; m < m1; ++m) {
    Real acc[4] = {0, 0, 0, 0};
    for (int n = 0; n < m2; ++n) {
      const Real w = gd[m * m2 + n];
      for (int k = 0; k < 4; ++k) acc[k] += w * T[4 * n + k];
    }
    if (m < m2) {
      for (int p = 0; p < m1; ++p) {
        const Real w = gd[p * m2 + m];
        for (int k = 0; k < 4; ++k) acc[k] += w * T[4 * p + k];
      }
    }
    for (int k = 0; k < 4; ++k) gt[4 * m + k] = acc[k];
  }
}

// The backward of descriptor_backward, for a loss on forces (the trainer's jet,
// src/torch/embedding_jet.cpp): from ggt = dL/dg_T (M1, 4), dL/dg_D (M1, M2) and the
// contribution dL/dT (M1, 4) of the g_T path:
//   g_gd[a][c] = Σ_k ggt[a][k] T[c][k] + ggt[c][k] T[a][k],
//   g_t[p][k]  = [p < M2] Σ_m ggt[m][k] gd[m][p] + Σ_{m < M2} ggt[m][k] gd[p][m].
template <class Real>
QNN_HD_INLINE void descriptor_backward_backward(int m1, int m2, const Real* T, const Real* gd, const Real* ggt,
                                                Real* g_gd, Real* g_t) {
  for (int a = 0; a < m1; ++a) {
    for (int c = 0; c < m2; ++c) {
      Real v = 0;
      for (int k = 0; k < 4; ++k) v += ggt[4 * a + k] * T[4 * c + k] + ggt[4 * c + k] * T[4 * a + k];
      g_gd[a * m2 + c] = v;
    }
  }
  for (int p = 0; p < m1; ++p) {
    Real acc[4] = {0, 0, 0, 0};
    if (p < m2) {
      for (int m = 0; m < m1; ++m) {
        for (int k = 0; k < 4; ++k) acc[k] += ggt[4 * m + k] * gd[m * m2 + p];
      }
    }
    for (int m = 0; m < m2; ++m) {
      for (int k = 0; k < 4; ++k) acc[k] += ggt[4 * m + k] * gd[p * m2 + m];
    }
    for (int k = 0; k < 4; ++k) g_t[4 * p + k] = acc[k];
  }
}

}  // namespace qnn
