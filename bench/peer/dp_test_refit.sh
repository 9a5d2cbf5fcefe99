#!/usr/bin/env bash
# For every frozen-STEP.pb that scripts/train_deepmd_peer.sh left in OUTDIR: `dp test -d` on the
# training systems (data_0, data_1) and the validation system (data_2), then
# bench/peer/dp_refit_rmse.py, into OUTDIR/dp_test_refit.csv:
#   step,val_e_rmse_meV_atom,val_e_rmse_refit_meV_atom,train_mean_error_meV_atom,train_frames,val_frames
# i.e. DeePMD-kit's validation energy RMSE without and with the energy-bias refit that
# `qnn train` applies to the file it writes (docs/training.md). Steps already in the CSV are skipped.
# Usage: bench/peer/dp_test_refit.sh OUTDIR   (QNN_PEER_DATA as in train_deepmd_peer.sh)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OUT=${1:?usage: dp_test_refit.sh OUTDIR}
DATA=${QNN_PEER_DATA:-$ROOT/examples/data/water-deepmd}
die() { echo "[dp_test_refit] error: $*" >&2; exit 1; }
[ -d "$OUT" ] || die "$OUT: no such directory"
for d in data_0 data_1 data_2; do [ -f "$DATA/$d/type.raw" ] || die "no DeePMD system at $DATA/$d (set QNN_PEER_DATA)"; done
VENV=$(bash "$ROOT/bench/peer/setup_peer.sh" | tail -n 1)
DP="$VENV/bin/dp"
# shellcheck disable=SC1091
source "$ROOT/bench/peer/one_thread.sh"
CSV=$OUT/dp_test_refit.csv
[ -f "$CSV" ] || echo "step,val_e_rmse_meV_atom,val_e_rmse_refit_meV_atom,train_mean_error_meV_atom,train_frames,val_frames" > "$CSV"
shopt -s nullglob
for pb in "$OUT"/frozen-*.pb; do
  s=$(basename "$pb" .pb); s=${s#frozen-}
  grep -q "^$s," "$CSV" && continue
  for d in data_0 data_1 data_2; do
    det="$OUT/refit-$s-$d"
    "$DP" --tf test -m "$pb" -s "$DATA/$d" -n 100000 -d "$det" > "$det.log" 2>&1 || die "dp test of $pb on $d failed (see $det.log)"
  done
  line=$(/usr/bin/python3 "$ROOT/bench/peer/dp_refit_rmse.py" \
    --train "$DATA/data_0=$OUT/refit-$s-data_0.e_peratom.out" "$DATA/data_1=$OUT/refit-$s-data_1.e_peratom.out" \
    --val "$DATA/data_2=$OUT/refit-$s-data_2.e_peratom.out")
  echo "$s,$line" >> "$CSV"
  echo "[dp_test_refit] step $s: $line"
done
sort -t, -k1,1n -o "$CSV.tmp" <(tail -n +2 "$CSV") && { head -n 1 "$CSV"; cat "$CSV.tmp"; } > "$CSV.new" && mv "$CSV.new" "$CSV" && rm -f "$CSV.tmp"
