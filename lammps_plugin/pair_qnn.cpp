/* ----------------------------------------------------------------------
   pair_style qnn: see pair_qnn.h and docs/lammps.md.
------------------------------------------------------------------------- */
#include "pair_qnn.h"

#include "atom.h"
#include "comm.h"
#include "compute.h"
#include "error.h"
#include "force.h"
#include "memory.h"
#include "neigh_list.h"
#include "neighbor.h"
#include "update.h"

#include "modify.h"
#include "qnn_common.h"

#include "qnn/error.hpp"
#ifdef QNN_HAVE_CUDA
#include "qnn/cuda/cuda_engine.hpp"
#endif

#include <climits>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>

using namespace LAMMPS_NS;

/* ---------------------------------------------------------------------- */

PairQNN::PairQNN(LAMMPS *lmp) : Pair(lmp), impl(nullptr), cutoff(0.0), nthreads(-1)
{
  single_enable = 0;
  restartinfo = 0;
  one_coeff = 1;
  manybody_flag = 1;
  no_virial_fdotr_compute = 1;
  centroidstressflag = CENTROID_NOTAVAIL;
  comm_reverse = 9;      // force (3) + per-atom virial (6) of ghosts, when newton is off
  comm_reverse_off = 9;  // LAMMPS sizes its buffers by this one when newton is off
  reverse_vatom = 0;
}

PairQNN::~PairQNN()
{
  delete impl;
  if (allocated) {
    memory->destroy(setflag);
    memory->destroy(cutsq);
  }
}

void PairQNN::allocate()
{
  allocated = 1;
  const int n = atom->ntypes;
  memory->create(setflag, n + 1, n + 1, "pair:setflag");
  memory->create(cutsq, n + 1, n + 1, "pair:cutsq");
  for (int i = 1; i <= n; i++)
    for (int j = i; j <= n; j++) setflag[i][j] = 0;
  map = new int[n + 1];
}

/* ----------------------------------------------------------------------
   pair_style qnn <model.qnn> [mode fp32|weight-only|int8|mixed|fp64] [device cpu|cuda]
                  [threads N]
------------------------------------------------------------------------- */

namespace {

// `device cuda`: the CUDA device of this rank (round-robin over the devices it sees:
// comm->me % device_count()), or error->all on every rank when any rank has none it can use,
// with the reason of the lowest such rank, or when this plugin was built without CUDA.
int pick_cuda_device(LAMMPS *lmp)
{
#ifndef QNN_HAVE_CUDA
  lmp->error->all(FLERR, "pair_style qnn: device cuda: this qnnplugin.so was built without CUDA: rebuild "
                         "with -DQNN_ENABLE_CUDA=ON (or use device cpu)");
  return -1;
#else
  std::string why;
  const bool ok = qnn::cuda::device_available(&why);
  const int mine = ok ? INT_MAX : lmp->comm->me;
  int bad = INT_MAX;
  MPI_Allreduce(&mine, &bad, 1, MPI_INT, MPI_MIN, lmp->world);
  if (bad != INT_MAX) {
    int len = static_cast<int>(why.size());
    MPI_Bcast(&len, 1, MPI_INT, bad, lmp->world);
    why.resize(static_cast<std::size_t>(len));
    MPI_Bcast(why.data(), len, MPI_CHAR, bad, lmp->world);
    lmp->error->all(FLERR, "pair_style qnn: device cuda: no usable CUDA device on rank {}: {}", bad, why);
  }
  return lmp->comm->me % qnn::cuda::device_count();
#endif
}

}    // namespace

