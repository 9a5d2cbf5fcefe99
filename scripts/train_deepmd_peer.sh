#!/usr/bin/env bash
# Trains DeePMD-kit (TensorFlow backend, in the peer venv of bench/peer/setup_peer.sh) with the
# configuration of issue 14, for the trainer-parity comparison with `qnn train`:
#   data:     train data_0 + data_1, validation data_2 (all 80 frames for dp test)
#   network:  se_e2_a, float32, rcut 6.0, rcut_smth 0.5, sel [46, 92], embedding 16-32-64,
#             axis 16, fitting 128x3 with resnet_dt
#   schedule: lr 1e-3 -> 2e-6 (exp, decay_steps 1000) over 80k steps; prefactors e 0.02 -> 1,
#             f 1000 -> 1; batch 1; seed 1; one thread
# It writes, into OUTDIR (default $QNN_CACHE/peer-train):
#   input.json            the DeePMD-kit input
#   lcurve.out            DeePMD-kit's learning curve (disp_freq 1000)
#   model.ckpt-STEP.*     checkpoints every 5000 steps (all kept)
#   lcurve.csv            step, rmse_{e,f}_{trn,val} in meV/atom and meV/A, lr
#   dp_test.csv           step, E RMSE (meV/atom), F RMSE (meV/A) from `dp test` on all of data_2,
#                         at the steps of QNN_PEER_TEST_STEPS (default 10000 20000 40000 80000)
#   frozen-STEP.pb, test-STEP.log
#   train.log             dp train's output (appended across restarts)
# Resumable: rerun the same command; with a checkpoint in OUTDIR it continues with
# `dp train --restart` (the schedule continues: global step and Adam state are in the checkpoint).
# The test points are frozen and tested while training runs, as their checkpoints appear.
#
# Usage: scripts/train_deepmd_peer.sh [OUTDIR]
# Environment:
#   QNN_CACHE            cache root (default $HOME/.cache/qnn)
#   QNN_PEER_DATA        the water-deepmd data dir (default examples/data/water-deepmd)
#   QNN_PEER_STEPS       total steps (default 80000)
#   QNN_PEER_TEST_STEPS  steps at which to run dp test (default "10000 20000 40000 80000")
#   QNN_PEER_PUBLISH     if set, a directory that lcurve.csv, dp_test.csv and input.json are
#                        copied into after every update (e.g. potentials/water-se2a.peer)
#   QNN_PEER_TYPE_ONE_SIDE  "true": one embedding net per neighbour species (qnn's se_e2_a);
#                        unset or "false": DeePMD-kit's default, one per (centre, neighbour) pair
#   QNN_PEER_STOP_AT     stop (resumably) once the checkpoint of this step is written and tested;
#                        the schedule is still that of QNN_PEER_STEPS
# Run it in the background, e.g.
#   nohup nice -n 19 scripts/train_deepmd_peer.sh > peer-train.out 2>&1 &
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
QNN_CACHE=${QNN_CACHE:-$HOME/.cache/qnn}
OUT=${1:-$QNN_CACHE/peer-train}
DATA=${QNN_PEER_DATA:-$ROOT/examples/data/water-deepmd}
STEPS=${QNN_PEER_STEPS:-80000}
TEST_STEPS=${QNN_PEER_TEST_STEPS:-10000 20000 40000 80000}
PUBLISH=${QNN_PEER_PUBLISH:-}
# Relative to the caller's directory (the script works inside OUTDIR later).
if [ -n "$PUBLISH" ]; then mkdir -p "$PUBLISH" && PUBLISH=$(cd "$PUBLISH" && pwd); fi
TYPE_ONE_SIDE=${QNN_PEER_TYPE_ONE_SIDE:-false}
STOP_AT=${QNN_PEER_STOP_AT:-$STEPS}
case "$TYPE_ONE_SIDE" in true|false) ;; *) echo "[train_deepmd_peer] error: QNN_PEER_TYPE_ONE_SIDE must be true or false" >&2; exit 1;; esac
case "$STOP_AT" in ''|*[!0-9]*) echo "[train_deepmd_peer] error: QNN_PEER_STOP_AT must be a step number" >&2; exit 1;; esac
SAVE_FREQ=5000
DISP_FREQ=1000

log() { echo "[train_deepmd_peer $(date +%H:%M:%S)] $*"; }
die() { echo "[train_deepmd_peer] error: $*" >&2; exit 1; }

