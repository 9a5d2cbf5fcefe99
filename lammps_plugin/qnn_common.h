/* -*- c++ -*- ----------------------------------------------------------
   Shared glue of the qnn LAMMPS plugin: the pair style's per-step state (visible to
   compute qnn/deviation through Pair::extract("qnn/state")), the observer interface the pair
   calls after each evaluation, and the read-on-rank-0-and-broadcast model reader. The pair
   style and the compute include this header, never each other's. Includes the qnn core headers, so only the
   plugin's .cpp files include it (pair_qnn.h stays free of them). See docs/lammps.md.
------------------------------------------------------------------------- */
#ifndef LMP_QNN_COMMON_H
#define LMP_QNN_COMMON_H

#include "lmptype.h"

#include "qnn/engine/exact_engine.hpp"
#include "qnn/engine/evaluator.hpp"
#include "qnn/graph/graph.hpp"
#include "qnn/format/model.hpp"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace LAMMPS_NS {

class LAMMPS;

// A further model of a committee (`pair_style qnn m1.qnn m2.qnn ...`): evaluated on the pair
// style's graph on model-deviation output steps only (docs/lammps.md, "Committee models").
struct QNNMember {
  qnn::Model model;
  std::string model_file;                       // as given to pair_style
  std::string mode_name;
  std::unique_ptr<qnn::Evaluator> evaluator;
  qnn::EvalResult result;                       // of the last output step (not folded)
};

// The pair style's core objects and the buffers of its last evaluation, reused across steps.
// The model, evaluator and result are those of the first model, which drives the dynamics.
struct QNNImpl {
  qnn::Model model;
  std::string model_file;                       // as given to pair_style
  std::string mode_name;                        // as given to / chosen by pair_style
  std::unique_ptr<qnn::Evaluator> evaluator;
  qnn::NeighborGraph graph;                     // graph of the last compute()
  qnn::EvalResult result;                       // results of the last compute() (not folded)
  std::vector<int> graph2atom;                  // (graph.ntotal) LAMMPS index of each graph atom
  std::vector<int> atom2graph;                  // (nall) graph index of each LAMMPS atom, -1 if absent
  bigint step = -1;                             // update->ntimestep of the last compute()
  // Topology (graph atoms and edges) as of the last neighbour-list build; only positions
  // are refreshed on the steps in between.
  bool topology_valid = false;
  int topology_nall = -1;
  int topology_inum = -1;
  std::uint64_t topology_stamp = 0;             // bumped at every rebuild (EvalOptions::topology)
  std::vector<QNNMember> committee;             // models 2..K of a committee; empty for one model
};

// An observer of pair_style qnn's evaluations (compute qnn/deviation). PairQNN::compute()
// finds the computes of style qnn/deviation, asks each whether it evaluates on this step and,
// right after its own evaluation, calls observe() on every rank (collective).
class QNNObserver {
 public:
  virtual bool wants_step(bigint step) const = 0;
  virtual void observe(const QNNImpl &state) = 0;

 protected:
  ~QNNObserver() = default;    // not deleted through this interface (LAMMPS owns computes)
};

namespace qnn_plugin {

  // Pair::extract name under which pair_style qnn exposes its QNNImpl.
  inline constexpr const char *kStateName = "qnn/state";
  // The state of the active pair_style qnn (alone or the one qnn sub-style of hybrid):
  // nullptr if there is none, or before it has read a model.
  const QNNImpl *pair_state(LAMMPS *lmp);

  // Execution modes are the core's (qnn::parse_mode, qnn::make_evaluator): fp32,
  // weight-only, int8, mixed, and fp64 (the float network in double, for references/tests).

  // Rank 0 reads `path` and broadcasts its bytes; every rank parses the same bytes, so a bad
  // file gives the same error (error->all, prefixed by `who`) everywhere.
  qnn::Model read_model_all_ranks(LAMMPS *lmp, const std::string &path, const std::string &who);

}    // namespace qnn_plugin
}    // namespace LAMMPS_NS

#endif
