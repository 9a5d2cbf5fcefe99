#!/usr/bin/env bash
# Side by side with DeePMD-kit: LAMMPS throughput of pair_style qnn (each mode) and of DeePMD-kit's
# pair_style deepmd (frozen and compressed model of the same architecture), identical inputs,
# one core, interleaved repeats. See bench/peer/README.md.
#
#   1. bench/peer/setup_peer.sh: the DeePMD-kit 3.2.0 venv in $QNN_CACHE/peer-venv (once);
#   2. a DeePMD-kit se_e2_a model with the architecture of potentials/water-se2a.train.json,
#      trained for a few hundred steps (speed does not depend on the weights), frozen and
#      compressed; cached in $QNN_CACHE/peer-models/;
#   3. bench/peer/compare.py: runs and tables.
#
# Usage: bench/peer/compare.sh [options]
#   --sizes LIST       atoms, comma-separated, from 192,1536,12288 (default: all three)
#   --repeats N        interleaved repeats, median taken (default 3)
#   --quick            smoke run: --sizes 192,1536 --repeats 1, no 2-rank run
#   --qnn LIST         qnn configurations MODE:FILE[,MODE:FILE...], FILE in potentials/ or a path
#                      (default fp32:water-se2a.fp32.qnn,weight-only:water-se2a.int8.qnn,
#                       int8:water-se2a.int8.qnn,mixed:water-se2a.mixed.qnn)
#   --np2 LIST         sizes that also get a 2-rank qnn run (default 12288; '' for none)
#   --dp LIST          DeePMD-kit models to run: compressed,frozen (default both; compressed is required)
#   --steps LIST       timed steps per size, ATOMS:STEPS[,...] (default 192:100,1536:100,12288:20)
#   --out DIR          output directory (default build/peer-compare)
#   --train-steps N    training steps of the DeePMD-kit model (default 300)
#   --prepare-only     only set up the venv and the DeePMD-kit models (no qnn build needed)
#   -h, --help
# Environment: QNN_CACHE (default $HOME/.cache/qnn), QNN_BUILD_DIR (default build/),
#   QNN_PEER_DATA (default examples/data/water-deepmd).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE="$ROOT/bench/peer"
QNN_CACHE=${QNN_CACHE:-$HOME/.cache/qnn}
BUILD=${QNN_BUILD_DIR:-$ROOT/build}
DATA=${QNN_PEER_DATA:-$ROOT/examples/data/water-deepmd}
SIZES=192,1536,12288
REPEATS=3
QNN_LIST="fp32:water-se2a.fp32.qnn,weight-only:water-se2a.int8.qnn,int8:water-se2a.int8.qnn,mixed:water-se2a.mixed.qnn"
NP2=12288
DP_LIST=compressed,frozen
STEPS=""
OUT=""
TRAIN_STEPS=300
PREPARE_ONLY=0
CMDLINE="bench/peer/compare.sh $*"

die() { echo "[compare] error: $*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
  case "$1" in
    --sizes) SIZES=${2:?}; shift 2 ;;
    --repeats) REPEATS=${2:?}; shift 2 ;;
    --quick) SIZES=192,1536; REPEATS=1; NP2=""; shift ;;
    --qnn) QNN_LIST=${2:?}; shift 2 ;;
    --np2) NP2=${2-}; shift 2 ;;
    --dp) DP_LIST=${2:?}; shift 2 ;;
    --steps) STEPS=${2:?}; shift 2 ;;
    --out) OUT=${2:?}; shift 2 ;;
    --train-steps) TRAIN_STEPS=${2:?}; shift 2 ;;
    --prepare-only) PREPARE_ONLY=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option '$1'" ;;
  esac
done
OUT=${OUT:-$BUILD/peer-compare}
[[ "$REPEATS" =~ ^[1-9][0-9]*$ ]] || die "--repeats must be a positive integer"
[[ "$TRAIN_STEPS" =~ ^[1-9][0-9]*$ ]] || die "--train-steps must be a positive integer"

# ------------------------------------------------------------------ prerequisites
PY=$(command -v python3) || die "python3 not found"
if [ "$PREPARE_ONLY" = 0 ]; then
[ -f "$QNN_CACHE/env.sh" ] || die "no $QNN_CACHE/env.sh: run scripts/build.sh (it bootstraps LAMMPS) first"
# shellcheck disable=SC1091
source "$QNN_CACHE/env.sh"
QNN_LMP="$QNN_LAMMPS_DIR/bin/lmp"
[ -x "$QNN_LMP" ] || die "no LAMMPS at $QNN_LMP (from $QNN_CACHE/env.sh): rerun scripts/build.sh"
[ -f "$BUILD/qnnplugin.so" ] || die "no $BUILD/qnnplugin.so: build qnn with scripts/build.sh (or set QNN_BUILD_DIR)"
MPIRUN=""
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
# The architecture of potentials/water-se2a.train.json, in DeePMD-kit's input format.
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
ARCH=$(read_arch) || die "could not read the architecture from potentials/water-se2a.train.json"
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
MODELS="$QNN_CACHE/peer-models/se_e2_a-$KEY"
if [ -f "$MODELS/compressed.pb" ] && [ -f "$MODELS/frozen.pb" ]; then
  echo "[compare] DeePMD-kit models cached: $MODELS" >&2
else
  echo "[compare] training the DeePMD-kit model ($TRAIN_STEPS steps), freezing and compressing it in $MODELS" >&2
  rm -rf "$MODELS.tmp" && mkdir -p "$MODELS.tmp"
  printf '%s\n' "$INPUT" > "$MODELS.tmp/input.json"
  (
    cd "$MODELS.tmp"
    nice -n 19 "$DP" --tf train input.json > train.log 2>&1 || { tail -n 20 train.log >&2; exit 1; }
    nice -n 19 "$DP" --tf freeze -o frozen.pb > freeze.log 2>&1 || { tail -n 20 freeze.log >&2; exit 1; }
    nice -n 19 "$DP" --tf compress -i frozen.pb -o compressed.pb > compress.log 2>&1 || { tail -n 20 compress.log >&2; exit 1; }
  ) || die "DeePMD-kit training/freeze/compress failed (logs in $MODELS.tmp)"
  rm -rf "$MODELS" && mv "$MODELS.tmp" "$MODELS"
fi
if [ "$PREPARE_ONLY" = 1 ]; then
  echo "[compare] prepared: $VENV, $MODELS/{frozen,compressed}.pb" >&2
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
exec "$PY" "$HERE/compare.py" --root "$ROOT" --out "$OUT" --sizes "$SIZES" --repeats "$REPEATS" \
  --qnn "$QNN_LIST" --qnn-lmp "$QNN_LMP" --qnn-plugin "$OUT/qnnplugin.so" --mpirun "${MPIRUN:-mpirun}" \
  --np2-atoms "$NP2" --dp-lmp "$DP_LMP" --dp-models "$DP_MODELS" --steps "$STEPS" \
  --command "$CMDLINE" \
  --meta "DeePMD-kit version=$DP_VERSION (TensorFlow $TF_VERSION), se_e2_a of potentials/water-se2a.train.json's architecture, $TRAIN_STEPS training steps, \`dp --tf freeze\` + \`dp --tf compress\` (defaults), $MODELS;qnn plugin=$BUILD/qnnplugin.so built $PLUGIN_INFO;CPU flags=${CPU_FLAGS:-?}"