for d in data_0 data_1 data_2; do
  [ -f "$DATA/$d/type.raw" ] || die "no DeePMD system at $DATA/$d (set QNN_PEER_DATA)"
done
DATA=$(cd "$DATA" && pwd)

VENV=$(bash "$ROOT/bench/peer/setup_peer.sh" | tail -n 1)
DP="$VENV/bin/dp"
PY="$VENV/bin/python"
[ -x "$DP" ] || die "no dp in $VENV"

# shellcheck disable=SC1091
source "$ROOT/bench/peer/one_thread.sh"

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cd "$OUT"
exec 9>"$OUT/.lock"
if command -v flock >/dev/null; then
  flock -n 9 || die "another train_deepmd_peer.sh is running in $OUT"
fi

cat > input.json.new <<EOF
{
  "_comment": "issue 14 trainer-parity config, written by scripts/train_deepmd_peer.sh",
  "model": {
    "type_map": ["O", "H"],
    "descriptor": {
      "type": "se_e2_a",
      "rcut": 6.0,
      "rcut_smth": 0.5,
      "sel": [46, 92],
      "neuron": [16, 32, 64],
      "axis_neuron": 16,
      "resnet_dt": false,$( [ "$TYPE_ONE_SIDE" = true ] && printf '\n      "type_one_side": true,' )
      "precision": "float32",
      "seed": 1
    },
    "fitting_net": {
      "neuron": [128, 128, 128],
      "resnet_dt": true,
      "precision": "float32",
      "seed": 1
    }
  },
  "learning_rate": {
    "type": "exp",
    "start_lr": 0.001,
    "stop_lr": 2e-6,
    "decay_steps": 1000
  },
  "loss": {
    "type": "ener",
    "start_pref_e": 0.02,
    "limit_pref_e": 1,
    "start_pref_f": 1000,
    "limit_pref_f": 1,
    "start_pref_v": 0,
    "limit_pref_v": 0
  },
  "training": {
    "training_data": {
      "systems": ["$DATA/data_0", "$DATA/data_1"],
      "batch_size": 1
    },
    "validation_data": {
      "systems": ["$DATA/data_2"],
      "batch_size": 1,
      "numb_btch": 1
    },
    "numb_steps": $STEPS,
    "seed": 1,
    "disp_file": "lcurve.out",
    "disp_freq": $DISP_FREQ,
    "save_freq": $SAVE_FREQ,
    "save_ckpt": "model.ckpt",
    "max_ckpt_keep": 1000
  }
}
EOF
if [ -f input.json ] && ! cmp -s input.json input.json.new; then
  rm -f input.json.new
  die "$OUT/input.json differs from this script's config; use another OUTDIR or remove it"
fi
mv input.json.new input.json

# lcurve.out -> lcurve.csv (meV units; after a restart repeated steps keep the last value).
write_lcurve() {
  [ -f lcurve.out ] || return 0
  "$PY" - <<'PYEOF'
import csv
names, rows = None, {}
for line in open("lcurve.out"):
    if line.startswith("#"):
        toks = line[1:].split()
        if toks and toks[0] == "step":
            names = toks
        continue
    toks = line.split()
    if names and len(toks) == len(names):
        rows[int(toks[0])] = dict(zip(names, map(float, toks)))
cols = [("rmse_trn", "rmse_trn", 1), ("rmse_val", "rmse_val", 1),
        ("rmse_e_trn_meV_per_atom", "rmse_e_trn", 1e3), ("rmse_e_val_meV_per_atom", "rmse_e_val", 1e3),
        ("rmse_f_trn_meV_per_A", "rmse_f_trn", 1e3), ("rmse_f_val_meV_per_A", "rmse_f_val", 1e3),
        ("lr", "lr", 1)]
with open("lcurve.csv.tmp", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["step"] + [c[0] for c in cols])
    for step in sorted(rows):
        r = rows[step]
        w.writerow([step] + ["%.6g" % (r[c[1]] * c[2]) if c[1] in r else "" for c in cols])
import os
os.replace("lcurve.csv.tmp", "lcurve.csv")
PYEOF
}

latest_ckpt_step() {  # the step of the last completely written checkpoint, or 0
  [ -f checkpoint ] || { echo 0; return; }
  sed -n 's/^model_checkpoint_path: "\(.*\)"/\1/p' checkpoint | sed -n 's/.*-\([0-9]*\)$/\1/p' | tail -n 1 | grep . || echo 0
}

