/* ----------------------------------------------------------------------
   fix qnn/drift: see fix_qnn_drift.h and docs/lammps.md.
------------------------------------------------------------------------- */
#include "fix_qnn_drift.h"

#include "atom.h"
#include "compute.h"
#include "error.h"
#include "force.h"
#include "modify.h"
#include "update.h"

#include <cmath>
#include <cstring>

using namespace LAMMPS_NS;
using namespace FixConst;

FixQNNDrift::FixQNNDrift(LAMMPS *lmp, int narg, char **arg) :
    Fix(lmp, narg, arg), nextstep(0), last_step(-1), pe(nullptr), temperature(nullptr), n(0),
    t_first(0.0), t_last(0.0), mean_t(0.0), mean_e(0.0), mean_k(0.0), m_tt(0.0), m_te(0.0),
    m_ee(0.0), m_kk(0.0)
{
  const char *usage = "expected 'fix ID all qnn/drift [every N]'";
  if (igroup != 0)
    error->all(FLERR, "fix qnn/drift measures the energy of the whole system: use group 'all', not '{}'",
               arg[1]);
  nevery = 10;
  int iarg = 3;
  while (iarg < narg) {
    if (strcmp(arg[iarg], "every") == 0) {
      if (iarg + 1 >= narg) error->all(FLERR, "fix qnn/drift: 'every' needs a value; {}", usage);
      nevery = utils::inumeric(FLERR, arg[iarg + 1], false, lmp);
      if (nevery < 1) error->all(FLERR, "fix qnn/drift: 'every' must be >= 1, got {}", arg[iarg + 1]);
      iarg += 2;
    } else {
      error->all(FLERR, "fix qnn/drift: unknown keyword '{}' (known: every); {}", arg[iarg], usage);
    }
  }
  scalar_flag = 1;
  vector_flag = 1;
  size_vector = NVALUES;
  global_freq = 1;    // the statistics of the samples so far are valid on any step
  extscalar = 0;
  extvector = 0;
  time_depend = 1;
}

int FixQNNDrift::setmask()
{
  return END_OF_STEP;
}

void FixQNNDrift::init()
{
  if (strcmp(update->unit_style, "metal") != 0)
    error->all(FLERR, "fix qnn/drift reports meV/atom/ps and needs 'units metal'; the input uses 'units {}'",
               update->unit_style);
  pe = modify->get_compute_by_id("thermo_pe");
  temperature = modify->get_compute_by_id("thermo_temp");
  if (!pe || !temperature)
    error->all(FLERR, "fix qnn/drift needs the thermo_pe and thermo_temp computes LAMMPS defines at start-up");
  // First sampling step of this run: the next multiple of N (the current step included).
  nextstep = (update->ntimestep / nevery) * nevery;
  if (nextstep < update->ntimestep) nextstep += nevery;
  pe->addstep(nextstep);    // energy must be tallied on that step
}

void FixQNNDrift::setup(int)
{
  // LAMMPS sets fixes up in the order they were defined. A thermostat or barostat defined
  // after this fix (fix nvt/npt/...: ecouple_flag) has not run its own setup yet, so its
  // energy (ecouple) is not valid here: on a first run FixNH's chain masses are still
  // uninitialised memory, and the sample could be garbage or NaN, on some ranks only. Then
  // the setup step is not sampled; the first sample is the next multiple of N.
  const auto &fixes = modify->get_fix_list();
  bool after_me = false;
  for (const Fix *f : fixes) {
    if (f == this) {
      after_me = true;
    } else if (after_me && f->ecouple_flag) {
      if (nextstep == update->ntimestep) {
        nextstep += nevery;
        modify->addstep_compute(nextstep);
        pe->addstep(nextstep);
      }
      return;
    }
  }
  end_of_step();
}

void FixQNNDrift::end_of_step()
{
  if (update->ntimestep != nextstep) return;
  if (update->ntimestep != last_step) sample();
  nextstep += nevery;
  modify->addstep_compute(nextstep);
  pe->addstep(nextstep);
}

/* ----------------------------------------------------------------------
   one sample of (t, E/N, KE/N), E = pe + ke + ecouple; all global (all ranks agree)
------------------------------------------------------------------------- */

void FixQNNDrift::sample()
{
  modify->clearstep_compute();
  const double epot = pe->compute_scalar();
  pe->invoked_flag |= Compute::INVOKED_SCALAR;
  const double temp = temperature->compute_scalar();
  temperature->invoked_flag |= Compute::INVOKED_SCALAR;
  // Exactly thermo's "ke": (1/2) dof kB T = (1/2) sum m v^2 (mvv2e), in eV for units metal.
  const double ke = 0.5 * temperature->dof * force->boltz * temp;
  // Energy exchanged with thermostat/barostat fixes (0 in NVE): E is thermo's "econserve".
  const double ecouple = modify->energy_couple();
  const double natoms = (double) atom->natoms;
  if (natoms <= 0) error->all(FLERR, "fix qnn/drift: the system has no atoms");
  const double e = (epot + ke + ecouple) / natoms;
  const double k = ke / natoms;
  // Simulation time in ps (update->dt is in ps for units metal), as thermo's "time".
  const double t = update->atime + (double) (update->ntimestep - update->atimestep) * update->dt;

  n++;
  if (n == 1) t_first = t;
  t_last = t;
  const double dt = t - mean_t, de = e - mean_e, dk = k - mean_k;
  mean_t += dt / (double) n;
  mean_e += de / (double) n;
  mean_k += dk / (double) n;
  m_tt += dt * (t - mean_t);
  m_te += dt * (e - mean_e);
  m_ee += de * (e - mean_e);
  m_kk += dk * (k - mean_k);
  last_step = update->ntimestep;
}

/* ---------------------------------------------------------------------- */

double FixQNNDrift::compute_scalar()
{
  return compute_vector(SLOPE);
}

double FixQNNDrift::compute_vector(int i)
{
  const double slope = (n >= 2 && m_tt > 0.0) ? m_te / m_tt : 0.0;    // eV/atom/ps
  const double ke_std = n >= 1 ? std::sqrt(m_kk / (double) n) : 0.0;   // eV/atom
  switch (i) {
    case SLOPE:
      return 1000.0 * slope;
    case DRIFT_OVER_KE_STD:
      return ke_std > 0.0 ? slope * (t_last - t_first) / ke_std : 0.0;
    case ETOT_RMS:
      return n >= 1 ? 1000.0 * std::sqrt(m_ee / (double) n) : 0.0;
    case NSAMPLES:
      return (double) n;
    case ELAPSED:
      return t_last - t_first;
    case KE_STD:
      return 1000.0 * ke_std;
    default:
      return 0.0;
  }
}