void PairQNN::settings(int narg, char **arg)
{
  if (narg < 1)
    error->all(FLERR, "Illegal pair_style qnn command: expected 'pair_style qnn <model.qnn> "
                      "[mode fp32|weight-only|int8|mixed|fp64] [device cpu|cuda] [threads N]'");
  model_path = arg[0];
  std::string mode_arg;
  qnn::Device device = qnn::Device::Cpu;
  int iarg = 1;
  while (iarg < narg) {
    if (strcmp(arg[iarg], "threads") == 0) {
      if (iarg + 1 >= narg) error->all(FLERR, "pair_style qnn: 'threads' needs a value");
      nthreads = utils::inumeric(FLERR, arg[iarg + 1], false, lmp);
      if (nthreads < 1) error->all(FLERR, "pair_style qnn: 'threads' must be >= 1");
      iarg += 2;
    } else if (strcmp(arg[iarg], "mode") == 0) {
      if (iarg + 1 >= narg)
        error->all(FLERR, "pair_style qnn: 'mode' needs a value (fp32, weight-only, int8, mixed or fp64)");
      mode_arg = arg[iarg + 1];
      iarg += 2;
    } else if (strcmp(arg[iarg], "device") == 0) {
      if (iarg + 1 >= narg) error->all(FLERR, "pair_style qnn: 'device' needs a value (cpu or cuda)");
      try {
        device = qnn::parse_device(arg[iarg + 1]);
      } catch (const std::exception &e) {
        error->all(FLERR, "pair_style qnn: {}", e.what());
      }
      iarg += 2;
    } else {
      error->all(FLERR, "pair_style qnn: unknown keyword '{}' (known: mode, device, threads)", arg[iarg]);
    }
  }
  qnn::Mode mode = qnn::Mode::FP32;
  if (!mode_arg.empty()) {
    try {
      mode = qnn::parse_mode(mode_arg);
    } catch (const std::exception &e) {
      error->all(FLERR, "pair_style qnn: {}", e.what());
    }
  }

  // Every call into the core is guarded here, at the plugin's boundary: a qnn::Error (or any
  // other exception of the core) becomes one LAMMPS error naming the file. No error->all()
  // inside a try block, so LAMMPS's own exception is never caught here.
  delete impl;
  impl = nullptr;
  const int cuda_device = device == qnn::Device::Cuda ? pick_cuda_device(lmp) : -1;
  qnn::Model model = qnn_plugin::read_model_all_ranks(lmp, model_path, "pair_style qnn");
  if (mode_arg.empty()) {
    try {
      mode = qnn::default_mode(model);
    } catch (const std::exception &e) {
      error->all(FLERR, "pair_style qnn: {}: default mode: {}; choose one with 'mode ...'", model_path,
                 e.what());
    }
  }
  std::string why;
  try {
    why = qnn::mode_unsupported_reason(model, mode);
  } catch (const std::exception &e) {
    why = e.what();
  }
  if (!why.empty())
    error->all(FLERR, "pair_style qnn: {} cannot run in mode {}: {}", model_path, qnn::to_string(mode), why);

  impl = new QNNImpl;
  impl->model = std::move(model);
  impl->model_file = model_path;
  impl->mode_name = qnn::to_string(mode);
  std::string failure, summary;
  try {
    qnn::ensure_kokkos_initialized(nthreads);
#ifdef QNN_HAVE_CUDA
    if (device == qnn::Device::Cuda)
      impl->evaluator = qnn::cuda::make_cuda_evaluator(impl->model, mode, cuda_device);
    else
#else
    (void) cuda_device;
#endif
      impl->evaluator = qnn::make_evaluator(impl->model, mode, qnn::ExecSpace::OpenMP);
    summary = qnn::describe(impl->model);
  } catch (const std::exception &e) {
    failure = e.what();
  }
  if (!failure.empty()) {
    delete impl;
    impl = nullptr;
    error->all(FLERR, "pair_style qnn: {} in mode {}: {}", model_path, qnn::to_string(mode), failure);
  }
  cutoff = impl->model.rcut;
  if (comm->me == 0)
    utils::logmesg(lmp, "pair_style qnn: loaded {}\n{}pair_style qnn: mode {}{}: {}\n", model_path, summary,
                   qnn::to_string(mode), mode_arg.empty() ? " (the file's default)" : "", impl->evaluator->describe());
  // A pair_style qnn that replaces an earlier one keeps LAMMPS's pair_coeff settings: map the
  // elements of that pair_coeff onto the new model's species (its order may differ).
  remap_species();
}

/* ----------------------------------------------------------------------
   after a re-definition of pair_style qnn: the element names of the last pair_coeff mapped
   onto the new model's species, or, when the new model lacks one of them, every pair coeff
   unset (init_one then demands a new pair_coeff)
------------------------------------------------------------------------- */

