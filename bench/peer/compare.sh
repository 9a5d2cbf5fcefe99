#!/usr/bin/env bash
# Side by side with DeePMD-kit: LAMMPS throughput of pair_style qnn (each mode) and of DeePMD-kit's
# pair_style deepmd (frozen and compressed model of the same architecture), identical inputs,
# one core, interleaved repeats. See bench/peer/README.md.
#
#   1. bench/peer/setup_peer.sh: the DeePMD-kit 3.2.0 venv in $QNN_CACHE/peer-venv (once);
#   2. a DeePMD-kit se_e2_a model, trained with `dp --tf train` (speed does not depend on the
#      weights), frozen and compressed; cached in $QNN_CACHE/peer-models/. Its architecture:
#      --model shipped (default): that of potentials/water-se2a.train.json (16-32-64, 128x3);
#        qnn runs the shipped potentials/water-se2a.*.qnn files;
#      --model standard: DeePMD-kit's examples/water/se_e2_a network (25-50-100, axis 16,
#        240x3 with resnet_dt, type_one_side true, float32); qnn runs that very model:
#        `dp convert-backend frozen.pb model.dp`, `qnn import` (fp32.qnn), checked against
#        pair_style deepmd by import_check.sh, and `qnn quantize` on data_0 + data_1 (int8.qnn),
#        cached beside it;
#   3. bench/peer/compare.py: runs and tables.
#
# Usage: bench/peer/compare.sh [options]
#   --model NAME       shipped (default) or standard (see above)
#   --sizes LIST       atoms, comma-separated, from 192,1536,12288
#                      (default: all three; --model standard: 1536,12288)
#   --repeats N        interleaved repeats, median taken (default 3)
#   --quick            smoke run: --sizes 192,1536 --repeats 1, no 2-rank run
#   --qnn LIST         qnn configurations MODE:FILE[,MODE:FILE...]; FILE is a path if it contains
#                      a '/', else a file in potentials/ (--model standard: in the model's cache
#                      directory, which holds fp32.qnn and int8.qnn)
#                      (default fp32:water-se2a.fp32.qnn,weight-only:water-se2a.int8.qnn,
#                       w8a16:water-se2a.int8.qnn,
#                       int8:water-se2a.int8.qnn,mixed:water-se2a.mixed.qnn;
#                       --model standard: fp32:fp32.qnn,weight-only:int8.qnn,w8a16:int8.qnn,
#                       int8:int8.qnn)
#   --np2 LIST         sizes that also get a 2-rank qnn run (default 12288, --model standard: none;
#                      '' for none)
#   --dp LIST          DeePMD-kit models to run: compressed,frozen (default both; compressed is required)
#   --steps LIST       timed steps per size, ATOMS:STEPS[,...] (default 192:100,1536:100,12288:20)
#   --out DIR          output directory (default build/peer-compare, --model standard:
#                      build/peer-compare-standard)
#   --train-steps N    training steps of the DeePMD-kit model (default 300, --model standard: 2000)
#   --prepare-only     only set up the venv and the models (--model shipped needs no qnn build;
#                      --model standard needs build/qnn, build/qnnplugin.so and LAMMPS for the
#                      import and its check)
#   -h, --help
# Environment: QNN_CACHE (default $HOME/.cache/qnn), QNN_BUILD_DIR (default build/),
#   QNN_PEER_DATA (default examples/data/water-deepmd).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE="$ROOT/bench/peer"
QNN_CACHE=${QNN_CACHE:-$HOME/.cache/qnn}
BUILD=${QNN_BUILD_DIR:-$ROOT/build}
DATA=${QNN_PEER_DATA:-$ROOT/examples/data/water-deepmd}
MODEL=shipped
SIZES=""
REPEATS=3
QNN_LIST=""
NP2=""
NP2_SET=0
DP_LIST=compressed,frozen
STEPS=""
OUT=""
TRAIN_STEPS=""
PREPARE_ONLY=0
CMDLINE="bench/peer/compare.sh$(printf ' %q' "$@")"

