// Row loops of the embedding jet and its slot contractions (docs/training.md, eqs. J1–J4),
// on raw arrays, without LibTorch: embedding_jet.cpp does the GEMMs and the bookkeeping. Each
// function exists for float and double; the float loops run in the widest vector unit the CPU
// has (AVX-512, AVX2 with FMA, or the baseline), chosen at run time. The reference these
// loops are tested against is autograd through the LibTorch network (test_torch_module).
//
// Layouts: a jet array holds 2n rows, the n primal rows (values) and then the n tangent rows
// (derivatives with respect to ŝ). Slot arrays are in CSR order: the rows of centre b are
// offsets[b] .. offsets[b+1] − 1; R̂ is (rows, 4); Σ and gΣ are (nb, M, 4).
#pragma once
#include <cstdint>

namespace qnn::libtorch::jet {

enum class Res { None, Identity, Doubling };

// Eq. J1, one layer. On entry Z (2n, out) holds Y·W (no bias); on exit its primal rows hold
// a = act(z + b) and its tangent rows still hold u = t·W. Writes Y' (2n, out):
//   y' = res(y) + dt ⊙ a,   t' = res(t) + dt ⊙ act'(z) ⊙ u   (act'(z) = 1 − a² for tanh).
// dt may be null (no timestep).
template <typename T>
void layer_forward(std::int64_t n, std::int64_t in, std::int64_t out, Res res, bool tanh_act, const T* bias,
                   const T* dt, const T* Y, T* Z, T* Ynext);

// Eq. J3, one layer: from the gradients gy, gt (n, out each) of the layer's outputs and its
// saved Z, writes GZ (2n, out) = [gz; gu] and adds Σ_rows gz to gb (out) and, with dt, the dt
// gradient to gdt (out); both in double. With `skip` (2n, in), also writes the residual's part
// of the input gradient, resᵀ([gy; gt]) (res not None).
template <typename T>
void layer_backward(std::int64_t n, std::int64_t in, std::int64_t out, Res res, bool tanh_act, const T* dt,
                    const T* gy, const T* gt, const T* Z, T* GZ, double* gb, double* gdt, T* skip);

// Σ_b = Σ_j G_j ⊗ R̂_j over the rows of centre b: out (nb, M, 4).
template <typename T>
void slot_sum(std::int64_t nb, std::int64_t M, const std::int64_t* offsets, const T* G, const T* R, T* out);
// Its backward: gG_j = gΣ_b R̂_j (rows, M).
template <typename T>
void slot_sum_backward(std::int64_t nb, std::int64_t M, const std::int64_t* offsets, const T* gsum, const T* R,
                       T* gG);

// Eq. J4: per row j of centre b, with q = gΣ_b R̂_j (M): s_j = q · G'_j and ρ_j = G_jᵀ gΣ_b (4).
template <typename T>
void slot_gradients(std::int64_t nb, std::int64_t M, const std::int64_t* offsets, const T* gsum, const T* G,
                    const T* Gp, const T* R, T* s, T* rho);
// Its backward, from gs (rows) and gρ (rows, 4): g(gΣ) (nb, M, 4), gG, gG' (rows, M).
template <typename T>
void slot_gradients_backward(std::int64_t nb, std::int64_t M, const std::int64_t* offsets, const T* gsum,
                             const T* G, const T* Gp, const T* R, const T* gs, const T* grho, T* g_gsum, T* gG,
                             T* gGp);

// The chain rule down to the edge vectors: gx_e = gs_e dŝ/dx_e + Σ_k gR_ek dR̂_k/dx_e (E, 3),
// from gs (E), gR (E, 4), dŝ/dx (E, 3) and dR̂/dx (E, 4, 3); and its backward, the gradients of
// gs and gR from ggx (E, 3).
template <typename T>
void edge_chain(std::int64_t E, const T* gs, const T* gR, const T* dshat_dx, const T* dR_dx, T* gx);
template <typename T>
void edge_chain_backward(std::int64_t E, const T* ggx, const T* dshat_dx, const T* dR_dx, T* g_gs, T* g_gR);

// Which vector unit the float loops use ("avx512", "avx2" or "baseline").
const char* float_isa();
// Makes the float loops use `name` (one of the above), e.g. to test every variant on one
// machine; false, and nothing changed, if this CPU cannot run it or the name is unknown.
bool use_float_isa(const char* name);

}  // namespace qnn::libtorch::jet
