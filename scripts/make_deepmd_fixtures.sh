#!/usr/bin/env bash
# Regenerates tests/data/deepmd/ (issue 15): tiny DeePMD-kit se_e2_a models and the energies,
# forces and virials DeePMD-kit itself computes on three water frames, for the `qnn import`
# tests (tests/test_import_deepmd.cpp), which then run without DeePMD-kit.
#
# For each of type_one_side true/false and precision float64/float32, and once with the
# descriptor's resnet_dt true (pair nets, float64: timesteps on the doubling embedding layer),
# it trains a tiny model
# (embedding 4-8-8, axis_neuron 4, fitting 8-8, rcut 4 A, rcut_smth 1 A, sel 24/48; 60 steps on
# data_0 so that weights and statistics are not the initial ones), freezes it (`dp freeze`),
# converts it (`dp convert-backend frozen.pb model.dp`) and evaluates the frozen model with
# DeePMD-kit's Python DeepPot on frames 0, 1, 2 of data_2. It checks that no atom of those
# frames has more neighbours within rcut than sel (DeePMD-kit would drop the farthest).
#
# Needs the DeePMD-kit venv of bench/peer/setup_peer.sh ($QNN_CACHE/peer-venv).
# Usage: scripts/make_deepmd_fixtures.sh [OUTDIR]   (default tests/data/deepmd)
#   QNN_FIXTURES="name ..." regenerates only those (e.g. se_e2_a-oneside_false-float64-resnet_dt)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
QNN_CACHE=${QNN_CACHE:-$HOME/.cache/qnn}
VENV=${QNN_PEER_VENV:-$QNN_CACHE/peer-venv}
OUT=${1:-$ROOT/tests/data/deepmd}
DP="$VENV/bin/dp"
PY="$VENV/bin/python"
[ -x "$DP" ] || { echo "[make_deepmd_fixtures] error: no dp in $VENV (bash bench/peer/setup_peer.sh)" >&2; exit 1; }
export OMP_NUM_THREADS=1 TF_INTRA_OP_PARALLELISM_THREADS=1 TF_INTER_OP_PARALLELISM_THREADS=1 CUDA_VISIBLE_DEVICES="" \
       TF_CPP_MIN_LOG_LEVEL=3 DP_INTRA_OP_PARALLELISM_THREADS=1 DP_INTER_OP_PARALLELISM_THREADS=1
DATA="$ROOT/examples/data/water-deepmd"
mkdir -p "$OUT"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

for spec in true:float64:false true:float32:false false:float64:false false:float32:false false:float64:true; do
    IFS=: read -r side prec dres <<< "$spec"
    name="se_e2_a-oneside_${side}-${prec}"
    [ "$dres" = true ] && name="$name-resnet_dt"
    case " ${QNN_FIXTURES:-$name} " in *" $name "*) ;; *) continue;; esac
    d="$WORK/$name"
    mkdir -p "$d"
    cat > "$d/input.json" <<EOF
{
  "model": {
    "type_map": ["O", "H"],
    "descriptor": {"type": "se_e2_a", "rcut": 4.0, "rcut_smth": 1.0, "sel": [24, 48],
                   "neuron": [4, 8, 8], "axis_neuron": 4, "resnet_dt": $dres,
                   "type_one_side": $side, "precision": "$prec", "seed": 3},
    "fitting_net": {"neuron": [8, 8], "resnet_dt": true, "precision": "$prec", "seed": 3}
  },
  "learning_rate": {"type": "exp", "start_lr": 0.005, "stop_lr": 0.001, "decay_steps": 20},
  "loss": {"type": "ener", "start_pref_e": 0.02, "limit_pref_e": 1, "start_pref_f": 1000, "limit_pref_f": 1,
           "start_pref_v": 0, "limit_pref_v": 0},
  "training": {"training_data": {"systems": ["$DATA/data_0"], "batch_size": 1},
               "numb_steps": 60, "seed": 3, "disp_file": "lcurve.out", "disp_freq": 20, "save_freq": 60}
}
EOF
    echo "[make_deepmd_fixtures] $name: dp train (60 steps), freeze, convert-backend"
    (cd "$d" && "$DP" --tf train input.json > train.log 2>&1 && "$DP" --tf freeze -o frozen.pb > freeze.log 2>&1 \
       && "$DP" convert-backend frozen.pb model.dp > convert.log 2>&1) \
      || { echo "[make_deepmd_fixtures] error: $name failed; logs in $d" >&2; trap - EXIT; exit 1; }
    cp "$d/model.dp" "$OUT/$name.dp"
    "$PY" - "$d/frozen.pb" "$DATA/data_2" "$OUT/$name.json" "$prec" <<'PYEOF'
import json, sys
import numpy as np
from deepmd.infer import DeepPot
pb, data, out, prec = sys.argv[1:]
box = np.load(f"{data}/set.000/box.npy")
coord = np.load(f"{data}/set.000/coord.npy")
types = np.loadtxt(f"{data}/type.raw", dtype=int)
dp = DeepPot(pb)
rcut, sel = dp.get_rcut(), [24, 48]
frames = []
for f in (0, 1, 2):
    c = coord[f].reshape(-1, 3); b = box[f].reshape(3, 3)
    # neighbour counts within rcut (minimum image; rcut < half the box): must stay <= sel
    inv = np.linalg.inv(b)
    dx = c[None, :, :] - c[:, None, :]
    fr = dx @ inv; fr -= np.round(fr); dx = fr @ b
    r = np.linalg.norm(dx, axis=2); np.fill_diagonal(r, np.inf)
    for t in (0, 1):
        n = ((r < rcut) & (types[None, :] == t)).sum(1).max()
        assert n <= sel[t], f"frame {f}: {n} neighbours of type {t} > sel {sel[t]}"
    e, force, v, ae, av = dp.eval(c.reshape(1, -1), b.reshape(1, -1), types, atomic=True)
    frames.append({"frame": f, "box": b.ravel().tolist(), "coord": c.ravel().tolist(),
                   "energy": float(e.ravel()[0]), "force": force.ravel().tolist(),
                   "virial": v.ravel().tolist(), "atom_energy": ae.ravel().tolist()})
import deepmd
doc = {"_comment": "DeePMD-kit's own energy (eV), forces (eV/A, per atom, x y z) and virial (eV, 3x3 row-major) "
                   "of the frozen model on frames of examples/data/water-deepmd/data_2; scripts/make_deepmd_fixtures.sh",
       "deepmd_kit_version": deepmd.__version__, "precision": prec, "type": types.tolist(),
       "type_map": ["O", "H"], "frames": frames}
with open(out, "w") as fh:
    json.dump(doc, fh)
print(f"[make_deepmd_fixtures] {out}: E = {[fr['energy'] for fr in frames]}")
PYEOF
done
ls -l "$OUT"
du -sh "$OUT"
