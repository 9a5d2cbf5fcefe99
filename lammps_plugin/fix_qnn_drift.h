/* -*- c++ -*- ----------------------------------------------------------
   fix ID all qnn/drift [every N]
   Samples the conserved energy (pe + ke + ecouple, thermo's econserve; etotal in NVE) every
   N steps and reports its drift (least-squares slope), the drift relative to the kinetic-
   energy fluctuations and its RMS fluctuation. See docs/lammps.md.
------------------------------------------------------------------------- */
#ifdef FIX_CLASS
// clang-format off
FixStyle(qnn/drift,FixQNNDrift);
// clang-format on
#else

#ifndef LMP_FIX_QNN_DRIFT_H
#define LMP_FIX_QNN_DRIFT_H

#include "fix.h"

namespace LAMMPS_NS {

class FixQNNDrift : public Fix {
 public:
  // Elements of the global vector (0-based here; f_ID[k+1] in LAMMPS input).
  enum { SLOPE, DRIFT_OVER_KE_STD, ETOT_RMS, NSAMPLES, ELAPSED, KE_STD, NVALUES };

  FixQNNDrift(class LAMMPS *, int, char **);
  int setmask() override;
  void init() override;
  void setup(int) override;
  void end_of_step() override;
  double compute_scalar() override;
  double compute_vector(int) override;

 private:
  bigint nextstep, last_step;
  class Compute *pe, *temperature;
  // Running (Welford) moments of the samples, per atom: time t (ps), conserved energy E and
  // kinetic energy K (eV/atom).
  bigint n;
  double t_first, t_last;
  double mean_t, mean_e, mean_k;
  double m_tt, m_te, m_ee, m_kk;

  void sample();
};

}    // namespace LAMMPS_NS

#endif
#endif
