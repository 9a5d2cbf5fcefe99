#!/usr/bin/env bash
# Does the potential keep water liquid? (issue 14, part 2.) 1,536 water atoms
# (examples/water/water-1536.data): NVT at 300 K (Nose-Hoover, Tdamp 50 fs) for NVT_PS, then
# NVE for NVE_PS, 0.5 fs steps, one LAMMPS process. The NVE part dumps the O positions every
# 50 steps; stability_analysis.py then reports the smallest O-O distance (every O-O pair is
# intermolecular), the temperature's mean and range, and the energy drift of fix qnn/drift,
# and checks the issue's criteria: O-O >= 2.1 A, T within +-30 K of its mean, |drift| <= 0.01
# meV/atom/ps.
#
# Usage: water_stability.sh MODEL.qnn OUTDIR [MODE] [NVT_PS] [NVE_PS]   (defaults fp32 5 20)
# QNN_ZBL_OO="INNER OUTER" overlays LAMMPS's ZBL repulsion on O-O pairs only, switched off
# between INNER and OUTER Å (docs/lammps.md, "A short-range safety net").
# Needs ~/.cache/qnn/env.sh (LAMMPS) and the plugin ($QNN_BUILD_DIR/qnnplugin.so, default build/).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
MODEL=$(realpath "${1:?usage: water_stability.sh MODEL.qnn OUTDIR [MODE] [NVT_PS] [NVE_PS]}")
OUT=${2:?usage: water_stability.sh MODEL.qnn OUTDIR [MODE] [NVT_PS] [NVE_PS]}
MODE=${3:-fp32}
NVT_PS=${4:-5}
NVE_PS=${5:-20}
[ -f "$MODEL" ] || { echo "water_stability: error: no model $MODEL" >&2; exit 2; }
# shellcheck disable=SC1091
source "${QNN_CACHE:-$HOME/.cache/qnn}/env.sh"
PLUGIN=$(realpath "${QNN_BUILD_DIR:-$ROOT/build}/qnnplugin.so")
[ -f "$PLUGIN" ] || { echo "water_stability: error: no plugin $PLUGIN (scripts/build.sh)" >&2; exit 2; }
nvt_steps=$(python3 -c "print(round($NVT_PS / 0.0005))")
nve_steps=$(python3 -c "print(round($NVE_PS / 0.0005))")
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cat > "$OUT/in.stability" <<EOF
plugin load $PLUGIN
units metal
atom_style atomic
read_data $ROOT/examples/water/water-1536.data
$(if [ -n "${QNN_ZBL_OO:-}" ]; then
    printf 'pair_style hybrid/overlay qnn %s mode %s zbl %s\npair_coeff * * qnn O H\npair_coeff 1 1 zbl 8.0 8.0\n' "$MODEL" "$MODE" "$QNN_ZBL_OO"
  else
    printf 'pair_style qnn %s mode %s\npair_coeff * * O H\n' "$MODEL" "$MODE"
  fi)
neighbor 2.0 bin
timestep 0.0005
group oxygen type 1
velocity all create 300 4928459 mom yes rot yes dist gaussian
fix nvt all nvt temp 300 300 0.05
thermo 1000
run $nvt_steps
unfix nvt
reset_timestep 0
fix nve all nve
fix drift all qnn/drift every 2
variable d1 equal f_drift[1]
thermo_style custom step time temp pe ke etotal f_drift[1]
thermo 200
dump oo oxygen custom 50 $OUT/oxygen.dump id x y z
dump_modify oo sort id
run $nve_steps
print "QNNSTABILITY drift \${d1}"
EOF
echo "[stability] $MODEL mode $MODE${QNN_ZBL_OO:+ + ZBL O-O overlay $QNN_ZBL_OO}: NVT $NVT_PS ps ($nvt_steps steps), NVE $NVE_PS ps ($nve_steps steps) -> $OUT"
t0=$(date +%s)
OMP_NUM_THREADS=1 "$QNN_LAMMPS_DIR/bin/lmp" -in "$OUT/in.stability" -log "$OUT/log.lammps" -screen none -nocite
echo "[stability] LAMMPS took $(( $(date +%s) - t0 )) s"
"${QNN_PYTHON:-/usr/bin/python3}" "$HERE/stability_analysis.py" "$OUT"
