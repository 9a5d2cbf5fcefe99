// The descriptor half of the block kernel (block_kernel_impl.hpp): edge geometry, the fused
// tabulated embedding and T = Σ G ⊗ R̂ (forward), and dE/dT → dE/dx_ij with the fixed-point
// force and virial scatter (backward). Equations: docs/model.md eq. S, R, G, D, B and
// "Compressed embedding"; the fixed-point contract: docs/model.md, "Determinism".
//
// Data flow of one block (32 centres of one species):
//   1. gather   (scalar)      every listed neighbour within rc into the block's edge arrays
//   2. geometry (edge loop)   r, s, ds/dr, R̂, table interval and t, the chain-rule factors
//   3. forward  (per centre)  T over the fast edges with register-resident int32 accumulators,
//                             channel chunk by channel chunk; the rare slow edges in double
//   4. backward (per centre)  per edge g_R̂[k] = Σ_m gT[k][m] G[m] and Σ_m g_G[m] dG/dt[m]
//   5. scatter  (per centre)  eq. B step 5, rounded onto the 2^-32 grids, integer sums
// Included inside the per-ISA namespace after vec_impl.hpp.

constexpr double kMinDistance = kMinPairDistance;  // Å (the engine throws on closer pairs)
constexpr double kMaxGridValue = 0x1p61;           // slow path: |value| on its int64 grid

// Fast-path terms G·R̂·t_scale are rounded half-even to int32 (|G·R̂·t_scale| < 2^27:
// packed_model.cpp chooses t_scale so; docs/model.md, "Determinism") and summed exactly in
// int32 for kFlushTerms edges, then in int64.
constexpr int kFlushTerms = 15;  // 15 · 2^27 < 2^31

// Output grids (2^-32 eV/Å per dE/dx_ij component, 2^-32 eV per virial term): y = v·2^32
// rounded half-even by the same trick in double, valid while |y| < 2^51; |y| >= 2^50 is
// reported as out of range.
constexpr double kGridMagic = 6755399441055744.0;  // 1.5 · 2^52
constexpr std::int64_t kGridMagicBits = 0x4338000000000000;
constexpr double kMaxFastGrid = 0x1p50;

inline std::int64_t grid_round(double v, BlockResult& res) {
  const double y = v * 0x1p32;
  if (!(std::abs(y) < kMaxFastGrid)) {
    res.bad = 1;
    return 0;
  }
  const double z = y + kGridMagic;
  std::int64_t b;
  std::memcpy(&b, &z, sizeof b);
  return b - kGridMagicBits;
}

// An atomic energy onto the 2^-24 eV grid (half-even).
inline std::int64_t energy_grid(double e, BlockResult& res) {
  const double q = std::nearbyint(e * 0x1p24);
  if (!(std::abs(q) < kMaxGridValue)) {
    res.bad = 1;
    return 0;
  }
  return static_cast<std::int64_t>(q);
}

inline void add64(std::int64_t* p, std::int64_t v, bool atomic) {
  if (atomic)
    __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
  else
    *p += v;
}

// Interval, t and dt/dŝ of ŝ in the table of one species (EmbeddingTable::locate).
inline void locate(const TableZone& z, double shat, int& k, double& t, double& inv_h) {
  const double x = (shat - z.lo) * z.inv_h1;
  if (!(x >= 0.0)) { k = 0; t = 0.0; inv_h = 0.0; return; }
  if (x < z.n1) { k = static_cast<int>(x); t = x - k; inv_h = z.inv_h1; return; }
  const double x2 = (shat - z.mid) * z.inv_h2;
  if (x2 < z.n2) { k = static_cast<int>(x2); t = x2 - k; k += z.n1; inv_h = z.inv_h2; return; }
  k = z.n1 + z.n2 - 1; t = 1.0; inv_h = 0.0;
}

inline const float* coef_of(const ModelArgs& M, int a, int k) {
  const TableZone& z = M.zones[a];
  return M.coef + (static_cast<std::size_t>(a) * (z.n1 + z.n2) + k) * 6 * M.m1p;
}

// ------------------------------------------------------------------------------------------
// The slow path: edges closer than the table's fine zone (r < TableSpec::r_fine), rare in
// any physical system, in double precision with the same equations, one edge at a time.

struct SlowEdge {
  double dx, dy, dz, r, s, ds, iss, isr;
  double R[4];
  int a, k;
  double t, inv_h;
};

