#!/usr/bin/env bash
# CTest `report_short`: the short protocol of run_report.sh (192 atoms, every mode whose
# potential file exists), then check_report.py on what it wrote. No speed assertions.
# Usage: test_report_short.sh OUTDIR   (QNN_BUILD_DIR, LMP, QNN_LAMMPS_SOURCE_DIR from the environment)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=${1:?usage: test_report_short.sh OUTDIR}
rm -rf "$OUT"
bash "$HERE/run_report.sh" --short --out "$OUT"
"${QNN_PYTHON:-/usr/bin/python3}" "$HERE/check_report.py" "$OUT"
