#!/usr/bin/env bash
# The demo command: bootstrap what is missing (scripts/bootstrap.sh), build only what the demo
# needs -- the qnn tool and the LAMMPS plugin, no LibTorch, tests or benchmarks -- into
# build-demo/, then run the shipped water potential in FP32 and quantized side by side
# (examples/water/run_demo.sh says what it runs and prints).
# Environment: QNN_CACHE (~/.cache/qnn), QNN_BOOTSTRAP_PROFILE (demo; full installs everything), QNN_DEMO_BUILD_DIR (build-demo/), QNN_JOBS (nproc),
# and run_demo.sh's QNN_DEMO_* variables.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
QNN_CACHE=${QNN_CACHE:-$HOME/.cache/qnn}
BUILD=${QNN_DEMO_BUILD_DIR:-$ROOT/build-demo}
JOBS=${QNN_JOBS:-$(nproc)}
t0=$(date +%s)

# The demo profile installs and builds only what the demo needs (scripts/bootstrap.sh says what).
QNN_BOOTSTRAP_PROFILE=${QNN_BOOTSTRAP_PROFILE:-demo} bash "$ROOT/scripts/bootstrap.sh"
# shellcheck disable=SC1091
source "$QNN_CACHE/env.sh"
t1=$(date +%s)

echo "[demo] building the qnn tool and the LAMMPS plugin into $BUILD ($JOBS jobs)"
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release \
  -DKokkos_ROOT="$QNN_KOKKOS_ROOT" \
  -DLAMMPS_SOURCE_DIR="$QNN_LAMMPS_SOURCE_DIR" -DLAMMPS_DIR="$QNN_LAMMPS_DIR" \
  -DQNN_ENABLE_TORCH=OFF -DQNN_ENABLE_ONEDNN=OFF -DQNN_BUILD_TESTS=OFF -DQNN_BUILD_BENCH=OFF \
  > "$BUILD.configure.log" 2>&1 \
  || { cat "$BUILD.configure.log"; echo "[demo] error: CMake configure failed" >&2; exit 1; }
cmake --build "$BUILD" -j "$JOBS" --target qnn_cli qnnplugin > "$BUILD.build.log" 2>&1 \
  || { tail -n 40 "$BUILD.build.log"; echo "[demo] error: build failed (log: $BUILD.build.log)" >&2; exit 1; }
t2=$(date +%s)
echo "[demo] built in $(( t2 - t1 )) s: $BUILD/qnn, $BUILD/qnnplugin.so"

QNN_BUILD_DIR=$BUILD bash "$ROOT/examples/water/run_demo.sh"
t3=$(date +%s)
echo "[demo] total wall time $(( t3 - t0 )) s (bootstrap $(( t1 - t0 )) s, build $(( t2 - t1 )) s, MD and report $(( t3 - t2 )) s)"