inline void slow_geometry(const ModelArgs& M, int c, double dx, double dy, double dz, int a,
                          SlowEdge& E) {
  E.dx = dx;
  E.dy = dy;
  E.dz = dz;
  E.r = std::sqrt(dx * dx + dy * dy + dz * dz);
  switch_function(E.r, M.rs, M.rc, E.s, E.ds);
  E.a = a;
  const int p = c * M.S + a;
  E.iss = M.inv_std_s[p];
  E.isr = M.inv_std_r[p];
  const double shat = (E.s - M.mean_s[p]) * E.iss;
  E.R[0] = M.deepmd ? shat : E.s * E.iss;
  const double sr = E.s * E.isr / E.r;
  E.R[1] = sr * dx;
  E.R[2] = sr * dy;
  E.R[3] = sr * dz;
  locate(M.zones[a], shat, E.k, E.t, E.inv_h);
}

// G and dG/dt of one edge in double from the float coefficients.
inline void table_double(const ModelArgs& M, const SlowEdge& E, double* g, double* dg) {
  const float* c = coef_of(M, E.a, E.k);
  const int P = M.m1p;
  const double t = E.t;
  for (int m = 0; m < M.m1; ++m) {
    const double c0 = c[m], c1 = c[P + m], c2 = c[2 * P + m], c3 = c[3 * P + m],
                 c4 = c[4 * P + m], c5 = c[5 * P + m];
    g[m] = c0 + t * (c1 + t * (c2 + t * (c3 + t * (c4 + t * c5))));
    dg[m] = c1 + t * (2 * c2 + t * (3 * c3 + t * (4 * c4 + t * 5 * c5)));
  }
}

// ------------------------------------------------------------------------------------------
// The active edges of one block, structure of arrays, per thread (grow only: no allocation
// in the steady state). Edge e of centre r lies in [first[r], first[r + 1]).

struct EdgeBuf {
  std::size_t cap = 0;
  std::vector<int> j, sp, off;            // neighbour, its species, coefficient offset (floats)
  std::vector<unsigned char> fast;        // fine-zone edge (else the slow path)
  std::vector<float> t;                   // local coordinate in the interval
  std::vector<float> q[4];                // R̂[k]·t_scale (forward)
  std::vector<float> rf[4];               // R̂[k] (backward)
  std::vector<float> red[5];              // g_R̂[0..3] and Σ_m g_G dG/dt (backward)
  std::vector<double> dx, dy, dz, r2;     // displacement x_j − x_i and r²
  std::vector<double> ex, ey, ez, ca, cb, cc, ih;  // chain-rule factors (eq. B step 5)
  std::vector<std::int64_t> g[9];         // dE/dx_ij and the six virial terms on their grids
  void reserve(std::size_t n) {
    if (n <= cap) return;
    n += n / 4 + 64;
    for (auto* v : {&j, &sp, &off}) v->resize(n);
    fast.resize(n);
    t.resize(n);
    for (auto& v : q) v.resize(n);
    for (auto& v : rf) v.resize(n);
    for (auto& v : red) v.resize(n);
    for (auto* v : {&dx, &dy, &dz, &r2, &ex, &ey, &ez, &ca, &cb, &cc, &ih}) v->resize(n);
    for (auto& v : g) v.resize(n);
    cap = n;
  }
};

inline EdgeBuf& edge_buf() {
  thread_local EdgeBuf buf;
  return buf;
}

