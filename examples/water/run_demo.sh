#!/usr/bin/env bash
# The water demo: describe the shipped FP32 potential, then run NVE MD of 64 H2O molecules
# (192 atoms, 0.5 fs steps) in LAMMPS with pair_style qnn, on 2 MPI ranks.
# Expects scripts/build.sh to have run (scripts/demo.sh does that) and env.sh sourced.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BUILD=${QNN_BUILD_DIR:-$ROOT/build}
MODEL=${QNN_DEMO_MODEL:-$ROOT/potentials/water-se2a.fp32.qnn}
# Reference of compute qnn/deviation: the original FP32 file.
REF=${QNN_DEMO_REF:-$ROOT/potentials/water-se2a.fp32.qnn}
STEPS=${QNN_DEMO_STEPS:-400}
if [ ! -f "$MODEL" ]; then
  echo "[demo] error: no potential at $MODEL (set QNN_DEMO_MODEL to a .qnn file)" >&2
  exit 1
fi
echo "[demo] model:"
"$BUILD/qnn" info "$MODEL"
OUT=${QNN_DEMO_OUT:-$BUILD/demo}
mkdir -p "$OUT"
cd "$HERE"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1 OMP_NUM_THREADS=1
echo "[demo] NVE, $STEPS steps of 0.5 fs, 192 atoms, 2 MPI ranks (log: $OUT/log.nve)"
mpirun -np 2 lmp -in in.nve -log "$OUT/log.nve" -var plugin "$BUILD/qnnplugin.so" -var model "$MODEL" \
  -var ref "$REF" -var steps "$STEPS" -screen none
echo "[demo] c_dev[1..3]: deviation from $(basename "$REF") (dE eV/atom, force RMSE and max |dF| eV/A);"
echo "[demo] f_drift[1..3]: total-energy drift (meV/atom/ps), drift over the run / std(KE), RMS(Etot) (meV/atom)"
# Print the thermo table LAMMPS wrote.
sed -n '/^ *Step /,/^Loop time/p' "$OUT/log.nve"
