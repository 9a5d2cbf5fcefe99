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