void PairQNN::remap_species()
{
  if (type_elements.empty() || !allocated) return;
  std::vector<int> remapped(type_elements.size(), -1);
  std::string mapping, missing;
  for (std::size_t t = 1; t < type_elements.size(); t++) {
    const std::string &name = type_elements[t];
    if (name == "NULL") {
      mapping += fmt::format(" {}->NULL", t);
      continue;
    }
    remapped[t] = impl->model.species_index(name);
    if (remapped[t] < 0) missing += (missing.empty() ? "" : ", ") + name;
    mapping += fmt::format(" {}->{}", t, name);
  }
  if (missing.empty()) {
    type2species = remapped;
    if (comm->me == 0)
      utils::logmesg(lmp, "pair_style qnn: type mapping of the previous pair_coeff applied to {}:{}\n", model_path,
                     mapping);
    return;
  }
  type2species.clear();
  type_elements.clear();
  for (int i = 1; i <= atom->ntypes; i++)
    for (int j = i; j <= atom->ntypes; j++) setflag[i][j] = 0;
  if (comm->me == 0)
    error->warning(FLERR, "pair_style qnn: {} has no species {} of the previous pair_coeff; give a new "
                          "'pair_coeff * * <elements>'", model_path, missing);
}

/* ----------------------------------------------------------------------
   pair_coeff * * <element for each LAMMPS type> (NULL: not handled by qnn)
------------------------------------------------------------------------- */

void PairQNN::coeff(int narg, char **arg)
{
  if (!impl) error->all(FLERR, "pair_coeff for qnn before pair_style qnn");
  if (!allocated) allocate();
  if (narg != 2 + atom->ntypes)
    error->all(FLERR,
               "pair_coeff qnn needs '* *' followed by one element per atom type ({} types), "
               "e.g. 'pair_coeff * * O H'; got {} element(s)",
               atom->ntypes, narg - 2);
  if (strcmp(arg[0], "*") != 0 || strcmp(arg[1], "*") != 0)
    error->all(FLERR, "pair_coeff qnn must start with '* *', e.g. 'pair_coeff * * O H'");

  type2species.assign(atom->ntypes + 1, -1);
  type_elements.assign(atom->ntypes + 1, "");
  std::string mapping;
  for (int t = 1; t <= atom->ntypes; t++) {
    const std::string name = arg[1 + t];
    if (name == "NULL") {
      type_elements[t] = name;
      mapping += fmt::format(" {}->NULL", t);
      continue;
    }
    const int s = impl->model.species_index(name);
    if (s < 0) {
      std::string known;
      for (const auto &sp : impl->model.species) known += " " + sp;
      error->all(FLERR, "pair_coeff qnn: element '{}' (atom type {}) is not in model {} (species:{})",
                 name, t, model_path, known);
    }
    type2species[t] = s;
    type_elements[t] = name;
    mapping += fmt::format(" {}->{}", t, name);
  }
  map_element2type(narg - 2, arg + 2);
  if (comm->me == 0) utils::logmesg(lmp, "pair_style qnn: type mapping{}\n", mapping);
}

/* ---------------------------------------------------------------------- */

void PairQNN::init_style()
{
  if (!impl)
    error->all(FLERR, "pair_style qnn has no model: the last 'pair_style qnn' command failed; repeat it "
                      "with a valid model file");
  if (strcmp(update->unit_style, "metal") != 0)
    error->all(FLERR, "pair_style qnn models use 'units metal' (eV, Angstrom); the input uses 'units {}'",
               update->unit_style);
  if (atom->tag_enable == 0) error->all(FLERR, "pair_style qnn requires atom IDs (atom_modify id yes)");
  neighbor->add_request(this, NeighConst::REQ_FULL);
  if (impl) impl->topology_valid = false;  // type map or atoms may have changed since the last run
}

double PairQNN::init_one(int i, int j)
{
  if (setflag[i][j] == 0) error->all(FLERR, "pair_style qnn: all pair coeffs are not set; use 'pair_coeff * * <elements>'");
  return cutoff;
}