# Freeze + dp test at each test step whose checkpoint exists and is not yet in dp_test.csv.
test_points() {
  local last; last=$(latest_ckpt_step)
  [ -f dp_test.csv ] || echo "step,e_rmse_meV_per_atom,f_rmse_meV_per_A,frames" > dp_test.csv
  for s in $TEST_STEPS; do
    grep -q "^$s," dp_test.csv && continue
    [ "$last" -ge "$s" ] || continue
    [ -f "model.ckpt-$s.index" ] || { log "warning: no checkpoint at step $s (not a multiple of $SAVE_FREQ?)"; continue; }
    log "step $s: dp freeze + dp test on data_2"
    if ! "$DP" --tf freeze -c "model.ckpt-$s" -o "frozen-$s.pb" > "freeze-$s.log" 2>&1; then
      log "warning: dp freeze at step $s failed (see $OUT/freeze-$s.log)"; continue
    fi
    if ! "$DP" --tf test -m "frozen-$s.pb" -s "$DATA/data_2" -n 0 > "test-$s.log" 2>&1; then
      log "warning: dp test at step $s failed (see $OUT/test-$s.log)"; continue
    fi
    local ea f n
    ea=$(sed -n 's/.*Energy RMSE\/Natoms : \([^ ]*\) eV.*/\1/p' "test-$s.log" | tail -n 1)
    f=$(sed -n 's/.*Force  RMSE        : \([^ ]*\) eV.*/\1/p' "test-$s.log" | tail -n 1)
    n=$(sed -n 's/.*number of test data : \([0-9]*\).*/\1/p' "test-$s.log" | tail -n 1)
    [ -n "$ea" ] && [ -n "$f" ] || { log "warning: could not parse $OUT/test-$s.log"; continue; }
    "$PY" -c "import sys; print('%d,%.4f,%.4f,%s' % (int(sys.argv[1]), float(sys.argv[2])*1e3, float(sys.argv[3])*1e3, sys.argv[4]))" \
      "$s" "$ea" "$f" "${n:-}" >> dp_test.csv
    log "step $s: E RMSE $(tail -n 1 dp_test.csv | cut -d, -f2) meV/atom, F RMSE $(tail -n 1 dp_test.csv | cut -d, -f3) meV/A"
  done
}

publish() {
  write_lcurve
  if [ -n "$PUBLISH" ]; then
    mkdir -p "$PUBLISH"
    cp input.json "$PUBLISH/input.json"
    for f in lcurve.csv dp_test.csv; do [ -f "$f" ] && cp "$f" "$PUBLISH/$f"; done
  fi
}

start=$(latest_ckpt_step)
if [ "$start" -ge "$STEPS" ] || [ "$start" -ge "$STOP_AT" ]; then
  log "training already at step $start (of $STEPS, stop at $STOP_AT) in $OUT"
else
  if [ "$start" -gt 0 ]; then
    log "restarting from model.ckpt-$start in $OUT"
    args=(--tf train --restart model.ckpt input.json)
  else
    log "training from scratch in $OUT ($STEPS steps)"
    args=(--tf train input.json)
  fi
  echo "=== $(date -Is) dp ${args[*]}" >> train.log
  "$DP" "${args[@]}" >> train.log 2>&1 &
  pid=$!
  echo "$pid" > train.pid
  log "dp train pid $pid, log $OUT/train.log"
  stopped=0
  while kill -0 "$pid" 2>/dev/null; do
    sleep 60
    test_points
    publish
    if [ "$(latest_ckpt_step)" -ge "$STOP_AT" ] && [ "$STOP_AT" -lt "$STEPS" ]; then
      log "checkpoint $STOP_AT written: stopping (QNN_PEER_STOP_AT); rerun without it to continue"
      kill "$pid" 2>/dev/null || true; stopped=1
    fi
  done
  rc=0; wait "$pid" || rc=$?
  [ "$stopped" = 1 ] && rc=0
  rm -f train.pid
  [ "$rc" -eq 0 ] || { publish; die "dp train exited with $rc (see $OUT/train.log); rerun to resume"; }
fi
test_points
publish
log "done: $OUT/lcurve.csv, $OUT/dp_test.csv"
cat dp_test.csv
