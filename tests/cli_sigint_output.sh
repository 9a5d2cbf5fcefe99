#!/usr/bin/env bash
# Issue 16, truncation safety of the CLI's outputs: SIGINT at many moments during
# `qnn import ... -o OUT` and `qnn quantize ... -o OUT` never leaves OUT partial or missing,
# and no temporary file behind. OUT holds an older valid model first; after each interrupted
# run it must still be a readable model, byte-identical to either the old file or the
# complete new one.
# Usage: cli_sigint_output.sh QNN_BIN DP_FIXTURE FP32_MODEL DATA_DIR
set -u
set -m  # job control: background jobs of a non-interactive shell would otherwise ignore SIGINT
QNN=$1 DP=$2 FP32=$3 DATA=$4
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

check_command() {  # name, then the command writing "$W/out.qnn"
  local name=$1; shift
  # the complete new output, once, to compare against
  local t0 t1
  t0=$(date +%s.%N)
  "$@" > "$W/full.log" 2>&1 || fail "$name: the uninterrupted run failed: $(tail -3 "$W/full.log")"
  t1=$(date +%s.%N)
  cp "$W/out.qnn" "$W/new.qnn"
  local interrupted=0 completed=0
  # SIGINT from the start to past the end of a run, densest near the end, where it writes
  local delays
  delays=$(awk -v t0="$t0" -v t1="$t1" 'BEGIN { t = t1 - t0; n = split("0 0.02 0.1 0.3 0.6 0.8 0.9 0.94 0.97 0.99 1.0 1.01 1.03 1.06 1.1 1.3", f, " ");
                                                   for (i = 1; i <= n; ++i) printf "%.4f ", f[i] * t }')
  for delay in $delays; do
    cp "$FP32" "$W/out.qnn"   # the old file
    "$@" > "$W/run.log" 2>&1 &
    local pid=$!
    sleep "$delay"
    kill -INT "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    local rc=$?
    if [ "$rc" -eq 0 ]; then completed=$((completed + 1)); else interrupted=$((interrupted + 1)); fi
    "$QNN" info "$W/out.qnn" > /dev/null 2>&1 || fail "$name: after SIGINT at ${delay}s (rc $rc) out.qnn is not a valid model"
    if ! cmp -s "$W/out.qnn" "$FP32" && ! cmp -s "$W/out.qnn" "$W/new.qnn"; then
      fail "$name: after SIGINT at ${delay}s out.qnn is neither the old nor the new file"
    fi
    local extra
    extra=$(ls -A "$W" | grep -v -x -e out.qnn -e new.qnn -e full.log -e run.log || true)
    [ -z "$extra" ] || fail "$name: left behind after SIGINT at ${delay}s: $extra"
  done
  echo "$name: $interrupted runs interrupted, $completed completed; out.qnn always the old or the new file"
  [ "$interrupted" -gt 0 ] || fail "$name: no run was interrupted, the check proved nothing"
}

check_command import "$QNN" import "$DP" -o "$W/out.qnn"
check_command quantize "$QNN" quantize "$FP32" --data "$DATA" --frames 2 -o "$W/out.qnn"
echo "PASS"