// 1. Every listed neighbour of the block's centres within rc, centre by centre.
__attribute__((noinline)) int gather_edges(const ModelArgs& M, const GraphArgs& G,
                                           const int* atoms, int n, EdgeBuf& B, int* first,
                                           BlockResult& res) {
  std::size_t capacity = 0;
  for (int r = 0; r < n; ++r)
    capacity += static_cast<std::size_t>(G.offsets[atoms[r] + 1] - G.offsets[atoms[r]]);
  B.reserve(capacity + VW);
  const double rc2 = M.rc * M.rc;
  double rmin2 = res.min_distance * res.min_distance;
  int ne = 0;
  for (int r = 0; r < n; ++r) {
    first[r] = ne;
    const int i = atoms[r];
    const double xi = G.pos[3 * i], yi = G.pos[3 * i + 1], zi = G.pos[3 * i + 2];
    int e = G.offsets[i];
#if QNN_VW == 16
    // 8 listed neighbours at a time: masked gathers of their positions, r² < rc² kept by
    // in-register compression (a compress to memory is slow on some cores) and full stores
    // at the end of the kept edges (the buffers have VW of slack)
    {
      const __m512d vxi = _mm512_set1_pd(xi), vyi = _mm512_set1_pd(yi), vzi = _mm512_set1_pd(zi);
      const __m512d vrc2 = _mm512_set1_pd(rc2);
      __m512d vmin = _mm512_set1_pd(rmin2);
      for (; e < G.offsets[i + 1]; e += 8) {
        const int m = std::min(8, G.offsets[i + 1] - e);
        const __mmask8 lm = static_cast<__mmask8>((1u << m) - 1u);
        const __m256i jv = _mm256_maskz_loadu_epi32(lm, G.neighbors + e);
        const __m256i j3 = _mm256_add_epi32(jv, _mm256_add_epi32(jv, jv));
        const __m512d zero = _mm512_setzero_pd();
        const __m512d dx = _mm512_sub_pd(_mm512_mask_i32gather_pd(zero, lm, j3, G.pos, 8), vxi);
        const __m512d dy = _mm512_sub_pd(_mm512_mask_i32gather_pd(zero, lm, j3, G.pos + 1, 8), vyi);
        const __m512d dz = _mm512_sub_pd(_mm512_mask_i32gather_pd(zero, lm, j3, G.pos + 2, 8), vzi);
        const __m512d r2 = _mm512_add_pd(_mm512_add_pd(_mm512_mul_pd(dx, dx), _mm512_mul_pd(dy, dy)),
                                         _mm512_mul_pd(dz, dz));
        const __mmask8 keep = _mm512_mask_cmp_pd_mask(lm, r2, vrc2, _CMP_LT_OQ);
        if (!keep) continue;
        vmin = _mm512_mask_min_pd(vmin, keep, vmin, r2);
        const __m256i sp = _mm256_mmask_i32gather_epi32(_mm256_setzero_si256(), keep, jv, G.species, 4);
        _mm512_storeu_pd(&B.dx[ne], _mm512_maskz_compress_pd(keep, dx));
        _mm512_storeu_pd(&B.dy[ne], _mm512_maskz_compress_pd(keep, dy));
        _mm512_storeu_pd(&B.dz[ne], _mm512_maskz_compress_pd(keep, dz));
        _mm512_storeu_pd(&B.r2[ne], _mm512_maskz_compress_pd(keep, r2));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(&B.j[ne]), _mm256_maskz_compress_epi32(keep, jv));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(&B.sp[ne]), _mm256_maskz_compress_epi32(keep, sp));
        ne += __builtin_popcount(keep);
      }
      alignas(64) double lanes[8];
      _mm512_store_pd(lanes, vmin);
      for (double v : lanes) rmin2 = std::min(rmin2, v);
    }
#endif
    for (; e < G.offsets[i + 1]; ++e) {
      const int j = G.neighbors[e];
      const double dx = G.pos[3 * j] - xi, dy = G.pos[3 * j + 1] - yi, dz = G.pos[3 * j + 2] - zi;
      const double r2 = dx * dx + dy * dy + dz * dz;
      if (!(r2 < rc2)) continue;
      B.j[ne] = j;
      B.sp[ne] = G.species[j];
      B.dx[ne] = dx;
      B.dy[ne] = dy;
      B.dz[ne] = dz;
      B.r2[ne] = r2;
      rmin2 = r2 < rmin2 ? r2 : rmin2;
      ++ne;
    }
  }
  first[n] = ne;
  // pad to a multiple of DW with a harmless edge (r = 1 Å) for the vector loops
  for (int e = ne; e % DW != 0; ++e) {
    B.j[e] = 0;
    B.sp[e] = 0;
    B.dx[e] = 1.0;
    B.dy[e] = B.dz[e] = 0.0;
    B.r2[e] = 1.0;
  }
  res.min_distance = std::sqrt(rmin2);
  return ne;
}

