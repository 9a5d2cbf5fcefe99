// The fp32 GEMMs of the fitting net on their real shapes (issue 13: "fp32: measure oneDNN,
// libxsmm and OpenBLAS on the real shapes, and use the fastest"): engine v2's own kernel
// (block_kernel_impl.hpp `sgemm`, the avx512 or avx2 path) against oneDNN's dnnl_sgemm,
// OpenBLAS's cblas_sgemm and libxsmm's JIT kernels, one thread each, same operands, rows =
// one block of 32 centres (the engine's kBlockAtoms). Prints a Markdown table of GFLOP/s
// (median of interleaved rounds) and the largest difference from our kernel's result.
//
// Usage: bench_fit_gemm [--rounds N] [--model-widths K0,W1,...]  (default 1024,128,128,128:
// the shipped water model's descriptor width and fitting widths)
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "qnn/kernels/block_kernel.hpp"
#include "qnn/kernels/aligned.hpp"

#ifdef QNN_HAVE_ONEDNN
#include <oneapi/dnnl/dnnl.h>
#endif
#ifdef QNN_HAVE_OPENBLAS
#include <cblas.h>
extern "C" void openblas_set_num_threads(int);
#endif
#ifdef QNN_HAVE_LIBXSMM
#include <libxsmm.h>
#endif

namespace {

using Clock = std::chrono::steady_clock;

struct Shape {
  int m, k, n;
  std::string what;
};

// Seconds per call of f, the median of `rounds` timings of enough calls for ~20 ms each.
double time_call(const std::function<void()>& f, int reps) {
  const auto t0 = Clock::now();
  for (int r = 0; r < reps; ++r) f();
  return std::chrono::duration<double>(Clock::now() - t0).count() / reps;
}

}  // namespace

