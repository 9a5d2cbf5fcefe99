// Integer GEMM benchmark: every available ISA path of qnn::igemm and oneDNN's int8 matmul
// (s8 x s8 -> s32 and u8 x s8 -> s32) on the model's real shapes, one thread, plus a large
// GEMM giving the int8 roofline (peak MAC rate) of the best micro-kernel. The roofline GEMM
// runs interleaved with every shape, so each shape's roofline fraction compares runs made
// under the same machine load. A second table does the same for the int16 GEMM of the w8a16
// mode (int16_gemm.hpp) on the engine's per-block shapes, against its own large-GEMM
// roofline and against the core's peak vpdpwssd rate (a loop of independent vpdpwssd zmm).
// Prints Markdown tables (medians of repeated runs); bench/RESULTS.md keeps a measured copy.
//
// Usage: bench_int_gemm [repeats]      (default 21; QNN_ISA=<path> restricts to one path)
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <functional>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <time.h>

#include "qnn/error.hpp"
#include "qnn/kernels/int16_gemm.hpp"
#include "qnn/kernels/int_gemm.hpp"

#if defined(QNN_HAVE_ONEDNN)
#include <omp.h>

#include <oneapi/dnnl/dnnl.hpp>
#endif

namespace {

using qnn::igemm::Isa;

struct Shape {
  const char* name;
  int m, k, n;
};

// The model's GEMMs (docs/model.md; edges ~ 20,000 per 192-atom water frame) and the roofline.
const Shape kShapes[] = {
    {"embedding 25→50 (edges)", 20000, 25, 50},
    {"embedding 50→100 (edges)", 20000, 50, 100},
    {"fitting 1600→240 (192 atoms)", 192, 1600, 240},
    {"fitting 1600→240 (1,536 atoms)", 1536, 1600, 240},
    {"fitting 240→240 (192 atoms)", 192, 240, 240},
    {"fitting 240→240 (1,536 atoms)", 1536, 240, 240},
    {"roofline 2048³", 2048, 2048, 2048},
};
constexpr int kRoofline = 6;  // index of the roofline shape

// CPU time of the calling thread, in seconds. On a shared machine this leaves out the time
// the thread was descheduled, which wall-clock medians do not filter for calls longer than
// a scheduler slice (the 2048³ roofline). oneDNN runs on this thread with one OpenMP thread.
double thread_seconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

// Median seconds per call of each fn. Each is warmed up and calibrated to batches of >= 5
// ms; the timed batches then run round-robin (fn0, fn1, ..., fn0, fn1, ...), so load from
// other processes on a shared machine (cache and memory traffic) hits all of them alike.
std::vector<double> median_seconds(const std::vector<std::function<void()>>& fns, int repeats) {
  std::vector<int> calls;
  for (const auto& fn : fns) {
    fn();
    const double t0 = thread_seconds();
    fn();
    const double once = thread_seconds() - t0;
    calls.push_back(std::max(1, static_cast<int>(0.005 / std::max(once, 1e-9))));
  }
  std::vector<std::vector<double>> t(fns.size());
  for (int r = 0; r < repeats; ++r) {
    for (std::size_t f = 0; f < fns.size(); ++f) {
      const double t0 = thread_seconds();
      for (int c = 0; c < calls[f]; ++c) fns[f]();
      t[f].push_back((thread_seconds() - t0) / calls[f]);
    }
  }
  std::vector<double> med;
  for (auto& v : t) {
    std::nth_element(v.begin(), v.begin() + repeats / 2, v.end());
    med.push_back(v[repeats / 2]);
  }
  return med;
}

std::string cpu_model() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  }
  return "unknown";
}

std::vector<int8_t> random_i8(std::mt19937& rng, std::size_t count) {
  std::uniform_int_distribution<int> d(-128, 127);
  std::vector<int8_t> v(count);
  for (auto& x : v) x = static_cast<int8_t>(d(rng));
  return v;
}

