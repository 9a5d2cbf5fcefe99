// TEMPORARY (being written in this session): the integer engine. Until it lands, the integer
// modes report that they are unavailable.
#include "qnn/qengine.hpp"

#include "qnn/error.hpp"

namespace qnn {

struct QEngine::Impl {
  Model model;
};

QEngine::QEngine(const Model&, bool, ExecSpace) {
  throw Error("the integer engine is not built yet");
}
QEngine::~QEngine() = default;
void QEngine::compute(const NeighborGraph&, EvalResult&, const EvalOptions&) {}
const Model& QEngine::model() const { return impl_->model; }
std::string QEngine::describe() const { return ""; }
void qengine_reference(const Model&, bool, const NeighborGraph&, EvalResult&, const EvalOptions&,
                       LayerTap*) {
  throw Error("the integer engine is not built yet");
}
LayerExec layer_exec(const DenseLayer& L, bool, const std::string&) {
  return L.quant.quantized() ? LayerExec::Integer : LayerExec::Float;
}

}  // namespace qnn