// 2. Geometry of edges [0, ne) of a block of centre species c (eq. S, R, table lookup), DW
// edges at a time in double (the arrays are padded to a multiple of DW by gather_edges); the
// species constants are read lane by lane from small per-species arrays.
__attribute__((noinline)) void edge_geometry(const ModelArgs& M, int c, EdgeBuf& B, int ne) {
  const int S = M.S;
  double mean[kMaxPadSpecies], iss[kMaxPadSpecies], isr[kMaxPadSpecies], lo[kMaxPadSpecies],
      ih1[kMaxPadSpecies], n1[kMaxPadSpecies];
  int base[kMaxPadSpecies];
  const int stride = 6 * M.m1p;
  for (int a = 0; a < S; ++a) {
    const int p = c * S + a;
    const TableZone& z = M.zones[a];
    mean[a] = M.mean_s[p];
    iss[a] = M.inv_std_s[p];
    isr[a] = M.inv_std_r[p];
    lo[a] = z.lo;
    ih1[a] = z.inv_h1;
    n1[a] = z.n1;
    base[a] = a * (z.n1 + z.n2) * stride;
  }
  const double ts = M.t_scale;
  for (int e = 0; e < ne; e += DW) {
    vd v_mean, v_iss, v_isr, v_lo, v_ih1, v_n1;
    vih v_base;
    for (int l = 0; l < DW; ++l) {
      const int a = B.sp[e + l];
      v_mean[l] = mean[a];
      v_iss[l] = iss[a];
      v_isr[l] = isr[a];
      v_lo[l] = lo[a];
      v_ih1[l] = ih1[a];
      v_n1[l] = n1[a];
      v_base[l] = base[a];
    }
    const vd dx = vdload(&B.dx[e]), dy = vdload(&B.dy[e]), dz = vdload(&B.dz[e]);
    const vd r = vsqrt(vdload(&B.r2[e]));
    vd s, ds;
    switch_function(r, M.rs, M.rc, s, ds);
    const vd shat = (s - v_mean) * v_iss;
    const vd inv = 1.0 / r;
    const vd sr = s * inv;  // s/r
    const vd R0 = M.deepmd ? shat : s * v_iss;
    const vd f = sr * v_isr;
    const vd R1 = f * dx, R2 = f * dy, R3 = f * dz;
    const vd x = (shat - v_lo) * v_ih1;
    // fine zone (or below it: r >= rc for every centre species, held at knot 0)
    const vl below = x < v_n1;
    const vl fast = (s <= M.s_fast) & below & (r > kMinDistance);
    const vd xc = (x >= 0.0) & below ? x : vd{};
    const vih k = __builtin_convertvector(xc, vih);
    for (int l = 0; l < DW; ++l) B.fast[e + l] = fast[l] != 0;
    vfhstore(&B.t[e], __builtin_convertvector(xc - __builtin_convertvector(k, vd), vfh));
    vihstore(&B.off[e], v_base + k * stride);
    vfhstore(&B.q[0][e], __builtin_convertvector(R0 * ts, vfh));
    vfhstore(&B.q[1][e], __builtin_convertvector(R1 * ts, vfh));
    vfhstore(&B.q[2][e], __builtin_convertvector(R2 * ts, vfh));
    vfhstore(&B.q[3][e], __builtin_convertvector(R3 * ts, vfh));
    vfhstore(&B.rf[0][e], __builtin_convertvector(R0, vfh));
    vfhstore(&B.rf[1][e], __builtin_convertvector(R1, vfh));
    vfhstore(&B.rf[2][e], __builtin_convertvector(R2, vfh));
    vfhstore(&B.rf[3][e], __builtin_convertvector(R3, vfh));
    vdstore(&B.ex[e], dx * inv);
    vdstore(&B.ey[e], dy * inv);
    vdstore(&B.ez[e], dz * inv);
    vdstore(&B.ca[e], ds * v_iss);
    vdstore(&B.cb[e], v_isr * (ds - sr));
    vdstore(&B.cc[e], v_isr * sr);
    vdstore(&B.ih[e], x >= 0.0 ? v_ih1 : vd{});
  }
}

// 3. T chunk [m0, m0 + NV·VW) of one centre from its fast edges [e0, e1), into t64.
template <int NV>
__attribute__((noinline)) void t_chunk(const float* coef, const EdgeBuf& B, int e0, int e1, int P,
                                       int m0, std::int64_t* t64) {
  const unsigned char* fast = B.fast.data();
  const int* off = B.off.data();
  const float* tt = B.t.data();
  const float *q0 = B.q[0].data(), *q1 = B.q[1].data(), *q2 = B.q[2].data(), *q3 = B.q[3].data();
  const float* cbase = coef + m0;
  int e = e0;
  while (e < e1) {
    // up to kFlushTerms fast edges into int32 accumulators held in registers
    vi acc[4][NV];
    for (int k = 0; k < 4; ++k)
      for (int v = 0; v < NV; ++v) acc[k][v] = vi{};
    for (int pending = 0; e < e1 && pending < kFlushTerms; ++e) {
      if (!fast[e]) continue;
      ++pending;
      const float* cf = cbase + off[e];
      const vf t = vset(tt[e]);
      const vf r0 = vset(q0[e]), r1 = vset(q1[e]), r2 = vset(q2[e]), r3 = vset(q3[e]);
      for (int v = 0; v < NV; ++v) {
        const float* c = cf + v * VW;
        vf g = vload(c + 5 * P);
        g = vfma(g, t, vload(c + 4 * P));
        g = vfma(g, t, vload(c + 3 * P));
        g = vfma(g, t, vload(c + 2 * P));
        g = vfma(g, t, vload(c + P));
        g = vfma(g, t, vload(c));
        acc[0][v] += vround(g * r0);
        acc[1][v] += vround(g * r1);
        acc[2][v] += vround(g * r2);
        acc[3][v] += vround(g * r3);
      }
    }
    for (int k = 0; k < 4; ++k)
      for (int v = 0; v < NV; ++v) {
        std::int64_t* dst = t64 + k * P + m0 + v * VW;
        for (int l = 0; l < VW; ++l) dst[l] += acc[k][v][l];
      }
  }
}

