/* ----------------------------------------------------------------------
   compute qnn/deviation: see compute_qnn_deviation.h and docs/lammps.md.
------------------------------------------------------------------------- */
#include "compute_qnn_deviation.h"

#include "atom.h"
#include "comm.h"
#include "error.h"
#include "force.h"
#include "memory.h"
#include "qnn_common.h"
#include "update.h"

#include "qnn/error.hpp"

#include <cmath>
#include <cstring>

using namespace LAMMPS_NS;

struct LAMMPS_NS::RefState {
  qnn::Model model;                            // the `ref` file (empty without one)
  qnn::Mode mode = qnn::Mode::FP32;
  std::unique_ptr<qnn::Evaluator> evaluator;   // built in init() without a `ref` file
  qnn::EvalResult result;
};

/* ---------------------------------------------------------------------- */

ComputeQNNDeviation::ComputeQNNDeviation(LAMMPS *lmp, int narg, char **arg) :
    Compute(lmp, narg, arg), every(0), ref(nullptr), sum_de(0.0), sum_rmse(0.0), neval(0),
    last_step(-1), last_de(0.0), last_rmse(0.0), dforce(nullptr), nmax(0)
{
  const char *usage = "expected 'compute ID group qnn/deviation N [ref FILE] [mode M]'";
  if (narg < 4) error->all(FLERR, "Illegal compute qnn/deviation command: {}", usage);
  every = utils::inumeric(FLERR, arg[3], false, lmp);
  if (every < 1)
    error->all(FLERR, "compute qnn/deviation: N (evaluate every N steps) must be >= 1, got {}", arg[3]);
  int iarg = 4;
  while (iarg < narg) {
    if (strcmp(arg[iarg], "ref") == 0) {
      if (iarg + 1 >= narg) error->all(FLERR, "compute qnn/deviation: 'ref' needs a model file");
      ref_file = arg[iarg + 1];
      iarg += 2;
    } else if (strcmp(arg[iarg], "mode") == 0) {
      if (iarg + 1 >= narg)
        error->all(FLERR, "compute qnn/deviation: 'mode' needs a value (fp32, weight-only, int8, mixed or fp64)");
      ref_mode_name = arg[iarg + 1];
      iarg += 2;
    } else {
      error->all(FLERR, "compute qnn/deviation: unknown keyword '{}' (known: ref, mode); {}", arg[iarg],
                 usage);
    }
  }

  ref = new RefState;
  try {
    ref->mode = qnn::parse_mode(ref_mode_name.empty() ? "fp32" : ref_mode_name);
  } catch (const qnn::Error &e) {
    error->all(FLERR, "compute qnn/deviation: {}", e.what());
  }
  if (!ref_file.empty()) {
    ref->model = qnn_plugin::read_model_all_ranks(lmp, ref_file, "compute qnn/deviation: ref");
    const std::string why = qnn::mode_unsupported_reason(ref->model, ref->mode);
    if (!why.empty())
      error->all(FLERR, "compute qnn/deviation: ref {} cannot run in mode {}: {}", ref_file,
                 qnn::to_string(ref->mode), why);
    // The evaluator is built in init(): Kokkos is initialised by pair_style qnn (with its
    // `threads`), which may come after this command.
  }

  vector_flag = 1;
  size_vector = NVALUES;
  extvector = 0;
  comm_reverse = 3;
  vector = values;
  for (double &v : values) v = 0.0;
}

ComputeQNNDeviation::~ComputeQNNDeviation()
{
  delete ref;
  memory->destroy(dforce);
}

/* ---------------------------------------------------------------------- */

const QNNImpl *ComputeQNNDeviation::find_pair_state()
{
  if (!force->pair_match("qnn", 1, 0))
    error->all(FLERR, "compute qnn/deviation needs pair_style qnn (alone or as the one qnn sub-style "
                      "of pair_style hybrid); define it before the run");
  return qnn_plugin::pair_state(lmp);
}

void ComputeQNNDeviation::init()
{
  const QNNImpl *st = find_pair_state();
  if (!st) error->all(FLERR, "compute qnn/deviation: pair_style qnn has no model yet");
  const qnn::Model &qm = st->model;
  if (ref_file.empty()) {
    // The pair style's own file: rebuilt at every init, since pair_style may have been
    // given again (another file) since the last run.
    const std::string why = qnn::mode_unsupported_reason(qm, ref->mode);
    if (!why.empty())
      error->all(FLERR, "compute qnn/deviation: the pair style's file {} cannot run in reference mode {}: {}",
                 st->model_file, qnn::to_string(ref->mode), why);
    try {
      ref->evaluator = qnn::make_evaluator(qm, ref->mode, qnn::ExecSpace::OpenMP);
    } catch (const qnn::Error &e) {
      error->all(FLERR, "compute qnn/deviation: {} in mode {}: {}", st->model_file, qnn::to_string(ref->mode),
                 e.what());
    }
    if (comm->me == 0)
      utils::logmesg(lmp, "compute qnn/deviation {}: every {} steps, pair mode {} vs reference {} ({})\n", id,
                     every, st->mode_name, st->model_file, ref->evaluator->describe());
  } else {
    if (!ref->evaluator) {
      try {
        ref->evaluator = qnn::make_evaluator(ref->model, ref->mode, qnn::ExecSpace::OpenMP);
      } catch (const qnn::Error &e) {
        error->all(FLERR, "compute qnn/deviation: ref {} in mode {}: {}", ref_file, qnn::to_string(ref->mode), e.what());
      }
    }
    // The graph is built with the pair's species indices and cutoff.
    const qnn::Model &rm = ref->model;
    if (rm.species != qm.species) {
      std::string a, b;
      for (const auto &s : qm.species) a += " " + s;
      for (const auto &s : rm.species) b += " " + s;
      error->all(FLERR,
                 "compute qnn/deviation: ref {} has species{} but the pair style's {} has species{}; the "
                 "reference must have the same species in the same order",
                 ref_file, b, st->model_file, a);
    }
    if (rm.rcut > qm.rcut * (1.0 + 1e-12))
      error->all(FLERR,
                 "compute qnn/deviation: ref {} has cutoff {} A, larger than the pair style's {} A: the "
                 "pair's neighbour graph would miss neighbours of the reference",
                 ref_file, rm.rcut, qm.rcut);
    if (comm->me == 0)
      utils::logmesg(lmp, "compute qnn/deviation {}: every {} steps, pair {} (mode {}) vs reference {} ({})\n",
                     id, every, st->model_file, st->mode_name, ref_file, ref->evaluator->describe());
  }
}

