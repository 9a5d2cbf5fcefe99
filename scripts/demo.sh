#!/usr/bin/env bash
# The demo command: bootstrap + build what is missing, then run the water example in LAMMPS
# with the shipped potential (examples/water/run_demo.sh says what it runs).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
QNN_CACHE=${QNN_CACHE:-$HOME/.cache/qnn}
QNN_BUILD_DIR=${QNN_BUILD_DIR:-$ROOT/build}
t0=$(date +%s)
bash "$ROOT/scripts/build.sh"
# shellcheck disable=SC1091
source "$QNN_CACHE/env.sh"
export QNN_BUILD_DIR
bash "$ROOT/examples/water/run_demo.sh"
echo "[demo] total wall time $(( $(date +%s) - t0 )) s"
