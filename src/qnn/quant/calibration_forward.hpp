// The float network as calibration sees it (docs/quantization.md, "Calibration"): the FP32
// model evaluated in double, one edge and one atom at a time, from the equations of
// docs/model.md (eq. S, R, G, D, F), with every layer's input and every embedding net's
// output G handed to a tap. No gradients, no quantization, no threads: this is the code that
// observes activation ranges, not an engine.
#pragma once
#include "qnn/graph/graph.hpp"
#include "qnn/format/model.hpp"

namespace qnn {

// Receives the input of every layer as the float network computes it. Called in edge order,
// then atom order, from one thread.
struct LayerTap {
  virtual ~LayerTap() = default;
  // family 0: embedding net `net` (index into Model::embed: Model::embed_index(centre,
  // neighbour)); 1: fitting net of centre species `net`.
  virtual void layer_input(int family, int net, int layer, const double* x, int n) = 0;
  // G_ij, the output of embedding net `net`, for every neighbour within rcut.
  virtual void embed_output(int net, const double* g, int n) = 0;
};

// Runs the network of `model` (its weights as stored; any quantization metadata ignored) on
// `graph` and returns the total energy in eV (without the model's repulsion), so that tests
// can check this forward against the engines. Throws qnn::Error for overlapping atoms.
double calibration_forward(const Model& model, const NeighborGraph& graph, LayerTap* tap);

}  // namespace qnn
