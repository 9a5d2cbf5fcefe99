#!/usr/bin/env bash
# Training speed of `qnn train` against DeePMD-kit's `dp --tf train` (issue 14), side by side in
# one run: the same data, network and schedule (potentials/water-se2a.train.json, and the
# DeePMD-kit input of scripts/train_deepmd_peer.sh with type_one_side true), batch 1, one thread
# each. By default both train at the same time, each pinned to its own core (taskset), so that
# what the machine does meanwhile weighs on both alike; --sequential runs them one after the other.
#
# Timed: steps 1,000 -> N of each run (the first 1,000 hold TensorFlow's and LibTorch's warm-up
# and qnn's statistics), from qnn's learning-curve wall time and DeePMD-kit's "Batch K: total
# wall time" lines. Both validate every 1,000 steps on few frames (qnn: 4 training + 4
# validation frames; DeePMD-kit: its usual one validation frame), so validation costs under 1%.
#
# Usage: bench/peer/train_speed.sh [--steps N] [--sequential] [--out DIR]
#   N: a multiple of 1000, >= 2000 (default 3000). Needs build/qnn (with LibTorch) and the peer
#   venv (bench/peer/setup_peer.sh; created on first use).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
QNN_CACHE=${QNN_CACHE:-$HOME/.cache/qnn}
STEPS=3000
MODE=concurrent
OUT=$ROOT/build/train-speed
QNN=${QNN_BIN:-$ROOT/build/qnn}
DATA=$ROOT/examples/data/water-deepmd
die() { echo "[train_speed] error: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case "$1" in
    --steps) [ $# -ge 2 ] || die "--steps needs a value"; STEPS=$2; shift 2;;
    --sequential) MODE=sequential; shift;;
    --out) [ $# -ge 2 ] || die "--out needs a directory"; OUT=$2; shift 2;;
    -h|--help) sed -n '2,18p' "$0"; exit 0;;
    *) die "unknown argument '$1' (see --help)";;
  esac
done
case "$STEPS" in ''|*[!0-9]*) die "--steps must be a number";; esac
[ "$STEPS" -ge 2000 ] && [ $(( STEPS % 1000 )) -eq 0 ] || die "--steps must be a multiple of 1000, at least 2000"
[ -x "$QNN" ] || die "no $QNN: build qnn with LibTorch first (scripts/build.sh)"
"$QNN" train --help > /dev/null 2>&1 || die "$QNN has no 'train' command (built without LibTorch)"
if [ "$MODE" = concurrent ] && [ "$(nproc)" -lt 2 ]; then MODE=sequential; fi
VENV=$(bash "$ROOT/bench/peer/setup_peer.sh" | tail -n 1)
DP="$VENV/bin/dp"
[ -x "$DP" ] || die "no dp in $VENV"
rm -rf "$OUT"; mkdir -p "$OUT/qnn" "$OUT/dp"
OUT=$(cd "$OUT" && pwd)