#if defined(QNN_HAVE_ONEDNN)
// oneDNN matmul (src_type x s8 -> s32) of one shape, weights reordered once into the
// primitive's preferred layout (the counterpart of PackedB).
class OneDnnMatmul {
 public:
  OneDnnMatmul(const Shape& s, dnnl::memory::data_type src_type, std::vector<int8_t>& a, std::vector<int8_t>& b)
      : eng_(dnnl::engine::kind::cpu, 0), strm_(eng_) {
    using dt = dnnl::memory::data_type;
    using tag = dnnl::memory::format_tag;
    const dnnl::memory::desc src_md({s.m, s.k}, src_type, tag::ab);
    const dnnl::memory::desc wei_any({s.k, s.n}, dt::s8, tag::any);
    const dnnl::memory::desc wei_plain({s.k, s.n}, dt::s8, tag::ab);
    const dnnl::memory::desc dst_md({s.m, s.n}, dt::s32, tag::ab);
    const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(src_md, wei_any, dst_md), eng_);
    impl_ = pd.impl_info_str();
    src_ = dnnl::memory(src_md, eng_, a.data());
    dnnl::memory wei_user(wei_plain, eng_, b.data());
    wei_ = dnnl::memory(pd.weights_desc(), eng_);
    dnnl::reorder(wei_user, wei_).execute(strm_, wei_user, wei_);
    dst_ = dnnl::memory(dst_md, eng_);
    mm_ = dnnl::matmul(pd);
  }
  void operator()() {
    mm_.execute(strm_, {{DNNL_ARG_SRC, src_}, {DNNL_ARG_WEIGHTS, wei_}, {DNNL_ARG_DST, dst_}});
    strm_.wait();
  }
  const std::string& impl() const { return impl_; }

 private:
  dnnl::engine eng_;
  dnnl::stream strm_;
  dnnl::memory src_, wei_, dst_;
  dnnl::matmul mm_;
  std::string impl_;
};
#endif

// "12.3" GMAC/s, or "–" when not measured.
std::string gmacs(const Shape& s, std::optional<double> seconds) {
  if (!seconds) return "–";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", double(s.m) * s.k * s.n / *seconds * 1e-9);
  return buf;
}

std::string ratio(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", x);
  return buf;
}

// ---------------------------------------------------------------------------- int16 (w8a16)

// The w8a16 GEMMs of one block of 32 atoms: forward through W (K, N), backward through Wᵀ
// (B packed from W, i.e. from (N, K)), and the large GEMM giving the int16 roofline.
struct Shape16 {
  const char* name;
  int m, k, n;
  qnn::igemm::BLayout layout;
};
const Shape16 kShapes16[] = {
    {"forward 1024→128", 32, 1024, 128, qnn::igemm::BLayout::kKN},
    {"forward 128→128", 32, 128, 128, qnn::igemm::BLayout::kKN},
    {"backward 128→1024 (Wᵀ)", 32, 128, 1024, qnn::igemm::BLayout::kNK},
    {"backward 128→128 (Wᵀ)", 32, 128, 128, qnn::igemm::BLayout::kNK},
    {"roofline 2048³", 2048, 2048, 2048, qnn::igemm::BLayout::kKN},
};
constexpr int kRoofline16 = 4;  // index of the roofline shape

// Multiply-accumulates of one vpdpwssd_loop(1) call: 14 vpdpwssd zmm of 16 lanes x 2.
constexpr double kPeakLoopMacs = 14 * 32;

