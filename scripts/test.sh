#!/usr/bin/env bash
# The test command: bootstrap + build what is missing, then run every test with CTest.
# Extra arguments go to ctest (e.g. -L mpi, -LE slow, -R Graph).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
QNN_CACHE=${QNN_CACHE:-$HOME/.cache/qnn}
QNN_BUILD_DIR=${QNN_BUILD_DIR:-$ROOT/build}
t0=$(date +%s)
bash "$ROOT/scripts/build.sh"
# shellcheck disable=SC1091
source "$QNN_CACHE/env.sh"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OMP_PROC_BIND=false
cd "$QNN_BUILD_DIR"
status=0
ctest --output-on-failure --timeout 900 "$@" || status=$?
echo "[test] total wall time $(( $(date +%s) - t0 )) s"
exit $status
