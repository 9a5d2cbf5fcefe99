/* ----------------------------------------------------------------------
   Shared glue of the qnn LAMMPS plugin: see qnn_common.h.
------------------------------------------------------------------------- */
#include "qnn_common.h"

#include "comm.h"
#include "error.h"
#include "lammps.h"

#include "qnn/error.hpp"

#include <mpi.h>

using namespace LAMMPS_NS;

namespace {

// The FP32 model evaluated in double precision: the plugin's "fp64" mode.
class DoubleEvaluator final : public qnn::Evaluator {
 public:
  explicit DoubleEvaluator(const qnn::Model &m) : engine_(m, qnn::ExecSpace::OpenMP) {}
  void compute(const qnn::NeighborGraph &g, qnn::EvalResult &out, const qnn::EvalOptions &opt) override
  {
    engine_.compute(g, out, opt);
  }
  qnn::Mode mode() const override { return qnn::Mode::FP32; }
  const qnn::Model &model() const override { return engine_.model(); }
  std::string describe() const override
  {
    return "fp64: float engine in double precision (the file's weights as stored, double "
           "activations)";
  }

 private:
  qnn::Engine<double> engine_;
};

}    // namespace

std::string qnn_plugin::ModeChoice::name() const
{
  return fp64 ? "fp64" : qnn::to_string(mode);
}

qnn_plugin::ModeChoice qnn_plugin::parse_mode(const std::string &name)
{
  ModeChoice c;
  if (name == "fp64") {
    c.fp64 = true;
    return c;
  }
  if (name != "fp32" && name != "weight-only" && name != "int8" && name != "mixed")
    throw qnn::Error("unknown execution mode '" + name +
                     "'; valid modes: fp32, weight-only, int8, mixed, fp64");
  c.mode = qnn::parse_mode(name);
  return c;
}

qnn_plugin::ModeChoice qnn_plugin::default_mode(const qnn::Model &model)
{
  ModeChoice c;
  c.mode = qnn::default_mode(model);
  return c;
}

std::string qnn_plugin::unsupported_reason(const qnn::Model &model, const ModeChoice &mode)
{
  if (mode.fp64) return "";
  return qnn::mode_unsupported_reason(model, mode.mode);
}

std::unique_ptr<qnn::Evaluator> qnn_plugin::make_evaluator(const qnn::Model &model,
                                                           const ModeChoice &mode)
{
  if (mode.fp64) return std::make_unique<DoubleEvaluator>(model);
  return qnn::make_evaluator(model, mode.mode, qnn::ExecSpace::OpenMP);
}

qnn::Model qnn_plugin::read_model_all_ranks(LAMMPS *lmp, const std::string &path,
                                            const std::string &who)
{
  MPI_Comm world = lmp->world;
  std::vector<char> bytes;
  std::string read_error;
  if (lmp->comm->me == 0) {
    try {
      bytes = qnn::read_file_bytes(path);
    } catch (const qnn::Error &e) {
      read_error = e.what();
    }
  }
  int nerr = (int) read_error.size();
  MPI_Bcast(&nerr, 1, MPI_INT, 0, world);
  if (nerr) {
    read_error.resize(nerr);
    MPI_Bcast(&read_error[0], nerr, MPI_CHAR, 0, world);
    lmp->error->all(FLERR, "{}: {}", who, read_error);
  }
  bigint nbytes = (bigint) bytes.size();
  MPI_Bcast(&nbytes, 1, MPI_LMP_BIGINT, 0, world);
  bytes.resize(nbytes);
  if (nbytes > 0) MPI_Bcast(bytes.data(), (int) nbytes, MPI_CHAR, 0, world);
  qnn::Model model;
  try {
    model = qnn::parse_model(bytes, path);
  } catch (const qnn::Error &e) {
    lmp->error->all(FLERR, "{}: {}", who, e.what());
  }
  return model;
}