/* ----------------------------------------------------------------------
   LAMMPS full neighbour list -> qnn graph -> engine -> f, energy, virial
------------------------------------------------------------------------- */

namespace {
// No silent NaN (issue 16): a non-finite energy, force or virial stops the run with an error
// naming the step and the first atom (by ID) that has one. One sum over the results decides
// (NaN and Inf propagate through it); only a bad step pays for the search.
void check_finite(Error *error, const qnn::EvalResult &r, int ntotal, const std::vector<int> &graph2atom,
                  const tagint *tag, bigint step, const std::string &path)
{
  double sum = r.energy;
  for (int k = 0; k < 6; k++) sum += r.virial[k];
  const std::size_t nf = 3 * static_cast<std::size_t>(ntotal);
  for (std::size_t q = 0; q < nf; q++) sum += r.force[q];
  if (std::isfinite(sum)) return;
  for (int a = 0; a < ntotal; a++) {
    const double *fa = &r.force[3 * static_cast<std::size_t>(a)];
    if (!std::isfinite(fa[0]) || !std::isfinite(fa[1]) || !std::isfinite(fa[2]))
      error->one(FLERR, "pair_style qnn: non-finite force ({} {} {}) on atom {} at step {} ({}): "
                 "stopping instead of integrating it", fa[0], fa[1], fa[2], tag[graph2atom[a]], step, path);
  }
  error->one(FLERR, "pair_style qnn: non-finite energy or virial (energy {}) at step {} ({}): stopping",
             r.energy, step, path);
}
}    // namespace

