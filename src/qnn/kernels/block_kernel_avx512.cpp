// The compressed engine's block kernel for the avx512 path (block_kernel_impl.hpp), compiled with
// its own instruction-set flags (CMakeLists.txt) and picked at run time.
#include "qnn/kernels/block_kernel.hpp"
#if defined(__AVX512F__) || 0
#define QNN_VW 16
#define QNN_NS isa_avx512
#include "qnn/kernels/block_kernel_impl.hpp"
namespace qnn::v2 {
bool avx512_compiled() { return true; }
double fma_peak_avx512() { return isa_avx512::fma_peak(); }
void block_avx512(const ModelArgs& m, const GraphArgs& g, const OutArgs& o, const int* atoms, int n,
                int c, void* scratch, BlockResult& res) {
  isa_avx512::run_block(m, g, o, atoms, n, c, scratch, res);
}
void sgemm_avx512(int M, int Np, int K, const float* A, int lda, const float* B, int ldb, float* C,
            int ldc) {
  isa_avx512::sgemm(M, Np, K, A, lda, B, ldb, kColPad, C, ldc);
}
}  // namespace qnn::v2
#else
#include <stdexcept>
namespace qnn::v2 {
bool avx512_compiled() { return false; }
double fma_peak_avx512() {
  throw std::logic_error("qnn: the avx512 block kernel was not compiled in");
}
void block_avx512(const ModelArgs&, const GraphArgs&, const OutArgs&, const int*, int, int, void*,
                BlockResult&) {
  throw std::logic_error("qnn: the avx512 block kernel was not compiled in");
}
void sgemm_avx512(int, int, int, const float*, int, const float*, int, float*, int) {
  throw std::logic_error("qnn: the avx512 block kernel was not compiled in");
}
}  // namespace qnn::v2
#endif