#if defined(__x86_64__)
// `iters` x 14 independent vpdpwssd zmm, register operands only: the core's peak int16 MAC
// rate (14 chains cover the instruction's latency at 2 per cycle). Needs AVX-512 VNNI; the
// caller checks. Inline assembly, so this file needs no -m flags.
void vpdpwssd_loop(long iters) {
  asm volatile(
      "vpternlogd $0xff, %%zmm14, %%zmm14, %%zmm14\n\t"
      "vpabsw %%zmm14, %%zmm15\n\t"
      "vpxord %%zmm0, %%zmm0, %%zmm0\n\t"
      "vmovdqa64 %%zmm0, %%zmm1\n\tvmovdqa64 %%zmm0, %%zmm2\n\tvmovdqa64 %%zmm0, %%zmm3\n\t"
      "vmovdqa64 %%zmm0, %%zmm4\n\tvmovdqa64 %%zmm0, %%zmm5\n\tvmovdqa64 %%zmm0, %%zmm6\n\t"
      "vmovdqa64 %%zmm0, %%zmm7\n\tvmovdqa64 %%zmm0, %%zmm8\n\tvmovdqa64 %%zmm0, %%zmm9\n\t"
      "vmovdqa64 %%zmm0, %%zmm10\n\tvmovdqa64 %%zmm0, %%zmm11\n\tvmovdqa64 %%zmm0, %%zmm12\n\t"
      "vmovdqa64 %%zmm0, %%zmm13\n\t"
      "1:\n\t"
      "vpdpwssd %%zmm15, %%zmm14, %%zmm0\n\tvpdpwssd %%zmm15, %%zmm14, %%zmm1\n\t"
      "vpdpwssd %%zmm15, %%zmm14, %%zmm2\n\tvpdpwssd %%zmm15, %%zmm14, %%zmm3\n\t"
      "vpdpwssd %%zmm15, %%zmm14, %%zmm4\n\tvpdpwssd %%zmm15, %%zmm14, %%zmm5\n\t"
      "vpdpwssd %%zmm15, %%zmm14, %%zmm6\n\tvpdpwssd %%zmm15, %%zmm14, %%zmm7\n\t"
      "vpdpwssd %%zmm15, %%zmm14, %%zmm8\n\tvpdpwssd %%zmm15, %%zmm14, %%zmm9\n\t"
      "vpdpwssd %%zmm15, %%zmm14, %%zmm10\n\tvpdpwssd %%zmm15, %%zmm14, %%zmm11\n\t"
      "vpdpwssd %%zmm15, %%zmm14, %%zmm12\n\tvpdpwssd %%zmm15, %%zmm14, %%zmm13\n\t"
      "dec %0\n\t"
      "jnz 1b\n\t"
      "vzeroupper"
      : "+r"(iters)
      :
      : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11",
        "xmm12", "xmm13", "xmm14", "xmm15", "cc");
}
#endif

std::vector<int16_t> random_i16(std::mt19937& rng, std::size_t count, int max_abs) {
  std::uniform_int_distribution<int> d(-max_abs, max_abs);
  std::vector<int16_t> v(count);
  for (auto& x : v) x = static_cast<int16_t>(d(rng));
  return v;
}

std::vector<int8_t> random_w8(std::mt19937& rng, std::size_t count) {
  std::uniform_int_distribution<int> d(-127, 127);
  std::vector<int8_t> v(count);
  for (auto& x : v) x = static_cast<int8_t>(d(rng));
  return v;
}