void PairQNN::compute(int eflag, int vflag)
{
  ev_init(eflag, vflag);

  double **x = atom->x;
  double **f = atom->f;
  const int *type = atom->type;
  const int nlocal = atom->nlocal;
  const int nall = nlocal + atom->nghost;
  const int inum = list->inum;
  const int *ilist = list->ilist;
  const int *numneigh = list->numneigh;
  int **firstneigh = list->firstneigh;

  // Topology: rebuilt only when LAMMPS rebuilt its neighbour list (or the atom counts
  // changed); graph atoms are the centres (ilist order), then every neighbour as it is met.
  // Edges are the whole list (cutoff + skin): the engine skips pairs beyond the cutoff.
  qnn::NeighborGraph &g = impl->graph;
  const bool rebuild = !impl->topology_valid || neighbor->ago == 0 ||
                       impl->topology_nall != nall || impl->topology_inum != inum;
  if (rebuild) {
    impl->atom2graph.assign(nall, -1);
    impl->graph2atom.clear();
    g.offsets.assign(1, 0);
    g.neighbors.clear();
    for (int ii = 0; ii < inum; ii++) {
      const int i = ilist[ii];
      if (type2species[type[i]] < 0) continue;
      impl->atom2graph[i] = (int) impl->graph2atom.size();
      impl->graph2atom.push_back(i);
    }
    g.nlocal = (int) impl->graph2atom.size();
    for (int ii = 0; ii < inum; ii++) {
      const int i = ilist[ii];
      if (type2species[type[i]] < 0) continue;
      const int *jlist = firstneigh[i];
      for (int jj = 0; jj < numneigh[i]; jj++) {
        const int j = jlist[jj] & NEIGHMASK;
        if (type2species[type[j]] < 0) continue;
        if (impl->atom2graph[j] < 0) {
          impl->atom2graph[j] = (int) impl->graph2atom.size();
          impl->graph2atom.push_back(j);
        }
        g.neighbors.push_back(impl->atom2graph[j]);
      }
      g.offsets.push_back((int) g.neighbors.size());
    }
    g.ntotal = (int) impl->graph2atom.size();
    g.positions.resize(3 * (size_t) g.ntotal);
    g.species.resize(g.ntotal);
    for (int a = 0; a < g.ntotal; a++) g.species[a] = type2species[type[impl->graph2atom[a]]];
    impl->topology_valid = true;
    impl->topology_nall = nall;
    impl->topology_inum = inum;
  }
  for (int a = 0; a < g.ntotal; a++) {
    const int i = impl->graph2atom[a];
    for (int d = 0; d < 3; d++) g.positions[3 * a + d] = x[i][d];
  }

  // compute qnn/deviation instances that evaluate on this step (they need per-atom energies).
  const bigint step = update->ntimestep;
  std::vector<QNNObserver *> observers;
  for (Compute *c : modify->get_compute_list())
    if (c && strcmp(c->style, "qnn/deviation") == 0) {
      auto *obs = dynamic_cast<QNNObserver *>(c);
      if (obs && obs->wants_step(step)) observers.push_back(obs);
    }

  qnn::EvalOptions opt;
  opt.atom_energy = eflag_atom != 0 || !observers.empty();
  opt.atom_virial = vflag_atom != 0;
  // The graph carries no reverse index: the engine builds its own in one pass (no
  // build-then-verify twice per step).
  try {
    impl->evaluator->compute(g, impl->result, opt);
  } catch (const qnn::Error &e) {
    error->one(FLERR, "pair_style qnn: {}", e.what());
  }
  impl->step = step;
  const qnn::EvalResult &r = impl->result;
  check_finite(error, r, g.ntotal, impl->graph2atom, atom->tag, update->ntimestep, model_path);

  // With newton off LAMMPS neither clears nor reverse-communicates ghost forces: we set
  // them here and send them home in the reverse communication below.
  if (!force->newton) {
    for (int i = nlocal; i < nall; i++) f[i][0] = f[i][1] = f[i][2] = 0.0;
    if (vflag_atom)
      for (int i = nlocal; i < nall; i++)
        for (int k = 0; k < 6; k++) vatom[i][k] = 0.0;
  }
  for (int a = 0; a < g.ntotal; a++) {
    const int i = impl->graph2atom[a];
    for (int d = 0; d < 3; d++) f[i][d] += r.force[3 * a + d];
  }
  if (eflag_global) eng_vdwl += r.energy;
  if (eflag_atom)
    for (int a = 0; a < g.nlocal; a++) eatom[impl->graph2atom[a]] += r.atom_energy[a];
  if (vflag_global)
    for (int k = 0; k < 6; k++) virial[k] += r.virial[k];
  if (vflag_atom)
    for (int a = 0; a < g.ntotal; a++)
      for (int k = 0; k < 6; k++) vatom[impl->graph2atom[a]][k] += r.atom_virial[6 * a + k];
  if (!force->newton) {
    reverse_vatom = vflag_atom ? 1 : 0;
    comm->reverse_comm(this, reverse_vatom ? 9 : 3);
  }

  // Collective on all ranks (every rank runs the pair style on the same steps).
  for (QNNObserver *obs : observers) obs->observe(*impl);
}

/* ---------------------------------------------------------------------- */

int PairQNN::pack_reverse_comm(int n, int first, double *buf)
{
  int m = 0;
  double **f = atom->f;
  for (int i = first; i < first + n; i++) {
    buf[m++] = f[i][0];
    buf[m++] = f[i][1];
    buf[m++] = f[i][2];
    if (reverse_vatom)
      for (int k = 0; k < 6; k++) buf[m++] = vatom[i][k];
  }
  return m;
}

void PairQNN::unpack_reverse_comm(int n, int *list_, double *buf)
{
  int m = 0;
  double **f = atom->f;
  for (int i = 0; i < n; i++) {
    const int j = list_[i];
    f[j][0] += buf[m++];
    f[j][1] += buf[m++];
    f[j][2] += buf[m++];
    if (reverse_vatom)
      for (int k = 0; k < 6; k++) vatom[j][k] += buf[m++];
  }
}

void *PairQNN::extract(const char *name, int &dim)
{
  dim = 0;
  if (strcmp(name, qnn_plugin::kStateName) == 0) return impl;
  return nullptr;
}

/* ---------------------------------------------------------------------- */

double PairQNN::memory_usage()
{
  double bytes = Pair::memory_usage();
  if (impl) {
    bytes += (double) impl->graph.neighbors.capacity() * sizeof(int) * 2;
    bytes += (double) impl->graph.positions.capacity() * sizeof(double);
    bytes += (double) impl->result.force.capacity() * sizeof(double);
  }
  return bytes;
}