# qnn: the shipped config, stopped after STEPS (the schedule stays that of 80k steps, like DeePMD-kit's below).
/usr/bin/python3 - "$ROOT/potentials/water-se2a.train.json" "$OUT/qnn/config.json" "$DATA" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["data"]["systems"] = [sys.argv[3] + "/data_0", sys.argv[3] + "/data_1"]
c["data"]["validation_systems"] = [sys.argv[3] + "/data_2"]
t = c["training"]
t.update({"disp_freq": 1000, "checkpoint_freq": 10**9, "val_frames": 4, "train_eval_frames": 4, "refit_energy_bias": False})
c["output"]["dir"] = "."
json.dump(c, open(sys.argv[2], "w"), indent=1)
PY
# DeePMD-kit: the input of scripts/train_deepmd_peer.sh (type_one_side true: qnn's network), 80k-step schedule.
/usr/bin/python3 - "$ROOT/potentials/water-se2a.peer/input.json" "$OUT/dp/input.json" "$DATA" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["training"]["training_data"]["systems"] = [sys.argv[3] + "/data_0", sys.argv[3] + "/data_1"]
c["training"]["validation_data"]["systems"] = [sys.argv[3] + "/data_2"]
c["training"].update({"disp_freq": 1000, "save_freq": 10**9})
assert c["model"]["descriptor"].get("type_one_side") is True
json.dump(c, open(sys.argv[2], "w"), indent=1)
PY
# shellcheck disable=SC1091
source "$ROOT/bench/peer/one_thread.sh"
pin() { if [ "$MODE" = concurrent ] && command -v taskset > /dev/null; then taskset -c "$1" "${@:2}"; else "${@:2}"; fi; }
run_qnn() { (cd "$OUT/qnn" && pin 0 "$QNN" train config.json --stop-at "$STEPS" --no-plot > train.log 2>&1); }
# DeePMD-kit runs the 80k-step schedule (as qnn does) and is stopped once it logs batch STEPS.
run_dp() (
  cd "$OUT/dp"
  if [ "$MODE" = concurrent ] && command -v taskset > /dev/null; then
    taskset -c 1 "$DP" --tf train input.json --skip-neighbor-stat > train.log 2>&1 &   # taskset execs dp: $! is dp
  else
    "$DP" --tf train input.json --skip-neighbor-stat > train.log 2>&1 &
  fi
  p=$!
  while kill -0 "$p" 2> /dev/null; do
    grep -q "Batch *$STEPS:" train.log 2> /dev/null && { kill "$p"; break; }
    sleep 1
  done
  wait "$p" 2> /dev/null || true
)
load0=$(cut -d' ' -f1 /proc/loadavg)
echo "[train_speed] $MODE: qnn train and dp --tf train, $STEPS steps each, one thread each; load average before: $load0"
if [ "$MODE" = concurrent ]; then
  run_qnn & q=$!
  run_dp
  wait $q || die "qnn train failed (see $OUT/qnn/train.log)"
else
  run_qnn || die "qnn train failed (see $OUT/qnn/train.log)"
  run_dp
fi
/usr/bin/python3 - "$OUT" "$STEPS" "$MODE" "$load0" "$(cut -d' ' -f1 /proc/loadavg)" <<'PY'
import csv, re, sys, platform
out, steps, mode, l0, l1 = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
rows = {int(r["step"]): float(r["wall_s"]) for r in csv.DictReader(open(f"{out}/qnn/lcurve.csv"))}
if 1000 not in rows or steps not in rows:
    sys.exit(f"[train_speed] error: qnn's learning curve lacks step 1000 or {steps}")
q = (steps - 1000) / (rows[steps] - rows[1000])
t = {}
for line in open(f"{out}/dp/train.log"):
    m = re.search(r"Batch +(\d+): total wall time = ([0-9.]+) s", line)
    if m:
        t[int(m.group(1))] = float(m.group(2))
need = list(range(2000, steps + 1, 1000))
if any(k not in t for k in need):
    sys.exit(f"[train_speed] error: DeePMD-kit's log lacks a 'Batch K' line for K in {need}")
d = (steps - 1000) / sum(t[k] for k in need)
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
print(f"machine: {cpu}, {__import__('os').cpu_count()} CPUs; {mode}; load average {l0} before, {l1} after")
print(f"{'trainer':34s} {'steps/s (1000 -> %d)' % steps:>22s}")
print(f"{'qnn train (LibTorch, float)':34s} {q:22.2f}")
print(f"{'DeePMD-kit dp --tf train (float32)':34s} {d:22.2f}")
print(f"ratio qnn / DeePMD-kit: {q / d:.2f}")
open(f"{out}/result.csv", "w").write(f"mode,steps,qnn_steps_per_s,dp_steps_per_s,ratio\n{mode},{steps},{q:.3f},{d:.3f},{q / d:.3f}\n")
PY
