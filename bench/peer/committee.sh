#!/usr/bin/env bash
# Committees side by side with DeePMD-kit (issue 26): LAMMPS throughput of a 4-model committee
# with model deviation every 10 steps, `pair_style deepmd` (4 compressed models) against
# `pair_style qnn` (the same 4 models imported, fp32; and each quantized with `qnn quantize`,
# int8), and the int8 committee's classification of frames against the fp32 committee's.
#
#   1. four DeePMD-kit se_e2_a models of potentials/water-se2a.train.json's architecture
#      (float32), seeds 1..4, STEPS training steps each (default 2000) on data_0 + data_1,
#      frozen, compressed (`dp compress`) and converted (`dp convert-backend`); cached in
#      $QNN_CACHE/peer-models/committee-STEPS/;
#   2. `qnn import` of each, `qnn quantize` of each (data_0, the defaults: int8);
#   3. speed: 1,536 atoms (examples/water/water-1536.data), 1 rank, 1 thread, NVE 0.5 fs,
#      velocity 300 K, `run 10` then `run 200` timed, `out_freq 10`: pair_style deepmd with
#      1 and 4 compressed models, pair_style qnn with 1 and 4 models in fp32 and in int8,
#      round robin, REPEATS times (default 3), median of atom-steps/s;
#   4. classification: `qnn model-devi` of the fp32 committee (mode fp32) and of the int8
#      committee (mode int8) on the same frames: data_0, data_1, data_2 (320 DFT frames), and
#      200 frames of a 600 K NVT exploration run of the fp32 committee (1536 atoms, one frame
#      every 10 steps); per frame max_devi_f, and the trust-level class (below 0.05, between,
#      at or above 0.15 eV/A, DP-GEN's rule) of each, by bench/peer/committee_report.py.
#
# Usage: bench/peer/committee.sh [OUT]   (default build-md/peer-committee, or $QNN_BUILD_DIR/peer-committee)
# Env: QNN_BUILD_DIR (default build/), STEPS, REPEATS, QNN_CACHE.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
QNN_CACHE=${QNN_CACHE:-$HOME/.cache/qnn}
BUILD=${QNN_BUILD_DIR:-$ROOT/build}
OUT=${1:-$BUILD/peer-committee}
STEPS=${STEPS:-2000}
REPEATS=${REPEATS:-3}
VENV=$QNN_CACHE/peer-venv
DP="$VENV/bin/dp"
DP_LMP="$VENV/bin/lmp"
PY="$VENV/bin/python"
DATA="$ROOT/examples/data/water-deepmd"
die() { echo "[committee] error: $*" >&2; exit 1; }
[ -x "$DP" ] && [ -x "$DP_LMP" ] || die "no DeePMD-kit venv at $VENV (bash bench/peer/setup_peer.sh)"
[ -x "$BUILD/qnn" ] && [ -f "$BUILD/qnnplugin.so" ] || die "no qnn build in $BUILD (scripts/build.sh, or set QNN_BUILD_DIR)"
# shellcheck disable=SC1091
source "$QNN_CACHE/env.sh"
QNN_LMP="$QNN_LAMMPS_DIR/bin/lmp"
# shellcheck disable=SC1091
source "$ROOT/bench/peer/one_thread.sh"
export TF_CPP_MIN_LOG_LEVEL=3
mkdir -p "$OUT"
cp "$BUILD/qnnplugin.so" "$OUT/qnnplugin.so"   # a snapshot: a rebuild during the runs cannot mix versions

# ------------------------------------------------------------------ 1. the DeePMD-kit committee
MODELS="$QNN_CACHE/peer-models/committee-$STEPS"
for k in 1 2 3 4; do
  d="$MODELS/m$k"
  [ -f "$d/compressed.pb" ] && [ -f "$d/model.dp" ] && continue
  mkdir -p "$d"
  "$PY" - "$ROOT/potentials/water-se2a.train.json" "$DATA" "$STEPS" "$k" > "$d/input.json" <<'PYEOF'
