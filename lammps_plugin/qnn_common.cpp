/* ----------------------------------------------------------------------
   Shared glue of the qnn LAMMPS plugin: see qnn_common.h.
------------------------------------------------------------------------- */
#include "qnn_common.h"

#include "comm.h"
#include "error.h"
#include "force.h"
#include "lammps.h"
#include "pair.h"

#include "qnn/error.hpp"

#include <mpi.h>

using namespace LAMMPS_NS;

const QNNImpl *qnn_plugin::pair_state(LAMMPS *lmp)
{
  Pair *pair = lmp->force->pair_match("qnn", 1, 0);
  if (!pair) return nullptr;
  int dim = 0;
  return static_cast<const QNNImpl *>(pair->extract(kStateName, dim));
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
    } catch (const std::exception &e) {  // qnn::Error, or std::bad_alloc
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
  // parse_model throws only qnn::Error (with the file named); anything else (std::bad_alloc)
  // is reported the same way, once, through LAMMPS.
  qnn::Model model;
  std::string parse_error;
  try {
    model = qnn::parse_model(bytes, path);
  } catch (const qnn::Error &e) {
    parse_error = e.what();
  } catch (const std::exception &e) {
    parse_error = path + ": " + e.what();
  }
  if (!parse_error.empty()) lmp->error->all(FLERR, "{}: {}", who, parse_error);
  return model;
}
