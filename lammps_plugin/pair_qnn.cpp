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

#include "qnn/committee/model_devi.hpp"
#include "qnn/error.hpp"
#ifdef QNN_HAVE_CUDA
#include "qnn/cuda/cuda_engine.hpp"
#endif

#include <algorithm>
#include <array>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <numeric>
#include <unistd.h>

using namespace LAMMPS_NS;

/* ---------------------------------------------------------------------- */

PairQNN::PairQNN(LAMMPS *lmp) :
    Pair(lmp), impl(nullptr), cutoff(0.0), nthreads(-1), out_freq(100), out_atomic(0), out_fp(nullptr),
    reverse_devi(0)
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
  close_out_file();
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
   pair_style qnn <m1.qnn> [m2.qnn ...] [mode M] [device cpu|cuda] [threads N]
                  [out_freq N] [out_file F] [atomic] [relative X] [relative_v Y]
------------------------------------------------------------------------- */

namespace {

const char *const kUsage =
    "'pair_style qnn <m1.qnn> [m2.qnn ...] [mode M] [device cpu|cuda] [threads N] [out_freq N] "
    "[out_file F] [atomic] [relative X] [relative_v Y]'";

bool is_keyword(const char *a)
{
  for (const char *k : {"mode", "device", "threads", "out_freq", "out_file", "atomic", "relative", "relative_v"})
    if (strcmp(a, k) == 0) return true;
  return false;
}

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

// `text` of rank `root` on every rank.
std::string broadcast(LAMMPS *lmp, std::string text, int root)
{
  int len = static_cast<int>(text.size());
  MPI_Bcast(&len, 1, MPI_INT, root, lmp->world);
  text.resize(static_cast<std::size_t>(len));
  if (len > 0) MPI_Bcast(text.data(), len, MPI_CHAR, root, lmp->world);
  return text;
}

// Empty when rank 0 may create and write `path` (checked before anything is written), else why not.
std::string out_file_problem(LAMMPS *lmp, const std::string &path)
{
  std::string why;
  if (lmp->comm->me == 0) {
    try {
      qnn::check_output_path(path, "out_file " + path);
      if (access(path.c_str(), F_OK) == 0 && access(path.c_str(), W_OK) != 0)
        why = "out_file " + path + ": the file exists and is not writable";
    } catch (const std::exception &e) {
      why = e.what();
    }
  }
  return broadcast(lmp, why, 0);
}

// The first of paths[1..] that does not exist on rank 0 ("" if none), on every rank: such a
// word is more likely a mistyped keyword than a model file.
std::string first_missing_member(LAMMPS *lmp, const std::vector<std::string> &paths)
{
  std::string missing;
  if (lmp->comm->me == 0)
    for (std::size_t k = 1; k < paths.size() && missing.empty(); k++)
      if (access(paths[k].c_str(), F_OK) != 0) missing = paths[k];
  return broadcast(lmp, missing, 0);
}

}    // namespace