die() { echo "[compare] error: $*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; }
# the value of option $1 (its arguments are "$@"); an empty value is allowed only for --np2
value() {
  [ $# -ge 2 ] || die "option $1 needs a value (--help lists the options)"
  [ -n "$2" ] || [ "$1" = --np2 ] || die "option $1 needs a non-empty value"
  printf '%s' "$2"
}

while [ $# -gt 0 ]; do
  case "$1" in
    --model) MODEL=$(value "$@"); shift 2 ;;
    --sizes) SIZES=$(value "$@"); shift 2 ;;
    --repeats) REPEATS=$(value "$@"); shift 2 ;;
    --quick) SIZES=192,1536; REPEATS=1; NP2=""; NP2_SET=1; shift ;;
    --qnn) QNN_LIST=$(value "$@"); shift 2 ;;
    --np2) NP2=$(value "$@"); NP2_SET=1; shift 2 ;;
    --dp) DP_LIST=$(value "$@"); shift 2 ;;
    --steps) STEPS=$(value "$@"); shift 2 ;;
    --out) OUT=$(value "$@"); shift 2 ;;
    --train-steps) TRAIN_STEPS=$(value "$@"); shift 2 ;;
    --prepare-only) PREPARE_ONLY=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option '$1'" ;;
  esac
done
case "$MODEL" in
  shipped)
    SIZES=${SIZES:-192,1536,12288}
    QNN_LIST=${QNN_LIST:-fp32:water-se2a.fp32.qnn,weight-only:water-se2a.int8.qnn,w8a16:water-se2a.int8.qnn,int8:water-se2a.int8.qnn,mixed:water-se2a.mixed.qnn}
    [ "$NP2_SET" = 1 ] || NP2=12288
    TRAIN_STEPS=${TRAIN_STEPS:-300}
    OUT=${OUT:-$BUILD/peer-compare} ;;
  standard)
    SIZES=${SIZES:-1536,12288}
    QNN_LIST=${QNN_LIST:-fp32:fp32.qnn,weight-only:int8.qnn,w8a16:int8.qnn,int8:int8.qnn}
    [ "$NP2_SET" = 1 ] || NP2=""
    TRAIN_STEPS=${TRAIN_STEPS:-2000}
    OUT=${OUT:-$BUILD/peer-compare-standard} ;;
  *) die "--model: unknown model '$MODEL' (known: shipped, standard)" ;;
esac
[[ "$REPEATS" =~ ^[1-9][0-9]*$ ]] || die "--repeats must be a positive integer"
[[ "$TRAIN_STEPS" =~ ^[1-9][0-9]*$ ]] || die "--train-steps must be a positive integer"

# ------------------------------------------------------------------ prerequisites
PY=$(command -v python3) || die "python3 not found"
# qnn's LAMMPS and plugin: for the runs, and for --model standard's import check
if [ "$PREPARE_ONLY" = 0 ] || [ "$MODEL" = standard ]; then
[ -f "$QNN_CACHE/env.sh" ] || die "no $QNN_CACHE/env.sh: run scripts/build.sh (it bootstraps LAMMPS) first"
# shellcheck disable=SC1091
source "$QNN_CACHE/env.sh"
QNN_LMP="$QNN_LAMMPS_DIR/bin/lmp"
[ -x "$QNN_LMP" ] || die "no LAMMPS at $QNN_LMP (from $QNN_CACHE/env.sh): rerun scripts/build.sh"
[ -f "$BUILD/qnnplugin.so" ] || die "no $BUILD/qnnplugin.so: build qnn with scripts/build.sh (or set QNN_BUILD_DIR)"
fi
if [ "$MODEL" = standard ]; then
  [ -x "$BUILD/qnn" ] || die "no $BUILD/qnn (needed by --model standard for qnn import/quantize): build qnn with scripts/build.sh (or set QNN_BUILD_DIR)"
fi
MPIRUN=""
if [ "$PREPARE_ONLY" = 0 ]; then
case ",$NP2," in
  ,,) ;;
  *) MPIRUN=$(command -v mpirun) || die "mpirun not found (needed for the 2-rank runs; --np2 '' skips them)" ;;
esac
fi
for d in data_0 data_1; do
  [ -f "$DATA/$d/type.raw" ] || die "no DeePMD system at $DATA/$d (set QNN_PEER_DATA)"
done
DATA=$(cd "$DATA" && pwd)
command -v lscpu >/dev/null || echo "[compare] note: no lscpu; the CPU model will be missing" >&2

