#!/usr/bin/env bash
# Memory growth over repeated runs (issue 16): 12,288 water atoms, each mode, ten consecutive
# `run 20` in one LAMMPS process; prints LAMMPS' peak resident set size after each run and
# the growth from the 2nd to the 10th run (the 1st allocates the buffers). The peak RSS is
# monotone: any growth of the resident memory between runs shows in it.
# Usage: scripts/rss_check.sh [MODEL.qnn] [MODES...]   (needs ~/.cache/qnn/env.sh and build/)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck disable=SC1091
source "${QNN_CACHE:-$HOME/.cache/qnn}/env.sh"
MODEL=$(realpath "${1:-$ROOT/potentials/water-se2a.int8.qnn}")
shift || true
MODES=("${@:-fp32 weight-only int8 mixed}")
read -r -a MODES <<< "${MODES[*]}"
PLUGIN=${QNN_BUILD_DIR:-$ROOT/build}/qnnplugin.so
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
printf '%-12s %s\n' mode "peak RSS (MB, LAMMPS info memory) after runs 1..10; growth run 2 -> 10"
for mode in "${MODES[@]}"; do
  {
    echo "plugin load $PLUGIN"
    echo "units metal"
    echo "atom_style atomic"
    echo "read_data $ROOT/examples/water/water-1536.data"
    echo "replicate 2 2 2"
    echo "velocity all create 300 4928459 mom yes rot yes dist gaussian"
    echo "pair_style qnn $MODEL mode $mode"
    echo "pair_coeff * * O H"
    echo "neighbor 2.0 bin"
    echo "timestep 0.0005"
    echo "fix 1 all nve"
    echo "thermo 20"
    for _ in 1 2 3 4 5 6 7 8 9 10; do
      echo "run 20"
      echo "info memory"
    done
  } > "$WORK/in.$mode"
  OMP_NUM_THREADS=1 "$QNN_LAMMPS_DIR/bin/lmp" -in "$WORK/in.$mode" -log none -screen "$WORK/out.$mode" -nocite > /dev/null
  mapfile -t mem < <(sed -n 's/^Maximum resident set size: *\([0-9.]*\) Mbyte.*/\1/p' "$WORK/out.$mode")
  [ "${#mem[@]}" -eq 10 ] || { echo "error: expected 10 memory lines for mode $mode"; cat "$WORK/out.$mode" | tail -20; exit 1; }
  growth=$(python3 -c "import sys; a=float(sys.argv[1]); b=float(sys.argv[2]); print(f'{100*(b-a)/a:+.2f}%')" "${mem[1]}" "${mem[9]}")
  printf '%-12s %s; %s\n' "$mode" "${mem[*]}" "$growth"
done