void PairQNN::settings(int narg, char **arg)
{
  if (narg < 1 || is_keyword(arg[0]))
    error->all(FLERR, "Illegal pair_style qnn command: expected {}", kUsage);
  std::vector<std::string> paths;
  int iarg = 0;
  while (iarg < narg && !is_keyword(arg[iarg])) paths.emplace_back(arg[iarg++]);

  std::string mode_arg;
  qnn::Device device = qnn::Device::Cpu;
  int freq = 100;
  std::string file = "model_devi.out";
  int atomic = 0;
  std::optional<double> relative, relative_v;
  std::vector<std::string> devi_keywords;   // those given, for the one-model error
  auto value = [&](const char *key, const char *hint) -> const char * {
    if (iarg + 1 >= narg || is_keyword(arg[iarg + 1]))
      error->all(FLERR, "pair_style qnn: '{}' needs a value ({}); expected {}", key, hint, kUsage);
    return arg[iarg + 1];
  };
  auto level = [&](const char *key) {
    const double x = utils::numeric(FLERR, value(key, "a positive number"), false, lmp);
    if (!(x > 0.0) || !std::isfinite(x))
      error->all(FLERR, "pair_style qnn: '{}' must be a positive level (eV/A for forces, eV for the virial), got {}",
                 key, arg[iarg + 1]);
    return x;
  };
  while (iarg < narg) {
    const std::string key = arg[iarg];
    if (key == "threads") {
      nthreads = utils::inumeric(FLERR, value("threads", "a number of threads"), false, lmp);
      if (nthreads < 1) error->all(FLERR, "pair_style qnn: 'threads' must be >= 1");
      iarg += 2;
    } else if (key == "mode") {
      mode_arg = value("mode", "an execution mode, e.g. fp32 or int8");
      iarg += 2;
    } else if (key == "device") {
      const char *d = value("device", "cpu or cuda");
      try {
        device = qnn::parse_device(d);
      } catch (const std::exception &e) {
        error->all(FLERR, "pair_style qnn: {}", e.what());
      }
      iarg += 2;
    } else if (key == "out_freq") {
      freq = utils::inumeric(FLERR, value("out_freq", "a number of steps"), false, lmp);
      if (freq < 1)
        error->all(FLERR, "pair_style qnn: 'out_freq' must be >= 1 (write the model deviation every N steps), "
                          "got {}", freq);
      devi_keywords.push_back(key);
      iarg += 2;
    } else if (key == "out_file") {
      file = value("out_file", "a file name");
      devi_keywords.push_back(key);
      iarg += 2;
    } else if (key == "atomic") {
      atomic = 1;
      devi_keywords.push_back(key);
      iarg += 1;
    } else if (key == "relative") {
      relative = level("relative");
      devi_keywords.push_back(key);
      iarg += 2;
    } else if (key == "relative_v") {
      relative_v = level("relative_v");
      devi_keywords.push_back(key);
      iarg += 2;
    } else {
      error->all(FLERR, "pair_style qnn: unknown keyword '{}' (known: mode, device, threads, out_freq, out_file, "
                        "atomic, relative, relative_v), or a model file listed after a keyword; expected {}",
                 key, kUsage);
    }
  }
  const std::string missing = first_missing_member(lmp, paths);
  if (!missing.empty())
    error->all(FLERR, "pair_style qnn: '{}' is neither a model file (no such file) nor a keyword (unknown keyword "
                      "'{}'; known: mode, device, threads, out_freq, out_file, atomic, relative, relative_v); expected {}",
               missing, missing, kUsage);
  if (paths.size() == 1 && !devi_keywords.empty())
    error->all(FLERR, "pair_style qnn: '{}' needs a committee of two or more model files (pair_style qnn m1.qnn "
                      "m2.qnn ... {}); one model has no model deviation", devi_keywords.front(),
               devi_keywords.front());
  qnn::Mode mode = qnn::Mode::FP32;
  if (!mode_arg.empty()) {
    try {
      mode = qnn::parse_mode(mode_arg);
    } catch (const std::exception &e) {
      error->all(FLERR, "pair_style qnn: {}", e.what());
    }
  }
  if (paths.size() > 1) {
    const std::string why = out_file_problem(lmp, file);
    if (!why.empty()) error->all(FLERR, "pair_style qnn: {}", why);
  }

  // Every call into the core is guarded here, at the plugin's boundary: a qnn::Error (or any
  // other exception of the core) becomes one LAMMPS error naming the file. No error->all()
  // inside a try block, so LAMMPS's own exception is never caught here. Nothing is kept
  // (and no file written) unless every model loads.
  delete impl;
  impl = nullptr;
  close_out_file();
  model_path = paths[0];
  const int cuda_device = device == qnn::Device::Cuda ? pick_cuda_device(lmp) : -1;
  auto load = [&](const std::string &path, qnn::Model &model, std::unique_ptr<qnn::Evaluator> &evaluator,
                  std::string &mode_name) {
    model = qnn_plugin::read_model_all_ranks(lmp, path, "pair_style qnn");
    qnn::Mode m = mode;
    if (mode_arg.empty()) {
      std::string bad;
      try {
        m = qnn::default_mode(model);
      } catch (const std::exception &e) {
        bad = e.what();
      }
      if (!bad.empty())
        error->all(FLERR, "pair_style qnn: {}: default mode: {}; choose one with 'mode ...'", path, bad);
    }
    std::string why;
    try {
      why = qnn::mode_unsupported_reason(model, m);
    } catch (const std::exception &e) {
      why = e.what();
    }
    if (!why.empty())
      error->all(FLERR, "pair_style qnn: {} cannot run in mode {}: {}", path, qnn::to_string(m), why);
    std::string failure;
    try {
      qnn::ensure_kokkos_initialized(nthreads);
#ifdef QNN_HAVE_CUDA
      if (device == qnn::Device::Cuda)
        evaluator = qnn::cuda::make_cuda_evaluator(model, m, cuda_device);
      else
#else
      (void) cuda_device;
#endif
        evaluator = qnn::make_evaluator(model, m, qnn::ExecSpace::OpenMP);
    } catch (const std::exception &e) {
      failure = e.what();
    }
    if (!failure.empty())
      error->all(FLERR, "pair_style qnn: {} in mode {}: {}", path, qnn::to_string(m), failure);
    mode_name = qnn::to_string(m);
  };

  auto state = std::make_unique<QNNImpl>();
  load(paths[0], state->model, state->evaluator, state->mode_name);
  state->model_file = paths[0];
  for (std::size_t k = 1; k < paths.size(); k++) {
    QNNMember member;
    load(paths[k], member.model, member.evaluator, member.mode_name);
    const std::string why = qnn::devi::committee_mismatch(state->model, paths[0], member.model, paths[k]);
    if (!why.empty()) error->all(FLERR, "pair_style qnn: {}", why);
    member.model_file = paths[k];
    state->committee.push_back(std::move(member));
  }
  std::string summary;
  try {
    summary = qnn::describe(state->model);
  } catch (const std::exception &e) {
    summary = std::string("(no summary: ") + e.what() + ")\n";
  }
  impl = state.release();
  out_freq = freq;
  out_file = file;
  out_atomic = atomic;
  out_relative = relative;
  out_relative_v = relative_v;
  // The reverse communication carries either forces and per-atom virials (newton off) or, on
  // output steps, every model's forces.
  comm_reverse = comm_reverse_off = std::max(9, 3 * static_cast<int>(paths.size()));
  cutoff = impl->model.rcut;
  if (comm->me == 0) {
    utils::logmesg(lmp, "pair_style qnn: loaded {}\n{}pair_style qnn: mode {}{}: {}\n", model_path, summary,
                   impl->mode_name, mode_arg.empty() ? " (the file's default)" : "", impl->evaluator->describe());
    for (std::size_t k = 0; k < impl->committee.size(); k++)
      utils::logmesg(lmp, "pair_style qnn: committee model {} {}: mode {}: {}\n", k + 2, paths[k + 1],
                     impl->committee[k].mode_name, impl->committee[k].evaluator->describe());
    if (!impl->committee.empty())
      utils::logmesg(lmp, "pair_style qnn: committee of {} models (the first drives the dynamics): model deviation "
                          "every {} steps to {}{}{}{}\n", paths.size(), out_freq, out_file,
                     out_atomic ? ", per atom" : "",
                     out_relative ? fmt::format(", relative {}", *out_relative) : std::string(),
                     out_relative_v ? fmt::format(", relative_v {}", *out_relative_v) : std::string());
  }
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
    impl->topology_stamp++;
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
  opt.topology = impl->topology_stamp;
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
  // A committee's other models: on output steps only, on the same graph.
  const bool devi_step = !impl->committee.empty() && step % out_freq == 0;
  if (devi_step) {
    qnn::EvalOptions mopt;
    mopt.atom_energy = false;
    mopt.topology = impl->topology_stamp;
    for (QNNMember &m : impl->committee) {
      try {
        m.evaluator->compute(g, m.result, mopt);
      } catch (const qnn::Error &e) {
        error->one(FLERR, "pair_style qnn: {}: {}", m.model_file, e.what());
      }
      check_finite(error, m.result, g.ntotal, impl->graph2atom, atom->tag, step, m.model_file);
    }
  }

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
  if (devi_step) write_model_devi();

  // Collective on all ranks (every rank runs the pair style on the same steps).
  for (QNNObserver *obs : observers) obs->observe(*impl);
}

