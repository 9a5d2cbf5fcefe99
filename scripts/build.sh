#!/usr/bin/env bash
# Bootstraps the dependencies (scripts/bootstrap.sh, a no-op when cached) and builds qnn into
# $QNN_BUILD_DIR (default: build/ in the checkout). Extra arguments go to CMake's configure.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
QNN_CACHE=${QNN_CACHE:-$HOME/.cache/qnn}
QNN_BUILD_DIR=${QNN_BUILD_DIR:-$ROOT/build}
QNN_JOBS=${QNN_JOBS:-$(nproc)}

bash "$ROOT/scripts/bootstrap.sh"
# shellcheck disable=SC1091
source "$QNN_CACHE/env.sh"

t0=$(date +%s)
echo "[build] configuring $QNN_BUILD_DIR"
cmake -S "$ROOT" -B "$QNN_BUILD_DIR" -DCMAKE_BUILD_TYPE=Release \
  -DKokkos_ROOT="$QNN_KOKKOS_ROOT" \
  -DLAMMPS_SOURCE_DIR="$QNN_LAMMPS_SOURCE_DIR" -DLAMMPS_DIR="$QNN_LAMMPS_DIR" \
  ${QNN_TORCH_DIR:+-DTorch_DIR="$QNN_TORCH_DIR"} "$@" > "$QNN_BUILD_DIR.configure.log" 2>&1 \
  || { cat "$QNN_BUILD_DIR.configure.log"; echo "[build] error: CMake configure failed" >&2; exit 1; }
echo "[build] compiling with $QNN_JOBS jobs"
cmake --build "$QNN_BUILD_DIR" -j "$QNN_JOBS" 2>&1 | tee "$QNN_BUILD_DIR.build.log" \
  || { echo "[build] error: build failed (log: $QNN_BUILD_DIR.build.log)" >&2; exit 1; }
echo "[build] done in $(( $(date +%s) - t0 )) s: $QNN_BUILD_DIR/qnn, $QNN_BUILD_DIR/qnnplugin.so"
