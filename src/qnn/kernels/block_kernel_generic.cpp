// The compressed engine's block kernel for the portable path (block_kernel_impl.hpp with
// 4-lane vectors: SSE2 on x86-64, plain code elsewhere); always compiled.
#include "qnn/kernels/block_kernel.hpp"
#define QNN_VW 4
#define QNN_NS isa_generic
#include "qnn/kernels/block_kernel_impl.hpp"
namespace qnn::v2 {
void block_generic(const ModelArgs& m, const GraphArgs& g, const OutArgs& o, const int* atoms,
                   int n, int c, void* scratch, BlockResult& res) {
  isa_generic::run_block(m, g, o, atoms, n, c, scratch, res);
}
std::size_t scratch_bytes(const ModelArgs& m) { return isa_generic::scratch_size(m); }
double fma_peak_generic() { return isa_generic::fma_peak(); }
}  // namespace qnn::v2