int main(int argc, char** argv) {
  int rounds = 7;
  std::vector<int> widths = {1024, 128, 128, 128};
  for (int a = 1; a < argc; ++a) {
    if (!std::strcmp(argv[a], "--rounds") && a + 1 < argc) rounds = std::atoi(argv[++a]);
    else if (!std::strcmp(argv[a], "--model-widths") && a + 1 < argc) {
      widths.clear();
      for (char* t = std::strtok(argv[++a], ","); t; t = std::strtok(nullptr, ",")) widths.push_back(std::atoi(t));
    } else {
      std::fprintf(stderr, "usage: bench_fit_gemm [--rounds N] [--model-widths K0,W1,...]\n");
      return 2;
    }
  }
  const bool avx512 = qnn::v2::avx512_compiled() && __builtin_cpu_supports("avx512f");
  const int np_mult = avx512 ? 64 : 32;
  auto ours = avx512 ? qnn::v2::sgemm_avx512 : qnn::v2::sgemm_avx2;
  if (!avx512 && !(qnn::v2::avx2_compiled() && __builtin_cpu_supports("avx2"))) {
    std::fprintf(stderr, "bench_fit_gemm: needs the avx2 or avx512 block kernel\n");
    return 2;
  }
#ifdef QNN_HAVE_OPENBLAS
  openblas_set_num_threads(1);
#endif
#ifdef QNN_HAVE_LIBXSMM
  libxsmm_init();
#endif
  constexpr int M = qnn::v2::kBlockAtoms;
  std::vector<Shape> shapes;
  for (std::size_t l = 0; l + 1 < widths.size(); ++l) {
    shapes.push_back({M, widths[l], widths[l + 1], "forward layer " + std::to_string(l)});
    shapes.push_back({M, widths[l + 1], widths[l], "backward layer " + std::to_string(l) + " (gZ·Wᵀ)"});
  }
  std::printf("| shape (M×K×N) | what | qnn sgemm (%s) | oneDNN dnnl_sgemm | OpenBLAS cblas_sgemm | libxsmm | max |Δ| vs qnn |\n",
              avx512 ? "avx512" : "avx2");
  std::printf("|---|---|---:|---:|---:|---:|---:|\n");
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (const Shape& s : shapes) {
    const int np = (s.n + np_mult - 1) / np_mult * np_mult;  // the engine pads N (out_p)
    std::vector<float, qnn::AlignedAllocator<float>> A(static_cast<std::size_t>(s.m) * s.k), B(static_cast<std::size_t>(s.k) * np, 0.0f),
        C0(static_cast<std::size_t>(s.m) * np), C1(C0.size()), C2(C0.size()), C3(C0.size());
    for (float& x : A) x = u(rng);
    for (int k = 0; k < s.k; ++k)
      for (int n = 0; n < s.n; ++n) B[static_cast<std::size_t>(k) * np + n] = u(rng);
    std::vector<std::pair<std::string, std::function<void()>>> impls;
    impls.push_back({"qnn", [&] { ours(s.m, np, s.k, A.data(), s.k, B.data(), np, C0.data(), np); }});
#ifdef QNN_HAVE_ONEDNN
    impls.push_back({"onednn", [&] {
                       dnnl_sgemm('N', 'N', s.m, np, s.k, 1.0f, A.data(), s.k, B.data(), np, 0.0f, C1.data(), np);
                     }});
#endif
#ifdef QNN_HAVE_OPENBLAS
    impls.push_back({"openblas", [&] {
                       cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, s.m, np, s.k, 1.0f, A.data(), s.k,
                                   B.data(), np, 0.0f, C2.data(), np);
                     }});
#endif
#ifdef QNN_HAVE_LIBXSMM
    // Column-major libxsmm: Cᵀ (np × m) = Bᵀ (np × k) · Aᵀ (k × m).
    const float alpha = 1.0f, beta = 0.0f;  // libxsmm's default beta is 1 (C += A·B)
    const libxsmm_smmfunction kern =
        libxsmm_smmdispatch(np, s.m, s.k, &np, &s.k, &np, &alpha, &beta, nullptr, nullptr);
    if (kern) impls.push_back({"libxsmm", [&] { kern(B.data(), A.data(), C3.data()); }});
#endif
    std::vector<std::vector<double>> t(impls.size());
    const double flops = 2.0 * s.m * s.k * s.n;
    for (auto& im : impls) im.second();  // warm-up
    const int reps = std::max(1, static_cast<int>(0.02 / std::max(1e-7, time_call(impls[0].second, 3))));
    for (int r = 0; r < rounds; ++r)
      for (std::size_t i = 0; i < impls.size(); ++i) t[i].push_back(time_call(impls[i].second, reps));
    auto gflops = [&](const std::string& name) -> std::string {
      for (std::size_t i = 0; i < impls.size(); ++i)
        if (impls[i].first == name) {
          std::vector<double> v = t[i];
          std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
          char b[32];
          std::snprintf(b, sizeof b, "%.1f", flops / v[v.size() / 2] * 1e-9);
          return b;
        }
      return "–";
    };
    double dmax = 0;
    for (std::size_t i = 1; i < impls.size(); ++i) {
      const auto& C = impls[i].first == "onednn" ? C1 : impls[i].first == "openblas" ? C2 : C3;
      double d = 0;
      for (int r = 0; r < s.m; ++r)
        for (int n = 0; n < s.n; ++n)
          d = std::max(d, static_cast<double>(std::abs(C[static_cast<std::size_t>(r) * np + n] - C0[static_cast<std::size_t>(r) * np + n])));
      if (std::getenv("QNN_BENCH_DEBUG")) std::fprintf(stderr, "%s: max |dC| %g\n", impls[i].first.c_str(), d);
      dmax = std::max(dmax, d);
    }
    std::printf("| %d×%d×%d | %s | %s | %s | %s | %s | %.1e |\n", s.m, s.k, s.n, s.what.c_str(), gflops("qnn").c_str(),
                gflops("onednn").c_str(), gflops("openblas").c_str(), gflops("libxsmm").c_str(), dmax);
  }
  std::printf("\nGFLOP/s (2·M·K·N per call), one thread, median of %d interleaved rounds; N padded as the engine pads it.\n", rounds);
  return 0;
}
