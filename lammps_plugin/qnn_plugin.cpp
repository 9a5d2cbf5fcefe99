// Registers pair_style qnn with LAMMPS when the plugin is loaded (`plugin load qnnplugin.so`).
#include "lammpsplugin.h"
#include "version.h"

#include "pair_qnn.h"

using namespace LAMMPS_NS;

static Pair *qnn_pair_creator(LAMMPS *lmp)
{
  return new PairQNN(lmp);
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
}
