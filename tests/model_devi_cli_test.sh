#!/usr/bin/env bash
# `qnn model-devi` (issue 26) against `dp model-devi`: the four DeePMD-kit models of
# tests/data/committee, imported, in mode fp64, on examples/data/water-deepmd/data_2 (80
# frames); the files DeePMD-kit wrote (dp.model_devi.out, and dp.model_devi.atomic.out with
# --atomic --relative 1.0) must have the same header lines, the same rows and columns, and every
# value within 1e-6 relative. Then the refusals: one error each and no output file.
# Usage: model_devi_cli_test.sh QNN SOURCE_DIR WORK_DIR        Prints PASS or FAIL lines.
set -uo pipefail
QNN=$1
SRC=$2
WORK=$3
FIX="$SRC/tests/data/committee"
rm -rf "$WORK" && mkdir -p "$WORK"
fail=0
say() { echo "$1: $2"; [ "$1" = FAIL ] && fail=1; }
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

for k in 1 2 3 4; do
  "$QNN" import "$FIX/m$k.dp" -o "$WORK/m$k.qnn" > /dev/null || { say FAIL "qnn import m$k.dp"; exit 1; }
done
M="$WORK/m1.qnn $WORK/m2.qnn $WORK/m3.qnn $WORK/m4.qnn"

compare() {  # $1 ours, $2 DeePMD-kit's
  python3 - "$1" "$2" <<'PYEOF'
import sys
def load(p):
    head, rows = [], []
    for line in open(p):
        (head if line.startswith("#") else rows).append(line.rstrip("\n"))
    return head, [l.split() for l in rows if l.strip()]
(h1, r1), (h2, r2) = load(sys.argv[1]), load(sys.argv[2])
bad = []
if h1 != h2: bad.append(f"headers differ: {h1} vs {h2}")
if len(r1) != len(r2): bad.append(f"{len(r1)} rows vs {len(r2)}")
worst = 0.0
for a, b in zip(r1, r2):
    if len(a) != len(b): bad.append(f"{len(a)} columns vs {len(b)}"); break
    if a[0] != b[0]: bad.append(f"step {a[0]} vs {b[0]}")
    for x, y in zip(a[1:], b[1:]):
        worst = max(worst, abs(float(x) - float(y)) / abs(float(y)))
if worst > 1e-6: bad.append(f"largest relative difference {worst:.2e} > 1e-6")
print(f"{sys.argv[1]}: {len(r1)} rows, largest relative difference from DeePMD-kit's {worst:.2e}")
if bad: sys.exit("; ".join(bad))
PYEOF
}

# Run from the source tree so that the system's path in the header is DeePMD-kit's.
cd "$SRC" || exit 1
# shellcheck disable=SC2086
if "$QNN" model-devi -m $M -s examples/data/water-deepmd/data_2 --mode fp64 -o "$WORK/md.out" > "$WORK/md.log" \
   && compare "$WORK/md.out" "$FIX/dp.model_devi.out"; then say PASS "equals dp model-devi"; else say FAIL "dp model-devi"; fi
# shellcheck disable=SC2086
if "$QNN" model-devi -m $M -s examples/data/water-deepmd/data_2 --mode fp64 --atomic --relative 1.0 -o "$WORK/md.a.out" \
     > "$WORK/md.a.log" && compare "$WORK/md.a.out" "$FIX/dp.model_devi.atomic.out"; then
  say PASS "equals dp model-devi --atomic --relative 1.0"
else say FAIL "dp model-devi --atomic --relative"; fi

refused() {  # $1 needle, $2 output file that must not exist, rest: arguments
  local needle=$1 out=$2
  shift 2
  local msg
  msg=$("$QNN" model-devi "$@" 2>&1)
  local rc=$?
  if [ $rc -eq 0 ]; then say FAIL "no error for: $*"; return; fi
  [ "$(grep -c 'error' <<< "$msg")" = 1 ] || { say FAIL "not one error for: $* -> $msg"; return; }
  grep -qF -- "$needle" <<< "$msg" || { say FAIL "expected '$needle' for: $* -> $msg"; return; }
  [ -e "$out" ] && { say FAIL "$out written for: $*"; return; }
  say PASS "refused: $needle"
}
"$QNN" import "$SRC/tests/data/deepmd/se_e2_a-oneside_true-float64.dp" -o "$WORK/cut4.qnn" > /dev/null
D=examples/data/water-deepmd/data_2
refused "a committee of two or more models, got 1" "$WORK/r.out" -m "$WORK/m1.qnn" -s $D -o "$WORK/r.out"
refused "$WORK/cut4.qnn has cutoff 4 A but $WORK/m1.qnn has cutoff 6 A" "$WORK/r.out" \
  -m "$WORK/m1.qnn" "$WORK/cut4.qnn" -s $D -o "$WORK/r.out"
refused "is a directory" "$WORK/r.out" -m "$WORK/m1.qnn" "$WORK/m2.qnn" -s $D -o "$WORK"
refused "no DeePMD system" "$WORK/r.out" -m "$WORK/m1.qnn" "$WORK/m2.qnn" -s "$SRC/docs" -o "$WORK/r.out"
refused "cannot run in mode int8" "$WORK/r.out" -m "$WORK/m1.qnn" "$WORK/m2.qnn" -s $D --mode int8 -o "$WORK/r.out"
refused "unknown execution mode 'int9'" "$WORK/r.out" -m "$WORK/m1.qnn" "$WORK/m2.qnn" -s $D --mode int9 -o "$WORK/r.out"
refused "--relative must be a positive level" "$WORK/r.out" -m "$WORK/m1.qnn" "$WORK/m2.qnn" -s $D --relative 0 -o "$WORK/r.out"
[ $fail = 0 ] && echo "ALL PASS" || echo "FAIL: some checks failed"
exit $fail
