#!/usr/bin/env bash
# Fuzzes the .qnn model reader (tests/fuzz, issue 16): builds the libFuzzer target with clang
# into $QNN_FUZZ_BUILD_DIR (default build-fuzz/), seeds it with tests/fuzz/corpus and the
# shipped potentials, and runs it for SECONDS (default 60). Exits non-zero on a finding (a crash,
# a sanitizer report, a leak, a timeout of one input or an out-of-memory); the input that caused
# it is left in $QNN_FUZZ_BUILD_DIR/artifacts/.
#
#   scripts/fuzz.sh [SECONDS]          # CI runs 60 s
#   QNN_FUZZ_FORKS=2 scripts/fuzz.sh 3600   # the long run of docs/format.md, "Fuzzing"
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SECS=${1:-60}
BUILD=${QNN_FUZZ_BUILD_DIR:-$ROOT/build-fuzz}
FORKS=${QNN_FUZZ_FORKS:-1}

if ! command -v clang++ > /dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null; then
    echo "[fuzz] installing clang (Debian) for libFuzzer"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang > /dev/null
  else
    echo "[fuzz] error: clang++ not found; install Debian's clang (libFuzzer comes with it)" >&2
    exit 1
  fi
fi

t0=$(date +%s)
cmake -S "$ROOT/tests/fuzz" -B "$BUILD" -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  > "$BUILD.configure.log" 2>&1 || { cat "$BUILD.configure.log"; echo "[fuzz] error: configure failed" >&2; exit 1; }
cmake --build "$BUILD" -j "${QNN_JOBS:-2}" > "$BUILD.build.log" 2>&1 \
  || { tail -50 "$BUILD.build.log"; echo "[fuzz] error: build failed" >&2; exit 1; }
echo "[fuzz] built $BUILD/qnn_fuzz_model_reader in $(( $(date +%s) - t0 )) s"

# The working corpus grows during the run; the committed seeds stay as they are.
WORK="$BUILD/corpus"
mkdir -p "$WORK" "$BUILD/artifacts" "$BUILD/seeds"
cp "$ROOT"/potentials/*.qnn "$BUILD/seeds/"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
status=0
"$BUILD/qnn_fuzz_model_reader" "$WORK" "$ROOT/tests/fuzz/corpus" "$BUILD/seeds" \
  -dict="$ROOT/tests/fuzz/qnn.dict" -max_total_time="$SECS" -max_len=1500000 -timeout=10 -rss_limit_mb=2048 \
  -artifact_prefix="$BUILD/artifacts/" -print_final_stats=1 $( [ "$FORKS" -gt 1 ] && echo "-fork=$FORKS" ) \
  > "$BUILD/fuzz.log" 2>&1 || status=$?
grep -E "^#[0-9]+.*(DONE|INITED)|stat::number_of_executed_units|stat::peak_rss|cov:" "$BUILD/fuzz.log" | tail -4 || true
if [ $status -ne 0 ]; then
  tail -60 "$BUILD/fuzz.log"
  echo "[fuzz] FINDING after $(( $(date +%s) - t0 )) s: see $BUILD/fuzz.log and $BUILD/artifacts/" >&2
  exit 1
fi
echo "[fuzz] ${SECS} s of fuzzing, no finding (log: $BUILD/fuzz.log)"