# ------------------------------------------------------------------ 1. the peer venv
VENV=$(bash "$HERE/setup_peer.sh" | tail -n 1)
DP="$VENV/bin/dp"
DP_LMP="$VENV/bin/lmp"
[ -x "$DP" ] && [ -x "$DP_LMP" ] || die "the peer venv $VENV lacks dp or lmp (remove it and rerun)"

# shellcheck disable=SC1091
source "$ROOT/bench/peer/one_thread.sh"

# ------------------------------------------------------------------ 2. the DeePMD-kit model
# --model shipped: the architecture of potentials/water-se2a.train.json, in DeePMD-kit's input format.
read_arch() {
  "$PY" - "$ROOT/potentials/water-se2a.train.json" <<'PYEOF'
import json, sys
m = json.load(open(sys.argv[1]))["model"]
assert m.get("precision", "float") in ("float", "float32"), m.get("precision")
print(json.dumps({
  "type_map": m["species"],
  "descriptor": {"type": "se_e2_a", "rcut": m["rcut"], "rcut_smth": m["rcut_smth"], "sel": m["sel"],
                 "neuron": m["embed_widths"], "axis_neuron": m["axis_neuron"], "resnet_dt": False,
                 "precision": "float32", "seed": 1},
  "fitting_net": {"neuron": m["fit_widths"], "resnet_dt": bool(m["resnet_dt"]), "precision": "float32", "seed": 1},
}))
PYEOF
}
# --model standard: DeePMD-kit's examples/water/se_e2_a network (its input.json), in float32.
standard_arch() {
  "$PY" - <<'PYEOF'
import json
print(json.dumps({
  "type_map": ["O", "H"],
  "descriptor": {"type": "se_e2_a", "rcut": 6.0, "rcut_smth": 0.5, "sel": [46, 92],
                 "neuron": [25, 50, 100], "axis_neuron": 16, "type_one_side": True, "resnet_dt": False,
                 "precision": "float32", "seed": 1},
  "fitting_net": {"neuron": [240, 240, 240], "resnet_dt": True, "precision": "float32", "seed": 1},
}))
PYEOF
}
case "$MODEL" in
  shipped)
    ARCH=$(read_arch) || die "could not read the architecture from potentials/water-se2a.train.json"
    ARCH_DESC="se_e2_a of potentials/water-se2a.train.json's architecture"
    NICE=19 ;;
  standard)
    ARCH=$(standard_arch)
    ARCH_DESC="se_e2_a of DeePMD-kit's examples/water/se_e2_a size (embedding 25-50-100, axis 16, fitting 240x3 with resnet_dt, type_one_side true, float32)"
    NICE=15 ;;
esac
INPUT=$("$PY" - "$ARCH" "$DATA" "$TRAIN_STEPS" <<'PYEOF'
import json, sys
arch, data, steps = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3])
print(json.dumps({
  "model": arch,
  "learning_rate": {"type": "exp", "start_lr": 0.001, "stop_lr": 1e-4, "decay_steps": 100},
  "loss": {"type": "ener", "start_pref_e": 0.02, "limit_pref_e": 1, "start_pref_f": 1000, "limit_pref_f": 1,
           "start_pref_v": 0, "limit_pref_v": 0},
  "training": {"training_data": {"systems": [f"{data}/data_0", f"{data}/data_1"], "batch_size": 1},
               "numb_steps": steps, "seed": 1, "disp_file": "lcurve.out", "disp_freq": 100,
               "save_freq": steps, "save_ckpt": "model.ckpt"},
}, indent=2))
PYEOF
)
KEY=$(printf '%s' "$INPUT" | sha256sum | cut -c1-12)
case "$MODEL" in
  shipped) MODELS="$QNN_CACHE/peer-models/se_e2_a-$KEY" ;;
  standard) MODELS="$QNN_CACHE/peer-models/se_e2_a-standard-$KEY" ;;
esac