// Channel vectors per T chunk: 4·NV int32 accumulators stay in registers.
constexpr int kChunkVectors = VW == 16 ? 4 : 2;

// eq. S, R, G (tabulated), D: T of centre i (edges [e0, e1)) into T (4, m1p), D into `d`.
// gbuf: 2·m1p doubles for the slow path.
__attribute__((noinline)) void descriptor_forward(const ModelArgs& M, int i_species, const EdgeBuf& B, int e0, int e1,
                        std::int64_t* t64, double* gbuf, float* T, float* d, BlockResult& res) {
  const int P = M.m1p;
  const int c = i_species;
  std::fill(t64, t64 + 4 * P, std::int64_t(0));
  for (int m0 = 0; m0 < P; m0 += kChunkVectors * VW) {
    const int nv = std::min(kChunkVectors, (P - m0) / VW);
    switch (nv) {
      case 4: t_chunk<4>(M.coef, B, e0, e1, P, m0, t64); break;
      case 3: t_chunk<3>(M.coef, B, e0, e1, P, m0, t64); break;
      case 2: t_chunk<2>(M.coef, B, e0, e1, P, m0, t64); break;
      default: t_chunk<1>(M.coef, B, e0, e1, P, m0, t64); break;
    }
  }
  // slow edges (r < r_fine): double products, rounded half-even onto the same grid
  double* g = gbuf;
  double* dg = gbuf + P;
  for (int e = e0; e < e1; ++e) {
    if (B.fast[e]) continue;
    SlowEdge E;
    slow_geometry(M, c, B.dx[e], B.dy[e], B.dz[e], B.sp[e], E);
    if (!(E.r > kMinDistance)) continue;  // the engine refuses the call (min_distance)
    table_double(M, E, g, dg);
    for (int k = 0; k < 4; ++k) {
      const double rk = E.R[k] * M.t_scale;
      for (int m = 0; m < M.m1; ++m) {
        const double v = std::nearbyint(g[m] * rk);
        if (!(std::abs(v) < kMaxGridValue)) {
          res.bad = 1;
          continue;
        }
        t64[k * P + m] += static_cast<std::int64_t>(v);
      }
    }
  }
  if (M.deepmd) {  // empty slots: exact integers, species by species
    int filled[kMaxPadSpecies];
    std::fill(filled, filled + M.S, 0);
    for (int e = e0; e < e1; ++e) ++filled[B.sp[e]];
    for (int a = 0; a < M.S; ++a) {
      const std::int64_t empty = M.sel[a] - filled[a];
      const std::int64_t* pad = M.pad64 + (static_cast<std::size_t>(c) * M.S + a) * P;
      for (int m = 0; m < M.m1; ++m) t64[m] += empty * pad[m];
    }
  }
  const double f = M.inv_nc / M.t_scale;
  for (int q = 0; q < 4 * P; ++q) T[q] = static_cast<float>(static_cast<double>(t64[q]) * f);
  // D[m][n] = Σ_k T[k][m] T[k][n]   (eq. D)
  const int m2 = M.m2;
  if (m2 % VW == 0) {
    for (int m = 0; m < M.m1; ++m)
      for (int n = 0; n < m2; n += VW)
        vstore(d + m * m2 + n, T[m] * vload(T + n) + T[P + m] * vload(T + P + n) +
                                   T[2 * P + m] * vload(T + 2 * P + n) +
                                   T[3 * P + m] * vload(T + 3 * P + n));
  } else {
    for (int m = 0; m < M.m1; ++m)
      for (int n = 0; n < m2; ++n)
        d[m * m2 + n] = T[m] * T[n] + T[P + m] * T[P + n] + T[2 * P + m] * T[2 * P + n] +
                        T[3 * P + m] * T[3 * P + n];
  }
}

