#!/usr/bin/env bash
# AddressSanitizer + UndefinedBehaviorSanitizer build of the qnn core and its unit tests
# (issue 16), into $QNN_SAN_BUILD_DIR (default build-asan/), then `ctest -L unit` there. The
# LibTorch parts, the LAMMPS plugin and the benchmarks are left out (Debian's LibTorch is not
# instrumented; the plugin's MPI tests take longer than CI allows under ASan). Any report fails
# the test that triggered it. Extra arguments go to ctest.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
QNN_CACHE=${QNN_CACHE:-$HOME/.cache/qnn}
BUILD=${QNN_SAN_BUILD_DIR:-$ROOT/build-asan}
JOBS=${QNN_JOBS:-$(nproc)}

bash "$ROOT/scripts/bootstrap.sh"
# shellcheck disable=SC1091
source "$QNN_CACHE/env.sh"
t0=$(date +%s)
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" \
  -DCMAKE_CXX_FLAGS="$SAN" -DCMAKE_C_FLAGS="$SAN" -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" \
  -DQNN_ENABLE_TORCH=OFF -DQNN_ENABLE_PLUGIN=OFF -DQNN_BUILD_BENCH=OFF -DQNN_ENABLE_ONEDNN=OFF \
  -DKokkos_ROOT="$QNN_KOKKOS_ROOT" > "$BUILD.configure.log" 2>&1 \
  || { cat "$BUILD.configure.log"; echo "[sanitize] error: configure failed" >&2; exit 1; }
cmake --build "$BUILD" -j "$JOBS" > "$BUILD.build.log" 2>&1 \
  || { tail -60 "$BUILD.build.log"; echo "[sanitize] error: build failed (log: $BUILD.build.log)" >&2; exit 1; }
echo "[sanitize] built $BUILD in $(( $(date +%s) - t0 )) s"
# Leaks are not checked: Kokkos and OpenMP keep their runtime state until exit.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1:strict_string_checks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export OMP_PROC_BIND=false
cd "$BUILD"
status=0
ctest --output-on-failure --timeout 900 -L unit "$@" || status=$?
echo "[sanitize] total wall time $(( $(date +%s) - t0 )) s"
exit $status