# step NAME LOG COMMAND...: run COMMAND niced in the current directory, output to LOG; on failure
# print LOG's tail and fail; append "NAME SECONDS" to times.txt and say it.
step() {
  local name=$1 logf=$2 t0 t1
  shift 2
  t0=$EPOCHREALTIME
  nice -n "$NICE" "$@" > "$logf" 2>&1 || { tail -n 20 "$logf" >&2; echo "[compare] $name failed (log: $PWD/$logf)" >&2; return 1; }
  t1=$EPOCHREALTIME
  "$PY" -c 'import sys; print(f"{sys.argv[1]} {float(sys.argv[3]) - float(sys.argv[2]):.1f} s")' "$name" "$t0" "$t1" | tee -a times.txt >&2
}

if [ -f "$MODELS/compressed.pb" ] && [ -f "$MODELS/frozen.pb" ]; then
  echo "[compare] DeePMD-kit models cached: $MODELS" >&2
else
  echo "[compare] training the DeePMD-kit model ($TRAIN_STEPS steps), freezing and compressing it in $MODELS" >&2
  rm -rf "$MODELS.tmp" && mkdir -p "$MODELS.tmp"
  printf '%s\n' "$INPUT" > "$MODELS.tmp/input.json"
  echo "# $(date '+%Y-%m-%d %H:%M'), load average $(cut -d' ' -f1-3 /proc/loadavg): DeePMD-kit model" > "$MODELS.tmp/times.txt"
  (
    cd "$MODELS.tmp"
    step "dp --tf train ($TRAIN_STEPS steps)" train.log "$DP" --tf train input.json || exit 1
    step "dp --tf freeze" freeze.log "$DP" --tf freeze -o frozen.pb || exit 1
    step "dp --tf compress" compress.log "$DP" --tf compress -i frozen.pb -o compressed.pb || exit 1
  ) || die "DeePMD-kit training/freeze/compress failed (logs in $MODELS.tmp)"
  rm -rf "$MODELS" && mv "$MODELS.tmp" "$MODELS"
fi

# --model standard: qnn's files of the same model, beside it. The recipe (the commands, relative
# to $MODELS) is their cache stamp: written last, and compared on every run.
if [ "$MODEL" = standard ]; then
  VAL=()
  [ -f "$DATA/data_2/type.raw" ] && VAL=(--val-data "$DATA/data_2")
  QNN_RECIPE="dp convert-backend frozen.pb model.dp
qnn import model.dp -o fp32.qnn
bench/peer/import_check.sh frozen.pb (pair_style deepmd against pair_style qnn modes fp64, fp32 on examples/water/water.data; its own import must equal fp32.qnn byte for byte)
qnn quantize fp32.qnn --data $DATA/data_0 $DATA/data_1 --frames 32 --bits 8 ${VAL[*]} --threads 1 -o int8.qnn"
  if [ -f "$MODELS/fp32.qnn" ] && [ -f "$MODELS/int8.qnn" ] && [ -f "$MODELS/qnn-recipe.txt" ] \
     && [ "$(sed -n '1,/^# made by/{/^# made by/!p}' "$MODELS/qnn-recipe.txt")" = "$QNN_RECIPE" ]; then
    echo "[compare] qnn files of the model cached: $MODELS/{fp32,int8}.qnn" >&2
  else
    echo "[compare] converting, importing and quantizing the model for qnn in $MODELS" >&2
    rm -f "$MODELS/qnn-recipe.txt"
    rm -rf "$MODELS/import-check"
    rm -rf "$MODELS/qnn.tmp" && mkdir -p "$MODELS/qnn.tmp"
    echo "# $(date '+%Y-%m-%d %H:%M'), load average $(cut -d' ' -f1-3 /proc/loadavg): qnn files" > "$MODELS/qnn.tmp/times.txt"
    (
      cd "$MODELS/qnn.tmp"
      step "dp convert-backend" convert.log "$DP" convert-backend ../frozen.pb model.dp || exit 1
      step "qnn import" import.log "$BUILD/qnn" import model.dp -o fp32.qnn || exit 1
      step "import_check.sh" import_check.log env OUT="$PWD/import-check" QNN_BUILD_DIR="$BUILD" QNN_CACHE="$QNN_CACHE" \
        bash "$HERE/import_check.sh" ../frozen.pb || exit 1
      cmp -s import-check/model.qnn fp32.qnn \
        || { echo "[compare] import_check.sh's import of frozen.pb differs from fp32.qnn" >&2; exit 1; }
      step "qnn quantize" quantize.log "$BUILD/qnn" quantize fp32.qnn --data "$DATA/data_0" "$DATA/data_1" \
        --frames 32 --bits 8 "${VAL[@]}" --threads 1 -o int8.qnn || exit 1
    ) || die "the qnn import/check/quantize of $MODELS/frozen.pb failed (logs in $MODELS/qnn.tmp)"
    (cd "$MODELS/qnn.tmp" && cat times.txt >> ../times.txt && rm times.txt && mv -f -- * ..) \
      && rmdir "$MODELS/qnn.tmp" || die "could not move the qnn files into $MODELS"
    printf '%s\n# made by %s (%s), %s\n' "$QNN_RECIPE" "$BUILD/qnn" "$("$BUILD/qnn" --version 2>&1 | head -n 1)" \
      "$(date '+%Y-%m-%d %H:%M')" > "$MODELS/qnn-recipe.txt"
  fi