// eq. B step 2: gT[k][m] = inv_nc (Σ_n gD[m][n] T[k][n] + [m < M2] Σ_p gD[p][m] T[k][p]). The
// first sum: with M2 = VW, one product vector per row m of gD, reduced VW rows at a time
// (hsum_lanes); otherwise vectorised over m through gDᵀ (m2, m1p). The second along rows of gD.
__attribute__((noinline)) void grad_T(const ModelArgs& M, const float* T, const float* gd,
                                      float* gdt, float* gT) {
  const int P = M.m1p;
  const int m1 = M.m1, m2 = M.m2;
  if (m2 == VW) {
    for (int k = 0; k < 4; ++k) {
      const vf Tk = vload(T + k * P);
      for (int m0 = 0; m0 < P; m0 += VW) {
        vf x[VW];
        for (int l = 0; l < VW; ++l)
          x[l] = m0 + l < m1 ? vload(gd + (m0 + l) * m2) * Tk : vf{};
        vstore(gT + k * P + m0, hsum_lanes(x));
      }
    }
  } else {
    for (int m = 0; m < m1; ++m)
      for (int n = 0; n < m2; ++n) gdt[n * P + m] = gd[m * m2 + n];
    for (int n = 0; n < m2; ++n)
      for (int m = m1; m < P; ++m) gdt[n * P + m] = 0.0f;
    for (int k = 0; k < 4; ++k) {
      const float* Tk = T + k * P;
      for (int m = 0; m < P; m += VW) {
        vf acc{};
        for (int n = 0; n < m2; ++n) acc += Tk[n] * vload(gdt + n * P + m);
        vstore(gT + k * P + m, acc);
      }
    }
  }
  for (int k = 0; k < 4; ++k) {
    float* g = gT + k * P;
    const float* Tk = T + k * P;
    if (m2 % VW == 0) {
      for (int m = 0; m < m2; m += VW) {
        vf acc = vload(g + m);
        for (int p = 0; p < m1; ++p) acc += Tk[p] * vload(gd + p * m2 + m);
        vstore(g + m, acc);
      }
    } else {
      for (int m = 0; m < m2; ++m) {
        float acc = g[m];
        for (int p = 0; p < m1; ++p) acc += Tk[p] * gd[p * m2 + m];
        g[m] = acc;
      }
    }
  }
  const float inc = static_cast<float>(M.inv_nc);
  for (int q = 0; q < 4 * P; ++q) gT[q] *= inc;
}

// 4. Per fast edge of [e0, e1): red = (g_R̂[0..3], Σ_m g_G[m] dP/dt[m]) with
// g_G[m] = Σ_k gT[k][m] R̂[k], G and dP/dt by one Horner pass with its derivative. NV channel
// vectors at a time (gT of the chunk in registers); a chunk after the first adds to `red`.
template <int NV>
__attribute__((noinline)) void edge_gradients(const float* coef, EdgeBuf& B, int e0, int e1,
                                              int P, int m0, const float* gT, bool first) {
  vf T0[NV], T1[NV], T2[NV], T3[NV];
  for (int v = 0; v < NV; ++v) {
    T0[v] = vload(gT + m0 + v * VW);
    T1[v] = vload(gT + P + m0 + v * VW);
    T2[v] = vload(gT + 2 * P + m0 + v * VW);
    T3[v] = vload(gT + 3 * P + m0 + v * VW);
  }
  const unsigned char* fast = B.fast.data();
  const int* off = B.off.data();
  const float* tt = B.t.data();
  const float *f0 = B.rf[0].data(), *f1 = B.rf[1].data(), *f2 = B.rf[2].data(),
              *f3 = B.rf[3].data();
  const float* cbase = coef + m0;
  // VW edges at a time: their 5 accumulators, reduced across lanes together (hsum_lanes);
  // the lanes past e1 belong to the next centre (or the padding) and are rewritten there.
  for (int g0 = e0; g0 < e1; g0 += VW) {
    vf acc[5][VW];
    for (int l = 0; l < VW; ++l) {
      const int e = g0 + l;
      vf aR0{}, aR1{}, aR2{}, aR3{}, aS{};
      if (e < e1 && fast[e]) {
        const float* cf = cbase + off[e];
        const vf t = vset(tt[e]);
        const vf R0 = vset(f0[e]), R1 = vset(f1[e]), R2 = vset(f2[e]), R3 = vset(f3[e]);
        for (int v = 0; v < NV; ++v) {
          const float* c = cf + v * VW;
          vf p = vload(c + 5 * P);
          vf dp = p;
          p = vfma(p, t, vload(c + 4 * P));
          dp = vfma(dp, t, p);
          p = vfma(p, t, vload(c + 3 * P));
          dp = vfma(dp, t, p);
          p = vfma(p, t, vload(c + 2 * P));
          dp = vfma(dp, t, p);
          p = vfma(p, t, vload(c + P));
          dp = vfma(dp, t, p);
          p = vfma(p, t, vload(c));
          const vf gG = vfma(T3[v], R3, vfma(T2[v], R2, vfma(T1[v], R1, T0[v] * R0)));
          aR0 = vfma(T0[v], p, aR0);
          aR1 = vfma(T1[v], p, aR1);
          aR2 = vfma(T2[v], p, aR2);
          aR3 = vfma(T3[v], p, aR3);
          aS = vfma(gG, dp, aS);
        }
      }
      acc[0][l] = aR0;
      acc[1][l] = aR1;
      acc[2][l] = aR2;
      acc[3][l] = aR3;
      acc[4][l] = aS;
    }
    for (int k = 0; k < 5; ++k) {
      float* red = B.red[k].data() + g0;
      const vf h = hsum_lanes(acc[k]);
      vstore(red, first ? h : vload(red) + h);
    }
  }
}

