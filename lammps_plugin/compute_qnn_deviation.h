/* -*- c++ -*- ----------------------------------------------------------
   compute ID group qnn/deviation N [ref FILE] [mode M]
   Every N steps, evaluates a reference model on the configuration pair_style qnn has just
   evaluated (the same neighbour graph) and compares energies and forces. See docs/lammps.md.
------------------------------------------------------------------------- */
#ifdef COMPUTE_CLASS
// clang-format off
ComputeStyle(qnn/deviation,ComputeQNNDeviation);
// clang-format on
#else

#ifndef LMP_COMPUTE_QNN_DEVIATION_H
#define LMP_COMPUTE_QNN_DEVIATION_H

#include "compute.h"
#include "qnn_common.h"

#include <memory>
#include <string>

namespace LAMMPS_NS {

class ComputeQNNDeviation : public Compute, public QNNObserver {
 public:
  // Elements of the global vector (0-based here; c_ID[k+1] in LAMMPS input).
  enum { DE_PER_ATOM, F_RMSE, F_MAXDEV, DE_AVG, F_RMSE_AVG, NEVAL, NVALUES };

  ComputeQNNDeviation(class LAMMPS *, int, char **);
  ~ComputeQNNDeviation() override;
  void init() override;
  void compute_vector() override;
  int pack_reverse_comm(int, int, double *) override;
  void unpack_reverse_comm(int, int *, double *) override;
  double memory_usage() override;

  // QNNObserver, called by PairQNN::compute() on every rank: true on the steps this compute
  // evaluates; then (collective) right after the pair's own evaluation on such a step.
  bool wants_step(bigint step) const override { return every > 0 && step % every == 0; }
  void observe(const QNNImpl &state) override;

 private:
  int every;
  std::string ref_file;          // empty: the pair style's own file
  std::string ref_mode_name;     // as given ("" = fp32)
  struct RefState *ref;          // reference model, evaluator and result buffer
  double values[NVALUES];
  double sum_de, sum_rmse;       // over evaluations, for the running averages
  bigint neval, last_step;
  double last_de, last_rmse;     // contribution of the evaluation at last_step
  double **dforce;               // (nmax, 3) quantized - reference force, ghosts folded home
  int nmax;

  const QNNImpl *find_pair_state();
};

}    // namespace LAMMPS_NS

#endif
#endif
