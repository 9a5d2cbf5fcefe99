#!/usr/bin/env bash
# Compile check of the CUDA engine (issue 18): configures build-cuda/ with -DQNN_ENABLE_CUDA=ON
# (no LibTorch, no LAMMPS plugin, no benchmarks), builds only qnn_cuda and test_cuda, and runs
# `ctest -L gpu`, whose tests skip, saying why, on a machine without a CUDA device. Without a
# CUDA compiler it says so and exits 0. Environment: QNN_CACHE (default ~/.cache/qnn, for the
# Kokkos paths scripts/bootstrap.sh wrote), QNN_CUDA_BUILD_DIR (default build-cuda),
# QNN_JOBS (default 1), CUDACXX (default $QNN_CUDA_HOME/bin/nvcc or the first nvcc found).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
QNN_CACHE=${QNN_CACHE:-$HOME/.cache/qnn}
BUILD=${QNN_CUDA_BUILD_DIR:-$ROOT/build-cuda}
JOBS=${QNN_JOBS:-1}
t0=$(date +%s)

if [[ -f "$QNN_CACHE/env.sh" ]]; then
  # shellcheck disable=SC1091
  source "$QNN_CACHE/env.sh"
else
  echo "[cuda] error: $QNN_CACHE/env.sh not found: run scripts/bootstrap.sh first" >&2
  exit 1
fi

NVCC=${CUDACXX:-}
if [[ -z "$NVCC" ]]; then
  for c in "${QNN_CUDA_HOME:-}/bin/nvcc" /usr/local/cuda/bin/nvcc $(ls -d /usr/local/cuda-*/bin/nvcc 2>/dev/null) "$(command -v nvcc || true)"; do
    if [[ -n "$c" && -x "$c" ]]; then NVCC=$c; break; fi
  done
fi
if [[ -z "$NVCC" || ! -x "$NVCC" ]]; then
  echo "[cuda] no nvcc found (set CUDACXX or QNN_CUDA_HOME): CUDA check skipped"
  exit 0
fi
echo "[cuda] $("$NVCC" --version | tail -n 2 | head -n 1) ($NVCC)"

echo "[cuda] configuring $BUILD"
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release \
  -DKokkos_ROOT="$QNN_KOKKOS_ROOT" -DCMAKE_CUDA_COMPILER="$NVCC" \
  -DQNN_ENABLE_CUDA=ON -DQNN_ENABLE_TORCH=OFF -DQNN_ENABLE_PLUGIN=OFF -DQNN_BUILD_BENCH=OFF \
  > "$BUILD.configure.log" 2>&1 \
  || { cat "$BUILD.configure.log"; echo "[cuda] error: CMake configure failed" >&2; exit 1; }
grep -E "qnn: CUDA kernels" "$BUILD.configure.log" || true

echo "[cuda] building qnn_cuda and test_cuda with $JOBS jobs"
tb=$(date +%s)
cmake --build "$BUILD" -j "$JOBS" --target qnn_cuda test_cuda > "$BUILD.build.log" 2>&1 \
  || { tail -n 60 "$BUILD.build.log"; echo "[cuda] error: build failed (log: $BUILD.build.log)" >&2; exit 1; }
echo "[cuda] compiled in $(( $(date +%s) - tb )) s (warnings: $(grep -c -i 'warning' "$BUILD.build.log" || true))"

echo "[cuda] ctest -L gpu"
(cd "$BUILD" && ctest -L gpu --output-on-failure) \
  || { echo "[cuda] error: ctest -L gpu failed" >&2; exit 1; }
echo "[cuda] done in $(( $(date +%s) - t0 )) s wall"