inline void edge_gradients(const float* coef, EdgeBuf& B, int e0, int e1, int P,
                           const float* gT) {
  for (int m0 = 0; m0 < P; m0 += kChunkVectors * VW) {
    const int nv = std::min(kChunkVectors, (P - m0) / VW);
    const bool first = m0 == 0;
    switch (nv) {
      case 4: edge_gradients<4>(coef, B, e0, e1, P, m0, gT, first); break;
      case 3: edge_gradients<3>(coef, B, e0, e1, P, m0, gT, first); break;
      case 2: edge_gradients<2>(coef, B, e0, e1, P, m0, gT, first); break;
      default: edge_gradients<1>(coef, B, e0, e1, P, m0, gT, first); break;
    }
  }
}

// 5. eq. B step 5 for the fast edges [0, ne) of a block, DW edges at a time in double:
// g_ij = dE/dx_ij and the virial terms −x ⊗ g (LAMMPS order xx yy zz xy xz yz), rounded
// half-even onto their 2^-32 grids (y + 1.5·2^52 leaves round(y) in the low mantissa bits
// while |y| < 2^51) into B.g; slow edges and padding get zeros. Returns nonzero when a value
// is not finite or reaches 2^50 grid units.
__attribute__((noinline)) int edge_chain(EdgeBuf& B, int ne) {
  vl bad{};
  for (int e = 0; e < ne; e += DW) {
    vl on;
    for (int l = 0; l < DW; ++l) on[l] = e + l < ne && B.fast[e + l] ? -1 : 0;
    const vd gR0 = __builtin_convertvector(vfhload(&B.red[0][e]), vd);
    const vd gR1 = __builtin_convertvector(vfhload(&B.red[1][e]), vd);
    const vd gR2 = __builtin_convertvector(vfhload(&B.red[2][e]), vd);
    const vd gR3 = __builtin_convertvector(vfhload(&B.red[3][e]), vd);
    const vd gs = __builtin_convertvector(vfhload(&B.red[4][e]), vd) * vdload(&B.ih[e]);
    const vd ex = vdload(&B.ex[e]), ey = vdload(&B.ey[e]), ez = vdload(&B.ez[e]);
    const vd cc = vdload(&B.cc[e]);
    const vd u = gR1 * ex + gR2 * ey + gR3 * ez;
    const vd ce = (gs + gR0) * vdload(&B.ca[e]) + vdload(&B.cb[e]) * u;
    const vd gx = on ? ce * ex + cc * gR1 : vd{};
    const vd gy = on ? ce * ey + cc * gR2 : vd{};
    const vd gz = on ? ce * ez + cc * gR3 : vd{};
    const vd dx = vdload(&B.dx[e]), dy = vdload(&B.dy[e]), dz = vdload(&B.dz[e]);
    const vd y[9] = {gx, gy, gz, -dx * gx, -dy * gy, -dz * gz, -dx * gy, -dx * gz, -dy * gz};
    for (int q = 0; q < 9; ++q) {
      const vd v = y[q] * 0x1p32;
      bad |= !(vabs(v) < kMaxFastGrid);
      vlstore(&B.g[q][e], (vl)(v + kGridMagic) - kGridMagicBits);
    }
  }
  for (int l = 0; l < DW; ++l)
    if (bad[l]) return 1;
  return 0;
}