/* ----------------------------------------------------------------------
   the values of the last evaluation (zeros before the first)
------------------------------------------------------------------------- */

void ComputeQNNDeviation::compute_vector()
{
  invoked_vector = update->ntimestep;
}

/* ----------------------------------------------------------------------
   Reference on the pair's graph; force differences folded home; MPI reductions.
------------------------------------------------------------------------- */

void ComputeQNNDeviation::observe(const QNNImpl &state)
{
  const QNNImpl *st = &state;
  if (!ref->evaluator) error->all(FLERR, "compute qnn/deviation {} was not initialised before the run", id);
  const qnn::NeighborGraph &g = st->graph;
  const qnn::EvalResult &q = st->result;
  qnn::EvalResult &r = ref->result;
  qnn::EvalOptions opt;
  opt.atom_energy = true;
  try {
    ref->evaluator->compute(g, r, opt);
  } catch (const qnn::Error &e) {
    error->one(FLERR, "compute qnn/deviation: reference: {}", e.what());
  }
  if ((int) q.atom_energy.size() != g.nlocal || (int) r.atom_energy.size() != g.nlocal)
    error->one(FLERR, "compute qnn/deviation: per-atom energies missing from the evaluation (internal error)");

  const int nlocal = atom->nlocal;
  const int nall = nlocal + atom->nghost;
  if (atom->nmax > nmax) {
    nmax = atom->nmax;
    memory->destroy(dforce);
    memory->create(dforce, nmax, 3, "qnn/deviation:dforce");
  }
  for (int i = 0; i < nall; i++) dforce[i][0] = dforce[i][1] = dforce[i][2] = 0.0;
  for (int a = 0; a < g.ntotal; a++) {
    const int i = st->graph2atom[a];
    for (int d = 0; d < 3; d++) dforce[i][d] += q.force[3 * a + d] - r.force[3 * a + d];
  }
  // Ghost contributions to their owners (periodic self-images included), newton on or off.
  comm->reverse_comm(this, 3);

  const int *mask = atom->mask;
  double local[3] = {0.0, 0.0, 0.0};    // sum dE, sum |dF|^2, count
  double local_max = 0.0;
  for (int i = 0; i < nlocal; i++) {
    if (!(mask[i] & groupbit)) continue;
    const int a = st->atom2graph[i];
    if (a < 0 || a >= g.nlocal) continue;    // a type the pair style maps to NULL
    local[0] += q.atom_energy[a] - r.atom_energy[a];
    const double d2 = dforce[i][0] * dforce[i][0] + dforce[i][1] * dforce[i][1] + dforce[i][2] * dforce[i][2];
    local[1] += d2;
    local[2] += 1.0;
    local_max = std::max(local_max, std::sqrt(d2));
  }
  double global[3], gmax;
  MPI_Allreduce(local, global, 3, MPI_DOUBLE, MPI_SUM, world);
  MPI_Allreduce(&local_max, &gmax, 1, MPI_DOUBLE, MPI_MAX, world);

  const double n = global[2];
  const double de = n > 0 ? global[0] / n : 0.0;
  const double rmse = n > 0 ? std::sqrt(global[1] / (3.0 * n)) : 0.0;

  // Running averages over evaluated steps; a step evaluated again (a new run's setup on the
  // same step) replaces its earlier contribution.
  const bigint step = update->ntimestep;
  if (step == last_step && neval > 0) {
    sum_de -= last_de;
    sum_rmse -= last_rmse;
  } else {
    neval++;
  }
  sum_de += de;
  sum_rmse += rmse;
  last_step = step;
  last_de = de;
  last_rmse = rmse;

  values[DE_PER_ATOM] = de;
  values[F_RMSE] = rmse;
  values[F_MAXDEV] = gmax;
  values[DE_AVG] = sum_de / (double) neval;
  values[F_RMSE_AVG] = sum_rmse / (double) neval;
  values[NEVAL] = (double) neval;
}

/* ---------------------------------------------------------------------- */

int ComputeQNNDeviation::pack_reverse_comm(int n, int first, double *buf)
{
  int m = 0;
  for (int i = first; i < first + n; i++) {
    buf[m++] = dforce[i][0];
    buf[m++] = dforce[i][1];
    buf[m++] = dforce[i][2];
  }
  return m;
}

void ComputeQNNDeviation::unpack_reverse_comm(int n, int *list, double *buf)
{
  int m = 0;
  for (int i = 0; i < n; i++) {
    const int j = list[i];
    dforce[j][0] += buf[m++];
    dforce[j][1] += buf[m++];
    dforce[j][2] += buf[m++];
  }
}

double ComputeQNNDeviation::memory_usage()
{
  return 3.0 * nmax * sizeof(double);
}
