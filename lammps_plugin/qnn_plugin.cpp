// Registers the qnn styles with LAMMPS when the plugin is loaded (`plugin load qnnplugin.so`):
// pair_style qnn, compute qnn/deviation, fix qnn/drift.
#include "lammpsplugin.h"
#include "version.h"

#include "compute_qnn_deviation.h"
#include "fix_qnn_drift.h"
#include "pair_qnn.h"

using namespace LAMMPS_NS;

static Pair *qnn_pair_creator(LAMMPS *lmp)
{
  return new PairQNN(lmp);
}

static Compute *qnn_deviation_creator(LAMMPS *lmp, int argc, char **argv)
{
  return new ComputeQNNDeviation(lmp, argc, argv);
}

static Fix *qnn_drift_creator(LAMMPS *lmp, int argc, char **argv)
{
  return new FixQNNDrift(lmp, argc, argv);
}

extern "C" void lammpsplugin_init(void *lmp, void *handle, void *regfunc)
{
  lammpsplugin_t plugin;
  auto register_plugin = (lammpsplugin_regfunc) regfunc;

  plugin.version = LAMMPS_VERSION;
  plugin.style = "pair";
  plugin.name = "qnn";
  plugin.info = "qnn: quantized neural-network interatomic potential";
  plugin.author = "qnn developers";
  plugin.creator.v1 = (lammpsplugin_factory1 *) &qnn_pair_creator;
  plugin.handle = handle;
  (*register_plugin)(&plugin, lmp);

  plugin.style = "compute";
  plugin.name = "qnn/deviation";
  plugin.info = "qnn: deviation of pair_style qnn from a reference model (energy, forces)";
  plugin.creator.v2 = (lammpsplugin_factory2 *) &qnn_deviation_creator;
  (*register_plugin)(&plugin, lmp);

  plugin.style = "fix";
  plugin.name = "qnn/drift";
  plugin.info = "qnn: total-energy drift and fluctuation of an NVE run";
  plugin.creator.v2 = (lammpsplugin_factory2 *) &qnn_drift_creator;
  (*register_plugin)(&plugin, lmp);
}
