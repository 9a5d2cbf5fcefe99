#!/usr/bin/env bash
# The water demo: the shipped potential in FP32 and quantized, side by side in LAMMPS.
#
# 64 H2O (192 atoms, examples/water/water.data), 0.5 fs steps, 2 MPI ranks; the same input
# (in.demo: NVT at 300 K, then NVE) once per potential:
#   fp32         potentials/water-se2a.fp32.qnn, the FP32 model (the reference)
#   weight-only  potentials/water-se2a.int8.qnn in mode weight-only: 8-bit weights, float
#                arithmetic, exact gradient
#   w8a16        the same file in mode w8a16: int8 weights, int16 activations, integer GEMMs
#                -- the conserving integer mode
#   int8         the same file in mode int8: int8 GEMMs (fastest, does not conserve energy)
# and prints one table: each quantized mode's force deviation from FP32 (compute
# qnn/deviation along its NVT run), every run's NVE drift (fix qnn/drift) and speed
# (atom-steps/s of the NVE run), and writes energy.png (total energy per atom against time).
#
# Expects the qnn tool and plugin in $QNN_BUILD_DIR (scripts/demo.sh builds them into
# build-demo/) and ~/.cache/qnn/env.sh sourced (lmp on PATH). Environment (defaults):
#   QNN_BUILD_DIR (build-demo/)  QNN_DEMO_OUT ($QNN_BUILD_DIR/demo)  QNN_DEMO_NP (2)
#   QNN_DEMO_NVT_STEPS (1000)  QNN_DEMO_NVE_STEPS (2000, even)
#   QNN_DEMO_MODES ("weight-only w8a16 int8")  QNN_DEMO_FP32, QNN_DEMO_QUANT (the two files)
#   QNN_PYTHON (/usr/bin/python3, with matplotlib)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BUILD=${QNN_BUILD_DIR:-$ROOT/build-demo}
FP32=${QNN_DEMO_FP32:-$ROOT/potentials/water-se2a.fp32.qnn}
QUANT=${QNN_DEMO_QUANT:-$ROOT/potentials/water-se2a.int8.qnn}
NP=${QNN_DEMO_NP:-2}
NVT=${QNN_DEMO_NVT_STEPS:-1000}
NVE=${QNN_DEMO_NVE_STEPS:-2000}
MODES=${QNN_DEMO_MODES:-weight-only w8a16 int8}
OUT=${QNN_DEMO_OUT:-$BUILD/demo}
PY=${QNN_PYTHON:-/usr/bin/python3}

die() { echo "[demo] error: $*" >&2; exit 1; }
for f in "$FP32" "$QUANT"; do [ -f "$f" ] || die "no potential at $f"; done
[ -x "$BUILD/qnn" ] || die "no $BUILD/qnn: build it first (bash scripts/demo.sh does)"
[ -f "$BUILD/qnnplugin.so" ] || die "no $BUILD/qnnplugin.so: build it first (bash scripts/demo.sh does)"
command -v lmp > /dev/null || die "no lmp on PATH: source ~/.cache/qnn/env.sh (scripts/bootstrap.sh writes it)"
command -v mpirun > /dev/null || die "no mpirun on PATH (Debian: openmpi-bin)"
[ -x "$PY" ] || die "no Python at $PY (set QNN_PYTHON)"
if [ $((NVE % 2)) -ne 0 ] || [ "$NVE" -lt 20 ]; then die "QNN_DEMO_NVE_STEPS must be even and at least 20"; fi

echo "[demo] the quantized file ($(basename "$QUANT"), $(( $(stat -c %s "$QUANT") / 1024 )) KiB; FP32 file $(( $(stat -c %s "$FP32") / 1024 )) KiB):"
"$BUILD/qnn" info "$QUANT" | sed -n '2,/^default mode/p' | sed 's/^/         /'

mkdir -p "$OUT"
rm -f "$OUT"/log.* "$OUT"/energy.*
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive OMP_PROC_BIND=false
ps_of() { awk -v n="$1" 'BEGIN { printf "%g", n * 0.0005 }'; }
echo "[demo] each run: 192 atoms, $NVT steps NVT at 300 K ($(ps_of "$NVT") ps) then $NVE steps NVE ($(ps_of "$NVE") ps), 0.5 fs, $NP MPI ranks (input examples/water/in.demo, logs in $OUT)"

load() { cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo "?"; }
load0=$(load)
specs=()
run() {  # label model mode every
  local label=$1 model=$2 mode=$3 every=$4 t0
  t0=$(date +%s)
  printf '[demo] %-12s %s mode %s ... ' "$label" "$(basename "$model")" "$mode"
  if ! (cd "$HERE" && mpirun -np "$NP" lmp -in in.demo -log "$OUT/log.$label" -screen none \
          -var plugin "$BUILD/qnnplugin.so" -var model "$model" -var mode "$mode" -var ref "$FP32" \
          -var nvt "$NVT" -var nve "$NVE" -var every "$every" -var label "$label" -var out "$OUT" \
          > "$OUT/mpirun.$label.txt" 2>&1); then
    echo "failed"
    tail -n 20 "$OUT/log.$label" "$OUT/mpirun.$label.txt" >&2 || true
    die "LAMMPS run '$label' failed (log: $OUT/log.$label)"
  fi
  echo "$(( $(date +%s) - t0 )) s"
  specs+=("$label=$model:$mode")
}
run fp32 "$FP32" fp32 0
for m in $MODES; do
  run "$m" "$QUANT" "$m" 20
done

"$PY" "$HERE/demo_report.py" "$OUT" "${specs[@]}" --ranks="$NP"
echo "  load average (1 min) $load0 before the runs, $(load) after, on $(getconf _NPROCESSORS_ONLN) CPUs: other work on the machine"
echo "  slows the speed column (and skews the ratios, the runs being one after another)."