// Measures and prints the int16 table: every path on kShapes16, the best int8 path on the
// same shapes, and interleaved with each shape the int16 roofline GEMM and the peak loop.
void int16_table(const std::vector<Isa>& isas, int repeats, std::mt19937& rng) {
  const Isa best = isas.back();
  const Shape16& rs = kShapes16[kRoofline16];
  const auto roof_a = random_i16(rng, std::size_t(rs.m) * rs.k, qnn::igemm::max_abs_a16(rs.k));  // (m, k)
  const auto roof_b = random_w8(rng, std::size_t(rs.k) * rs.n);                                   // (k, n)
  const qnn::igemm::PackedB16 roof_pb(roof_b.data(), rs.k, rs.n, rs.n);
  std::vector<int32_t> roof_c(std::size_t(rs.m) * rs.n);  // (m, n)
  const auto roofline = [&] {
    qnn::igemm::gemm_s16s8s32(rs.m, roof_a.data(), rs.k, roof_pb, roof_c.data(), rs.n, best);
  };
  constexpr long kPeakIters = 1 << 16;

  // secs[shape][column]: isas..., int8 (best isa), int16 roofline, peak loop.
  const std::size_t ncol = isas.size() + 3;
  std::vector<std::vector<std::optional<double>>> secs(std::size(kShapes16), std::vector<std::optional<double>>(ncol));
  for (std::size_t si = 0; si < std::size(kShapes16); ++si) {
    const Shape16& s = kShapes16[si];
    const auto a = random_i16(rng, std::size_t(s.m) * s.k, qnn::igemm::max_abs_a16(s.k));  // (m, k)
    const auto w = random_w8(rng, std::size_t(s.k) * s.n);  // (k, n), or W (n, k) for kNK
    const int ldw = s.layout == qnn::igemm::BLayout::kKN ? s.n : s.k;
    const qnn::igemm::PackedB16 pb(w.data(), s.k, s.n, ldw, s.layout);
    const auto a8 = random_i8(rng, std::size_t(s.m) * s.k);  // (m, k)
    const qnn::igemm::PackedB pb8(w.data(), s.k, s.n, ldw, s.layout);
    std::vector<int32_t> c(std::size_t(s.m) * s.n);  // (m, n)
    std::vector<std::function<void()>> fns;           // column col_of[f]
    std::vector<std::size_t> col_of;
    for (std::size_t p = 0; p < isas.size(); ++p) {
      if (isas[p] == Isa::kScalar && si == kRoofline16) continue;  // seconds per call; not a roofline candidate
      fns.push_back([&, p] { qnn::igemm::gemm_s16s8s32(s.m, a.data(), s.k, pb, c.data(), s.n, isas[p]); });
      col_of.push_back(p);
    }
    fns.push_back([&] { qnn::igemm::gemm_s8s8s32(s.m, a8.data(), s.k, pb8, c.data(), s.n, best); });
    col_of.push_back(isas.size());
    fns.push_back(roofline);
    col_of.push_back(isas.size() + 1);
#if defined(__x86_64__)
    if (qnn::igemm::isa_available(Isa::kAvx512Vnni)) {
      fns.push_back([] { vpdpwssd_loop(kPeakIters); });
      col_of.push_back(isas.size() + 2);
    }
#endif
    const std::vector<double> med = median_seconds(fns, repeats);
    for (std::size_t f = 0; f < fns.size(); ++f) secs[si][col_of[f]] = med[f];
  }

  const auto rate = [](const Shape16& s, double seconds) { return double(s.m) * s.k * s.n / seconds; };
  const auto fmt = [](double x) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1f", x * 1e-9);
    return std::string(buf);
  };
  std::printf("\nint16 GEMM (w8a16): C (int32) = A (M, K; int16, |A| <= max_abs_a16(K)) · B (K, N; int8), GMAC/s;"
              " M = 32 is one block of atoms. Roofline: the %s path on %d³, interleaved with each row;"
              " peak: 14 independent vpdpwssd zmm per loop (32 MAC each), interleaved with each row.\n\n",
              qnn::igemm::isa_name(best), rs.m);
  std::printf("| shape | M | K | N | B packed from |");
  for (Isa isa : isas) std::printf(" %s |", qnn::igemm::isa_name(isa));
  std::printf(" int8 %s (same shape) | int16 roofline (same runs) | vpdpwssd peak (same runs) | best / roofline |"
              " best / peak |\n",
              qnn::igemm::isa_name(best));
  std::printf("|---|---:|---:|---:|---|");
  for (std::size_t p = 0; p < ncol + 2; ++p) std::printf("---:|");
  std::printf("\n");
  std::vector<double> roof_rates, peak_rates;
  for (std::size_t si = 0; si < std::size(kShapes16); ++si) {
    const Shape16& s = kShapes16[si];
    std::printf("| %s | %d | %d | %d | %s |", s.name, s.m, s.k, s.n,
                s.layout == qnn::igemm::BLayout::kKN ? "(K, N)" : "(N, K)");
    double ours = std::numeric_limits<double>::infinity();  // fastest int16 path
    for (std::size_t p = 0; p < isas.size(); ++p) {
      std::printf(" %s |", secs[si][p] ? fmt(rate(s, *secs[si][p])).c_str() : "–");
      if (secs[si][p]) ours = std::min(ours, *secs[si][p]);
    }
    std::printf(" %s |", fmt(rate(s, *secs[si][isas.size()])).c_str());
    const double roof_rate = rate(rs, *secs[si][isas.size() + 1]);
    roof_rates.push_back(roof_rate);
    std::printf(" %s |", fmt(roof_rate).c_str());
    std::string peak = "–", vs_peak = "–";
    if (secs[si][isas.size() + 2]) {
      const double peak_rate = kPeakLoopMacs * kPeakIters / *secs[si][isas.size() + 2];
      peak_rates.push_back(peak_rate);
      peak = fmt(peak_rate);
      vs_peak = ratio(rate(s, ours) / peak_rate);
    }
    std::printf(" %s | %s | %s |\n", peak.c_str(), ratio(rate(s, ours) / roof_rate).c_str(), vs_peak.c_str());
  }
  const auto median = [](std::vector<double> v) {
    std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
    return v[v.size() / 2];
  };
  std::printf("\nint16 roofline: %.1f GMAC/s (%s, %d³; median over the rows' runs)\n", median(roof_rates) * 1e-9,
              qnn::igemm::isa_name(best), rs.m);
  if (!peak_rates.empty()) {
    std::printf("vpdpwssd zmm peak: %.1f GMAC/s (median over the rows' runs)\n", median(peak_rates) * 1e-9);
  }
}

}  // namespace