/* ----------------------------------------------------------------------
   one line of the model-deviation file (pair_style deepmd's format, qnn::devi): every
   model's forces folded home, ε_F of each owned atom, gathered to rank 0 by atom ID and
   summarised there in ID order; each model's virial summed over the ranks. Collective.
------------------------------------------------------------------------- */

void PairQNN::write_model_devi()
{
  const qnn::NeighborGraph &g = impl->graph;
  const int nmodels = 1 + static_cast<int>(impl->committee.size());
  const int stride = 3 * nmodels;
  const int nlocal = atom->nlocal;
  const int nall = nlocal + atom->nghost;
  std::vector<const qnn::EvalResult *> results = {&impl->result};
  for (const QNNMember &m : impl->committee) results.push_back(&m.result);

  devi_force.assign(static_cast<std::size_t>(nall) * stride, 0.0);
  for (int a = 0; a < g.ntotal; a++) {
    double *fi = &devi_force[static_cast<std::size_t>(impl->graph2atom[a]) * stride];
    for (int k = 0; k < nmodels; k++)
      for (int d = 0; d < 3; d++) fi[3 * k + d] += results[k]->force[3 * a + d];
  }
  reverse_devi = 1;
  comm->reverse_comm(this, stride);
  reverse_devi = 0;

  // ε_F of every owned atom (atoms of NULL types have zero forces in every model: ε_F = 0,
  // as in pair_style deepmd, and they count in the average).
  devi_atom.resize(nlocal);
  std::vector<const double *> atom_forces(nmodels);
  for (int i = 0; i < nlocal; i++) {
    for (int k = 0; k < nmodels; k++) atom_forces[k] = &devi_force[static_cast<std::size_t>(i) * stride + 3 * k];
    devi_atom[i] = qnn::devi::atom_force_deviation(atom_forces, out_relative);
  }
  // Gathered by atom ID, so that the summary (a sum) and the per-atom columns do not depend
  // on the decomposition.
  const int me = comm->me;
  const int nprocs = comm->nprocs;
  std::vector<int> counts(nprocs), displs(nprocs, 0);
  MPI_Gather(&nlocal, 1, MPI_INT, counts.data(), 1, MPI_INT, 0, world);
  if (me == 0)
    for (int p = 1; p < nprocs; p++) displs[p] = displs[p - 1] + counts[p - 1];
  const int ntotal = me == 0 ? displs[nprocs - 1] + counts[nprocs - 1] : 0;
  std::vector<tagint> tags(ntotal);
  std::vector<double> values(ntotal);
  MPI_Gatherv(atom->tag, nlocal, MPI_LMP_TAGINT, tags.data(), counts.data(), displs.data(), MPI_LMP_TAGINT, 0,
              world);
  MPI_Gatherv(devi_atom.data(), nlocal, MPI_DOUBLE, values.data(), counts.data(), displs.data(), MPI_DOUBLE, 0,
              world);
  // Each model's virial over the whole system.
  std::vector<double> vlocal(6 * nmodels), vall(6 * nmodels);
  for (int k = 0; k < nmodels; k++)
    for (int q = 0; q < 6; q++) vlocal[6 * k + q] = results[k]->virial[q];
  MPI_Reduce(vlocal.data(), vall.data(), 6 * nmodels, MPI_DOUBLE, MPI_SUM, 0, world);
  if (me != 0) return;

  std::vector<int> order(ntotal);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int a, int b) { return tags[a] < tags[b]; });
  std::vector<double> by_tag(ntotal);
  for (int n = 0; n < ntotal; n++) by_tag[n] = values[order[n]];
  const double natoms = static_cast<double>(atom->natoms);
  std::vector<std::array<double, 6>> v6(nmodels);
  std::vector<std::array<double, 9>> v9(nmodels);
  for (int k = 0; k < nmodels; k++) {
    for (int q = 0; q < 6; q++) v6[k][q] = vall[6 * k + q];
    v9[k] = qnn::devi::virial9(v6[k], natoms);
  }
  const qnn::devi::Summary fs = qnn::devi::summarize(by_tag.data(), by_tag.size());
  const qnn::devi::Summary vs =
      qnn::devi::virial_deviation(v9, out_relative_v, qnn::devi::VirialRelative::PerComponent);
  std::string line;
  if (!out_fp) {
    out_fp = std::fopen(out_file.c_str(), "w");
    if (!out_fp)
      error->one(FLERR, "pair_style qnn: cannot open out_file {} for writing: {}", out_file, strerror(errno));
    line = qnn::devi::lammps_header(out_atomic != 0);
  }
  line += qnn::devi::lammps_row(update->ntimestep, vs, fs, out_atomic ? by_tag.data() : nullptr, by_tag.size());
  if (std::fputs(line.c_str(), out_fp) < 0 || std::fflush(out_fp) != 0)
    error->one(FLERR, "pair_style qnn: cannot write out_file {}: {}", out_file, strerror(errno));
}

void PairQNN::close_out_file()
{
  if (out_fp) std::fclose(out_fp);
  out_fp = nullptr;
}

/* ---------------------------------------------------------------------- */

int PairQNN::pack_reverse_comm(int n, int first, double *buf)
{
  int m = 0;
  if (reverse_devi) {
    const int stride = 3 * (1 + static_cast<int>(impl->committee.size()));
    for (int i = first; i < first + n; i++)
      for (int q = 0; q < stride; q++) buf[m++] = devi_force[static_cast<std::size_t>(i) * stride + q];
    return m;
  }
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
  if (reverse_devi) {
    const int stride = 3 * (1 + static_cast<int>(impl->committee.size()));
    for (int i = 0; i < n; i++)
      for (int q = 0; q < stride; q++) devi_force[static_cast<std::size_t>(list_[i]) * stride + q] += buf[m++];
    return;
  }
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
    for (const QNNMember &m : impl->committee) bytes += (double) m.result.force.capacity() * sizeof(double);
  }
  bytes += (double) (devi_force.capacity() + devi_atom.capacity()) * sizeof(double);
  return bytes;
}