// dE/dx_ij of one edge on the grids (q: 3 force components, then 6 virial terms): forces on
// i (fi) and j, the block's virial, half of each term on each atom with per-atom virials.
inline void scatter_edge(const OutArgs& O, int i, int j, const std::int64_t* q, std::int64_t* fi,
                         BlockResult& res) {
  fi[0] += q[0];
  fi[1] += q[1];
  fi[2] += q[2];
  add64(O.force + 3 * j, -q[0], O.atomic);
  add64(O.force + 3 * j + 1, -q[1], O.atomic);
  add64(O.force + 3 * j + 2, -q[2], O.atomic);
  for (int k = 0; k < 6; ++k) res.virial[k] += q[3 + k];
  if (O.vatom) {
    for (int k = 0; k < 6; ++k) {
      const std::int64_t half = q[3 + k] / 2;
      add64(O.vatom + 6 * i + k, half, O.atomic);
      add64(O.vatom + 6 * j + k, q[3 + k] - half, O.atomic);
    }
  }
}

// The slow path of the backward for one edge: dE/dx_ij on the grids into q (9 values).
inline void slow_edge_backward(const ModelArgs& M, int c, const EdgeBuf& B, int e,
                               const float* gT, double* gbuf, std::int64_t* q,
                               BlockResult& res) {
  const int P = M.m1p;
  for (int k = 0; k < 9; ++k) q[k] = 0;
  SlowEdge E;
  slow_geometry(M, c, B.dx[e], B.dy[e], B.dz[e], B.sp[e], E);
  if (!(E.r > kMinDistance)) return;  // the engine refuses the call (min_distance)
  double* g = gbuf;
  double* dg = gbuf + P;
  table_double(M, E, g, dg);
  double gR[4] = {0.0, 0.0, 0.0, 0.0}, gs = 0.0;
  for (int m = 0; m < M.m1; ++m) {
    double gG = 0.0;
    for (int k = 0; k < 4; ++k) {
      gG += static_cast<double>(gT[k * P + m]) * E.R[k];
      gR[k] += static_cast<double>(gT[k * P + m]) * g[m];
    }
    gs += gG * dg[m];
  }
  gs *= E.inv_h;
  const double inv_r = 1.0 / E.r;
  const double ex = E.dx * inv_r, ey = E.dy * inv_r, ez = E.dz * inv_r;
  const double u = gR[1] * ex + gR[2] * ey + gR[3] * ez;
  const double sr = E.s * inv_r;
  const double ce = (gs + gR[0]) * E.ds * E.iss + E.isr * (E.ds - sr) * u;
  const double gx = ce * ex + E.isr * sr * gR[1];
  const double gy = ce * ey + E.isr * sr * gR[2];
  const double gz = ce * ez + E.isr * sr * gR[3];
  const double y[9] = {gx, gy, gz, -E.dx * gx, -E.dy * gy, -E.dz * gz,
                       -E.dx * gy, -E.dx * gz, -E.dy * gz};
  for (int k = 0; k < 9; ++k) q[k] = grid_round(y[k], res);
}

// eq. B steps 2 to 4 for one centre (edges [e0, e1)): gT = dE/dT into gT, and the per-edge
// reductions of edge_gradients. gdt: m2·m1p floats.
__attribute__((noinline)) void centre_gradients(const ModelArgs& M, EdgeBuf& B, int e0, int e1,
                                                float* gdt, const float* T, const float* gd,
                                                float* gT) {
  grad_T(M, T, gd, gdt, gT);
  edge_gradients(M.coef, B, e0, e1, M.m1p, gT);
}

// eq. B step 5 and the scatter for the block's centres atoms[0..n) (edges first[r] ..
// first[r + 1], gT of row r at gT + r·4·m1p). gbuf: 2·m1p doubles for the slow path.
__attribute__((noinline)) void block_scatter(const ModelArgs& M, const OutArgs& O,
                                             const int* atoms, int n, int c, EdgeBuf& B,
                                             const int* first, const float* gT, double* gbuf,
                                             BlockResult& res) {
  if (edge_chain(B, first[n])) res.bad = 1;
  std::int64_t q[9];
  for (int r = 0; r < n; ++r) {
    const int i = atoms[r];
    std::int64_t fi[3] = {0, 0, 0};
    for (int e = first[r]; e < first[r + 1]; ++e) {
      if (B.fast[e]) {
        for (int k = 0; k < 9; ++k) q[k] = B.g[k][e];
      } else {
        slow_edge_backward(M, c, B, e, gT + static_cast<std::size_t>(r) * 4 * M.m1p, gbuf, q,
                           res);
      }
      scatter_edge(O, i, B.j[e], q, fi, res);
    }
    for (int d = 0; d < 3; ++d) add64(O.force + 3 * i + d, fi[d], O.atomic);
  }
}