int main(int argc, char** argv) try {
  const int repeats = argc > 1 ? std::max(1, std::atoi(argv[1])) : 21;
  std::vector<Isa> isas;
  if (std::getenv("QNN_ISA") != nullptr) {
    isas.push_back(qnn::igemm::active_isa());
  } else {
    for (Isa isa : qnn::igemm::kAllIsas) {
      if (qnn::igemm::isa_available(isa)) isas.push_back(isa);
    }
  }
  const Isa best = isas.back();
#if defined(QNN_HAVE_ONEDNN)
  omp_set_num_threads(1);
#endif

  std::mt19937 rng(2024);
  const Shape& rs = kShapes[kRoofline];
  const auto roof_a = random_i8(rng, std::size_t(rs.m) * rs.k);  // (m, k)
  const auto roof_b = random_i8(rng, std::size_t(rs.k) * rs.n);  // (k, n)
  const qnn::igemm::PackedB roof_pb(roof_b.data(), rs.k, rs.n, rs.n);
  std::vector<int32_t> roof_c(std::size_t(rs.m) * rs.n);  // (m, n)
  const auto roofline = [&] { qnn::igemm::gemm_s8s8s32(rs.m, roof_a.data(), rs.k, roof_pb, roof_c.data(), rs.n, best); };

  // secs[shape][path]: paths = isas..., fused requant (best isa), oneDNN s8, oneDNN u8,
  // roofline (best isa, interleaved with this shape).
  const std::size_t npath = isas.size() + 4;
  std::vector<std::vector<std::optional<double>>> secs(std::size(kShapes), std::vector<std::optional<double>>(npath));
  std::string onednn_impl = "not built";
  for (std::size_t si = 0; si < std::size(kShapes); ++si) {
    const Shape& s = kShapes[si];
    auto a = random_i8(rng, std::size_t(s.m) * s.k);  // (m, k)
    auto b = random_i8(rng, std::size_t(s.k) * s.n);  // (k, n)
    const qnn::igemm::PackedB pb(b.data(), s.k, s.n, s.n);
    std::vector<int32_t> c(std::size_t(s.m) * s.n);  // (m, n)
    std::vector<int8_t> c8(std::size_t(s.m) * s.n);  // (m, n)
    std::vector<int32_t> mult(s.n), shift(s.n, 7), bias(s.n, 3);
    for (int j = 0; j < s.n; ++j) mult[j] = (1 << 30) + 12345 * j;
    const qnn::igemm::Requant rq(s.n, bias.data(), mult.data(), shift.data());
    std::vector<std::function<void()>> fns;  // path p = path_of[f]
    std::vector<std::size_t> path_of;
    for (std::size_t p = 0; p < isas.size(); ++p) {
      if (isas[p] == Isa::kScalar && si == kRoofline) continue;  // seconds per call; not a roofline candidate
      fns.push_back([&, p] { qnn::igemm::gemm_s8s8s32(s.m, a.data(), s.k, pb, c.data(), s.n, isas[p]); });
      path_of.push_back(p);
    }
    fns.push_back([&] { qnn::igemm::gemm_s8s8s8(s.m, a.data(), s.k, pb, rq, c8.data(), s.n, best); });
    path_of.push_back(isas.size());
#if defined(QNN_HAVE_ONEDNN)
    OneDnnMatmul dnnl_s8(s, dnnl::memory::data_type::s8, a, b);
    OneDnnMatmul dnnl_u8(s, dnnl::memory::data_type::u8, a, b);
    onednn_impl = dnnl_s8.impl() + " / u8: " + dnnl_u8.impl();
    fns.push_back([&] { dnnl_s8(); });
    path_of.push_back(isas.size() + 1);
    fns.push_back([&] { dnnl_u8(); });
    path_of.push_back(isas.size() + 2);
#endif
    fns.push_back(roofline);
    path_of.push_back(npath - 1);
    const std::vector<double> med = median_seconds(fns, repeats);
    for (std::size_t f = 0; f < fns.size(); ++f) secs[si][path_of[f]] = med[f];
  }

  char date[32];
  const std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof date, "%Y-%m-%d", std::gmtime(&now));
  std::printf("Integer GEMM micro-kernels, %s, CPU: %s, best path: %s, one thread, median of %d runs (thread CPU time).\n",
              date, cpu_model().c_str(), qnn::igemm::isa_name(best), repeats);