import json, sys
path, data, steps, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
m = json.load(open(path))["model"]
print(json.dumps({
  "model": {"type_map": m["species"],
            "descriptor": {"type": "se_e2_a", "rcut": m["rcut"], "rcut_smth": m["rcut_smth"], "sel": m["sel"],
                           "neuron": m["embed_widths"], "axis_neuron": m["axis_neuron"], "resnet_dt": False,
                           "precision": "float32", "seed": seed},
            "fitting_net": {"neuron": m["fit_widths"], "resnet_dt": bool(m["resnet_dt"]), "precision": "float32",
                            "seed": seed}},
  "learning_rate": {"type": "exp", "start_lr": 0.002, "stop_lr": 5e-5, "decay_steps": max(1, steps // 20)},
  "loss": {"type": "ener", "start_pref_e": 0.02, "limit_pref_e": 1, "start_pref_f": 1000, "limit_pref_f": 1,
           "start_pref_v": 0, "limit_pref_v": 0},
  "training": {"training_data": {"systems": [f"{data}/data_0", f"{data}/data_1"], "batch_size": 1},
               "numb_steps": steps, "seed": seed, "disp_file": "lcurve.out", "disp_freq": 500, "save_freq": steps},
}, indent=2))
PYEOF
  echo "[committee] m$k: dp train ($STEPS steps), freeze, compress, convert-backend" >&2
  (cd "$d" && nice -n 15 "$DP" --tf train input.json > train.log 2>&1 && "$DP" --tf freeze -o frozen.pb > freeze.log 2>&1 \
     && nice -n 15 "$DP" --tf compress -i frozen.pb -o compressed.pb > compress.log 2>&1 \
     && "$DP" convert-backend frozen.pb model.dp > convert.log 2>&1) || die "m$k failed (logs in $d)"
done

# ------------------------------------------------------------------ 2. import and quantize
for k in 1 2 3 4; do
  [ -f "$OUT/m$k.qnn" ] || "$BUILD/qnn" import "$MODELS/m$k/model.dp" -o "$OUT/m$k.qnn" > "$OUT/import-m$k.log"
  [ -f "$OUT/m$k.int8.qnn" ] || nice -n 15 "$BUILD/qnn" quantize "$OUT/m$k.qnn" --data "$DATA/data_0" \
      -o "$OUT/m$k.int8.qnn" > "$OUT/quantize-m$k.log"
done

# ------------------------------------------------------------------ 3. speed
write_input() {  # $1 label, $2 pair lines, $3 file, $4 "plugin" to load the qnn plugin
  cat > "$3" <<EOF
# bench/peer/committee.sh: $1
$([ "${4:-}" = plugin ] && echo "plugin load $OUT/qnnplugin.so")
units        metal
atom_style   atomic
atom_modify  map array
read_data    $ROOT/examples/water/water-1536.data
$2
neighbor     2.0 bin
velocity     all create 300.0 4928459 mom yes rot yes dist gaussian
timestep     0.0005
fix          integrate all nve
thermo       50
run          10
run          200
EOF
}
Q="pair_style   qnn"
CONFIGS=(
  "deepmd-1|$DP_LMP|pair_style deepmd $MODELS/m1/compressed.pb"
  "deepmd-4|$DP_LMP|pair_style deepmd $MODELS/m1/compressed.pb $MODELS/m2/compressed.pb $MODELS/m3/compressed.pb $MODELS/m4/compressed.pb out_freq 10 out_file $OUT/md.deepmd-4.out"
  "qnn-fp32-1|$QNN_LMP|$Q $OUT/m1.qnn mode fp32"
  "qnn-fp32-4|$QNN_LMP|$Q $OUT/m1.qnn $OUT/m2.qnn $OUT/m3.qnn $OUT/m4.qnn mode fp32 out_freq 10 out_file $OUT/md.qnn-fp32-4.out"
  "qnn-int8-1|$QNN_LMP|$Q $OUT/m1.int8.qnn mode int8"
  "qnn-int8-4|$QNN_LMP|$Q $OUT/m1.int8.qnn $OUT/m2.int8.qnn $OUT/m3.int8.qnn $OUT/m4.int8.qnn mode int8 out_freq 10 out_file $OUT/md.qnn-int8-4.out"
)
for r in $(seq 1 "$REPEATS"); do
  for c in "${CONFIGS[@]}"; do
    IFS='|' read -r label lmp pair <<< "$c"
    write_input "$label" "$pair
pair_coeff   * * O H" "$OUT/in.$label" "$([ "$lmp" = "$QNN_LMP" ] && echo plugin)"
    echo "[committee] repeat $r: $label (load $(cut -d' ' -f1 /proc/loadavg))" >&2
    "$lmp" -in "$OUT/in.$label" -log "$OUT/log.$label.$r" > /dev/null 2>&1 || die "$label failed ($OUT/log.$label.$r)"
    echo "$label $r $(cut -d' ' -f1 /proc/loadavg)" >> "$OUT/loadavg.txt"
  done
done

# ------------------------------------------------------------------ 4. classification
# 600 K NVT exploration of the fp32 committee, 2000 steps, one frame every 10 steps.
cat > "$OUT/in.explore" <<EOF
# bench/peer/committee.sh: exploration frames for the classification
plugin load $OUT/qnnplugin.so
units        metal
atom_style   atomic
atom_modify  map array
read_data    $ROOT/examples/water/water-1536.data
pair_style   qnn $OUT/m1.qnn $OUT/m2.qnn $OUT/m3.qnn $OUT/m4.qnn mode fp32 out_freq 10 out_file $OUT/md.explore.out
pair_coeff   * * O H
velocity     all create 600.0 26 mom yes rot yes dist gaussian
timestep     0.0005
fix          integrate all nvt temp 600.0 600.0 0.05
dump         d all custom 10 $OUT/explore.dump id type x y z
dump_modify  d sort id format float %.10g
thermo       200
run          1990
EOF
[ -f "$OUT/explore.dump" ] || "$QNN_LMP" -in "$OUT/in.explore" -log "$OUT/log.explore" > /dev/null 2>&1 \
  || die "exploration run failed ($OUT/log.explore)"
"$PY" "$ROOT/bench/peer/committee_report.py" dump2npy "$OUT/explore.dump" "$OUT/explore-system"
for mode in fp32 int8; do
  if [ "$mode" = fp32 ]; then files="$OUT/m1.qnn $OUT/m2.qnn $OUT/m3.qnn $OUT/m4.qnn"; else
    files="$OUT/m1.int8.qnn $OUT/m2.int8.qnn $OUT/m3.int8.qnn $OUT/m4.int8.qnn"; fi
  # shellcheck disable=SC2086
  "$BUILD/qnn" model-devi -m $files -s "$DATA" -o "$OUT/devi.data.$mode.out" --mode $mode > "$OUT/devi.data.$mode.log"
  # shellcheck disable=SC2086
  "$BUILD/qnn" model-devi -m $files -s "$OUT/explore-system" -o "$OUT/devi.explore.$mode.out" --mode $mode \
    > "$OUT/devi.explore.$mode.log"
done
"$PY" "$ROOT/bench/peer/committee_report.py" report "$OUT" "$REPEATS" | tee "$OUT/report.md"