fi
if [ "$PREPARE_ONLY" = 1 ]; then
  if [ "$MODEL" = standard ]; then
    echo "[compare] prepared: $VENV, $MODELS/{frozen,compressed}.pb, $MODELS/{fp32,int8}.qnn" >&2
  else
    echo "[compare] prepared: $VENV, $MODELS/{frozen,compressed}.pb" >&2
  fi
  exit 0
fi
DP_MODELS=""
IFS=, read -ra dps <<< "$DP_LIST"
for m in "${dps[@]}"; do
  case "$m" in
    compressed|frozen) DP_MODELS="${DP_MODELS:+$DP_MODELS,}$m:$MODELS/$m.pb" ;;
    *) die "--dp: unknown DeePMD-kit model '$m' (known: compressed, frozen)" ;;
  esac
done

DP_VERSION=$("$VENV/bin/python" -c 'import deepmd; print(deepmd.__version__)' 2>/dev/null | tail -n 1)
TF_VERSION=$("$VENV/bin/python" -c 'import tensorflow as tf; print(tf.__version__)' 2>/dev/null | tail -n 1)
CPU_FLAGS=$(grep -m1 -o -w 'avx512_vnni\|avx512f\|avx2\|avx_vnni' /proc/cpuinfo 2>/dev/null | sort -u | tr '\n' ' ' || true)

# ------------------------------------------------------------------ 3. runs and table
mkdir -p "$OUT"
# A snapshot of the plugin, so that a rebuild of $BUILD during the runs cannot mix two versions.
cp "$BUILD/qnnplugin.so" "$OUT/qnnplugin.so"
PLUGIN_INFO="$(date -r "$BUILD/qnnplugin.so" '+%Y-%m-%d %H:%M'), sha256 $(sha256sum "$OUT/qnnplugin.so" | cut -c1-12), copied to $OUT/qnnplugin.so"
case "$MODEL" in
  shipped)
    QNN_DIR="$ROOT/potentials"
    QNN_META="" ;;
  standard)
    QNN_DIR="$MODELS"
    QNN_META=";qnn files=the same frozen.pb, \`dp convert-backend\` + \`qnn import\` (fp32.qnn, checked by import_check.sh), \`qnn quantize\` on data_0 + data_1, 32 frames, 8 bits (int8.qnn), made by $(sed -n 's/^# made by //p' "$MODELS/qnn-recipe.txt" | tr -d ';'), commands in $MODELS/qnn-recipe.txt" ;;
esac
exec "$PY" "$HERE/compare.py" --root "$ROOT" --out "$OUT" --sizes "$SIZES" --repeats "$REPEATS" \
  --qnn "$QNN_LIST" --qnn-dir "$QNN_DIR" --qnn-lmp "$QNN_LMP" --qnn-plugin "$OUT/qnnplugin.so" --mpirun "${MPIRUN:-mpirun}" \
  --np2-atoms "$NP2" --dp-lmp "$DP_LMP" --dp-models "$DP_MODELS" --steps "$STEPS" \
  --command "$CMDLINE" \
  --meta "DeePMD-kit version=$DP_VERSION (TensorFlow $TF_VERSION), $ARCH_DESC, $TRAIN_STEPS training steps, \`dp --tf freeze\` + \`dp --tf compress\` (defaults), $MODELS${QNN_META};qnn plugin=$BUILD/qnnplugin.so built $PLUGIN_INFO;CPU flags=${CPU_FLAGS:-?}"