#if defined(QNN_HAVE_ONEDNN)
  std::printf("oneDNN %d.%d.%d, matmul implementation (last shape): %s\n\n", dnnl_version()->major,
              dnnl_version()->minor, dnnl_version()->patch, onednn_impl.c_str());
#else
  std::printf("oneDNN comparison not built.\n\n");
#endif
  std::printf("GMAC/s (int8 multiply-accumulates per second, 1e9); C = A (M, K) · B (K, N), int32 out unless noted.\n\n");
  std::printf("| shape | M | K | N |");
  for (Isa isa : isas) std::printf(" %s |", qnn::igemm::isa_name(isa));
  std::printf(" %s + requant (s8 out) | oneDNN s8·s8 | oneDNN u8·s8 | roofline (same runs) | best qnn / best oneDNN |"
              " best qnn / roofline |\n",
              qnn::igemm::isa_name(best));
  std::printf("|---|---:|---:|---:|");
  for (std::size_t p = 0; p < npath + 2; ++p) std::printf("---:|");
  std::printf("\n");
  std::vector<double> roof_rates;
  for (std::size_t si = 0; si < std::size(kShapes); ++si) {
    const Shape& s = kShapes[si];
    std::printf("| %s | %d | %d | %d |", s.name, s.m, s.k, s.n);
    for (std::size_t p = 0; p + 1 < npath; ++p) std::printf(" %s |", gmacs(s, secs[si][p]).c_str());
    const double roof_rate = double(rs.m) * rs.k * rs.n / *secs[si][npath - 1];
    roof_rates.push_back(roof_rate);
    std::printf(" %s |", gmacs(rs, secs[si][npath - 1]).c_str());
    double ours = std::numeric_limits<double>::infinity();  // fastest qnn path, int32 out
    for (std::size_t p = 0; p < isas.size(); ++p) {
      if (secs[si][p]) ours = std::min(ours, *secs[si][p]);
    }
    const double macs = double(s.m) * s.k * s.n;
    std::string vs_onednn = "–";
    if (secs[si][isas.size() + 1]) {
      vs_onednn = ratio(std::min(*secs[si][isas.size() + 1], *secs[si][isas.size() + 2]) / ours);
    }
    std::printf(" %s | %s |\n", vs_onednn.c_str(), ratio(macs / ours / roof_rate).c_str());
  }
  std::nth_element(roof_rates.begin(), roof_rates.begin() + roof_rates.size() / 2, roof_rates.end());
  std::printf("\nroofline: %.1f GMAC/s (%s, %d³, int32 out; median over the shapes' runs)\n",
              roof_rates[roof_rates.size() / 2] * 1e-9, qnn::igemm::isa_name(best), rs.m);

  int16_table(isas, repeats, rng);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "bench_int_gemm: %s\n", e.what());
  return 1;
}
